//! `alertclip key show`: the box's public key, for the precinct to register.

use std::path::Path;

use super::{Failure, Outcome, load};

/// Prints the key id, fingerprint and public key (creating the key if there is none yet).
pub fn show(path: &Path) -> Outcome {
    let config = load(path)?;
    let key = alertclip::evidence::DeviceKey::load_or_create(&config.evidence.dir)
        .map_err(Failure::failed)?;
    println!(
        "key id:      {}\nfingerprint: {}\n{}",
        key.key_id(),
        key.fingerprint(),
        key.public_pem().trim_end()
    );
    Ok(())
}
