//! A real mosquitto for tests: started on a free loopback port with a configuration written
//! by the test, stopped and started again on the same port, killed on drop.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub struct Broker {
    pub port: u16,
    pub dir: tempfile::TempDir,
    config: PathBuf,
    child: Option<Child>,
}

impl Broker {
    /// Starts mosquitto with `extra` appended to its listener's configuration (TLS files,
    /// `max_packet_size`, `password_file` ...). Anonymous access is allowed unless `extra` says
    /// otherwise. Sessions persist across [`Broker::restart`], as on a production broker.
    pub fn start(extra: &str) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("mosquitto.conf");
        let mut broker = Broker {
            port,
            dir,
            config,
            child: None,
        };
        broker.write_config(extra);
        broker.restart();
        broker
    }

    fn write_config(&self, extra: &str) {
        let allow = if extra.contains("allow_anonymous") {
            ""
        } else {
            "allow_anonymous true\n"
        };
        std::fs::write(
            &self.config,
            format!(
                "user root\npersistence true\npersistence_location {}/\nlog_dest stdout\nlog_type error\nlog_type warning\n\
                 per_listener_settings false\n{allow}listener {} 127.0.0.1\n{extra}\n",
                self.dir.path().display(),
                self.port
            ),
        )
        .unwrap();
    }

    /// Writes a file into the broker's directory (certificates, password files, ACLs).
    pub fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Starts it (again), and waits until it accepts connections.
    pub fn restart(&mut self) {
        self.stop();
        let log = std::fs::File::create(self.dir.path().join("mosquitto.log")).unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("mosquitto runs (scripts/setup.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not start on port {}: {}\nconfiguration:\n{}",
                self.port,
                std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default(),
                std::fs::read_to_string(&self.config).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it as an administrator would (SIGTERM: sessions are saved), and waits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Restarts it with a different configuration (TLS, ACL ...).
    pub fn reconfigure(&mut self, extra: &str) {
        self.write_config(extra);
        self.restart();
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
