//! The console's HTTPS certificate: the one given, or a self-signed one `init` makes for the
//! names the desk is reached by (browsers then ask the officer to accept it once).

use std::path::Path;

/// Writes a self-signed certificate for `names` (DNS names or IP addresses) and its key, the
/// key readable by its owner only.
pub fn write_self_signed(names: &[String], cert: &Path, key: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let rcgen::CertifiedKey {
        cert: made,
        signing_key,
    } = rcgen::generate_simple_self_signed(names.to_vec())?;
    std::fs::write(cert, made.pem()).map_err(|e| anyhow::anyhow!("{}: {e}", cert.display()))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(key)
        .map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
    file.write_all(signing_key.serialize_pem().as_bytes())?;
    file.sync_all()?;
    Ok(())
}
