//! Clip digests: the SHA-256 of a whole clip and of each block it is published in, and the
//! offline check of a clip file against its signed manifest (`alertclip verify`).

use std::fs;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::payload::Manifest;
use crate::signature::{
    Verdict, VerifyingKey, fingerprint, key_id, parse_public_key, split, verify,
};

/// SHA-256 digests of a file, whole and by blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    /// Bytes read.
    pub bytes: u64,
    /// SHA-256 of everything, lowercase hex.
    pub sha256: String,
    /// SHA-256 of each block (the last may be short), lowercase hex; empty for block size 0.
    pub blocks: Vec<String>,
}

/// Reads `reader` to its end once, hashing it whole and in blocks of `block_size` (0: not in
/// blocks).
pub fn digest(reader: &mut impl Read, block_size: u64) -> std::io::Result<Digests> {
    let mut whole = Sha256::new();
    let mut block = Sha256::new();
    let mut in_block = 0u64;
    let mut blocks = Vec::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut bytes = 0u64;
    loop {
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        whole.update(&buffer[..n]);
        bytes += n as u64;
        let mut rest = &buffer[..n];
        while block_size > 0 && !rest.is_empty() {
            let take = rest.len().min((block_size - in_block) as usize);
            block.update(&rest[..take]);
            in_block += take as u64;
            rest = &rest[take..];
            if in_block == block_size {
                blocks.push(hex::encode(block.finalize_reset()));
                in_block = 0;
            }
        }
    }
    if block_size > 0 && (in_block > 0 || blocks.is_empty()) {
        blocks.push(hex::encode(block.finalize()));
    }
    Ok(Digests {
        bytes,
        sha256: hex::encode(whole.finalize()),
        blocks,
    })
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
    let parsed: Manifest = match serde_json::from_slice(manifest) {
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
    let digests = digest(&mut fs::File::open(clip)?, parsed.chunk_size)?;
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

    #[test]
    fn digests_match_hashing_each_block_alone() {
        let data: Vec<u8> = (0..1_000_003u32).map(|i| (i % 253) as u8).collect();
        for block in [1000u64, 102_400, 256 * 1024, 300_000, 2_000_000] {
            let digests = digest(&mut data.as_slice(), block).unwrap();
            let expected: Vec<String> = data
                .chunks(block as usize)
                .map(|c| hex::encode(Sha256::digest(c)))
                .collect();
            assert_eq!(digests.blocks, expected, "block size {block}");
            assert_eq!(digests.sha256, hex::encode(Sha256::digest(&data)));
            assert_eq!(digests.bytes, data.len() as u64);
        }
        assert!(digest(&mut data.as_slice(), 0).unwrap().blocks.is_empty());
        assert_eq!(
            digest(&mut [].as_slice(), 10).unwrap().blocks.len(),
            1,
            "an empty file is one empty chunk"
        );
    }
}
