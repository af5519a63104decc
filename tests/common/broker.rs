//! A real mosquitto for tests, in a temporary directory (see `alertclip::demo::localbroker`).

use std::path::PathBuf;

use alertclip::demo::localbroker::LocalBroker;

pub struct Broker {
    pub port: u16,
    inner: LocalBroker,
    _dir: tempfile::TempDir,
}

impl Broker {
    pub fn start(extra: &str) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let inner = LocalBroker::start(dir.path(), extra).unwrap_or_else(|e| panic!("{e}"));
        Broker {
            port: inner.port(),
            inner,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        self.inner.url()
    }

    pub fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        self.inner.file(name, contents).unwrap()
    }

    pub fn restart(&mut self) {
        self.inner.restart().unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn stop(&mut self) {
        self.inner.stop();
    }

    pub fn reconfigure(&mut self, extra: &str) {
        self.inner
            .reconfigure(extra)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Publishes `payload` on `topic` at QoS 1 with mosquitto_pub, as another client would, with
/// `extra` arguments (`-r` to retain, TLS and login options ...).
pub fn mosquitto_pub(port: u16, topic: &str, payload: &str, extra: &[&str]) {
    let status = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", topic, "-m", payload])
        .args(extra)
        .status()
        .expect("mosquitto_pub runs");
    assert!(status.success(), "mosquitto_pub failed");
}
