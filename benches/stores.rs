//! The city's load test: N simulated stores through a three-node NATS cluster into two desks
//! of one cluster on one PostgreSQL server, with an officer's console open in Chromium.
//!
//! `cargo bench --bench stores -- [--stores N] [--seconds S] [--rate A] [--clip-kib K]
//! [--churn C] [--kill | --kill-node | --kill-desk]`, by hand (not in CI).
//!
//! - Each store is a real MQTT client with its own client id and device key, connected to
//!   one of the three nodes (the others its failover), keeping what it sent until the broker
//!   acknowledged it and sending it again after a reconnection, as a box's outbox does.
//! - Incidents come at random (exponential gaps) so that the city raises A alerts a second
//!   (default N / 50) for S seconds (default 60); each is a signed, chained alert, a
//!   snapshot, and a clip of K KiB (default 512) in 100 KiB chunks with its signed manifest.
//! - C stores a minute (default N / 10) drop their connection and reconnect at once.
//! - With `--kill`, halfway through, the node a third of the stores use is killed and the
//!   leading desk (a process of its own) is killed with SIGKILL; the other desk takes over.
//!   `--kill-node` and `--kill-desk` kill one of them.
//!
//! Printed: the alerts a second and clip MB/s the desks recorded, alert published -> card
//! shown in the browser (on the desk that does not lead at first: every alert reaches it
//! through PostgreSQL) p50/p99 beside the same alerts reaching a plain MQTT subscriber, and
//! the count of every alert and clip the generator sent against what the database holds.

// A benchmark that cannot go on fails with the value it got.
#![allow(clippy::unwrap_used)]

#[cfg(target_arch = "x86_64")]
#[path = "../tests/common/browser.rs"]
#[allow(dead_code)]
mod browser;
#[cfg(target_arch = "x86_64")]
#[path = "../tests/common/mod.rs"]
mod common;
#[cfg(target_arch = "x86_64")]
#[path = "../tests/common/desk.rs"]
#[allow(dead_code)]
mod desk_rig;

fn main() {
    #[cfg(target_arch = "x86_64")]
    bench::main();
    #[cfg(not(target_arch = "x86_64"))]
    eprintln!("the stores benchmark runs on x86_64, as the desk's tests do");
}

#[cfg(target_arch = "x86_64")]
mod bench {
    use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
    use std::io::BufRead;
    use std::process::Stdio;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use crate::browser::Browser;
    use crate::common::nats::NatsCluster;
    use crate::desk_rig::{ClusterRig, DeskRig, Feed, PASSWORD};
    use alertclip::evidence::Evidence;
    use alertclip_desk::accounts::{self, Role};
    use alertclip_desk::sites::{self, Site};
    use alertclip_mqtt::{BrokerUrl, LinkEvent, Session, Settings, Tag};
    use alertclip_wire::digest::Digests;
    use alertclip_wire::payload::{Alert, Manifest};
    use serde_json::json;
    use tokio::io::AsyncBufReadExt;
    use tokio::sync::Notify;
    use tokio_util::sync::CancellationToken;
    use uuid::Uuid;

    const CHUNK: usize = 100 << 10;
    /// Publishes a store keeps unacknowledged at most.
    const WINDOW: usize = 32;
    /// The leading desk, a process of its own so that it can be killed.
    const DESK_PROCESS: &str = "--desk-process";

    fn now_ms() -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
            * 1000.0
    }

    fn percentile(samples: &mut [f64], p: f64) -> f64 {
        if samples.is_empty() {
            return f64::NAN;
        }
        samples.sort_by(|a, b| a.total_cmp(b));
        let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
        samples[index.min(samples.len() - 1)]
    }

    /// splitmix64: each store's own reproducible randomness.
    struct Random(u64);

    impl Random {
        fn next(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        }

        /// An exponential gap of mean `mean`.
        fn gap(&mut self, mean: Duration) -> Duration {
            mean.mul_f64(-(1.0 - self.next()).ln())
        }
    }

    #[derive(Clone)]
    struct Options {
        stores: usize,
        seconds: u64,
        rate: f64,
        clip_kib: usize,
        churn: f64,
        /// Halfway, kill a broker node, the leading desk, or both.
        kill_node: bool,
        kill_desk: bool,
    }

    pub fn main() {
        // The desks' logs on stderr, both of them, with RUST_LOG (warnings by default).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_writer(std::io::stderr)
            .try_init();
        let mut args = std::env::args().skip(1);
        if let Some(first) = std::env::args().nth(1)
            && first == DESK_PROCESS
        {
            let config = std::env::args().nth(2).unwrap();
            return desk_process(config.into());
        }
        let mut options = Options {
            stores: 100,
            seconds: 60,
            rate: 0.0,
            clip_kib: 512,
            churn: -1.0,
            kill_node: false,
            kill_desk: false,
        };
        let number = |value: Option<String>| value.and_then(|v| v.parse::<f64>().ok()).unwrap();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--stores" => options.stores = number(args.next()) as usize,
                "--seconds" => options.seconds = number(args.next()) as u64,
                "--rate" => options.rate = number(args.next()),
                "--clip-kib" => options.clip_kib = number(args.next()) as usize,
                "--churn" => options.churn = number(args.next()),
                "--kill" => (options.kill_node, options.kill_desk) = (true, true),
                "--kill-node" => options.kill_node = true,
                "--kill-desk" => options.kill_desk = true,
                "--bench" => {}
                other => panic!(
                    "unknown argument {other}: --stores N, --seconds S, --rate A, --clip-kib K, --churn C, --kill, --kill-node, --kill-desk"
                ),
            }
        }
        if options.rate <= 0.0 {
            options.rate = options.stores as f64 / 50.0;
        }
        if options.churn < 0.0 {
            options.churn = options.stores as f64 / 10.0;
        }
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(options));
    }

    /// The leading desk's process: starts the desk of `config`, says when it leads, and runs
    /// until killed.
    fn desk_process(config: std::path::PathBuf) {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let config = alertclip_desk::config::Config::load(&config).unwrap();
                let desk = alertclip_desk::Desk::start(config).await.unwrap();
                desk.leading().await;
                println!("leading");
                std::future::pending::<()>().await;
            });
    }

    /// What the generator sent and when, shared by the stores.
    #[derive(Default)]
    struct Sent {
        /// Each alert's event and when it was first handed to the broker (ms since the epoch).
        alerts: Mutex<HashMap<Uuid, f64>>,
        clip_bytes: AtomicUsize,
        reconnections: AtomicUsize,
        connected: AtomicUsize,
        connected_now: Notify,
    }

    /// What every store sends the same: the snapshot, the clip and its digests.
    struct Media {
        snapshot: Vec<u8>,
        clip: Vec<u8>,
        digests: Digests,
    }

    struct Store {
        id: String,
        evidence: Evidence,
        settings: Settings,
        random: Random,
    }

    /// A message the store has to send: its key, topic and payload.
    type Outgoing = (u64, String, Vec<u8>);

    impl Store {
        fn alert(&self, event: Uuid) -> Vec<u8> {
            let mut alert: Alert = serde_json::from_value(json!({
                "schema": "alertclip.alert.v1", "event_id": event,
                "site": {"id": self.id, "name": self.id},
                "trigger": {"kind": "button", "source": "register-1"},
                "triggered_at": alertclip::clock::rfc3339_ms(SystemTime::now()),
                "cameras": [{"id": "cam", "pre_roll_s": 10.0, "post_roll_s": 5.0}],
                "clock": {"synchronized": true}, "test": false, "device_version": "bench",
                "sequence": 0, "previous_alert_sha256": null
            }))
            .unwrap();
            self.evidence.sign_chained(&mut alert, |_| Ok(())).unwrap()
        }

        fn manifest(&self, event: Uuid, media: &Media) -> Vec<u8> {
            let digests = &media.digests;
            let manifest: Manifest = serde_json::from_value(json!({
                "schema": "alertclip.manifest.v1", "event_id": event, "site_id": self.id,
                "camera": "cam", "bytes": digests.bytes, "sha256": digests.sha256,
                "chunk_size": CHUNK, "chunks": digests.blocks.len(),
                "chunk_sha256": digests.blocks, "duration_ms": 15000,
                "start": "2026-12-01T00:00:00.000Z", "end": "2026-12-01T00:00:15.000Z",
                "codec": "h264", "width": 1920, "height": 1080, "frames": 225, "partial": false,
                "triggers": [], "clock_map": {"monotonic_ns": 0, "wall": "2026-12-01T00:00:00.000Z"}
            }))
            .unwrap();
            self.evidence.sign_manifest(&manifest)
        }

        /// Raises incidents until `stop`, then sends what is left; reconnects when `churn` is
        /// notified. Everything sent stays kept until acknowledged.
        async fn run(
            mut self,
            media: Arc<Media>,
            sent: Arc<Sent>,
            start: Arc<Notify>,
            mean_gap: Duration,
            stop: CancellationToken,
            churn: Arc<Notify>,
        ) {
            let tracker = tokio_util::task::TaskTracker::new();
            let connect = |settings: &Settings| {
                let cancel = CancellationToken::new();
                let (session, events) =
                    Session::<u64>::start(settings, &tracker, cancel.clone()).unwrap();
                (session, events, cancel)
            };
            let (mut session, mut events, mut cancel) = connect(&self.settings);
            let started = start.notified();
            let (mut queue, mut pending) = (VecDeque::<Outgoing>::new(), BTreeMap::new());
            let mut alerts_at: HashMap<u64, Uuid> = HashMap::new();
            let mut key = 0u64;
            tokio::pin!(started);
            started.as_mut().enable();
            // Incidents begin once every store is connected.
            loop {
                match events.recv().await {
                    Some(LinkEvent::Connected) => break,
                    Some(_) => {}
                    None => return,
                }
            }
            let mut connected = true;
            sent.connected.fetch_add(1, Ordering::SeqCst);
            sent.connected_now.notify_waiters();
            started.await;
            let mut next = tokio::time::Instant::now() + self.random.gap(mean_gap);
            let mut generating = true;
            loop {
                // Hand the broker what the window allows.
                while connected && pending.len() < WINDOW {
                    let Some((k, topic, payload)) = queue.pop_front() else {
                        break;
                    };
                    match session.publish(Tag::Message(k), &topic, payload.clone(), false) {
                        Ok(()) => {
                            if let Some(event) = alerts_at.remove(&k) {
                                sent.alerts.lock().unwrap().insert(event, now_ms());
                            }
                            pending.insert(k, (topic, payload));
                        }
                        Err(_) => {
                            queue.push_front((k, topic, payload));
                            connected = false;
                        }
                    }
                }
                if !generating && queue.is_empty() && pending.is_empty() {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(next), if generating => {
                        let event = Uuid::now_v7();
                        let prefix = format!("alertclip/v1/{}/events/{event}", self.id);
                        alerts_at.insert(key, event);
                        queue.push_back((key, prefix.clone(), self.alert(event)));
                        queue.push_back((key + 1, format!("{prefix}/snapshot/cam"), media.snapshot.clone()));
                        key += 2;
                        for (n, chunk) in media.clip.chunks(CHUNK).enumerate() {
                            queue.push_back((key, format!("{prefix}/clip/cam/{n}"), chunk.to_vec()));
                            key += 1;
                        }
                        queue.push_back((key, format!("{prefix}/clip/cam"), self.manifest(event, &media)));
                        key += 1;
                        sent.clip_bytes.fetch_add(media.clip.len(), Ordering::Relaxed);
                        next += self.random.gap(mean_gap);
                    }
                    _ = stop.cancelled(), if generating => generating = false,
                    _ = churn.notified() => {
                        // The link drops; what was not acknowledged goes again.
                        cancel.cancel();
                        (session, events, cancel) = connect(&self.settings);
                        connected = false;
                        for (k, (topic, payload)) in std::mem::take(&mut pending).into_iter().rev() {
                            queue.push_front((k, topic, payload));
                        }
                    }
                    event = events.recv() => match event {
                        Some(LinkEvent::Acked(k)) => {
                            pending.remove(&k);
                        }
                        Some(LinkEvent::Connected) => {
                            connected = true;
                            sent.reconnections.fetch_add(1, Ordering::Relaxed);
                            for (k, (topic, payload)) in std::mem::take(&mut pending).into_iter().rev() {
                                queue.push_front((k, topic, payload));
                            }
                        }
                        Some(LinkEvent::Disconnected(_)) => connected = false,
                        Some(LinkEvent::Refused(k, why)) | Some(LinkEvent::TooLarge(k, why)) => {
                            panic!("store {}: message {k} refused: {why}", self.id)
                        }
                        Some(_) => {}
                        None => return,
                    },
                }
            }
            session.disconnect().await;
            cancel.cancel();
        }
    }

    fn jpeg() -> Vec<u8> {
        let picture =
            image::RgbImage::from_fn(640, 360, |x, y| image::Rgb([x as u8, y as u8, 128]));
        let mut out = std::io::Cursor::new(Vec::new());
        picture
            .write_to(&mut out, image::ImageFormat::Jpeg)
            .unwrap();
        out.into_inner()
    }

    fn url(text: &str) -> BrokerUrl {
        BrokerUrl::parse(text).unwrap()
    }

    async fn run(options: Options) {
        let Options {
            stores: count,
            seconds,
            rate,
            clip_kib,
            churn,
            kill_node,
            kill_desk,
        } = options;
        let kill = kill_node || kill_desk;
        println!(
            "{count} stores, {rate:.1} alerts/s for {seconds} s, {clip_kib} KiB clips, {churn:.0} reconnections a minute{}",
            match (kill_node, kill_desk) {
                (true, true) => "; halfway, a broker node and the leading desk are killed",
                (true, false) => "; halfway, a broker node is killed",
                (false, true) => "; halfway, the leading desk is killed",
                (false, false) => "",
            }
        );
        let mut nats = NatsCluster::start(3, "");
        let mut cluster = ClusterRig::start_durable("city");
        cluster.media_sharing = "leader";
        let mqtt_lines = |node: usize| {
            format!(
                "broker = \"{}\"\nfailover = {}",
                nats.mqtt_url(node),
                nats.failover(node)
            )
        };

        // The stores, their keys enrolled before the desks start.
        let keys = tempfile::tempdir().unwrap();
        let mut stores = Vec::new();
        for i in 0..count {
            let id = format!("store-{i:05}");
            let dir = keys.path().join(&id);
            std::fs::create_dir_all(&dir).unwrap();
            let evidence = Evidence::open(&dir, true).unwrap();
            let node = i % 3;
            let mut settings = Settings::new(url(&nats.mqtt_url(node)), id.clone());
            settings.failover = (0..3)
                .filter(|n| *n != node)
                .map(|n| url(&nats.mqtt_url(n)))
                .collect();
            settings.max_outgoing = 1 << 20;
            stores.push(Store {
                id,
                evidence,
                settings,
                random: Random(i as u64 * 7919 + 1),
            });
        }

        // The leading desk, a process of its own on node 1.
        let a_dir = tempfile::tempdir().unwrap();
        let (cert, key) = (a_dir.path().join("desk.crt"), a_dir.path().join("desk.key"));
        alertclip_desk::tls::write_self_signed(&["127.0.0.1".into()], &cert, &key).unwrap();
        let a_config = a_dir.path().join("desk.toml");
        std::fs::write(
            &a_config,
            format!(
                "[http]\nlisten = \"127.0.0.1:0\"\ncertificate = \"desk.crt\"\nkey = \"desk.key\"\n\
                 [mqtt]\n{}\n[cluster]\nname = \"{}\"\ninstance = \"a\"\nmedia = \"leader\"\n\
                 [storage]\ndirectory = \"state\"\ndatabase = \"{}\"\nmedia = \"{}\"\n",
                mqtt_lines(1),
                cluster.name,
                cluster.database,
                cluster.media.path().display()
            ),
        )
        .unwrap();
        let config = alertclip_desk::config::Config::load(&a_config).unwrap();
        let db = alertclip_desk::db::Db::open(config.database()).unwrap();
        let hash = accounts::hash_password(PASSWORD).unwrap();
        let sites: Vec<Site> = stores
            .iter()
            .map(|s| crate::desk_rig::site(&s.id, &s.id, &s.evidence.key().public_pem()))
            .collect();
        let enrolled = keys.path().join("enrolled");
        db.call(move |c| {
            accounts::add_user(c, "officer", Role::Officer, &hash)?;
            for site in sites {
                sites::enrol(c, &enrolled, &site).unwrap();
            }
            Ok(())
        })
        .await
        .unwrap();
        drop(db);
        let mut leader = std::process::Command::new(std::env::current_exe().unwrap())
            .arg(DESK_PROCESS)
            .arg(&a_config)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut said = std::io::BufReader::new(leader.stdout.take().unwrap()).lines();
        let line = tokio::task::spawn_blocking(move || said.next())
            .await
            .unwrap();
        assert_eq!(
            line.map(|l| l.unwrap()).as_deref(),
            Some("leading"),
            "the first desk leads"
        );
        // The other desk, in this process, on node 2, with the officer's console.
        let b = DeskRig::start_in(&cluster, "b", &mqtt_lines(2), &[], &[]).await;
        b.desk.receiving().await;
        let (client, _) = b.signed_in("officer").await;
        let mut feed = Feed::open(&client, &b).await;
        // The console's feed, read all along: which events have their clip recorded (and when
        // the last was), and which their alert.
        let (clips_tx, mut clips_seen) =
            tokio::sync::watch::channel((HashSet::<String>::new(), 0f64, HashSet::<String>::new()));
        let reading = tokio::spawn(async move {
            loop {
                // Shorter than the feed's own limit, which fails.
                let Ok(change) = tokio::time::timeout(Duration::from_secs(60), feed.next()).await
                else {
                    continue;
                };
                let (Some(kind), Some(event)) = (change["kind"].as_str(), change["event"].as_str())
                else {
                    continue;
                };
                let event = event.to_owned();
                match kind {
                    "clip" => clips_tx.send_modify(|(seen, last, _)| {
                        if seen.insert(event) {
                            *last = now_ms();
                        }
                    }),
                    "alert" => clips_tx.send_modify(|(_, _, alerts)| {
                        alerts.insert(event);
                    }),
                    _ => {}
                }
            }
        });
        let browser = Browser::start().await;
        browser.goto(&b.at("/login")).await;
        browser.sign_in("officer", PASSWORD).await;
        browser
            .run(
                "window.seen = {};
                 new MutationObserver((changes) => {
                   const at = performance.timeOrigin + performance.now();
                   for (const change of changes) for (const node of change.addedNodes) {
                     if (node.nodeType !== 1) continue;
                     const cards = node.matches('article.card') ? [node] : node.querySelectorAll('article.card');
                     for (const card of cards) {
                       const id = card.dataset.event;
                       if (!(id in window.seen)) window.seen[id] = at;
                     }
                   }
                 }).observe(document.getElementById('feed'), {childList: true, subtree: true});
                 return true;",
                vec![],
            )
            .await;

        // A plain subscriber on node 2: when each alert reaches any MQTT client.
        let floor: Arc<Mutex<HashMap<String, f64>>> = Arc::default();
        let mut subscriber = tokio::process::Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &nats.mqtt_port(2).to_string(),
                "-q",
                "1",
            ])
            .args(["-t", "alertclip/v1/+/events/+", "-F", "%t"])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(subscriber.stdout.take().unwrap()).lines();
        let seen = floor.clone();
        tokio::spawn(async move {
            // The topic ends in the event's id.
            while let Ok(Some(topic)) = lines.next_line().await {
                let event = topic.rsplit('/').next().unwrap_or_default().to_owned();
                seen.lock().unwrap().entry(event).or_insert_with(now_ms);
            }
        });

        // The stores connect, then raise incidents.
        let mut clip = vec![0u8; clip_kib << 10];
        let mut random = Random(42);
        for byte in &mut clip {
            *byte = (random.next() * 256.0) as u8;
        }
        let digests = alertclip_wire::digest::digest(&mut clip.as_slice(), CHUNK as u64).unwrap();
        let media = Arc::new(Media {
            snapshot: jpeg(),
            clip,
            digests,
        });
        let sent = Arc::new(Sent::default());
        let (start, stop) = (Arc::new(Notify::new()), CancellationToken::new());
        let mean_gap = Duration::from_secs_f64(count as f64 / rate);
        let connecting = Instant::now();
        let mut churns = Vec::new();
        let mut tasks = tokio::task::JoinSet::new();
        for store in stores {
            let churn = Arc::new(Notify::new());
            churns.push(churn.clone());
            tasks.spawn(store.run(
                media.clone(),
                sent.clone(),
                start.clone(),
                mean_gap,
                stop.clone(),
                churn,
            ));
        }
        loop {
            let notified = sent.connected_now.notified();
            if sent.connected.load(Ordering::SeqCst) == count {
                break;
            }
            notified.await;
        }
        println!(
            "{count} stores connected in {:.1} s",
            connecting.elapsed().as_secs_f64()
        );
        let began = now_ms();
        start.notify_waiters();

        // Churn, and halfway the kills, until the end of the run.
        let run_for = Duration::from_secs(seconds);
        let churn_every = Duration::from_secs_f64(60.0 / churn.max(0.001));
        let mut random = Random(7);
        let started = tokio::time::Instant::now();
        let mut next_churn = started + random.gap(churn_every);
        let (mut killed, halfway) = (!kill, started + run_for / 2);
        let end = started + run_for;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(end) => break,
                _ = tokio::time::sleep_until(next_churn) => {
                    let store = (random.next() * count as f64) as usize % count;
                    churns[store].notify_one();
                    next_churn += random.gap(churn_every);
                }
                _ = tokio::time::sleep_until(halfway), if !killed => {
                    killed = true;
                    if kill_node {
                        nats.kill(0);
                    }
                    if kill_desk {
                        let _ = leader.kill();
                        let _ = leader.wait();
                    }
                    println!("killed at {:.1} s", (now_ms() - began) / 1000.0);
                }
            }
        }
        stop.cancel();
        let generated = now_ms();
        while tasks.join_next().await.is_some() {}
        let handed = now_ms();
        let alerts_sent = sent.alerts.lock().unwrap().clone();
        println!(
            "the stores raised {} incidents in {:.1} s and the broker had acknowledged all of them {:.1} s later; {} reconnections",
            alerts_sent.len(),
            (generated - began) / 1000.0,
            (handed - generated) / 1000.0,
            sent.reconnections.load(Ordering::Relaxed)
        );

        // Every alert and clip recorded, as the console's feed says, or a minute without news.
        // (What a killed desk had not acknowledged, the broker sends again after its
        // `ack_wait`.)
        let expected: HashSet<String> = alerts_sent.keys().map(|e| e.to_string()).collect();
        loop {
            let all = {
                let (clips, _, alerts) = &*clips_seen.borrow();
                clips.is_superset(&expected) && alerts.is_superset(&expected)
            };
            if all {
                break;
            }
            match tokio::time::timeout(Duration::from_secs(60), clips_seen.changed()).await {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
        let last = clips_seen.borrow().1;
        let seconds_recording = (last - began) / 1000.0;
        let events: Vec<String> = b
            .desk
            .db
            .call(|c| c.query_map("SELECT id FROM events", &[], |r| r.get::<String>(0)))
            .await
            .unwrap();
        let clips: Vec<String> = b
            .desk
            .db
            .call(|c| {
                c.query_map(
                    "SELECT event FROM media WHERE kind = 'clip' AND signature = 'valid'",
                    &[],
                    |r| r.get::<String>(0),
                )
            })
            .await
            .unwrap();
        let recorded: HashSet<&str> = events.iter().map(String::as_str).collect();
        let verified: HashSet<&str> = clips.iter().map(String::as_str).collect();
        let unrecorded: Vec<(&Uuid, &f64)> = alerts_sent
            .iter()
            .filter(|(e, _)| !recorded.contains(e.to_string().as_str()))
            .collect();
        let missing_alerts = unrecorded.len();
        // What the shared media directory holds of each alert not recorded: what a desk
        // wrote before it died, or nothing if none received it.
        for (event, at) in unrecorded.into_iter().take(10) {
            let name = event.to_string();
            let files: Vec<String> = std::fs::read_dir(cluster.media.path())
                .into_iter()
                .flatten()
                .flatten()
                .map(|site| site.path().join(&name))
                .filter(|dir| dir.is_dir())
                .flat_map(|dir| std::fs::read_dir(dir).into_iter().flatten().flatten())
                .map(|file| file.file_name().to_string_lossy().into_owned())
                .collect();
            println!(
                "  not recorded: alert {name}, sent at {:.1} s; in the media directory: {files:?}",
                (at - began) / 1000.0
            );
        }
        let missing_clips = alerts_sent
            .keys()
            .filter(|e| !verified.contains(e.to_string().as_str()))
            .count();
        let clip_mb = (clips.len() * media.clip.len()) as f64 / 1e6;
        println!(
            "recorded {} alerts and {} verified clips ({clip_mb:.1} MB) in {seconds_recording:.1} s: {:.1} alerts/s and {:.2} MB/s of clips sustained",
            events.len(),
            clips.len(),
            events.len() as f64 / seconds_recording,
            clip_mb / seconds_recording
        );
        println!(
            "accounted for: {} alerts sent, {missing_alerts} not in the database; {} clips sent, {missing_clips} not verified in it",
            alerts_sent.len(),
            alerts_sent.len()
        );

        // Alert to card, beside alert to a plain subscriber.
        let shown = browser.run("return window.seen;", vec![]).await;
        // A card is redrawn as its snapshot and clip arrive: what counts is what the page
        // shows at the end.
        let cards = browser
            .run(
                "const count = {};
                 for (const card of document.querySelectorAll('article.card')) {
                   count[card.dataset.event] = (count[card.dataset.event] || 0) + 1;
                 }
                 return count;",
                vec![],
            )
            .await;
        let floor = floor.lock().unwrap().clone();
        let (mut to_card, mut to_subscriber) = (Vec::new(), Vec::new());
        for (event, at) in &alerts_sent {
            if let Some(shown) = shown[event.to_string()].as_f64() {
                to_card.push(shown - at);
            }
            if let Some(reached) = floor.get(&event.to_string()) {
                to_subscriber.push(reached - at);
            }
        }
        let twice = cards
            .as_object()
            .map(|o| o.values().filter(|n| n.as_u64() > Some(1)).count())
            .unwrap_or(0);
        println!(
            "alert published -> card shown in Chromium on desk b, {} alerts: p50 {:.0} ms, p99 {:.0} ms; {twice} on the page twice",
            to_card.len(),
            percentile(&mut to_card, 0.5),
            percentile(&mut to_card, 0.99)
        );
        println!(
            "  baseline, the same alerts reaching mosquitto_sub on a node: p50 {:.1} ms, p99 {:.1} ms ({} seen)",
            percentile(&mut to_subscriber, 0.5),
            percentile(&mut to_subscriber, 0.99),
            to_subscriber.len()
        );
        browser.close().await;
        reading.abort();
        b.stop().await;
        let _ = leader.kill();
        let _ = leader.wait();
        drop(nats);
    }
}
