//! Evidence: the device's signing key, signatures over what it publishes, and the per-device
//! hash chain of its alerts. docs/evidence.md describes the scheme for people.
//!
//! Each device has an Ed25519 key pair, created on first start in the evidence directory
//! (`device.key`, PKCS#8 PEM, mode 0600; `device.pub`, SubjectPublicKeyInfo PEM). Alerts and
//! clip manifests are signed over the exact bytes published: the payload is a JSON object whose
//! last member is `"signature"`, and the signed bytes are the payload up to (not including)
//! `,"signature":` followed by `}`. Verifying takes no JSON canonicalisation: cut the bytes
//! there, and check them.
//!
//! Each alert carries a per-device `sequence` (1, 2, 3 ...) and the SHA-256 of the previous
//! alert's payload as published (`previous_alert_sha256`), so a receiver sees a deleted or
//! suppressed event as a gap, a replayed one by its sequence, and a rewritten history as a
//! broken link.

use std::fs;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::storage::write_durably;

/// What separates a payload from its signature.
const SIGNATURE_MEMBER: &[u8] = b",\"signature\":";

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

/// The `"signature"` member of a signed payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureInfo {
    /// Always `ed25519`.
    pub alg: String,
    /// The signing key's id: the first 16 hex digits of the SHA-256 of its 32 bytes.
    pub key_id: String,
    /// The signing key's 32 bytes, base64, so that a receiver can pin it on first use.
    pub public_key: String,
    /// The 64-byte signature, base64.
    pub sig: String,
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
            key_id: key_id(&signing.verifying_key()),
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
        self.signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_default()
    }

    /// A fingerprint to read out over the phone: SHA-256 of the key's 32 bytes, in groups.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.signing.verifying_key())
    }

    /// Signs a serialised JSON object: returns it with a last `"signature"` member.
    pub fn sign(&self, unsigned: &[u8]) -> Vec<u8> {
        let signature = self.signing.sign(unsigned);
        let info = SignatureInfo {
            alg: "ed25519".into(),
            key_id: self.key_id.clone(),
            public_key: BASE64.encode(self.signing.verifying_key().as_bytes()),
            sig: BASE64.encode(signature.to_bytes()),
        };
        let mut signed = unsigned.to_vec();
        if signed.last() == Some(&b'}') {
            signed.pop();
        }
        signed.extend_from_slice(SIGNATURE_MEMBER);
        // A struct of strings always serialises.
        signed.extend_from_slice(&serde_json::to_vec(&info).unwrap_or_default());
        signed.push(b'}');
        signed
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
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = path.with_file_name(format!(".{name}.partial"));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    crate::storage::rename_durably(&temp, path)
}

/// The id of a key: the first 16 hex digits of the SHA-256 of its 32 bytes.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// SHA-256 of a key's 32 bytes, in groups of four hex digits.
pub fn fingerprint(key: &VerifyingKey) -> String {
    let hex = hex::encode(Sha256::digest(key.as_bytes()));
    let groups: Vec<&str> = (0..hex.len()).step_by(4).map(|i| &hex[i..i + 4]).collect();
    format!("SHA256:{}", groups.join(" "))
}

/// Reads a public key: SubjectPublicKeyInfo PEM (as `device.pub` and `alertclip key show`
/// print it), or the 32 bytes in base64.
pub fn parse_public_key(text: &str) -> Option<VerifyingKey> {
    let text = text.trim();
    if text.starts_with("-----BEGIN") {
        return VerifyingKey::from_public_key_pem(text).ok();
    }
    let bytes: [u8; 32] = BASE64.decode(text).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// A signed payload, split into what was signed and the signature.
#[derive(Debug, Clone)]
pub struct Signed<'a> {
    /// The exact bytes the signature covers.
    pub message: Vec<u8>,
    /// The signature member.
    pub info: SignatureInfo,
    /// The payload as received.
    pub payload: &'a [u8],
}

/// Splits a payload at its last `"signature"` member; `None` if it carries none.
pub fn split(payload: &[u8]) -> Option<Signed<'_>> {
    if payload.last() != Some(&b'}') {
        return None;
    }
    let at = payload
        .windows(SIGNATURE_MEMBER.len())
        .rposition(|w| w == SIGNATURE_MEMBER)?;
    let tail = payload.get(at + SIGNATURE_MEMBER.len()..payload.len().checked_sub(1)?)?;
    let info: SignatureInfo = serde_json::from_slice(tail).ok()?;
    let mut message = payload[..at].to_vec();
    message.push(b'}');
    Some(Signed {
        message,
        info,
        payload,
    })
}

/// What checking a signature found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Signed by a trusted key, and intact.
    Valid,
    /// Intact, but signed by a key that is not trusted (its id is given).
    Untrusted(String),
    /// The signature does not match the bytes: altered, or signed by another key than it says.
    Invalid(String),
    /// No signature.
    Missing,
}

impl Verdict {
    /// One word for reports.
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Valid => "valid",
            Verdict::Untrusted(_) => "untrusted",
            Verdict::Invalid(_) => "invalid",
            Verdict::Missing => "missing",
        }
    }
}

/// Checks a payload's signature against the key it names, and that key against `trusted`.
pub fn verify(payload: &[u8], trusted: &dyn Fn(&str) -> Option<VerifyingKey>) -> Verdict {
    let Some(signed) = split(payload) else {
        return Verdict::Missing;
    };
    if signed.info.alg != "ed25519" {
        return Verdict::Invalid(format!("unknown signature algorithm {:?}", signed.info.alg));
    }
    let Some(embedded) = parse_public_key(&signed.info.public_key) else {
        return Verdict::Invalid("the signature names no valid public key".into());
    };
    if key_id(&embedded) != signed.info.key_id {
        return Verdict::Invalid("the key id does not match the public key".into());
    }
    let Ok(bytes) = BASE64.decode(&signed.info.sig) else {
        return Verdict::Invalid("the signature is not base64".into());
    };
    let Ok(signature) = ed25519_dalek::Signature::from_slice(&bytes) else {
        return Verdict::Invalid("the signature is not 64 bytes".into());
    };
    let key = match trusted(&signed.info.key_id) {
        Some(key) if key != embedded => {
            return Verdict::Invalid(
                "signed by a different key than the trusted one with its id".into(),
            );
        }
        Some(key) => Some(key),
        None => None,
    };
    if embedded.verify_strict(&signed.message, &signature).is_err() {
        return Verdict::Invalid(
            "the signature does not match the bytes: they were altered".into(),
        );
    }
    match key {
        Some(_) => Verdict::Valid,
        None => Verdict::Untrusted(signed.info.key_id),
    }
}

/// The device side of the hash chain: the last sequence number used and the SHA-256 of the
/// last alert published, kept in `chain.json` beside the key.
#[derive(Debug)]
pub struct Chain {
    path: PathBuf,
    state: Mutex<ChainState>,
}

/// A link of the chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainState {
    /// The last sequence number used (0 before the first alert).
    pub sequence: u64,
    /// SHA-256 of the last alert as published.
    pub last_alert_sha256: Option<String>,
}

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
        })
    }

    /// Adds an alert: `build` gets the next sequence number and the previous alert's hash,
    /// and returns the signed payload, whose hash becomes the chain's head. The new head is
    /// saved before the payload is returned for publishing: a crash then costs a sequence
    /// number (a gap a receiver reports), never a number used twice.
    pub fn append(
        &self,
        build: impl FnOnce(u64, Option<String>) -> Vec<u8>,
    ) -> Result<Vec<u8>, EvidenceError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let sequence = state.sequence + 1;
        let payload = build(sequence, state.last_alert_sha256.clone());
        let next = ChainState {
            sequence,
            last_alert_sha256: Some(hex::encode(Sha256::digest(&payload))),
        };
        let json = serde_json::to_vec(&next).map_err(|e| EvidenceError::Io {
            path: self.path.clone(),
            source: io::Error::other(e),
        })?;
        write_durably(&self.path, &json).map_err(io_error(&self.path))?;
        *state = next;
        Ok(payload)
    }
}

/// What a receiver concludes from an alert's place in its device's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// The first alert seen from this device.
    First,
    /// Follows the previous alert.
    Continues,
    /// Sequence numbers were skipped: alerts missing or suppressed.
    Gap { expected: u64, got: u64 },
    /// A sequence number already seen: a replay.
    Replay { sequence: u64, last: u64 },
    /// The right sequence number, but not linked to the previous alert: history rewritten.
    Broken { sequence: u64 },
}

/// Places an alert (its sequence, previous hash, and own hash) after the receiver's last
/// known link of that device, returning the verdict and the new last link.
pub fn follow(
    last: Option<&ChainState>,
    sequence: u64,
    previous: Option<&str>,
    payload: &[u8],
) -> (Link, Option<ChainState>) {
    let head = ChainState {
        sequence,
        last_alert_sha256: Some(hex::encode(Sha256::digest(payload))),
    };
    let Some(last) = last else {
        return (Link::First, Some(head));
    };
    if sequence <= last.sequence {
        return (
            Link::Replay {
                sequence,
                last: last.sequence,
            },
            None,
        );
    }
    if sequence > last.sequence + 1 {
        return (
            Link::Gap {
                expected: last.sequence + 1,
                got: sequence,
            },
            Some(head),
        );
    }
    if previous != last.last_alert_sha256.as_deref() {
        return (Link::Broken { sequence }, Some(head));
    }
    (Link::Continues, Some(head))
}

/// The outcome of checking a clip file against its signed manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClipCheck {
    /// What was checked, one finding a line.
    pub findings: Vec<String>,
    /// Why it is not valid, if it is not.
    pub failure: Option<String>,
}

/// Checks a clip file against its manifest (size, whole-file and per-chunk SHA-256) and the
/// manifest's signature, against `key` when one is given.
pub fn check_clip(
    clip: &Path,
    manifest: &[u8],
    key: Option<&VerifyingKey>,
) -> io::Result<ClipCheck> {
    let mut findings = Vec::new();
    let fail = |findings: Vec<String>, reason: String| {
        Ok(ClipCheck {
            findings,
            failure: Some(reason),
        })
    };
    let parsed: crate::publish::message::Manifest = match serde_json::from_slice(manifest) {
        Ok(m) => m,
        Err(e) => {
            return fail(
                findings,
                format!("the manifest is not a valid alertclip manifest: {e}"),
            );
        }
    };
    let trusted = |id: &str| key.filter(|k| key_id(k) == id).copied();
    match verify(manifest, &trusted) {
        Verdict::Valid => findings.push(format!("manifest signature: valid, by the given key {}", key.map(fingerprint).unwrap_or_default())),
        Verdict::Untrusted(id) => match (key, split(manifest).and_then(|s| parse_public_key(&s.info.public_key))) {
            (Some(_), _) => return fail(findings, format!("the manifest is signed by key {id}, not by the given key")),
            (None, Some(signer)) => findings.push(format!(
                "manifest signature: intact, by key {id} ({}); not checked against a registered key: pass --pubkey",
                fingerprint(&signer)
            )),
            (None, None) => return fail(findings, "the manifest's signing key is unreadable".into()),
        },
        Verdict::Invalid(reason) => return fail(findings, format!("manifest signature: {reason}")),
        Verdict::Missing => return fail(findings, "the manifest is not signed".into()),
    }
    let digests = crate::clip::digest(&mut fs::File::open(clip)?, parsed.chunk_size)?;
    if digests.bytes != parsed.bytes {
        return fail(
            findings,
            format!(
                "the clip is {} bytes, the manifest says {}",
                digests.bytes, parsed.bytes
            ),
        );
    }
    if let Some(n) = digests
        .blocks
        .iter()
        .zip(&parsed.chunk_sha256)
        .position(|(a, b)| a != b)
    {
        let at = n as u64 * parsed.chunk_size;
        return fail(
            findings,
            format!(
                "chunk {n} (bytes {at} to {}) differs from the manifest",
                at + parsed.chunk_size
            ),
        );
    }
    if digests.blocks.len() != parsed.chunk_sha256.len() || digests.sha256 != parsed.sha256 {
        return fail(
            findings,
            "the clip's SHA-256 differs from the manifest".into(),
        );
    }
    findings.push(format!(
        "clip: {} bytes, SHA-256 {} and all {} chunks match the manifest",
        digests.bytes,
        digests.sha256,
        digests.blocks.len()
    ));
    findings.push(format!(
        "event {}, camera {}, {} to {} (clock synchronisation and the clock reading used are in the alert and manifest)",
        parsed.event_id, parsed.camera, parsed.start, parsed.end
    ));
    Ok(ClipCheck {
        findings,
        failure: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trust(key: &DeviceKey) -> impl Fn(&str) -> Option<VerifyingKey> + '_ {
        move |id| (id == key.key_id()).then(|| key.signing.verifying_key())
    }

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
            key.signing.verifying_key()
        );
        assert!(key.fingerprint().starts_with("SHA256:"));
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
    fn signatures_cover_the_exact_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let key = DeviceKey::load_or_create(dir.path()).unwrap();
        let signed = key.sign(br#"{"event_id":"x","note":"a \"signature\": b"}"#);
        let text = String::from_utf8(signed.clone()).unwrap();
        assert!(
            text.ends_with("}}") && text.contains(r#","signature":{"alg":"ed25519""#),
            "{text}"
        );
        let parsed: serde_json::Value = serde_json::from_slice(&signed).unwrap();
        assert_eq!(parsed["note"], "a \"signature\": b");
        assert_eq!(verify(&signed, &trust(&key)), Verdict::Valid);
        // Every byte matters.
        for i in 0..signed.len() {
            let mut flipped = signed.clone();
            flipped[i] ^= 0x01;
            assert_ne!(
                verify(&flipped, &trust(&key)),
                Verdict::Valid,
                "byte {i} of {}",
                String::from_utf8_lossy(&signed)
            );
        }
        assert_eq!(verify(br#"{"a":1}"#, &trust(&key)), Verdict::Missing);
    }

    #[test]
    fn another_key_is_untrusted_or_rejected() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (ours, theirs) = (
            DeviceKey::load_or_create(a.path()).unwrap(),
            DeviceKey::load_or_create(b.path()).unwrap(),
        );
        let signed = theirs.sign(br#"{"x":1}"#);
        assert_eq!(
            verify(&signed, &trust(&ours)),
            Verdict::Untrusted(theirs.key_id().to_owned())
        );
        // A forger who names our key id but signs with theirs.
        let forged = String::from_utf8(signed)
            .unwrap()
            .replace(theirs.key_id(), ours.key_id());
        assert!(matches!(
            verify(forged.as_bytes(), &trust(&ours)),
            Verdict::Invalid(_)
        ));
    }

    #[test]
    fn the_chain_links_alerts_and_receivers_see_gaps_replays_and_rewrites() {
        let dir = tempfile::tempdir().unwrap();
        let payloads: Vec<Vec<u8>> = {
            let chain = Chain::open(dir.path()).unwrap();
            (0..3)
                .map(|i| {
                    chain
                        .append(|seq, prev| {
                            format!(
                                r#"{{"n":{i},"sequence":{seq},"previous":{:?}}}"#,
                                prev.unwrap_or_default()
                            )
                            .into_bytes()
                        })
                        .unwrap()
                })
                .collect()
        };
        // Survives a restart.
        let chain = Chain::open(dir.path()).unwrap();
        let fourth = chain
            .append(|seq, _| format!(r#"{{"sequence":{seq}}}"#).into_bytes())
            .unwrap();
        assert!(String::from_utf8_lossy(&fourth).contains(r#""sequence":4"#));

        let prev = |p: &[u8]| hex::encode(Sha256::digest(p));
        let (link, head) = follow(None, 1, None, &payloads[0]);
        assert_eq!(link, Link::First);
        let (link, head2) = follow(head.as_ref(), 2, Some(&prev(&payloads[0])), &payloads[1]);
        assert_eq!(link, Link::Continues);
        assert_eq!(
            follow(head2.as_ref(), 2, Some(&prev(&payloads[0])), &payloads[1]).0,
            Link::Replay {
                sequence: 2,
                last: 2
            }
        );
        assert_eq!(
            follow(head2.as_ref(), 4, Some(&prev(&payloads[2])), &fourth).0,
            Link::Gap {
                expected: 3,
                got: 4
            }
        );
        assert_eq!(
            follow(head2.as_ref(), 3, Some(&prev(b"rewritten")), &payloads[2]).0,
            Link::Broken { sequence: 3 }
        );
    }
}
