//! A throwaway PostgreSQL server for tests and benchmarks: Debian's `postgresql` binaries,
//! `initdb` into a temporary directory and `pg_ctl` on a free loopback port, stopped and
//! deleted when dropped. PostgreSQL refuses to run as root, so as root it runs as the
//! `postgres` account the package creates (or `nobody`).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A running scratch server.
pub struct Scratch {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    user: Option<(u32, u32)>,
    next: std::sync::atomic::AtomicU32,
}

/// Why a scratch server cannot start.
#[derive(Debug, thiserror::Error)]
#[error("scratch PostgreSQL: {0}")]
pub struct ScratchError(String);

/// The directory holding `initdb`, `pg_ctl` and `postgres`: the newest of Debian's
/// `/usr/lib/postgresql/<version>/bin`.
fn binaries() -> Result<PathBuf, ScratchError> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| {
            ScratchError(format!(
                "/usr/lib/postgresql: {e}: install Debian's postgresql package (scripts/setup.sh --test does)"
            ))
        })?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(|| {
        ScratchError("no /usr/lib/postgresql/<version>/bin/initdb: install postgresql".into())
    })
}

/// The account a server started by root runs as: `postgres`, or else `nobody`.
fn unprivileged() -> Option<(u32, u32)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let root = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0");
    if !root {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let account = |name: &str| {
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&name))
                .then(|| Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?)))
                .flatten()
        })
    };
    account("postgres").or_else(|| account("nobody"))
}

fn run(command: &mut Command, what: &str) -> Result<Output, ScratchError> {
    let out = command
        .output()
        .map_err(|e| ScratchError(format!("{what}: {e}")))?;
    if !out.status.success() {
        return Err(ScratchError(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(out)
}

impl Scratch {
    /// Creates a cluster (trust authentication, user `alertclip`, no fsync: it is thrown
    /// away) and starts it, returning once it accepts connections.
    pub fn start() -> Result<Scratch, ScratchError> {
        Scratch::start_with(false)
    }

    /// The same, but committing to disk as a production server does, for benchmarks whose
    /// figures must hold there.
    pub fn start_durable() -> Result<Scratch, ScratchError> {
        Scratch::start_with(true)
    }

    fn start_with(durable: bool) -> Result<Scratch, ScratchError> {
        let bin = binaries()?;
        let dir = tempfile::Builder::new()
            .prefix("alertclip-pg")
            .tempdir()
            .map_err(|e| ScratchError(format!("temporary directory: {e}")))?;
        let user = unprivileged();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| ScratchError(format!("a free port: {e}")))?
            .port();
        let scratch = Scratch {
            bin,
            dir,
            port,
            user,
            next: Default::default(),
        };
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(scratch.dir.path(), Some(uid), Some(gid))
                .map_err(|e| ScratchError(format!("{}: {e}", scratch.dir.path().display())))?;
        }
        let data = scratch.data();
        run(
            scratch
                .command("initdb")
                .args([
                    "-U",
                    "alertclip",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "-D",
                ])
                .arg(&data),
            "initdb",
        )?;
        let mut options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {}",
            scratch.dir.path().display()
        );
        if !durable {
            options.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        run(
            scratch
                .command("pg_ctl")
                .args(["-w", "-t", "60", "-D"])
                .arg(&data)
                .args(["-l"])
                .arg(scratch.dir.path().join("log"))
                .args(["-o", &options, "start"]),
            "pg_ctl start",
        )?;
        Ok(scratch)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command.env("LC_ALL", "C.UTF-8");
        if let Some((uid, gid)) = self.user {
            command.uid(uid).gid(gid);
        }
        command
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of the `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://alertclip@127.0.0.1:{}/postgres", self.port)
    }

    /// A new empty database of its own, and its URL.
    pub fn database(&self) -> Result<String, ScratchError> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("desk{n}");
        run(
            self.command("createdb")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "alertclip",
                ])
                .arg(&name),
            "createdb",
        )?;
        Ok(format!(
            "postgres://alertclip@127.0.0.1:{}/{name}",
            self.port
        ))
    }

    /// Its log, for a test's failure message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Where it keeps its files.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-w", "-D"])
            .arg(self.data())
            .args(["-m", "immediate", "stop"])
            .output();
    }
}
