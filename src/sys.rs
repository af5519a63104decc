//! What the box asks of the operating system beyond std: durable file writes, free space,
//! the kernel's clock synchronisation state, and user and group ids. Every `unsafe` block of
//! the crate is here, each with the reason it is sound.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` durably: a hidden temporary, fsync, rename, fsync of the directory.
/// A crash leaves the old file or the new one, never half of either.
pub fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let temp = hidden_temp(path);
    let mut file = File::create(&temp).map_err(|e| annotate(e, &temp))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .map_err(|e| annotate(e, &temp))?;
    rename_durably(&temp, path)
}

/// Renames a synced file into place and syncs the directory, so the name survives power loss.
pub fn rename_durably(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to).map_err(|e| annotate(e, to))?;
    if let Some(dir) = to.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| annotate(e, dir))?;
    }
    Ok(())
}

/// The hidden temporary a durable write goes through: `.<name>.partial` beside `path`. Its
/// leading `.` is what tells every reader of a directory to skip, and clean up, a write that
/// a crash interrupted.
pub fn hidden_temp(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.partial"))
}

/// Adds the path to an I/O error, which otherwise says only "No such file or directory".
pub fn annotate(error: io::Error, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

/// Free and total bytes of the file system holding `path`, as an unprivileged writer sees
/// them.
pub fn free_space(path: &Path) -> io::Result<(u64, u64)> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: statvfs reads the C string and writes into the zeroed struct it is given.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut stats) } != 0 {
        return Err(annotate(io::Error::last_os_error(), path));
    }
    let block = stats.f_frsize as u64;
    Ok((stats.f_bavail as u64 * block, stats.f_blocks as u64 * block))
}

/// The kernel's view of the system clock: whether it is synchronised (`None` when it cannot
/// be asked) and its estimated error in microseconds.
pub fn clock_state() -> (Option<bool>, i64) {
    // SAFETY: adjtimex with `modes == 0` only reads the kernel's clock state into the zeroed
    // struct it is given.
    let mut state: libc::timex = unsafe { std::mem::zeroed() };
    let result = unsafe { libc::adjtimex(&mut state) };
    let synchronized = (result != -1)
        .then_some(result != libc::TIME_ERROR && state.status & libc::STA_UNSYNC == 0);
    (synchronized, state.esterror as i64)
}

/// Whether this process runs as root.
pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The id of the group `name`, when it exists.
pub fn group_id(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    // SAFETY: getgrnam returns a pointer to static storage or null; only gr_gid is read, at
    // once, before any other call could reuse that storage.
    let group = unsafe { libc::getgrnam(name.as_ptr()) };
    (!group.is_null()).then(|| unsafe { (*group).gr_gid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_is_read_and_a_missing_directory_named() {
        let (free, total) = free_space(Path::new("/")).unwrap();
        assert!(total > 0 && free <= total);
        let error = free_space(Path::new("/nonexistent/dir")).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/dir"), "{error}");
    }

    #[test]
    fn durable_writes_leave_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_durably(&path, b"{}").unwrap();
        write_durably(&path, b"[]").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"[]");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(hidden_temp(&path), dir.path().join(".a.json.partial"));
    }

    #[test]
    fn the_root_group_exists() {
        assert_eq!(group_id("root"), Some(0));
        assert_eq!(group_id("no-such-group-alertclip"), None);
    }
}
