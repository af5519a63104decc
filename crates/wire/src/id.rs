//! Identifiers (site, camera, button and zone ids) end up in MQTT topic levels and file
//! names on both sides, so both sides hold them to one safe alphabet: the box refuses a
//! configuration that breaks it, and the officer side ignores a topic that does.

/// Longest identifier accepted.
pub const MAX_ID_LEN: usize = 64;

/// Whether `id` is 1 to 64 letters, digits, `-`, `_` or `.`, not starting with `.`: a name
/// that can neither leave its directory nor span topic levels.
pub fn is_valid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// [`is_valid`], with what was expected when it is not.
pub fn check(id: &str) -> Result<(), String> {
    if is_valid(id) {
        Ok(())
    } else {
        Err(format!(
            "expected 1 to {MAX_ID_LEN} letters, digits, '-', '_' or '.' (not starting with '.'), found \"{id}\""
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_that_stay_in_their_directory_pass() {
        for good in ["register", "corner-market_12", "cam.2", "A"] {
            assert!(is_valid(good), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a+b",
            "a#",
            "ü",
            &"x".repeat(65),
        ] {
            assert!(!is_valid(bad), "{bad}");
            assert!(check(bad).unwrap_err().contains("expected 1 to 64"));
        }
    }
}
