//! `alertclip receive` as an officer's desk runs it: a separate process, read line by line.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

pub struct ReceiverProcess {
    pub out: tempfile::TempDir,
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// Every report seen so far.
    pub seen: Vec<Value>,
    /// Reports read but not yet handed out by `next` or `wait_for`: alerts and media come on
    /// sessions of their own, so a clip's snapshot may be printed before its alert.
    pending: std::collections::VecDeque<Value>,
}

impl ReceiverProcess {
    /// Starts `alertclip receive --json` with `args` (broker, TLS ...), and waits until both
    /// its sessions are subscribed: a retained probe status (for alerts' session) and a
    /// retained probe snapshot (for media's) are published with mosquitto_pub and must come
    /// back. What the probes print is not kept in `seen`.
    /// Given no `--keys`, it trusts each site's first key, as a precinct does once it has
    /// registered a box, so that a box's clips verify.
    pub async fn start(broker_port: u16, args: &[&str], probe: &[&str]) -> ReceiverProcess {
        let out = tempfile::tempdir().unwrap();
        let trust = (!args
            .iter()
            .any(|a| *a == "--keys" || *a == "--trust-on-first-use"))
        .then_some("--trust-on-first-use");
        let mut child = super::alertclip_command_async()
            .arg("receive")
            .args(args)
            .args(trust)
            .arg("--client-id")
            .arg(format!("receiver-{}", uuid::Uuid::now_v7()))
            .arg("--out")
            .arg(out.path())
            .arg("--json")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut receiver = ReceiverProcess {
            out,
            child,
            lines,
            seen: Vec::new(),
            pending: Default::default(),
        };
        let state = format!("probe-{}", uuid::Uuid::now_v7());
        let payload = format!("{{\"schema\":\"alertclip.status.v1\",\"state\":\"{state}\"}}");
        // The probe goes where a box of the receiver's layout would publish its status.
        let template = args
            .iter()
            .position(|a| *a == "--topic-prefix")
            .and_then(|i| args.get(i + 1))
            .copied()
            .unwrap_or(alertclip_wire::topics::DEFAULT_PREFIX);
        let site = args
            .iter()
            .position(|a| *a == "--site")
            .and_then(|i| args.get(i + 1))
            .copied()
            .unwrap_or("probe");
        let prefix = template.replace("{site}", site);
        let topic = format!("{prefix}/status");
        let event = uuid::Uuid::now_v7().to_string();
        let snapshot = format!("{prefix}/events/{event}/snapshot/probe");
        let (mut status_seen, mut snapshot_seen) = (false, false);
        let mut extra = vec!["-r"];
        extra.extend_from_slice(probe);
        while !(status_seen && snapshot_seen) {
            if !status_seen {
                super::broker::mosquitto_pub(broker_port, &topic, &payload, &extra);
            }
            if !snapshot_seen {
                super::broker::mosquitto_pub(broker_port, &snapshot, "probe", &extra);
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while !(status_seen && snapshot_seen) {
                    let line = receiver.read().await;
                    status_seen |= line["type"] == "status" && line["state"] == state.as_str();
                    snapshot_seen |=
                        line["type"] == "snapshot" && line["event_id"] == event.as_str();
                }
            })
            .await;
        }
        // The retained snapshot is cleared, so that no later subscriber gets it.
        let mut clear = vec!["-r", "-n"];
        clear.extend_from_slice(probe);
        super::broker::mosquitto_pub_with(broker_port, &snapshot, &clear);
        receiver.seen.clear();
        receiver.pending.clear();
        receiver
    }

    /// The next report not handed out yet, failing the test after a minute and a half (more
    /// under emulation).
    pub async fn next(&mut self) -> Value {
        match self.pending.pop_front() {
            Some(value) => value,
            None => self.read().await,
        }
    }

    /// The next report the receiver prints.
    async fn read(&mut self) -> Value {
        let line = tokio::time::timeout(
            super::patience(Duration::from_secs(90)),
            self.lines.next_line(),
        )
        .await
        .expect("a report from the receiver in time")
        .expect("receiver output readable")
        .expect("receiver still running");
        let value: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("receiver printed non-JSON {line:?}: {e}"));
        self.seen.push(value.clone());
        value
    }

    /// Waits for a report the predicate accepts that was not handed out yet (one read
    /// already, or the next such to come), keeping the others for later calls.
    pub async fn wait_for(
        &mut self,
        what: &str,
        mut predicate: impl FnMut(&Value) -> bool,
    ) -> Value {
        if let Some(i) = self.pending.iter().position(&mut predicate) {
            return self.pending.remove(i).expect("a position within pending");
        }
        let deadline = tokio::time::Instant::now() + super::patience(Duration::from_secs(120));
        loop {
            let value = tokio::time::timeout_at(deadline, self.read())
                .await
                .unwrap_or_else(|_| panic!("no {what} from the receiver; saw {:?}", self.seen));
            if predicate(&value) {
                return value;
            }
            self.pending.push_back(value);
        }
    }

    /// A report the predicate accepts: one seen already, or the next such to come.
    pub async fn seen_or_wait(&mut self, what: &str, predicate: impl Fn(&Value) -> bool) -> Value {
        match self.seen.iter().find(|v| predicate(v)) {
            Some(found) => found.clone(),
            None => self.wait_for(what, predicate).await,
        }
    }

    /// Whether any report seen so far is one the predicate accepts.
    pub fn seen_any(&self, predicate: impl Fn(&Value) -> bool) -> bool {
        self.seen.iter().any(predicate)
    }

    pub fn dir(&self) -> &Path {
        self.out.path()
    }

    pub fn path(value: &Value) -> PathBuf {
        PathBuf::from(value["path"].as_str().expect("a path"))
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
