//! `alertclip verify`: a clip checked against its signed manifest, offline.

use std::path::Path;

use super::{Failure, Outcome};

/// Prints what was checked, then `VALID`, or `INVALID: <reason>` (exit 1). A `--pubkey` that
/// is not a key is exit 2.
pub fn verify(clip: &Path, manifest: &Path, pubkey: Option<&Path>) -> Outcome {
    let invalid = |reason: String| {
        println!("INVALID: {reason}");
        Failure::Failed(None)
    };
    let key = match pubkey {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .ok()
                .and_then(|t| alertclip_wire::signature::parse_public_key(&t))
                .ok_or_else(|| {
                    Failure::Unusable(format!(
                        "{}: not an Ed25519 public key (PEM or base64)",
                        path.display()
                    ))
                })?,
        ),
        None => None,
    };
    let manifest_bytes = std::fs::read(manifest)
        .map_err(|error| invalid(format!("{}: {error}", manifest.display())))?;
    let check = alertclip_wire::digest::check_clip(clip, &manifest_bytes, key.as_ref())
        .map_err(|error| invalid(format!("{}: {error}", clip.display())))?;
    for finding in &check.findings {
        println!("{finding}");
    }
    match check.failure {
        None => {
            println!("VALID");
            Ok(())
        }
        Some(reason) => Err(invalid(reason)),
    }
}
