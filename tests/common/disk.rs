//! Small file systems that fill up: a tmpfs mounted for one test (as root), and a filler that
//! takes every byte or every inode left on it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted on a temporary directory for one test, unmounted when dropped.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs with `options` (`size=16m`, `nr_inodes=64` ...), or says why it cannot
    /// (not root, no mount) and returns `None`, for the test to skip with that reason printed.
    pub fn mount(test: &str, options: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir.path())
            .status();
        match status {
            Ok(s) if s.success() => Some(Tmpfs { dir }),
            other => {
                eprintln!(
                    "skipping {test}: cannot mount a tmpfs ({other:?}); it needs root and mount(8)"
                );
                None
            }
        }
    }

    /// Its mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Free bytes on the file system holding `path`, as an unprivileged writer sees them.
pub fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("stat")
        .args(["-f", "-c", "%a %S"])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace().map(|n| n.parse::<u64>().unwrap());
    parts.next().unwrap() * parts.next().unwrap()
}

/// Takes every byte left on `dir`'s file system with one file of zeros; returns it.
pub fn fill_bytes(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 << 10];
    let mut size = block.len();
    // Down to single bytes, so not even a small file fits afterwards.
    while size > 0 {
        match file.write(&block[..size]) {
            Ok(0) | Err(_) => size /= 2,
            Ok(_) => {}
        }
    }
    let _ = file.sync_all();
    path
}

/// Takes every inode left on `dir`'s file system with empty files; returns their directory.
pub fn fill_inodes(dir: &Path) -> PathBuf {
    let fillers = dir.join("fillers");
    std::fs::create_dir(&fillers).unwrap();
    for n in 0.. {
        if std::fs::File::create(fillers.join(n.to_string())).is_err() {
            break;
        }
    }
    fillers
}
