//! The MQTT session both sides of alertclip use: the box to deliver its outbox and to hear
//! wireless buttons, the officer side to receive. It owns everything rumqttc-specific, so that
//! neither side reasons about packet ids, and the one way a broker login is read from files.

pub mod backoff;
pub mod session;
pub mod subscriptions;
pub mod url;

pub use backoff::Backoff;
pub use session::{LinkEvent, NotConnected, Session, Settings, SettingsError, Tag};
pub use subscriptions::{Messages, Subscriptions};
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
    let text = std::fs::read_to_string(path).map_err(|source| SecretError {
        path: path.to_owned(),
        source,
    })?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

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
    }
}
