//! What the box asks of the operating system beyond std: durable file writes, space held in
//! reserve for alerts, free space, the kernel's clock synchronisation state, and user and group
//! ids. Every `unsafe` block of the crate is here, each with the reason it is sound.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// Writes `bytes` to `path` durably: a hidden temporary, fsync, rename, fsync of the directory.
/// A crash leaves the old file or the new one, never half of either.
pub fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let temp = hidden_temp(path);
    let mut file = File::create(&temp).map_err(|e| annotate(e, &temp))?;
    let written = file
        .write_all(bytes)
        .and_then(|_| file.sync_all())
        .map_err(|e| annotate(e, &temp))
        .and_then(|_| rename_durably(&temp, path));
    if written.is_err() {
        // A half-written temporary takes space a full disk needs back.
        let _ = fs::remove_file(&temp);
    }
    written
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

/// Space held back on one file system for the alert path: a file of zeros (written, not
/// sparse, so its blocks are really taken) that gives its space up when a write that must not
/// fail finds the disk full. Clips and snapshots fill a disk; they never see this space, so a
/// full disk refuses video, never an alert. Given up space is taken back once the disk has
/// room again.
///
/// It also keeps a few file descriptors open, given up in the same way when a write finds the
/// process out of descriptors.
#[derive(Debug)]
pub struct Reserve {
    path: PathBuf,
    size: u64,
    held: Mutex<Held>,
}

#[derive(Debug)]
struct Held {
    file: Option<File>,
    bytes: u64,
    spare_fds: Vec<File>,
}

/// What one step of giving up space frees: a few alerts' worth, so the rest stays in reserve.
const RELEASE_STEP: u64 = 128 << 10;
/// Descriptors kept in reserve.
const SPARE_FDS: usize = 8;

impl Reserve {
    /// Holds `size` bytes at `path` (creating or growing the file as far as the disk allows;
    /// a disk already full holds less, and grows it later).
    pub fn hold(path: &Path, size: u64) -> Reserve {
        let reserve = Reserve {
            path: path.to_owned(),
            size,
            held: Mutex::new(Held {
                file: None,
                bytes: 0,
                spare_fds: Vec::new(),
            }),
        };
        reserve.replenish();
        reserve
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.held().bytes
    }

    /// Grows the reserve back to its size as far as the disk allows; cheap when it is whole.
    pub fn replenish(&self) {
        let mut held = self.held();
        while held.spare_fds.len() < SPARE_FDS {
            match File::open("/dev/null") {
                Ok(file) => held.spare_fds.push(file),
                Err(_) => break,
            }
        }
        if held.bytes >= self.size {
            return;
        }
        if held.file.is_none() {
            let opened = fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&self.path);
            match opened {
                Ok(file) => {
                    held.bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
                    held.file = Some(file);
                }
                Err(_) => return,
            }
        }
        let Held { file, bytes, .. } = &mut *held;
        let Some(file) = file.as_mut() else { return };
        if *bytes > self.size {
            if file.set_len(self.size).is_ok() {
                *bytes = self.size;
            }
            return;
        }
        let zeros = [0u8; 64 << 10];
        use std::io::Seek;
        if file.seek(io::SeekFrom::Start(*bytes)).is_err() {
            return;
        }
        while *bytes < self.size {
            let n = (self.size - *bytes).min(zeros.len() as u64) as usize;
            match file.write(&zeros[..n]) {
                Ok(0) | Err(_) => break,
                Ok(written) => *bytes += written as u64,
            }
        }
        // What the disk took is what is held: a partly written block is not.
        let _ = file.set_len(*bytes);
    }

    /// Gives up a step of space (and every spare descriptor, when `descriptors`): returns
    /// whether anything was given up.
    fn release(&self, descriptors: bool) -> bool {
        let mut held = self.held();
        if descriptors {
            let had = !held.spare_fds.is_empty();
            held.spare_fds.clear();
            return had;
        }
        let Held { file, bytes, .. } = &mut *held;
        let Some(file) = file.as_ref() else {
            return false;
        };
        if *bytes == 0 {
            return false;
        }
        let left = bytes.saturating_sub(RELEASE_STEP);
        if file.set_len(left).is_err() {
            return false;
        }
        // What the file holds now, synced or not.
        *bytes = left;
        let _ = file.sync_all();
        tracing::warn!(file = %self.path.display(), left, "the disk is full: gave up reserved space for an alert");
        true
    }

    /// Runs `write`, which must not fail for want of space: while it fails because the disk
    /// is full (or the process is out of descriptors), gives up reserved space (or descriptors)
    /// and runs it again.
    pub fn write<T>(&self, mut write: impl FnMut() -> io::Result<T>) -> io::Result<T> {
        loop {
            match write() {
                Err(error) if is_disk_full(&error) && self.release(false) => continue,
                Err(error) if is_out_of_descriptors(&error) && self.release(true) => continue,
                result => return result,
            }
        }
    }
}

/// Whether a write failed because the file system is full (or the user's quota spent).
pub fn is_disk_full(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || matches!(error.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// Whether a call failed because the process (or the system) has no file descriptor left.
pub fn is_out_of_descriptors(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
        || error.to_string().contains("Too many open files")
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

/// Raises the soft limit on open files to the hard one (the unit sets it; elsewhere the
/// default soft limit of 1,024 is easily reached by idle clients): returns the limit now.
pub fn raise_open_files_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads the struct it is given; raising the soft limit up to the
        // hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

/// Asks the kernel to wake readers of a TCP socket only once `bytes` have arrived (or the
/// connection ends): `SO_RCVLOWAT`. The relay sets it while a camera's video flows, so that a
/// stream of small RTP packets costs one wake-up per batch instead of one per packet.
pub fn set_receive_low_water(socket: &impl std::os::fd::AsRawFd, bytes: u32) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes.max(1)).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a pointer to a live c_int; an
    // fd that is not a socket is refused with an error, not undefined behaviour.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether this process runs as root.
pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Asks a child process to stop (SIGTERM), as systemd would.
pub fn terminate(child: &std::process::Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill has no memory preconditions; the pid is a child not yet reaped (the
        // caller holds its handle), so it cannot name another process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
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
