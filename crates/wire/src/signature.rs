//! Signatures over the exact bytes published.
//!
//! A signed payload is a JSON object whose last member is `"signature"`; the signed bytes are
//! the payload up to (not including) `,"signature":` followed by `}`. Verifying takes no JSON
//! canonicalisation: cut the bytes there, and check them. docs/evidence.md describes it for
//! people. Keys are Ed25519; a key's id is the first 16 hex digits of the SHA-256 of its 32
//! bytes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::Signer;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePublicKey, EncodePublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use ed25519_dalek::{SigningKey, VerifyingKey};

/// What separates a payload from its signature.
const SIGNATURE_MEMBER: &[u8] = b",\"signature\":";

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

/// Signs a serialised JSON object with `key`: returns it with a last `"signature"` member,
/// the form every signed payload takes.
pub fn sign(key: &SigningKey, unsigned: &[u8]) -> Vec<u8> {
    let signature = key.sign(unsigned);
    let info = SignatureInfo {
        alg: "ed25519".into(),
        key_id: key_id(&key.verifying_key()),
        public_key: BASE64.encode(key.verifying_key().as_bytes()),
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

/// A public key as SubjectPublicKeyInfo PEM, the form `device.pub` holds, `alertclip key show`
/// prints and [`parse_public_key`] reads (as `openssl pkeyutl` does).
pub fn public_pem(key: &VerifyingKey) -> String {
    // Encoding 32 bytes into a fixed structure cannot fail.
    key.to_public_key_pem(LineEnding::LF).unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn trust(key: &SigningKey) -> impl Fn(&str) -> Option<VerifyingKey> + '_ {
        move |id| (id == key_id(&key.verifying_key())).then(|| key.verifying_key())
    }

    #[test]
    fn signatures_cover_the_exact_bytes() {
        let key = key(1);
        let signed = sign(&key, br#"{"event_id":"x","note":"a \"signature\": b"}"#);
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
        let (ours, theirs) = (key(1), key(2));
        let their_id = key_id(&theirs.verifying_key());
        let signed = sign(&theirs, br#"{"x":1}"#);
        assert_eq!(
            verify(&signed, &trust(&ours)),
            Verdict::Untrusted(their_id.clone())
        );
        // A forger who names our key id but signs with theirs.
        let forged = String::from_utf8(signed)
            .unwrap()
            .replace(&their_id, &key_id(&ours.verifying_key()));
        assert!(matches!(
            verify(forged.as_bytes(), &trust(&ours)),
            Verdict::Invalid(_)
        ));
    }

    #[test]
    fn public_keys_read_as_base64_or_pem() {
        let public = key(3).verifying_key();
        assert_eq!(
            parse_public_key(&BASE64.encode(public.as_bytes())),
            Some(public)
        );
        assert_eq!(parse_public_key(&public_pem(&public)), Some(public));
        assert_eq!(parse_public_key("not a key"), None);
        assert!(fingerprint(&public).starts_with("SHA256:"));
    }
}
