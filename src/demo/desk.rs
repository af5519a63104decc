//! The precinct's desk in the demo: `alertclip-desk`, a program of its own (the box carries
//! no web stack), set up beside the demo's broker with a throw-away account and the demo
//! store enrolled, so that the demo ends on a console URL with its alert on it.
//!
//! The desk says how it is doing the way it tells systemd (`READY=1`, `STATUS=...` on
//! `NOTIFY_SOCKET`): the demo listens on a socket of its own for when it serves, when it
//! receives, and when it has recorded the demo's clip.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::UnixDatagram;
use uuid::Uuid;

/// The throw-away account the demo signs in with.
pub const USER: &str = "demo";

/// A desk the demo started; stopped when dropped.
pub struct DemoDesk {
    child: Child,
    notices: UnixDatagram,
    socket: PathBuf,
    log: PathBuf,
    /// The console, `https://127.0.0.1:<port>/`.
    pub url: String,
    /// [`USER`]'s password.
    pub password: String,
}

/// The store the demo box speaks for, as the desk enrols it.
pub struct DemoSite<'a> {
    /// Its `site.id`.
    pub id: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Its address.
    pub address: &'a str,
    /// The box's public key file.
    pub key: &'a Path,
}

impl DemoDesk {
    /// The desk program: `$ALERTCLIP_DESK`, else `alertclip-desk` beside this program (where
    /// cargo builds both), else on the `PATH` (the Debian package).
    pub fn program() -> Option<PathBuf> {
        if let Some(path) = std::env::var_os("ALERTCLIP_DESK") {
            return Some(PathBuf::from(path));
        }
        let beside = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join("alertclip-desk")));
        let on_path = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("alertclip-desk"))
                .find(|p| p.is_file())
        });
        beside.filter(|p| p.is_file()).or(on_path)
    }

    /// Sets up a desk under `dir` (emptied first: it is the demo's), receiving from `broker`
    /// with `site` enrolled, starts it, and waits until it serves and receives.
    pub async fn start(
        program: &Path,
        dir: &Path,
        broker: &str,
        site: &DemoSite<'_>,
    ) -> anyhow::Result<DemoDesk> {
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut secret = [0u8; 12];
        getrandom::fill(&mut secret)
            .map_err(|e| anyhow::anyhow!("no randomness for the demo's password: {e}"))?;
        let password = hex::encode(secret);
        let password_file = dir.join("demo.password");
        std::fs::write(&password_file, &password)?;
        std::fs::set_permissions(
            &password_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )?;
        let config = dir.join("desk.toml");
        let run = |what: &str, args: &[&std::ffi::OsStr]| -> anyhow::Result<()> {
            let done = Command::new(program)
                .args(args)
                .output()
                .with_context(|| format!("running {}", program.display()))?;
            if !done.status.success() {
                bail!(
                    "alertclip-desk {what} failed: {}",
                    String::from_utf8_lossy(&done.stderr).trim()
                );
            }
            Ok(())
        };
        run(
            "init",
            &[
                "init".as_ref(),
                "--dir".as_ref(),
                dir.as_os_str(),
                "--broker".as_ref(),
                broker.as_ref(),
                "--listen".as_ref(),
                "127.0.0.1:0".as_ref(),
                "--host".as_ref(),
                "127.0.0.1".as_ref(),
                "--admin".as_ref(),
                USER.as_ref(),
                "--password-file".as_ref(),
                password_file.as_os_str(),
            ],
        )?;
        run(
            "site add",
            &[
                "site".as_ref(),
                "add".as_ref(),
                "--config".as_ref(),
                config.as_os_str(),
                "--id".as_ref(),
                site.id.as_ref(),
                "--name".as_ref(),
                site.name.as_ref(),
                "--address".as_ref(),
                site.address.as_ref(),
                "--key".as_ref(),
                site.key.as_os_str(),
            ],
        )?;

        // A socket path stays short wherever the demo's directory is.
        let socket =
            std::env::temp_dir().join(format!("alertclip-demo-desk-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&socket);
        let notices =
            UnixDatagram::bind(&socket).with_context(|| format!("binding {}", socket.display()))?;
        let log = dir.join("desk.log");
        let output = std::fs::File::create(&log)?;
        let child = Command::new(program)
            .args(["serve".as_ref(), "--config".as_ref(), config.as_os_str()])
            .env("NOTIFY_SOCKET", &socket)
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()
            .with_context(|| format!("starting {} serve", program.display()))?;
        let mut desk = DemoDesk {
            child,
            notices,
            socket,
            log,
            url: String::new(),
            password,
        };
        let (mut url, mut receiving) = (None, false);
        while url.is_none() || !receiving {
            let status = desk.next_status(Duration::from_secs(30)).await?;
            if let Some(rest) = status.strip_prefix("serving ") {
                url = rest.split(';').next().map(str::to_owned);
            }
            receiving |= status.starts_with("receiving from");
        }
        desk.url = url.unwrap_or_default();
        Ok(desk)
    }

    /// Waits until the desk has recorded `camera`'s clip of `event`.
    pub async fn wait_for_clip(&mut self, event: Uuid, camera: &str) -> anyhow::Result<()> {
        let recorded = format!("clip for event {event} ");
        let camera = format!("camera {camera}");
        loop {
            let status = self.next_status(Duration::from_secs(60)).await?;
            if status.contains(&recorded) && status.ends_with(&camera) {
                return Ok(());
            }
        }
    }

    /// The desk's next `STATUS=`, failing if it stopped or said nothing for `patience`.
    async fn next_status(&mut self, patience: Duration) -> anyhow::Result<String> {
        let mut buffer = vec![0u8; 4096];
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            if let Some(exit) = self.child.try_wait()? {
                bail!("the desk stopped ({exit}); its log: {}", self.log.display());
            }
            // Looked at again each second, for a desk that stopped without a word.
            let Ok(got) =
                tokio::time::timeout(Duration::from_secs(1), self.notices.recv(&mut buffer)).await
            else {
                if tokio::time::Instant::now() >= deadline {
                    bail!(
                        "the desk did not get there in time; its log: {}",
                        self.log.display()
                    );
                }
                continue;
            };
            let text = String::from_utf8_lossy(&buffer[..got?]).into_owned();
            if let Some(status) = text.lines().find_map(|l| l.strip_prefix("STATUS=")) {
                return Ok(status.to_owned());
            }
        }
    }
}

impl Drop for DemoDesk {
    fn drop(&mut self) {
        // SIGTERM: the desk finishes its requests and records what it received.
        crate::sys::terminate(&self.child);
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}
