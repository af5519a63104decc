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
    let mut args = vec!["-m", payload];
    args.extend_from_slice(extra);
    mosquitto_pub_with(port, topic, &args);
}

/// Publishes on `topic` at QoS 1 with mosquitto_pub, the message and options in `args`
/// (`-n -r`: an empty retained message, which clears the one retained).
pub fn mosquitto_pub_with(port: u16, topic: &str, args: &[&str]) {
    let status = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", topic])
        .args(args)
        .status()
        .expect("mosquitto_pub runs");
    assert!(status.success(), "mosquitto_pub failed");
}

/// An independent subscriber that records the topics of everything the broker delivers
/// under a filter, in the broker's order: what a device published, and in what order, as
/// any client sees it. A persistent session, so it keeps its place across broker restarts.
pub struct TopicRecorder {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    /// The topics seen so far.
    pub topics: Vec<String>,
}

impl TopicRecorder {
    /// Subscribes to `filter` and returns once subscribed: a probe published under it has come
    /// back.
    pub async fn start(port: u16, filter: &str, probe_topic: &str) -> TopicRecorder {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-c"])
            .args(["-i", &format!("recorder-{}", uuid::Uuid::now_v7())])
            .args(["-t", filter, "-F", "%t"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("mosquitto_sub runs");
        let stdout = child.stdout.take().expect("piped");
        let mut recorder = TopicRecorder {
            child,
            lines: tokio::io::BufReader::new(stdout).lines(),
            topics: Vec::new(),
        };
        loop {
            mosquitto_pub(port, probe_topic, "probe", &[]);
            let back = tokio::time::timeout(std::time::Duration::from_secs(2), async {
                while recorder.next().await != probe_topic {}
            })
            .await;
            if back.is_ok() {
                recorder.topics.clear();
                return recorder;
            }
        }
    }

    /// The next topic delivered, failing the test after two minutes.
    pub async fn next(&mut self) -> String {
        let line =
            tokio::time::timeout(std::time::Duration::from_secs(120), self.lines.next_line())
                .await
                .expect("a message for the recorder in time")
                .expect("mosquitto_sub output readable")
                .expect("mosquitto_sub still running");
        self.topics.push(line.clone());
        line
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
