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
//!   bytes in chunks of the same size at QoS 1 over one connection (`--repeat`).

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
use alertclip_mqtt::{LinkEvent, Session, Settings};
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
    // Wait for the subscription to be in place: the broker acknowledges it before this
    // retained probe comes back.
    tokio::time::sleep(Duration::from_millis(500)).await;
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
