//! Evidence on the box: the device's signing key and the head of its alert chain, both kept
//! on disk. The signature scheme and the chain a receiver follows are the wire contract's
//! ([`alertclip_wire::signature`], [`alertclip_wire::chain`]); docs/evidence.md describes them
//! for people.
//!
//! Each device has an Ed25519 key pair, created on first start in the evidence directory
//! (`device.key`, PKCS#8 PEM, mode 0600; `device.pub`, SubjectPublicKeyInfo PEM).

use std::fs;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use alertclip_wire::signature::{self, SigningKey, VerifyingKey};
use alertclip_wire::{Alert, ChainState, EventUpdate, Manifest};
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};

use crate::sys::{Reserve, write_durably};

/// Why the device key or chain could not be used.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The key file exists but is not an Ed25519 PKCS#8 key.
    #[error(
        "{path}: not an Ed25519 private key in PKCS#8 PEM ({reason}); restore it from a backup, or move it away to make a new one (the precinct must then register the new public key)"
    )]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The chain's head holds the last sequence number there is: it cannot go on.
    #[error(
        "{path}: the alert chain is at its last sequence number; move the file away to start a new chain (receivers will report the break)"
    )]
    ChainEnded {
        /// The chain file.
        path: PathBuf,
    },
    /// The signed alert could not be spooled; the chain did not advance.
    #[error("the alert could not be spooled: {0}")]
    Spool(io::Error),
    /// An alert was to be signed by evidence opened without its chain.
    #[error("alerts are chained only when the box delivers them ([mqtt])")]
    Unchained,
    /// The key file is readable by others.
    #[error("{path}: mode {mode:o} lets others read the device key: chmod 600 it")]
    Exposed {
        /// The key file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> EvidenceError + '_ {
    move |source| EvidenceError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The device's signing key.
#[derive(Debug)]
pub struct DeviceKey {
    signing: SigningKey,
    key_id: String,
}

impl DeviceKey {
    /// Loads the key in `dir`, or creates one (mode 0600) on first use.
    pub fn load_or_create(dir: &Path) -> Result<DeviceKey, EvidenceError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let path = dir.join("device.key");
        let signing = match fs::read_to_string(&path) {
            Ok(pem) => {
                let mode = fs::metadata(&path)
                    .map_err(io_error(&path))?
                    .permissions()
                    .mode()
                    & 0o777;
                if mode & 0o077 != 0 {
                    return Err(EvidenceError::Exposed { path, mode });
                }
                SigningKey::from_pkcs8_pem(&pem).map_err(|e| EvidenceError::BadKey {
                    path: path.clone(),
                    reason: e.to_string(),
                })?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let key = generate().map_err(io_error(&path))?;
                let pem = key
                    .to_pkcs8_pem(LineEnding::LF)
                    .map_err(|e| EvidenceError::BadKey {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                write_private(&path, pem.as_bytes()).map_err(io_error(&path))?;
                tracing::info!(file = %path.display(), "created the device signing key");
                key
            }
            Err(e) => return Err(EvidenceError::Io { path, source: e }),
        };
        let key = DeviceKey {
            key_id: signature::key_id(&signing.verifying_key()),
            signing,
        };
        let public = dir.join("device.pub");
        if fs::read_to_string(&public).ok().as_deref() != Some(key.public_pem().as_str()) {
            write_durably(&public, key.public_pem().as_bytes()).map_err(io_error(&public))?;
        }
        Ok(key)
    }

    /// The key id carried in every signature.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public key, SubjectPublicKeyInfo PEM (what `openssl pkeyutl` takes).
    pub fn public_pem(&self) -> String {
        signature::public_pem(&self.signing.verifying_key())
    }

    /// A fingerprint to read out over the phone: SHA-256 of the key's 32 bytes, in groups.
    pub fn fingerprint(&self) -> String {
        signature::fingerprint(&self.signing.verifying_key())
    }

    /// Signs a serialised JSON object: returns it with a last `"signature"` member.
    pub fn sign(&self, unsigned: &[u8]) -> Vec<u8> {
        signature::sign(&self.signing, unsigned)
    }

    /// The public half.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }
}

/// 32 random bytes from the kernel make the key.
fn generate() -> io::Result<SigningKey> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(SigningKey::from_bytes(&secret))
}

/// Writes a file only its owner can read, durably, never leaving a readable copy behind.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let temp = crate::sys::hidden_temp(path);
    // What a crash during an earlier attempt left: never a key anyone used.
    let _ = fs::remove_file(&temp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    crate::sys::rename_durably(&temp, path)
}

/// The device side of the hash chain: the last sequence number used and the SHA-256 of the
/// last alert published, kept in `chain.json` beside the key.
#[derive(Debug)]
pub struct Chain {
    path: PathBuf,
    state: Mutex<ChainState>,
    /// Space for the head's writes when the disk is full.
    reserve: Reserve,
}

/// Space held in the evidence directory's file system for the chain's head.
const CHAIN_RESERVE: u64 = 64 << 10;

impl Chain {
    /// Loads the chain in `dir` (a new one starts at sequence 1).
    pub fn open(dir: &Path) -> Result<Chain, EvidenceError> {
        let path = dir.join("chain.json");
        let state = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| EvidenceError::Io {
                path: path.clone(),
                source: io::Error::other(e.to_string()),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => ChainState::default(),
            Err(e) => return Err(EvidenceError::Io { path, source: e }),
        };
        Ok(Chain {
            path,
            state: Mutex::new(state),
            reserve: Reserve::hold(&dir.join("chain-reserve"), CHAIN_RESERVE),
        })
    }

    /// Adds an alert: `build` gets the next sequence number and the previous alert's hash and
    /// returns the signed payload, which `spool` makes durable; its hash then becomes the
    /// chain's head. The new head is saved before the payload is spooled: a crash in between
    /// costs a sequence number (a gap a receiver reports), never a number used twice. A failed
    /// write costs nothing: when the head cannot be saved, or `spool` fails, the chain stays
    /// where it was and the next alert takes the same number.
    pub fn append(
        &self,
        build: impl FnOnce(u64, Option<String>) -> Vec<u8>,
        spool: impl FnOnce(&[u8]) -> io::Result<()>,
    ) -> Result<Vec<u8>, EvidenceError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let sequence = state
            .next_sequence()
            .ok_or_else(|| EvidenceError::ChainEnded {
                path: self.path.clone(),
            })?;
        let payload = build(sequence, state.last_alert_sha256.clone());
        let next = ChainState::after(sequence, &payload);
        self.save(&next)?;
        if let Err(error) = spool(&payload) {
            if let Err(undo) = self.save(&state) {
                // The head on disk is one ahead: after a restart that number is skipped (a gap
                // a receiver reports), never used twice.
                tracing::error!(%undo, "could not put the alert chain's head back");
            }
            return Err(EvidenceError::Spool(error));
        }
        *state = next;
        drop(state);
        self.reserve.replenish();
        Ok(payload)
    }

    fn save(&self, state: &ChainState) -> Result<(), EvidenceError> {
        let json = serde_json::to_vec(state).map_err(|e| EvidenceError::Io {
            path: self.path.clone(),
            source: io::Error::other(e),
        })?;
        self.reserve
            .write(|| write_durably(&self.path, &json))
            .map_err(io_error(&self.path))
    }
}

/// A payload that is a link of the alert chain: alerts, and updates of open events.
pub trait Chained: serde::Serialize {
    /// Sets its place in the chain: its sequence number and the previous link's hash.
    fn place(&mut self, sequence: u64, previous: Option<String>);
}

impl Chained for Alert {
    fn place(&mut self, sequence: u64, previous: Option<String>) {
        self.sequence = sequence;
        self.previous_alert_sha256 = previous;
    }
}

impl Chained for EventUpdate {
    fn place(&mut self, sequence: u64, previous: Option<String>) {
        self.sequence = sequence;
        self.previous_alert_sha256 = previous;
    }
}

/// What the box signs with: its key, and the chain its alerts are linked in. Every payload
/// the box signs is signed here.
#[derive(Debug)]
pub struct Evidence {
    key: DeviceKey,
    chain: Option<Chain>,
}

impl Evidence {
    /// The key in `dir`, created on first use, and with `chained` the alert chain beside it
    /// (a box without delivery signs manifests only).
    pub fn open(dir: &Path, chained: bool) -> Result<Evidence, EvidenceError> {
        Ok(Evidence {
            key: DeviceKey::load_or_create(dir)?,
            chain: chained.then(|| Chain::open(dir)).transpose()?,
        })
    }

    /// The device key.
    pub fn key(&self) -> &DeviceKey {
        &self.key
    }

    /// Makes `link` (an alert or an event update) the next link of the chain, signs it and
    /// hands it to `spool`, which makes it durable: returns the payload as it is to be
    /// published. The chain advances only when `spool` succeeds.
    pub fn sign_chained<T: Chained>(
        &self,
        link: &mut T,
        spool: impl FnOnce(&[u8]) -> io::Result<()>,
    ) -> Result<Vec<u8>, EvidenceError> {
        let chain = self.chain.as_ref().ok_or(EvidenceError::Unchained)?;
        chain.append(
            |sequence, previous| {
                link.place(sequence, previous);
                // A struct of plain data always serialises.
                self.key
                    .sign(&serde_json::to_vec(&*link).unwrap_or_default())
            },
            spool,
        )
    }

    /// Signs a clip's manifest: the payload as written beside the clip and published.
    pub fn sign_manifest(&self, manifest: &Manifest) -> Vec<u8> {
        // A struct of plain data always serialises.
        self.key
            .sign(&serde_json::to_vec(manifest).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alertclip_wire::signature::{Verdict, parse_public_key, verify};
    use alertclip_wire::{Link, chain};

    #[test]
    fn keys_are_created_private_and_survive_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let key = DeviceKey::load_or_create(dir.path()).unwrap();
        let mode = fs::metadata(dir.path().join("device.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let again = DeviceKey::load_or_create(dir.path()).unwrap();
        assert_eq!(key.key_id(), again.key_id());
        assert_eq!(
            parse_public_key(&fs::read_to_string(dir.path().join("device.pub")).unwrap()).unwrap(),
            key.verifying_key()
        );
        assert!(key.fingerprint().starts_with("SHA256:"));
        let signed = key.sign(br#"{"a":1}"#);
        let trusted = |id: &str| (id == key.key_id()).then(|| key.verifying_key());
        assert_eq!(verify(&signed, &trusted), Verdict::Valid);
        fs::set_permissions(
            dir.path().join("device.key"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        assert!(matches!(
            DeviceKey::load_or_create(dir.path()),
            Err(EvidenceError::Exposed { .. })
        ));
    }

    #[test]
    fn the_chain_links_alerts_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let append = |chain: &Chain, n: usize| {
            chain
                .append(
                    |seq, prev| {
                        format!(
                            r#"{{"n":{n},"sequence":{seq},"previous":{:?}}}"#,
                            prev.unwrap_or_default()
                        )
                        .into_bytes()
                    },
                    |_| Ok(()),
                )
                .unwrap()
        };
        let first: Vec<Vec<u8>> = {
            let chain = Chain::open(dir.path()).unwrap();
            (0..3).map(|n| append(&chain, n)).collect()
        };
        let chain = Chain::open(dir.path()).unwrap();
        let fourth = append(&chain, 3);
        assert!(String::from_utf8_lossy(&fourth).contains(r#""sequence":4"#));
        // A receiver that saw the third alert sees the fourth continue the chain.
        let third = ChainState::after(3, &first[2]);
        let previous = ChainState::after(3, &first[2]).last_alert_sha256;
        assert_eq!(
            chain::follow(Some(&third), 4, previous.as_deref(), &fourth).0,
            Link::Continues
        );
    }

    #[test]
    fn an_alert_that_cannot_be_spooled_costs_no_sequence_number() {
        let dir = tempfile::tempdir().unwrap();
        let chain = Chain::open(dir.path()).unwrap();
        let numbered =
            |seq: u64, _: Option<String>| format!(r#"{{"sequence":{seq}}}"#).into_bytes();
        chain.append(numbered, |_| Ok(())).unwrap();
        let failed = chain.append(numbered, |_| Err(io::Error::other("disk full")));
        assert!(matches!(failed, Err(EvidenceError::Spool(_))), "{failed:?}");
        // The number the failed alert had is the next alert's, in memory and after a restart.
        let again = chain.append(numbered, |_| Ok(())).unwrap();
        assert_eq!(again, br#"{"sequence":2}"#);
        chain
            .append(numbered, |_| Err(io::Error::other("disk full")))
            .unwrap_err();
        let reopened = Chain::open(dir.path()).unwrap();
        assert_eq!(
            reopened.append(numbered, |_| Ok(())).unwrap(),
            br#"{"sequence":3}"#
        );
    }

    #[test]
    fn a_chain_at_its_last_sequence_number_refuses_instead_of_wrapping() {
        let dir = tempfile::tempdir().unwrap();
        let head = ChainState {
            sequence: u64::MAX,
            last_alert_sha256: None,
        };
        fs::write(
            dir.path().join("chain.json"),
            serde_json::to_vec(&head).unwrap(),
        )
        .unwrap();
        let chain = Chain::open(dir.path()).unwrap();
        let result = chain.append(|_, _| b"{}".to_vec(), |_| Ok(()));
        assert!(
            matches!(result, Err(EvidenceError::ChainEnded { .. })),
            "{result:?}"
        );
    }
}
