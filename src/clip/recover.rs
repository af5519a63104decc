//! Finishing what a crash interrupted. A clip is finished when its manifest is on disk beside
//! it ([`super::job::complete`] writes it once the clip is spooled); a clip with its sidecar but
//! no manifest was written and then interrupted before it was spooled, or before the manifest
//! was saved. At start every such clip is checked against its sidecar, given a manifest made
//! and signed anew from the file, and spooled, so a SIGKILL or a power cut right after a clip
//! is written never makes it disappear.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use alertclip_wire::Manifest;
use alertclip_wire::digest::digest;
use alertclip_wire::sidecar::ClipRecord;

use super::Spool;
use super::job::{ClipDone, complete};
use super::storage::{Storage, unspooled};
use crate::evidence::Evidence;

/// Why a clip left unfinished could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// Its sidecar or file could not be read, or the manifest not written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The sidecar is not a clip record.
    #[error("{path}: not a clip sidecar ({reason})")]
    Sidecar {
        /// The sidecar.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The file is not the one its sidecar describes: it is left for a technician.
    #[error("{path}: {found}, but its sidecar says {expected}: left as it is")]
    Mismatch {
        /// The clip.
        path: PathBuf,
        /// What the file is.
        found: String,
        /// What the sidecar says.
        expected: String,
    },
}

/// Completes every clip in `storage` that has a sidecar but no manifest: checks it against
/// its sidecar, signs a manifest hashed in `chunk_size` blocks, and hands it to `spool`.
/// Returns the clips completed; each is logged, and each that could not be is logged with
/// why. Blocks on the disk (it reads each such clip whole).
pub fn recover(
    storage: &Storage,
    evidence: &Evidence,
    spool: Option<&dyn Spool>,
    chunk_size: u64,
) -> Vec<ClipDone> {
    let mut completed = Vec::new();
    for sidecar in unfinished(storage) {
        match finish(&sidecar, evidence, spool, chunk_size) {
            Ok(done) => {
                tracing::warn!(
                    camera = %done.record.camera,
                    event = %done.record.event_id,
                    file = %done.mp4.display(),
                    "completed a clip that a crash or power cut interrupted before it was spooled"
                );
                completed.push(done);
            }
            Err(error) => {
                tracing::error!(%error, "could not complete a clip left unfinished")
            }
        }
    }
    completed
}

/// Sidecars of clips without a manifest whose MP4 is in place, oldest event first.
fn unfinished(storage: &Storage) -> Vec<PathBuf> {
    storage
        .events()
        .unwrap_or_default()
        .iter()
        .flat_map(|event| unspooled(event))
        .filter(|sidecar| sidecar.with_extension("mp4").exists())
        .collect()
}

fn finish(
    sidecar: &Path,
    evidence: &Evidence,
    spool: Option<&dyn Spool>,
    chunk_size: u64,
) -> Result<ClipDone, RecoverError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| RecoverError::Io { path, source }
    };
    let bytes = fs::read(sidecar).map_err(io(sidecar))?;
    let record: ClipRecord = serde_json::from_slice(&bytes).map_err(|e| RecoverError::Sidecar {
        path: sidecar.to_owned(),
        reason: e.to_string(),
    })?;
    let mp4 = sidecar.with_extension("mp4");
    let mut file = fs::File::open(&mp4).map_err(io(&mp4))?;
    let digests = digest(&mut file, chunk_size).map_err(io(&mp4))?;
    if digests.bytes != record.bytes || digests.sha256 != record.sha256 {
        return Err(RecoverError::Mismatch {
            path: mp4,
            found: format!("{} bytes, SHA-256 {}", digests.bytes, digests.sha256),
            expected: format!("{} bytes, SHA-256 {}", record.bytes, record.sha256),
        });
    }
    let manifest = Manifest::for_clip(&record, chunk_size, digests.blocks);
    let done = ClipDone {
        manifest: evidence.sign_manifest(&manifest),
        chunk_size,
        manifest_path: mp4.with_extension("manifest.json"),
        record,
        sidecar: sidecar.to_owned(),
        mp4,
    };
    complete(&done, spool).map_err(io(&done.manifest_path))?;
    Ok(done)
}
