//! The delivery benchmark: how fast an alert reaches the broker, and how fast a clip goes.
//!
//! `make bench` (or `cargo bench --bench delivery -- [--triggers N]`). Against a local
//! mosquitto (started by the benchmark on a free port) and a simulated camera:
//!
//! - trigger-to-alert latency over N triggers (200 by default), each opening an event of its
//!   own: from the trigger to the alert arriving at a subscriber, which is an upper bound on
//!   its arrival at the broker;
//! - the delivery time of a 5 MB clip in `chunk_size` chunks (100 KiB), from handing it to the
//!   outbox to the broker's last acknowledgement, beside `mosquitto_pub` sending the same
//!   bytes in chunks of the same size at QoS 1 over one connection (`--repeat`);
//! - at the officer side (`alertclip receive`, in-process): how soon an alert published right
//!   behind a 2,000-chunk clip is reported, beside an alert with nothing queued before it, and
//!   when the clip itself is done.

// A test or benchmark that cannot go on fails with the value it got.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use alertclip::Daemon;
use alertclip::clip::{ClipDone, Spool};
use alertclip::config::{BrokerUrl, Config};
use alertclip::demo::localbroker::LocalBroker;
use alertclip::demo::teststream::{TestServer, TestStream};
use alertclip::trigger::{Trigger, TriggerKind};
use alertclip_mqtt::{LinkEvent, Session, Settings, Tag};
use alertclip_wire::Manifest;
use alertclip_wire::{ClipRecord, SiteRecord, TimeSpan};
use anyhow::{Context, bail};
use uuid::Uuid;

const CLIP_BYTES: usize = 5_000_000;
const CHUNK: usize = 100 << 10;
const ROUNDS: usize = 3;

fn main() -> anyhow::Result<()> {
    let mut triggers = 200usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--triggers" => triggers = args.next().context("--triggers N")?.parse()?,
            "--bench" => {}
            other => bail!("unknown argument {other}"),
        }
    }
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("delivery");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let broker = LocalBroker::start(&work.join("broker"), "")?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        // 720p with a 2 s GOP, so that a snapshot decodes up to a second of frames.
        let stream = TestStream {
            width: 1280,
            height: 720,
            gop_frames: 30,
            bitrate_kbps: 2000,
            pattern: "smpte".into(),
            ..TestStream::h264("/cam")
        };
        let server = TestServer::start(&[stream])?;
        let config = Config::parse(
            &format!(
                "[site]\nid = \"bench\"\nname = \"Benchmark\"\n[storage]\ndir = \"{0}/clips\"\n[evidence]\ndir = \"{0}/evidence\"\n[control]\nsocket = \"{0}/c.sock\"\n\
                 [outbox]\ndir = \"{0}/outbox\"\n[mqtt]\nurl = \"{1}\"\n\
                 [[camera]]\nid = \"cam\"\nurl = \"{2}\"\npre_roll = \"1s\"\npost_roll = \"0s\"\n",
                work.display(),
                broker.url(),
                server.url("/cam")
            ),
            Path::new("bench.toml"),
        )?;
        let daemon = Daemon::start(config).await?;
        let mut status = daemon.cameras()[0].status.clone();
        status.wait_for(|s| s.buffered_s >= 1.2).await?;
        latency(&daemon, &broker, triggers).await?;
        throughput(&daemon, &broker, &work).await?;
        daemon.shutdown(Duration::from_secs(5)).await;
        receiver_backlog(&broker, &work).await?;
        anyhow::Ok(())
    })
}

/// Trigger to alert at a subscriber, over `count` events.
async fn latency(daemon: &Daemon, broker: &LocalBroker, count: usize) -> anyhow::Result<()> {
    let tracker = tokio_util::task::TaskTracker::new();
    let cancel = tokio_util::sync::CancellationToken::new();
    let (session, mut events) =
        Session::<()>::start(&subscriber(broker), &tracker, cancel.clone())?;
    loop {
        if let Some(LinkEvent::Connected) = events.recv().await {
            session.subscribe("alertclip/v1/bench/events/#");
            break;
        }
    }
    // The subscription is in place once a probe published under it comes back.
    let probe = "alertclip/v1/bench/events/subscribed";
    loop {
        let _ = session.publish(Tag::Untracked, probe, b"probe".to_vec(), false);
        let back = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(event) = events.recv().await {
                if matches!(&event, LinkEvent::Incoming { topic, .. } if topic == probe) {
                    return true;
                }
            }
            false
        })
        .await;
        match back {
            Ok(true) => break,
            Ok(false) => bail!("the subscriber stopped"),
            Err(_) => {}
        }
    }
    let mut clips = daemon.clips();
    let mut sent: HashMap<Uuid, Instant> = HashMap::new();
    let mut latencies = Vec::with_capacity(count);
    let mut snapshots = Vec::with_capacity(count);
    for _ in 0..count {
        let trigger = Trigger::now(TriggerKind::Test, "bench");
        let started = Instant::now();
        let event = daemon.triggers().fire(trigger).await?;
        sent.insert(event, started);
        // The alert arrives first, then the snapshot; the clip closes at once (post-roll 0 s),
        // so the next trigger opens an event of its own.
        let (alert, snapshot) = tokio::time::timeout(Duration::from_secs(10), async {
            let mut alert = None;
            while let Some(message) = events.recv().await {
                let LinkEvent::Incoming { topic, .. } = message else {
                    continue;
                };
                let parts: Vec<&str> = topic.split('/').collect();
                let Some(id) = parts.get(4).and_then(|id| Uuid::parse_str(id).ok()) else {
                    continue;
                };
                if id != event {
                    continue;
                }
                match parts.get(5) {
                    None => alert = Some(started.elapsed()),
                    Some(&"snapshot") => return alert.map(|a| (a, started.elapsed())),
                    _ => {}
                }
            }
            None
        })
        .await
        .context("the alert and snapshot did not arrive within 10 s")?
        .context("the subscriber stopped, or the snapshot came before the alert")?;
        latencies.push(alert.as_secs_f64() * 1000.0);
        snapshots.push(snapshot.as_secs_f64() * 1000.0);
        tokio::time::timeout(Duration::from_secs(10), clips.recv())
            .await
            .context("clip")??;
    }
    snapshots.sort_by(f64::total_cmp);
    println!(
        "trigger to snapshot (720p, 2 s GOP) at a subscriber, {count} events: p50 {:.0} ms, max {:.0} ms",
        snapshots[snapshots.len() / 2],
        snapshots[snapshots.len() - 1]
    );
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| {
        latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    println!(
        "trigger to alert at a subscriber, {count} events: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p99 <= 50 ms)",
        at(0.5),
        at(0.99),
        latencies[latencies.len() - 1]
    );
    cancel.cancel();
    Ok(())
}

/// A 5 MB clip through the outbox, beside mosquitto_pub.
async fn throughput(daemon: &Daemon, broker: &LocalBroker, work: &Path) -> anyhow::Result<()> {
    let publisher = daemon.publisher().context("delivery configured")?.clone();
    let drained = || publisher.outbox().stats().messages == 0;
    while !drained() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let bytes: Vec<u8> = (0..CLIP_BYTES)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut ours = Vec::new();
    for round in 0..ROUNDS {
        let event = Uuid::now_v7();
        let dir = work.join("clips").join(event.to_string());
        std::fs::create_dir_all(&dir)?;
        let mp4 = dir.join("cam.mp4");
        std::fs::write(&mp4, &bytes)?;
        // Hashed as the clip writer does while sealing a clip, before delivery starts.
        let digests = alertclip_wire::digest::digest(&mut bytes.as_slice(), CHUNK as u64)?;
        let done = synthetic_clip(event, mp4, digests);
        let started = Instant::now();
        let spooling = publisher.clone();
        tokio::task::spawn_blocking(move || spooling.clip(&done)).await??;
        let spooled = started.elapsed();
        while !drained() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let took = started.elapsed().as_secs_f64();
        println!(
            "  alertclip, round {}: {:.0} ms ({:.0} ms spooling, {:.0} ms sending)",
            round + 1,
            took * 1000.0,
            spooled.as_secs_f64() * 1000.0,
            took * 1000.0 - spooled.as_secs_f64() * 1000.0
        );
        ours.push(took);
    }
    let chunk = work.join("chunk.bin");
    std::fs::write(&chunk, &bytes[..CHUNK])?;
    let repeat = CLIP_BYTES.div_ceil(CHUNK).to_string();
    let mut theirs = Vec::new();
    for round in 0..ROUNDS {
        let started = Instant::now();
        let status = tokio::process::Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &broker.port().to_string(),
                "-q",
                "1",
                "-t",
                "bench/chunks",
                "--repeat",
                &repeat,
                "-f",
            ])
            .arg(&chunk)
            .status()
            .await?;
        if !status.success() {
            bail!("mosquitto_pub failed");
        }
        let took = started.elapsed().as_secs_f64();
        println!(
            "  mosquitto_pub, round {}: {:.0} ms",
            round + 1,
            took * 1000.0
        );
        theirs.push(took);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (ours, theirs) = (median(&mut ours), median(&mut theirs));
    let mb = CLIP_BYTES as f64 / 1e6;
    println!(
        "5 MB clip in {} KiB chunks: alertclip {:.0} ms ({:.1} MB/s), mosquitto_pub {:.0} ms ({:.1} MB/s); \
         throughput ratio {:.2} (target >= 0.8)",
        CHUNK >> 10,
        ours * 1000.0,
        mb / ours,
        theirs * 1000.0,
        mb / theirs,
        theirs / ours
    );
    Ok(())
}

/// Chunks of the clip an alert is published behind at the receiver.
const BACKLOG_CHUNKS: usize = 2_000;
const BACKLOG_CHUNK: usize = 4 << 10;

/// An alert published right behind a 2,000-chunk clip, at an in-process receiver: from the
/// alert's publishing to its report, beside an alert with nothing before it.
async fn receiver_backlog(broker: &LocalBroker, work: &Path) -> anyhow::Result<()> {
    use alertclip_officer::{ReceiveOptions, Report};
    let cancel = tokio_util::sync::CancellationToken::new();
    let (reported, mut reports) = tokio::sync::mpsc::unbounded_channel();
    let options = ReceiveOptions {
        settings: Settings::new(
            subscriber(broker).url,
            format!("bench-receiver-{}", std::process::id()),
        ),
        layout: alertclip_wire::TopicLayout::default(),
        out: work.join("received"),
        json: true,
        keys: None,
        trust_on_first_use: true,
        sessions: Default::default(),
    };
    let receiving = tokio::spawn(alertclip_officer::receive::run(
        options,
        cancel.clone(),
        move |report: Report| {
            let _ = reported.send((Instant::now(), report));
            Ok(())
        },
    ));
    let tracker = tokio_util::task::TaskTracker::new();
    let mut publisher = Publisher::connect(broker, &tracker, cancel.clone()).await?;
    // Both of the receiver's sessions subscribed: a retained status and snapshot come back.
    let probe = Uuid::now_v7();
    let status = r#"{"schema":"alertclip.status.v1","state":"probe"}"#;
    publisher
        .send("alertclip/v1/probe/status", status.as_bytes(), true)
        .await?;
    let snapshot = format!("alertclip/v1/probe/events/{probe}/snapshot/cam");
    publisher.send(&snapshot, b"probe", true).await?;
    let (mut status_back, mut snapshot_back) = (false, false);
    while !(status_back && snapshot_back) {
        let (_, report) = next_report(&mut reports).await?;
        status_back |= matches!(report, Report::Status { .. });
        snapshot_back |= matches!(report, Report::Snapshot { event, .. } if event == probe);
    }
    publisher.send(&snapshot, b"", true).await?;

    let alone = Uuid::now_v7();
    let sent = publisher.send_alert(alone).await?;
    let alone_took = report_of(&mut reports, alone, sent).await?.0;

    let clip = Uuid::now_v7();
    let bytes: Vec<u8> = (0..BACKLOG_CHUNKS * BACKLOG_CHUNK)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let digests = alertclip_wire::digest::digest(&mut bytes.as_slice(), BACKLOG_CHUNK as u64)?;
    let started = Instant::now();
    for (n, chunk) in bytes.chunks(BACKLOG_CHUNK).enumerate() {
        let topic = format!("alertclip/v1/bench/events/{clip}/clip/cam/{n}");
        publisher.send(&topic, chunk, false).await?;
    }
    let mp4 = work.join("backlog.mp4");
    let mut done = synthetic_clip(clip, mp4, digests);
    let mut manifest: Manifest = serde_json::from_slice(&done.manifest)?;
    manifest.chunk_size = BACKLOG_CHUNK as u64;
    done.manifest = serde_json::to_vec(&manifest)?;
    let manifest_topic = format!("alertclip/v1/bench/events/{clip}/clip/cam");
    publisher
        .send(&manifest_topic, &done.manifest, false)
        .await?;
    let published = started.elapsed();
    let behind = Uuid::now_v7();
    let sent = publisher.send_alert(behind).await?;
    let (behind_took, clip_done) = report_of(&mut reports, behind, sent).await?;
    let clip_done = match clip_done {
        Some(at) => at,
        None => loop {
            let (at, report) = next_report(&mut reports).await?;
            if matches!(report, Report::Clip { event, .. } if event == clip) {
                break at;
            }
        },
    };
    println!(
        "alert at the receiver: {:.1} ms with nothing before it, {:.1} ms behind a {BACKLOG_CHUNKS}-chunk clip ({} KiB chunks, published in {:.0} ms); \
         the clip was done {:.0} ms after the alert was published",
        alone_took.as_secs_f64() * 1000.0,
        behind_took.as_secs_f64() * 1000.0,
        BACKLOG_CHUNK >> 10,
        published.as_secs_f64() * 1000.0,
        clip_done.saturating_duration_since(sent).as_secs_f64() * 1000.0,
    );
    cancel.cancel();
    let _ = receiving.await;
    Ok(())
}

/// The next report of an in-process receiver, with when it came.
async fn next_report(
    reports: &mut tokio::sync::mpsc::UnboundedReceiver<(Instant, alertclip_officer::Report)>,
) -> anyhow::Result<(Instant, alertclip_officer::Report)> {
    tokio::time::timeout(Duration::from_secs(120), reports.recv())
        .await
        .context("no report from the receiver within 2 minutes")?
        .context("the receiver stopped")
}

/// How long after `sent` the alert of `event` was reported, and when the clip was, if it
/// was first.
async fn report_of(
    reports: &mut tokio::sync::mpsc::UnboundedReceiver<(Instant, alertclip_officer::Report)>,
    event: Uuid,
    sent: Instant,
) -> anyhow::Result<(Duration, Option<Instant>)> {
    use alertclip_officer::Report;
    let mut clip = None;
    loop {
        match next_report(reports).await? {
            (at, Report::Alert { alert, .. }) if alert.event_id == event => {
                return Ok((at.saturating_duration_since(sent), clip));
            }
            (at, Report::Clip { .. }) => clip = Some(at),
            _ => {}
        }
    }
}

/// Publishes at QoS 1 as a box would, waiting for the broker's acknowledgement of each
/// message before the next once the client's queue is full.
struct Publisher {
    session: Session<u64>,
    events: tokio::sync::mpsc::UnboundedReceiver<LinkEvent<u64>>,
    sent: u64,
    acked: u64,
    /// The chain its alerts are linked in, so that the receiver presents each.
    chain: alertclip_wire::ChainState,
}

impl Publisher {
    async fn connect(
        broker: &LocalBroker,
        tracker: &tokio_util::task::TaskTracker,
        cancel: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<Publisher> {
        let mut settings = subscriber(broker);
        settings.client_id = format!("bench-publisher-{}", std::process::id());
        // A manifest of 2,000 chunks is over 130 KB.
        settings.max_outgoing = 1 << 20;
        let (session, mut events) = Session::<u64>::start(&settings, tracker, cancel)?;
        while !matches!(events.recv().await, Some(LinkEvent::Connected)) {}
        Ok(Publisher {
            session,
            events,
            sent: 0,
            acked: 0,
            chain: Default::default(),
        })
    }

    /// Publishes, and returns once it is queued, keeping at most 16 unacknowledged.
    async fn send(&mut self, topic: &str, payload: &[u8], retain: bool) -> anyhow::Result<()> {
        while self.sent - self.acked >= 16 {
            self.wait_ack().await?;
        }
        while self
            .session
            .publish(Tag::Message(self.sent), topic, payload.to_vec(), retain)
            .is_err()
        {
            self.wait_ack().await?;
        }
        self.sent += 1;
        Ok(())
    }

    async fn wait_ack(&mut self) -> anyhow::Result<()> {
        loop {
            match self.events.recv().await.context("the publisher stopped")? {
                LinkEvent::Acked(_) => {
                    self.acked += 1;
                    return Ok(());
                }
                LinkEvent::Disconnected(error) => bail!("the publisher lost the broker: {error}"),
                _ => {}
            }
        }
    }

    /// Publishes an unsigned alert of `event` at site `bench`; returns when it was sent.
    async fn send_alert(&mut self, event: Uuid) -> anyhow::Result<Instant> {
        let alert = serde_json::json!({
            "schema": "alertclip.alert.v1", "event_id": event,
            "site": {"id": "bench", "name": "Benchmark"},
            "trigger": {"kind": "test", "source": "bench"},
            "triggered_at": alertclip::clock::rfc3339_ms(std::time::SystemTime::now()),
            "cameras": [], "clock": {"synchronized": null}, "test": true,
            "device_version": "bench", "sequence": self.chain.sequence + 1,
            "previous_alert_sha256": self.chain.last_alert_sha256
        });
        let payload = serde_json::to_vec(&alert)?;
        self.chain = alertclip_wire::ChainState::after(self.chain.sequence + 1, &payload);
        let sent = Instant::now();
        self.send(
            &format!("alertclip/v1/bench/events/{event}"),
            &payload,
            false,
        )
        .await?;
        Ok(sent)
    }
}

fn subscriber(broker: &LocalBroker) -> Settings {
    let url = BrokerUrl {
        tls: false,
        host: "127.0.0.1".into(),
        port: broker.port(),
    };
    Settings {
        max_incoming: 16 << 20,
        ..Settings::new(url, format!("bench-subscriber-{}", std::process::id()))
    }
}

fn synthetic_clip(
    event: Uuid,
    mp4: std::path::PathBuf,
    digests: alertclip_wire::Digests,
) -> ClipDone {
    let record = ClipRecord {
        version: 1,
        event_id: event,
        site: SiteRecord {
            id: "bench".into(),
            name: "Benchmark".into(),
        },
        camera: "cam".into(),
        file: "cam.mp4".into(),
        triggers: Vec::new(),
        requested: TimeSpan {
            start: String::new(),
            end: String::new(),
        },
        actual: TimeSpan {
            start: String::new(),
            end: String::new(),
        },
        duration_ms: 20_000,
        frames: 300,
        codec: "h264".into(),
        width: Some(1920),
        height: Some(1080),
        bytes: digests.bytes,
        sha256: digests.sha256,
        partial: false,
        partial_reason: None,
        clock_map: alertclip::clock::ClockMap::now().into(),
    };
    let manifest = Manifest::for_clip(&record, CHUNK as u64, digests.blocks);
    ClipDone {
        manifest: serde_json::to_vec(&manifest).unwrap_or_default(),
        chunk_size: CHUNK as u64,
        manifest_path: mp4.with_extension("manifest.json"),
        sidecar: mp4.with_extension("json"),
        record,
        mp4,
    }
}
