//! The desk benchmark: how soon an officer sees an alert, and what the desk can take.
//!
//! `cargo bench --bench desk -- [--alerts N] [--burst N] [--stored N] [--postgres]`, by hand
//! (not in CI); `--postgres` puts the desk's database on a scratch PostgreSQL server that
//! commits to disk, rather than SQLite.
//! Against a local mosquitto, `alertclip-desk` in-process, and a headless Chromium logged in
//! to its console, with alerts signed and chained as a box signs them:
//!
//! - alert published to its card visible in the browser, over N alerts (100 by default), one
//!   at a time, beside `mosquitto_sub` receiving the same alerts (the broker's own floor);
//! - a snapshot published to its picture loaded in the browser, for the first 20 alerts;
//! - ingest throughput: a burst of alerts (1,000) and a 5 MB clip in 100 KiB chunks, until
//!   the desk has recorded them, beside `mosquitto_sub` receiving the same messages;
//! - the process's resident memory with 10,000 stored events (`--stored`), beside the same
//!   process right after the desk started, and how long the feed page then takes to load.

// A test or benchmark that cannot go on fails with the value it got.
#![allow(clippy::unwrap_used)]

// Where precinct servers run, as the desk's tests do; the Raspberry Pi build leaves the
// desk's web stack out.
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
    eprintln!("the desk benchmark runs on x86_64, as the desk's tests do");
}

#[cfg(target_arch = "x86_64")]
mod bench {
    use std::collections::HashMap;
    use std::process::Stdio;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use crate::browser::Browser;
    use crate::common::broker::Broker;
    use crate::desk_rig::{Database, DeskRig, Feed, PASSWORD, site, wait_subscribed};
    use alertclip::evidence::Evidence;
    use alertclip_desk::accounts::Role;
    use alertclip_mqtt::{BrokerUrl, LinkEvent, Session, Settings, Tag};
    use alertclip_wire::payload::{Alert, Manifest};
    use serde_json::json;
    use tokio::io::{AsyncBufReadExt, BufReader};
    use uuid::Uuid;

    const CHUNK: usize = 100 << 10;
    const CLIP_BYTES: usize = 5_000_000;

    fn now_ms() -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
            * 1000.0
    }

    fn rss_mib() -> f64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        kib / 1024.0
    }

    fn percentile(samples: &mut [f64], p: f64) -> f64 {
        samples.sort_by(|a, b| a.total_cmp(b));
        let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
        samples[index.min(samples.len() - 1)]
    }

    /// What `mosquitto_sub` received, by topic, with when (ms since the epoch).
    #[derive(Clone, Default)]
    struct Baseline(Arc<Mutex<HashMap<String, f64>>>, Arc<tokio::sync::Notify>);

    impl Baseline {
        async fn start(port: u16) -> (Baseline, tokio::process::Child) {
            let mut child = tokio::process::Command::new("mosquitto_sub")
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-v"])
                .args(["-t", "alertclip/v1/bench/#", "-F", "%t"])
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let baseline = Baseline::default();
            let (seen, notify) = (baseline.0.clone(), baseline.1.clone());
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            tokio::spawn(async move {
                while let Ok(Some(topic)) = lines.next_line().await {
                    seen.lock().unwrap().entry(topic).or_insert_with(now_ms);
                    notify.notify_waiters();
                }
            });
            (baseline, child)
        }

        async fn when(&self, topic: &str) -> f64 {
            self.within(topic, Duration::from_secs(30))
                .await
                .expect("mosquitto_sub received it within 30 s")
        }

        async fn within(&self, topic: &str, limit: Duration) -> Option<f64> {
            tokio::time::timeout(limit, async {
                loop {
                    let notified = self.1.notified();
                    if let Some(at) = self.0.lock().unwrap().get(topic) {
                        return *at;
                    }
                    notified.await;
                }
            })
            .await
            .ok()
        }
    }

    struct Publisher {
        session: Session<u64>,
        events: tokio::sync::mpsc::UnboundedReceiver<LinkEvent<u64>>,
        sent: u64,
        acked: u64,
        evidence: Evidence,
    }

    impl Publisher {
        async fn connect(
            port: u16,
            evidence: Evidence,
            tracker: &tokio_util::task::TaskTracker,
        ) -> Publisher {
            let url = BrokerUrl {
                tls: false,
                host: "127.0.0.1".into(),
                port,
            };
            let mut settings = Settings::new(url, format!("bench-box-{}", std::process::id()));
            settings.max_outgoing = 1 << 20;
            let cancel = tokio_util::sync::CancellationToken::new();
            let (session, mut events) = Session::<u64>::start(&settings, tracker, cancel).unwrap();
            while !matches!(events.recv().await, Some(LinkEvent::Connected)) {}
            Publisher {
                session,
                events,
                sent: 0,
                acked: 0,
                evidence,
            }
        }

        async fn send(&mut self, topic: &str, payload: Vec<u8>) {
            while self.sent - self.acked >= 32 {
                self.wait_ack().await;
            }
            while self
                .session
                .publish(Tag::Message(self.sent), topic, payload.clone(), false)
                .is_err()
            {
                self.wait_ack().await;
            }
            self.sent += 1;
        }

        async fn wait_ack(&mut self) {
            loop {
                match self.events.recv().await.unwrap() {
                    LinkEvent::Acked(_) => {
                        self.acked += 1;
                        return;
                    }
                    LinkEvent::Disconnected(error) => {
                        panic!("the publisher lost the broker: {error}")
                    }
                    _ => {}
                }
            }
        }

        /// A signed, chained alert for a new event; returns the event, its topic and when it was
        /// handed to the session.
        async fn alert(&mut self) -> (Uuid, String, f64) {
            let event = Uuid::now_v7();
            let mut alert: Alert = serde_json::from_value(json!({
                "schema": "alertclip.alert.v1", "event_id": event,
                "site": {"id": "bench", "name": "Bench"},
                "trigger": {"kind": "button", "source": "register-1"},
                "triggered_at": alertclip::clock::rfc3339_ms(SystemTime::now()),
                "cameras": [{"id": "cam", "pre_roll_s": 10.0, "post_roll_s": 5.0}],
                "clock": {"synchronized": true}, "test": false, "device_version": "bench",
                "sequence": 0, "previous_alert_sha256": null
            }))
            .unwrap();
            let payload = self.evidence.sign_chained(&mut alert, |_| Ok(())).unwrap();
            let topic = format!("alertclip/v1/bench/events/{event}");
            let at = now_ms();
            self.send(&topic, payload).await;
            (event, topic, at)
        }
    }

    fn jpeg() -> Vec<u8> {
        let picture =
            image::RgbImage::from_fn(320, 240, |x, y| image::Rgb([x as u8, y as u8, 128]));
        let mut out = std::io::Cursor::new(Vec::new());
        picture
            .write_to(&mut out, image::ImageFormat::Jpeg)
            .unwrap();
        out.into_inner()
    }

    pub fn main() {
        let mut args = std::env::args().skip(1);
        let (mut alerts, mut burst, mut stored) = (100usize, 1000usize, 10_000usize);
        let mut database = Database::Sqlite;
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--alerts" => alerts = args.next().and_then(|v| v.parse().ok()).unwrap(),
                "--burst" => burst = args.next().and_then(|v| v.parse().ok()).unwrap(),
                "--stored" => stored = args.next().and_then(|v| v.parse().ok()).unwrap(),
                "--postgres" => database = Database::PostgresDurable,
                "--bench" => {}
                other => panic!(
                    "unknown argument {other}: --alerts N, --burst N, --stored N, --postgres"
                ),
            }
        }
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(database, alerts, burst, stored));
    }

    async fn run(database: Database, alerts: usize, burst: usize, stored: usize) {
        println!("the desk's database: {database:?}");
        let broker = Broker::start("");
        let box_dir = tempfile::tempdir().unwrap();
        let evidence = Evidence::open(box_dir.path(), true).unwrap();
        let key = evidence.key().public_pem();
        let desk = DeskRig::start_on(
            database,
            &broker.url(),
            &[("bench", Role::Officer)],
            &[site("bench", "Bench store", &key)],
        )
        .await;
        let rss_started = rss_mib();
        let (client, _) = desk.signed_in("bench").await;
        let mut feed = Feed::open(&client, &desk).await;
        wait_subscribed(&mut feed, broker.port).await;
        let (baseline, _sub) = Baseline::start(broker.port).await;
        let tracker = tokio_util::task::TaskTracker::new();
        let mut publisher = Publisher::connect(broker.port, evidence, &tracker).await;
        // mosquitto_sub is subscribed once it gets a message of ours.
        loop {
            let (_, probe, _) = publisher.alert().await;
            if baseline
                .within(&probe, Duration::from_secs(2))
                .await
                .is_some()
            {
                break;
            }
        }

        let browser = Browser::start().await;
        browser.goto(&desk.at("/login")).await;
        browser.sign_in("bench", PASSWORD).await;
        // The page notes when each card, and each card's picture, first shows.
        browser
            .run(
                "window.seen = {}; window.shown = {}; window.waiting = {};
                 const settle = (key, at) => { const w = window.waiting[key]; if (w) { delete window.waiting[key]; w(at); } };
                 new MutationObserver(() => {
                   for (const card of document.querySelectorAll('article.card')) {
                     const id = card.dataset.event;
                     if (!(id in window.seen)) { const at = performance.timeOrigin + performance.now(); window.seen[id] = at; settle('card ' + id, at); }
                     const img = card.querySelector('img');
                     if (img && !(id in window.shown) && !img.dataset.watched) {
                       img.dataset.watched = '1';
                       const mark = () => { const at = performance.timeOrigin + performance.now(); window.shown[id] = at; settle('img ' + id, at); };
                       if (img.complete && img.naturalWidth > 0) mark(); else img.addEventListener('load', mark, {once: true});
                     }
                   }
                 }).observe(document.getElementById('feed'), {childList: true, subtree: true});
                 return true;",
                vec![],
            )
            .await;
        let wait_in_page = |what: &'static str, id: Uuid| {
            let browser = &browser;
            async move {
                browser
                    .run(
                        "const [what, id] = args; const table = what === 'card' ? window.seen : window.shown;
                         if (id in table) return table[id];
                         return await new Promise((resolve) => { window.waiting[what + ' ' + id] = resolve; });",
                        vec![json!(what), json!(id)],
                    )
                    .await
                    .as_f64()
                    .unwrap()
            }
        };

        // Alert to card, one at a time; the first 20 with a snapshot, to picture.
        let picture = jpeg();
        let (mut visible, mut broker_floor, mut pictures) = (Vec::new(), Vec::new(), Vec::new());
        for n in 0..alerts {
            let (event, topic, sent) = publisher.alert().await;
            let shown = wait_in_page("card", event).await;
            visible.push(shown - sent);
            broker_floor.push(baseline.when(&topic).await - sent);
            if n < 20 {
                let snapshot = format!("alertclip/v1/bench/events/{event}/snapshot/cam");
                let sent = now_ms();
                publisher.send(&snapshot, picture.clone()).await;
                pictures.push(wait_in_page("img", event).await - sent);
            }
        }
        println!(
            "alert published -> card visible in Chromium, {alerts} alerts: p50 {:.1} ms, p99 {:.1} ms (target p99 <= 250 ms)",
            percentile(&mut visible, 0.5),
            percentile(&mut visible, 0.99)
        );
        println!(
            "  baseline, the same alerts reaching mosquitto_sub: p50 {:.1} ms, p99 {:.1} ms",
            percentile(&mut broker_floor, 0.5),
            percentile(&mut broker_floor, 0.99)
        );
        println!(
            "snapshot published -> picture loaded, {} snapshots: p50 {:.1} ms, p99 {:.1} ms",
            pictures.len(),
            percentile(&mut pictures, 0.5),
            percentile(&mut pictures, 0.99)
        );

        // A burst of alerts, as fast as the broker takes them.
        let started = now_ms();
        let mut last_topic = String::new();
        let mut ids = std::collections::HashSet::new();
        for _ in 0..burst {
            let (event, topic, _) = publisher.alert().await;
            ids.insert(event.to_string());
            last_topic = topic;
        }
        let mosquitto_done = baseline.when(&last_topic).await;
        while !ids.is_empty() {
            let change = feed.next().await;
            if change["kind"] == "alert" {
                ids.remove(change["event"].as_str().unwrap_or_default());
            }
        }
        let desk_done = now_ms();
        println!(
            "ingest, a burst of {burst} signed alerts: the desk recorded them at {:.0} alerts/s; mosquitto_sub received them at {:.0} alerts/s",
            burst as f64 / ((desk_done - started) / 1000.0),
            burst as f64 / ((mosquitto_done - started) / 1000.0)
        );

        // A 5 MB clip in 100 KiB chunks, then its signed manifest.
        let (event, _, _) = publisher.alert().await;
        let bytes: Vec<u8> = (0..CLIP_BYTES).map(|i| (i * 7 % 251) as u8).collect();
        let digests = alertclip_wire::digest::digest(&mut bytes.as_slice(), CHUNK as u64).unwrap();
        let manifest: Manifest = serde_json::from_value(json!({
            "schema": "alertclip.manifest.v1", "event_id": event, "site_id": "bench", "camera": "cam",
            "bytes": digests.bytes, "sha256": digests.sha256, "chunk_size": CHUNK, "chunks": digests.blocks.len(),
            "chunk_sha256": digests.blocks, "duration_ms": 20000,
            "start": "2026-12-01T00:00:00.000Z", "end": "2026-12-01T00:00:20.000Z",
            "codec": "h264", "width": 1920, "height": 1080, "frames": 300, "partial": false,
            "triggers": [], "clock_map": {"monotonic_ns": 0, "wall": "2026-12-01T00:00:00.000Z"}
        }))
        .unwrap();
        let clip = format!("alertclip/v1/bench/events/{event}/clip/cam");
        let started = now_ms();
        for (n, chunk) in bytes.chunks(CHUNK).enumerate() {
            publisher.send(&format!("{clip}/{n}"), chunk.to_vec()).await;
        }
        publisher
            .send(&clip, publisher.evidence.sign_manifest(&manifest))
            .await;
        let mosquitto_done = baseline.when(&clip).await;
        feed.wait_for(|c| c["kind"] == "clip" && c["event"] == event.to_string())
            .await;
        let desk_done = now_ms();
        let mb = CLIP_BYTES as f64 / 1e6;
        println!(
            "ingest, a {mb:.0} MB clip in {} KiB chunks: the desk reassembled and verified it at {:.1} MB/s; mosquitto_sub received it at {:.1} MB/s",
            CHUNK >> 10,
            mb / ((desk_done - started) / 1000.0),
            mb / ((mosquitto_done - started) / 1000.0)
        );

        // Memory with many stored events, and the feed page then.
        let have = alerts + burst + 2;
        let mut ids = std::collections::HashSet::new();
        for _ in have..stored {
            let (event, _, _) = publisher.alert().await;
            ids.insert(event.to_string());
        }
        while !ids.is_empty() {
            let change = feed.next().await;
            if change["kind"] == "alert" {
                ids.remove(change["event"].as_str().unwrap_or_default());
            }
        }
        let count: i64 = desk
            .desk
            .db
            .call(|c| c.query_row("SELECT COUNT(*) FROM events", &[], |r| r.get(0)))
            .await
            .unwrap();
        let rss_stored = rss_mib();
        let loading = Instant::now();
        browser.goto(&desk.at("/")).await;
        browser.appears("article.card").await;
        println!(
            "resident memory of the desk's process: {rss_stored:.1} MiB with {count} stored events, {rss_started:.1} MiB right after it started; the feed page loads in {} ms",
            loading.elapsed().as_millis()
        );
        browser.close().await;
        desk.stop().await;
    }
}
