//! The MQTT session both sides of alertclip use: the box to deliver its outbox, hear
//! wireless buttons and take the desk's commands, the officer side to receive. It owns everything rumqttc-specific, so that
//! neither side reasons about packet ids, and the one way a broker login is read from files.

pub mod backoff;
pub mod session;
pub mod url;

pub use backoff::Backoff;
pub use session::{LinkEvent, NotConnected, Receipt, Session, Settings, SettingsError, Tag};
pub use url::{BrokerUrl, Protocol};

/// A session's connection to its broker, for status reports and for whoever shows it (a
/// box's feedback lights blink fast while it is down).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LinkStatus {
    /// Connected now.
    pub connected: bool,
    /// Why the last connection ended or failed, with a hint where one is known.
    pub last_error: Option<String>,
    /// When the broker last acknowledged a message, RFC 3339 UTC.
    pub last_ack: Option<String>,
}

use std::io;
use std::path::{Path, PathBuf};

/// Why a secret file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct SecretError {
    /// The file.
    pub path: PathBuf,
    /// What reading it said.
    #[source]
    pub source: io::Error,
}

/// Reads a one-line secret (a broker or camera password) from its own file, without the
/// trailing newline an editor leaves. Secrets live in files of their own (mode 0600) so that
/// configurations can be shown and logged without them.
pub fn read_secret(path: &Path) -> Result<String, SecretError> {
    use std::io::Read;
    let error = |source| SecretError {
        path: path.to_owned(),
        source,
    };
    // A secret is a line in a regular file: never a directory, a device or a pipe (looked at
    // before opening, which would wait on a pipe), read without bound.
    let metadata = std::fs::metadata(path).map_err(error)?;
    if !metadata.is_file() {
        return Err(error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file: expected a file holding the secret on one line",
        )));
    }
    let file = std::fs::File::open(path).map_err(error)?;
    let mut text = String::new();
    file.take(MAX_SECRET as u64 + 1)
        .read_to_string(&mut text)
        .map_err(error)?;
    if text.len() > MAX_SECRET {
        return Err(error(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("longer than {MAX_SECRET} bytes: expected the secret on one line"),
        )));
    }
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

/// The longest secret file read.
pub const MAX_SECRET: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_loses_its_trailing_newline_and_a_missing_file_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mqtt.password");
        std::fs::write(&path, "s3cret \r\n").unwrap();
        assert_eq!(read_secret(&path).unwrap(), "s3cret ");
        let missing = dir.path().join("none");
        let error = read_secret(&missing).unwrap_err().to_string();
        assert!(error.starts_with(&missing.display().to_string()), "{error}");
        // Neither a directory nor an endless device is read.
        let error = read_secret(dir.path()).unwrap_err().to_string();
        assert!(error.contains("not a regular file"), "{error}");
        let error = read_secret(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(error.contains("/dev/zero: not a regular file"), "{error}");
        std::fs::write(&path, vec![b'x'; MAX_SECRET + 1]).unwrap();
        let error = read_secret(&path).unwrap_err().to_string();
        assert!(error.contains("longer than 4096 bytes"), "{error}");
    }
}
