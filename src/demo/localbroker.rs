//! A mosquitto on a free loopback port, for the demo, the tests and the benchmark: started with
//! a configuration written into a directory of the caller's, stopped and started again on the
//! same port, killed when dropped.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Why mosquitto could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LocalBrokerError {
    /// The binary is not installed.
    #[error("mosquitto is not installed (scripts/setup.sh installs it): {0}")]
    Missing(std::io::Error),
    /// It did not come up.
    #[error("mosquitto did not start on port {port}: {log}")]
    NotStarted {
        /// The port it was given.
        port: u16,
        /// What it logged.
        log: String,
    },
    /// The directory could not be written.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A running mosquitto.
pub struct LocalBroker {
    port: u16,
    dir: PathBuf,
    config: PathBuf,
    child: Option<Child>,
}

impl LocalBroker {
    /// Starts mosquitto on 127.0.0.1 at a free port, keeping its configuration, log and
    /// persistence in `dir`, with `extra` appended to its listener (TLS files,
    /// `max_packet_size`, `password_file` ...). Anonymous access is allowed unless `extra`
    /// says otherwise. Sessions persist across [`LocalBroker::restart`], as on a real broker.
    /// Started as root, it stays root (so it can read the files it is given). Its sockets use
    /// TCP_NODELAY, as production brokers' do: otherwise the broker holds back acknowledgements
    /// behind the client's delayed ACKs.
    pub fn start(dir: &Path, extra: &str) -> Result<LocalBroker, LocalBrokerError> {
        std::fs::create_dir_all(dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut broker = LocalBroker {
            port,
            dir: dir.to_owned(),
            config: dir.join("mosquitto.conf"),
            child: None,
        };
        broker.reconfigure(extra)?;
        Ok(broker)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Writes a file into its directory (certificates, password files, ACLs).
    pub fn file(&self, name: &str, contents: &[u8]) -> std::io::Result<PathBuf> {
        let path = self.dir.join(name);
        std::fs::write(&path, contents)?;
        Ok(path)
    }

    /// Restarts it with `extra` in place of the listener options it had.
    pub fn reconfigure(&mut self, extra: &str) -> Result<(), LocalBrokerError> {
        let allow = if extra.contains("allow_anonymous") {
            ""
        } else {
            "allow_anonymous true\n"
        };
        let user = if running_as_root() { "user root\n" } else { "" };
        std::fs::write(
            &self.config,
            format!(
                "{user}persistence true\npersistence_location {}/\nlog_dest stdout\nlog_type error\nlog_type warning\n\
                 set_tcp_nodelay true\nper_listener_settings false\n{allow}listener {} 127.0.0.1\n{extra}\n",
                self.dir.display(),
                self.port
            ),
        )?;
        self.restart()
    }

    /// Starts it (again), and waits until it accepts connections.
    pub fn restart(&mut self) -> Result<(), LocalBrokerError> {
        self.stop();
        let log_path = self.dir.join("mosquitto.log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.config)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(LocalBrokerError::Missing)?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some());
            if exited || Instant::now() > deadline {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                self.stop();
                return Err(LocalBrokerError::NotStarted {
                    port: self.port,
                    log,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops it as an administrator would (SIGTERM, so sessions are saved), and waits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for LocalBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn running_as_root() -> bool {
    crate::sys::running_as_root()
}
