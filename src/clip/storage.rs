//! The clip directory on disk: where each event's files go, and retention.
//!
//! Layout: `<dir>/<event_id>/<camera>.mp4` beside `<camera>.json` (the sidecar) and
//! `<camera>.manifest.json` (written last, once the clip is spooled). Event ids are UUIDv7, so
//! directory names sort by time. Files are written under a hidden temporary name (a leading
//! `.`) and renamed once synced, so a visible name is always a whole file.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::sys::annotate;

/// The clip directory.
#[derive(Debug, Clone)]
pub struct Storage {
    dir: PathBuf,
    max_bytes: u64,
}

impl Storage {
    /// Opens `dir` (creating it), keeping at most `max_bytes` of clips. Removes temporaries
    /// left by a crash: a half-written MP4 has no index and cannot be played.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Storage> {
        fs::create_dir_all(dir).map_err(|e| annotate(e, dir))?;
        let storage = Storage {
            dir: dir.to_owned(),
            max_bytes,
        };
        for event in storage.events()? {
            for entry in fs::read_dir(&event)?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') {
                    continue;
                }
                // A sealed clip whose sidecar is written was interrupted only before it was
                // renamed: put it in place (recovery then checks it against the sidecar).
                if let Some(mp4) = name
                    .strip_prefix('.')
                    .and_then(|n| n.strip_suffix(".partial"))
                    .filter(|n| n.ends_with(".mp4"))
                {
                    let (placed, sidecar) =
                        (event.join(mp4), event.join(mp4).with_extension("json"));
                    if sidecar.exists() && !placed.exists() {
                        match crate::sys::rename_durably(&entry.path(), &placed) {
                            Ok(()) => {
                                tracing::warn!(file = %placed.display(), "put in place a clip a crash left sealed but not renamed");
                                continue;
                            }
                            Err(error) => {
                                tracing::warn!(%error, "could not put a sealed clip in place")
                            }
                        }
                    }
                }
                tracing::warn!(file = %entry.path().display(), "removing a clip left unfinished by a crash");
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(storage)
    }

    /// The directory holding clips.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of one event, created if needed.
    pub fn event_dir(&self, event: Uuid) -> io::Result<PathBuf> {
        let dir = self.dir.join(event.to_string());
        fs::create_dir_all(&dir).map_err(|e| annotate(e, &dir))?;
        Ok(dir)
    }

    /// Event directories, oldest first.
    pub fn events(&self) -> io::Result<Vec<PathBuf>> {
        let mut events: Vec<PathBuf> = fs::read_dir(&self.dir)
            .map_err(|e| annotate(e, &self.dir))?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter(|e| Uuid::parse_str(&e.file_name().to_string_lossy()).is_ok())
            .map(|e| e.path())
            .collect();
        events.sort();
        Ok(events)
    }

    /// Deletes the oldest events until the clips fit in `max_bytes`. Events with a file
    /// still being written, and `keep`, are left alone. Returns the events deleted.
    pub fn prune(&self, keep: Uuid) -> io::Result<Vec<PathBuf>> {
        let events = self.events()?;
        let sizes: Vec<(PathBuf, u64, bool)> = events
            .into_iter()
            .map(|dir| {
                let mut bytes = 0;
                for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
                    bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
                }
                let busy = unfinished(&dir);
                (dir, bytes, busy)
            })
            .collect();
        let mut total: u64 = sizes.iter().map(|(_, b, _)| b).sum();
        let keep = keep.to_string();
        let mut deleted = Vec::new();
        for (dir, bytes, busy) in sizes {
            if total <= self.max_bytes {
                break;
            }
            if busy || dir.file_name().is_some_and(|n| n.to_string_lossy() == keep) {
                continue;
            }
            fs::remove_dir_all(&dir).map_err(|e| annotate(e, &dir))?;
            total -= bytes;
            deleted.push(dir);
        }
        Ok(deleted)
    }
}

impl Storage {
    /// Deletes the oldest event whose clips are no longer waiting for delivery (no file of it
    /// is pinned in the outbox, that is, has a second link) and none is being written, sparing
    /// `keep`. Returns it, or `None` when there is none.
    pub fn shed_oldest_unpinned(&self, keep: Uuid) -> io::Result<Option<PathBuf>> {
        use std::os::unix::fs::MetadataExt;
        let keep = keep.to_string();
        for dir in self.events()? {
            if dir.file_name().is_some_and(|n| n.to_string_lossy() == keep) {
                continue;
            }
            let pinned = fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| e.metadata().is_ok_and(|m| m.nlink() > 1));
            if !pinned && !unfinished(&dir) {
                fs::remove_dir_all(&dir).map_err(|e| annotate(e, &dir))?;
                return Ok(Some(dir));
            }
        }
        Ok(None)
    }
}

/// Whether an event still has work in it: a file being written (hidden), or a clip written
/// but not yet spooled (see [`unspooled`]), which the clip job or recovery is about to
/// complete. Such an event is never deleted.
fn unfinished(event: &Path) -> bool {
    let hidden = fs::read_dir(event)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with('.'));
    hidden || !unspooled(event).is_empty()
}

/// The sidecars in an event's directory whose clip has no manifest yet: written, but not yet
/// spooled (the manifest is written last). Sorted by name.
pub fn unspooled(event: &Path) -> Vec<PathBuf> {
    let mut names: Vec<String> = fs::read_dir(event)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
        .iter()
        .filter_map(|name| name.strip_suffix(".json").map(|camera| (name, camera)))
        .filter(|(_, camera)| !camera.starts_with('.') && !camera.ends_with(".manifest"))
        .filter(|(_, camera)| !names.contains(&format!("{camera}.manifest.json")))
        .map(|(name, _)| event.join(name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::write_durably;

    fn event(storage: &Storage, bytes: usize) -> Uuid {
        let id = Uuid::now_v7();
        let dir = storage.event_dir(id).unwrap();
        write_durably(&dir.join("cam.mp4"), &vec![0u8; bytes]).unwrap();
        id
    }

    #[test]
    fn prune_deletes_oldest_events_first_and_spares_busy_ones() {
        let root = tempfile::tempdir().unwrap();
        let storage = Storage::open(root.path(), 2_500).unwrap();
        let oldest = event(&storage, 1_000);
        let busy = event(&storage, 1_000);
        fs::write(
            storage.event_dir(busy).unwrap().join(".cam2.mp4.partial"),
            b"x",
        )
        .unwrap();
        let middle = event(&storage, 1_000);
        let newest = event(&storage, 1_000);
        let deleted = storage.prune(newest).unwrap();
        assert_eq!(
            deleted,
            vec![
                root.path().join(oldest.to_string()),
                root.path().join(middle.to_string())
            ]
        );
        assert!(root.path().join(busy.to_string()).exists());
        // A clip written but not yet spooled (sidecar, no manifest) is never given up either.
        let waiting = event(&storage, 1_000);
        write_durably(&storage.event_dir(waiting).unwrap().join("cam.json"), b"{}").unwrap();
        assert_eq!(storage.shed_oldest_unpinned(newest).unwrap(), None);
        assert!(root.path().join(waiting.to_string()).exists());
        assert!(
            root.path()
                .join(newest.to_string())
                .join("cam.mp4")
                .exists()
        );
    }

    #[test]
    fn open_removes_crash_leftovers_and_keeps_whole_files() {
        let root = tempfile::tempdir().unwrap();
        let storage = Storage::open(root.path(), u64::MAX).unwrap();
        let id = event(&storage, 10);
        let dir = storage.event_dir(id).unwrap();
        fs::write(dir.join(".other.mp4.partial"), b"half").unwrap();
        Storage::open(root.path(), u64::MAX).unwrap();
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["cam.mp4".to_owned()]);
    }

    #[test]
    fn errors_name_the_path() {
        let error = Storage::open(Path::new("/proc/alertclip-cannot-exist"), 1).unwrap_err();
        assert!(
            error.to_string().contains("/proc/alertclip-cannot-exist"),
            "{error}"
        );
    }
}
