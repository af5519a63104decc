//! The commands a box has already taken, kept on disk so that a replay is refused across
//! restarts too.
//!
//! A command older than `[desk] max_age` is refused whatever it is, so only the ids of
//! commands younger than that need remembering: the file stays small however long the box
//! runs, and a command can never be applied twice.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use crate::sys::write_durably;

/// More than this many commands taken within the window is a flood of what a desk signed:
/// more are not taken (none is forgotten early, or it could be applied again).
const MOST: usize = 10_000;

/// The ids of the commands taken within the window, and when each was issued.
#[derive(Debug)]
pub struct Seen {
    path: PathBuf,
    /// How long an id is remembered: the window plus the skew allowed ahead of it.
    keep: Duration,
    ids: HashMap<Uuid, u64>,
}

impl Seen {
    /// The record at `path` (none yet is an empty one), remembering ids for `keep`. A record
    /// that cannot be read is started afresh, with a warning: the age check still refuses
    /// any command older than the window.
    pub fn open(path: &Path, keep: Duration) -> Seen {
        let ids = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                tracing::warn!(file = %path.display(), %error, "the record of commands taken is unreadable; starting it again");
                HashMap::new()
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => HashMap::new(),
            Err(error) => {
                tracing::warn!(file = %path.display(), %error, "cannot read the record of commands taken; starting it again");
                HashMap::new()
            }
        };
        Seen {
            path: path.to_owned(),
            keep,
            ids,
        }
    }

    /// Whether `id` was taken.
    pub fn contains(&self, id: Uuid) -> bool {
        self.ids.contains_key(&id)
    }

    /// Records `id`, issued at `issued`, forgetting what is older than the window at `now`,
    /// and writes the record durably. Blocks on the disk.
    pub fn insert(&mut self, id: Uuid, issued: SystemTime, now: SystemTime) -> io::Result<()> {
        let ms =
            |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        let oldest = ms(now).saturating_sub(self.keep.as_millis() as u64);
        self.ids.retain(|_, issued| *issued >= oldest);
        if self.ids.len() >= MOST {
            return Err(io::Error::other(format!(
                "{MOST} commands were taken within [desk] max_age, the most the box remembers"
            )));
        }
        self.ids.insert(id, ms(issued));
        let written = serde_json::to_vec(&self.ids)
            .map_err(io::Error::other)
            .and_then(|json| write_durably(&self.path, &json));
        if written.is_err() {
            // Not taken after all: the command may come again once the disk is fixed.
            self.ids.remove(&id);
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_command_is_remembered_across_opening_until_it_is_out_of_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commands.json");
        let keep = Duration::from_secs(600);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let (old, new) = (Uuid::now_v7(), Uuid::now_v7());
        let mut seen = Seen::open(&path, keep);
        seen.insert(old, t0, t0).unwrap();
        let mut seen = Seen::open(&path, keep);
        assert!(seen.contains(old));
        seen.insert(new, t0 + keep, t0 + keep + Duration::from_secs(1))
            .unwrap();
        let seen = Seen::open(&path, keep);
        assert!(seen.contains(new));
        assert!(
            !seen.contains(old),
            "older than the window: refused by age instead"
        );
    }

    #[test]
    fn an_unreadable_record_starts_again_and_is_written_anew() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commands.json");
        std::fs::write(&path, b"{not json").unwrap();
        let mut seen = Seen::open(&path, Duration::from_secs(60));
        assert!(seen.ids.is_empty());
        let (id, now) = (Uuid::now_v7(), SystemTime::now());
        seen.insert(id, now, now).unwrap();
        assert!(Seen::open(&path, Duration::from_secs(60)).contains(id));
    }

    #[test]
    fn a_full_record_takes_no_more_and_forgets_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commands.json");
        let mut seen = Seen::open(&path, Duration::from_secs(600));
        let now = SystemTime::now();
        let ms = now.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let first = Uuid::now_v7();
        seen.ids.insert(first, ms);
        while seen.ids.len() < MOST {
            seen.ids.insert(Uuid::now_v7(), ms);
        }
        let one_more = Uuid::now_v7();
        let error = seen.insert(one_more, now, now).unwrap_err();
        assert!(
            error.to_string().contains("the most the box remembers"),
            "{error}"
        );
        assert!(seen.contains(first) && !seen.contains(one_more));
    }

    #[test]
    fn a_command_not_recorded_is_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the record's file should be: the write fails.
        let path = dir.path().join("commands.json");
        std::fs::create_dir(&path).unwrap();
        let mut seen = Seen::open(&path, Duration::from_secs(60));
        let (id, now) = (Uuid::now_v7(), SystemTime::now());
        assert!(seen.insert(id, now, now).is_err());
        assert!(!seen.contains(id), "it may come again");
    }
}
