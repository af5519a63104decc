//! A real NATS cluster for tests and benchmarks: `nats-server` processes (Debian's
//! `nats-server`) on loopback ports, routed to each other, each with JetStream (which its
//! MQTT gateway keeps sessions and QoS 1 messages in, replicated) and an MQTT listener, all
//! in one temporary directory. Self-contained, so that a benchmark can include it by path.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a node may take to join the cluster and learn its JetStream leader.
const STARTING: Duration = Duration::from_secs(60);
/// How often a starting node's health is asked.
const ASKING: Duration = Duration::from_millis(100);

pub struct NatsCluster {
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

struct Node {
    mqtt_port: u16,
    child: Option<Child>,
}

impl NatsCluster {
    /// Starts `size` nodes with `authorization` (a nats-server `authorization { ... }` block,
    /// or nothing) and returns once every one says it is healthy (its monitoring port's
    /// `/healthz`: JetStream's leader known and it current), when MQTT clients can keep
    /// sessions on it. (Not every node logs the leader it learns.)
    pub fn start(size: usize, authorization: &str) -> NatsCluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // Held together, so that no two are the same; released just before the servers start.
        let listeners: Vec<std::net::TcpListener> = (0..size * 4)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().expect("a bound port").port())
            .collect();
        drop(listeners);
        let (client, route) = (&ports[..size], &ports[size..size * 2]);
        let (mqtt, monitor) = (&ports[size * 2..size * 3], &ports[size * 3..]);
        let routes: Vec<String> = route
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect();
        let mut nodes = Vec::new();
        for i in 0..size {
            let store = dir.path().join(format!("n{i}"));
            let config = dir.path().join(format!("n{i}.conf"));
            std::fs::write(
                &config,
                format!(
                    "server_name: n{i}\nlisten: 127.0.0.1:{}\nhttp: 127.0.0.1:{}\n\
                     jetstream {{ store_dir: \"{}\" }}\n\
                     cluster {{\n  name: alertclip\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n\
                     mqtt {{ listen: 127.0.0.1:{} }}\n{authorization}\n",
                    client[i],
                    monitor[i],
                    store.display(),
                    route[i],
                    routes.join(", "),
                    mqtt[i],
                ),
            )
            .expect("the node's config written");
            let mut child = Command::new("nats-server")
                .arg("-c")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("nats-server runs (Debian's nats-server package)");
            let stderr = child.stderr.take().expect("piped");
            let log = dir.path().join(format!("n{i}.log"));
            // Drained for the whole life of the node, so that logging never blocks it.
            std::thread::spawn(move || {
                let mut file = std::fs::File::create(&log).ok();
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(file) = &mut file {
                        let _ = writeln!(file, "{line}");
                    }
                }
            });
            nodes.push(Node {
                mqtt_port: mqtt[i],
                child: Some(child),
            });
        }
        let cluster = NatsCluster { dir, nodes };
        let deadline = Instant::now() + STARTING;
        for (i, port) in monitor.iter().enumerate() {
            while !healthy(*port) {
                if Instant::now() > deadline {
                    panic!(
                        "node n{i} of the NATS cluster was not healthy within {STARTING:?}; logs in {}:\n{}",
                        cluster.dir.path().display(),
                        cluster.logs()
                    );
                }
                std::thread::sleep(ASKING);
            }
        }
        cluster
    }

    /// `mqtt://` URL of node `i`'s MQTT listener.
    pub fn mqtt_url(&self, i: usize) -> String {
        format!("mqtt://127.0.0.1:{}", self.nodes[i].mqtt_port)
    }

    /// The MQTT port of node `i`.
    pub fn mqtt_port(&self, i: usize) -> u16 {
        self.nodes[i].mqtt_port
    }

    /// Every node's URL but `i`'s, as a TOML array: the failover list of a client of node `i`.
    pub fn failover(&self, i: usize) -> String {
        let others: Vec<String> = (0..self.nodes.len())
            .filter(|j| *j != i)
            .map(|j| format!("\"{}\"", self.mqtt_url(j)))
            .collect();
        format!("[{}]", others.join(", "))
    }

    /// Kills node `i` outright (SIGKILL), as a crash or a pulled cable would end it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A file in the cluster's directory (a password file, say).
    pub fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).expect("the file written");
        path
    }

    /// What every node logged so far.
    pub fn logs(&self) -> String {
        (0..self.nodes.len())
            .map(|i| {
                let log = self.dir.path().join(format!("n{i}.log"));
                format!(
                    "--- n{i}\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            })
            .collect()
    }
}

/// Whether the node monitored on `port` answers `/healthz` with 200.
fn healthy(port: u16) -> bool {
    use std::io::Read;
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut answer = String::new();
    stream
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .and_then(|()| stream.read_to_string(&mut answer))
        .is_ok_and(|_| answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"))
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
