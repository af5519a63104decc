//! How the officer side keeps what it received on disk: every file written durably, so a
//! report printed is a file that survives a power cut.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Writes `bytes` to `path` durably: a hidden temporary beside it, fsync, rename, fsync of
/// the directory. A crash leaves the old file or the new one, never half of either.
pub fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let temp = temporary(path);
    let context =
        |e: io::Error, p: &Path| io::Error::new(e.kind(), format!("{}: {e}", p.display()));
    let mut file = File::create(&temp).map_err(|e| context(e, &temp))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .map_err(|e| context(e, &temp))?;
    rename_durably(&temp, path)
}

/// A hidden name beside `path` for writing it, its own to this call (a time-ordered random
/// id), so that receivers sharing a directory, on one host or several (desks of a cluster,
/// each perhaps process 1 of its container), never write into each other's temporaries.
pub fn temporary(path: &Path) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let id = uuid::Uuid::now_v7().simple();
    path.with_file_name(format!(".{name}.{id}.partial"))
}

/// Renames a synced file into place and syncs the directory, so the name survives power loss.
pub fn rename_durably(from: &Path, to: &Path) -> io::Result<()> {
    let context =
        |e: io::Error, p: &Path| io::Error::new(e.kind(), format!("{}: {e}", p.display()));
    fs::rename(from, to).map_err(|e| context(e, to))?;
    if let Some(dir) = to.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| context(e, dir))?;
    }
    Ok(())
}
