//! A real mosquitto for tests, in a temporary directory (see `alertclip::localbroker`).

use std::path::PathBuf;

use alertclip::localbroker::LocalBroker;

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
