//! The box's promise under the faults a store's worst day brings: an alert that was triggered
//! is delivered, or is on disk waiting to be, whatever the disk, the broker, a kill or a
//! hostile camera does.
//! Real mosquitto, a real receiver process, and small tmpfs file systems that fill up (these
//! tests need root to mount them, and skip saying so without it).

// A test or benchmark that cannot go on fails with the value it got.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use alertclip::clip::history::Delivery;
use alertclip::demo::teststream::TestStream;
use alertclip::ingest::camera::CameraState;
use alertclip::trigger::{Trigger, TriggerError, TriggerKind};
use common::broker::Broker;
use common::disk::{Tmpfs, fill_bytes, fill_inodes, free_bytes};
use common::receiver::ReceiverProcess;
use common::*;

const ROLLS: &str = "pre_roll = \"2s\"\npost_roll = \"1s\"";

fn mqtt(broker: &Broker) -> String {
    format!("[mqtt]\nurl = \"{}\"\n", broker.url())
}

/// A broker, a receiver trusting the box's key on first use, and a box with one camera whose
/// outbox and evidence live on `disk` (its clips elsewhere).
async fn start_on(disk: &Tmpfs) -> (Broker, ReceiverProcess, Rig) {
    let broker = Broker::start("");
    let receiver = ReceiverProcess::start(
        broker.port,
        &["--broker", &broker.url(), "--trust-on-first-use"],
        &[],
    )
    .await;
    let state = disk.path().to_owned();
    let rig = Rig::start_adjusted(&[TestStream::h264("/cam")], ROLLS, &mqtt(&broker), |c| {
        c.outbox.dir = state.join("outbox");
        c.evidence.dir = state.join("evidence");
    })
    .await;
    (broker, receiver, rig)
}

/// Six presses with not a byte free where the outbox and the chain live: every one is taken,
/// and every alert reaches the receiver, chained without a gap, while the disk is still full.
#[tokio::test(flavor = "multi_thread")]
async fn alerts_are_delivered_from_a_disk_with_no_space_left() {
    let test = "alerts_are_delivered_from_a_disk_with_no_space_left";
    let Some(disk) = Tmpfs::mount(test, "size=8m") else {
        return;
    };
    let (_broker, mut receiver, mut rig) = start_on(&disk).await;
    wait_buffered(rig.camera(0), 2.5).await;
    let filler = fill_bytes(disk.path());
    assert_eq!(free_bytes(disk.path()), 0, "the disk is full");

    let mut events = Vec::new();
    for n in 0..6 {
        let mut trigger = Trigger::now(TriggerKind::Button, "register");
        trigger.note = Some(format!("press {n}"));
        let event = rig
            .daemon
            .triggers()
            .fire(trigger)
            .await
            .unwrap_or_else(|e| {
                panic!("press {n} on a full disk was refused: {e}");
            });
        events.push(event);
        // The clip (on another disk) closes the event, so the next press opens a new one.
        rig.next_clip().await;
    }
    let mut sequences = BTreeSet::new();
    for event in &events {
        let alert = receiver
            .wait_for("alert", |v| {
                v["type"] == "alert" && v["alert"]["event_id"] == event.to_string()
            })
            .await;
        assert_eq!(alert["signature"], "valid", "{alert}");
        sequences.insert(alert["alert"]["sequence"].as_u64().unwrap());
    }
    assert_eq!(
        sequences.into_iter().collect::<Vec<_>>(),
        (1..=6).collect::<Vec<u64>>(),
        "the chain neither skipped nor reused a number"
    );
    assert!(
        !receiver.seen_any(|v| v["type"] == "chain"),
        "the receiver saw a break in the chain"
    );
    drop(filler);
    rig.stop().await;
}

/// When not even the reserve helps (no inode left for the alert's file), the press is told
/// its alert is not on disk, the box says so, keeps the alert in memory and delivers it, with
/// the chain unbroken, as soon as space is freed.
#[tokio::test(flavor = "multi_thread")]
async fn an_alert_that_cannot_be_written_is_reported_retried_from_memory_and_delivered() {
    let test = "an_alert_that_cannot_be_written_is_reported_retried_from_memory_and_delivered";
    let Some(disk) = Tmpfs::mount(test, "size=8m,nr_inodes=64") else {
        return;
    };
    let (_broker, mut receiver, mut rig) = start_on(&disk).await;
    // Nothing is in the outbox now: no delivered message frees an inode behind the filler.
    wait_buffered(rig.camera(0), 2.5).await;
    let fillers = fill_inodes(disk.path());
    let refused = rig
        .daemon
        .triggers()
        .fire(Trigger::now(TriggerKind::Button, "register"))
        .await;
    let event = match refused {
        Err(error @ TriggerError::AlertNotSpooled { .. }) => {
            assert!(error.to_string().contains("retried from memory"), "{error}");
            error.event().unwrap()
        }
        other => panic!("expected the caller to hear the alert is not on disk, got {other:?}"),
    };
    let summary = rig
        .daemon
        .recent_events()
        .into_iter()
        .find(|e| e.event_id == event)
        .unwrap();
    assert_eq!(summary.delivery, Delivery::Retrying, "{summary:?}");

    std::fs::remove_dir_all(&fillers).unwrap();
    let alert = receiver
        .wait_for("the retried alert", |v| {
            v["type"] == "alert" && v["alert"]["event_id"] == event.to_string()
        })
        .await;
    assert_eq!(alert["signature"], "valid", "{alert}");
    assert_eq!(alert["alert"]["sequence"], 1, "no number used up: {alert}");
    receiver
        .wait_for("the health alert saying it was late", |v| {
            v["type"] == "health"
                && v["health"]["kind"] == "alert_spooled_late"
                && v["health"]["event_id"] == event.to_string()
        })
        .await;
    // The chain goes on from the retried alert.
    rig.next_clip().await;
    let next = rig
        .fire(Trigger::now(TriggerKind::Button, "register"))
        .await;
    let alert = receiver
        .wait_for("the next alert", |v| {
            v["type"] == "alert" && v["alert"]["event_id"] == next.to_string()
        })
        .await;
    assert_eq!(alert["alert"]["sequence"], 2, "{alert}");
    assert!(!receiver.seen_any(|v| v["type"] == "chain"));
    rig.stop().await;
}

/// What a SIGKILL or power cut right after a clip is written leaves: the clip and its sidecar
/// on disk, its manifest missing and nothing in the outbox (killed before it was spooled), or
/// the clip still under its sealed temporary name (killed before the rename). After a restart
/// both clips are completed, spooled and received whole and verified.
#[tokio::test(flavor = "multi_thread")]
async fn clips_a_kill_interrupted_before_they_were_spooled_are_delivered_after_a_restart() {
    // No broker yet: everything stays in the outbox.
    let unreachable = Broker::start("");
    let nowhere = unreachable.url();
    drop(unreachable);
    let tail = |url: &str| format!("[mqtt]\nurl = \"{url}\"\n");
    let mut rig = Rig::start(&[TestStream::h264("/cam")], ROLLS, &tail(&nowhere)).await;
    wait_buffered(rig.camera(0), 2.5).await;
    let mut clips = Vec::new();
    for _ in 0..2 {
        rig.fire(Trigger::now(TriggerKind::Button, "register"))
            .await;
        clips.push(rig.next_clip().await);
    }
    let hashes: Vec<String> = clips.iter().map(|c| sha256sum(&c.mp4)).collect();

    let broker = Broker::start("");
    let mut receiver = ReceiverProcess::start(
        broker.port,
        &["--broker", &broker.url(), "--trust-on-first-use"],
        &[],
    )
    .await;
    let interrupted = clips.clone();
    let rig = rig
        .restart(ROLLS, &tail(&broker.url()), move |dir| {
            for (n, clip) in interrupted.iter().enumerate() {
                std::fs::remove_file(&clip.manifest_path).unwrap();
                // Killed before spooling: the outbox never had this clip.
                let event = clip.record.event_id.to_string();
                for entry in std::fs::read_dir(dir.join("outbox")).unwrap().flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.starts_with(&format!("2-{event}-010")) {
                        std::fs::remove_file(entry.path()).unwrap();
                    }
                }
                if n == 1 {
                    // Killed before the rename.
                    let sealed = clip.mp4.with_file_name(".cam.mp4.partial");
                    std::fs::rename(&clip.mp4, sealed).unwrap();
                }
            }
        })
        .await;
    for (clip, hash) in clips.iter().zip(&hashes) {
        let event = clip.record.event_id.to_string();
        let received = receiver
            .wait_for("the interrupted clip", |v| {
                v["type"] == "clip" && v["event_id"] == event
            })
            .await;
        assert_eq!(received["verified"], true, "{received}");
        assert_eq!(&sha256sum(&ReceiverProcess::path(&received)), hash);
        assert!(clip.mp4.exists() && clip.manifest_path.exists());
    }
    rig.stop().await;
}

/// A camera that is down long enough for its reconnection delay to reach 16 s streams again
/// within a probe and a handshake of answering, not after the rest of the delay; and what it
/// reports buffered is then what a trigger would get: the new stream, not the old one.
#[tokio::test(flavor = "multi_thread")]
async fn a_camera_streams_again_soon_after_it_answers_and_reports_only_what_it_has_since() {
    let rig = Rig::start(&[TestStream::h264("/cam")], "pre_roll = \"30s\"", "").await;
    wait_buffered(rig.camera(0), 5.0).await;
    rig.server.take_down("/cam");
    // Four failed attempts: the next delay is 16 s.
    wait_status(rig.camera(0), Duration::from_secs(60), |s| {
        s.reconnects >= 4 && s.state != CameraState::Connecting
    })
    .await;
    rig.server.bring_up("/cam");
    let back = tokio::time::Instant::now();
    let status = wait_status(rig.camera(0), Duration::from_secs(30), |s| {
        s.state == CameraState::Streaming
    })
    .await;
    let after = back.elapsed();
    eprintln!("streaming again {after:?} after the camera answered");
    assert!(
        after < Duration::from_secs(5),
        "streaming only {after:?} after the camera answered again"
    );
    assert!(
        status.buffered_s < after.as_secs_f64() + 1.0,
        "{} s reported buffered {after:?} after the camera came back",
        status.buffered_s
    );
    rig.stop().await;
}

/// A disk far smaller than the configured limits, the broker down: every new clip is still
/// written, by giving up the oldest ones (said on the health channel); every alert waits, and
/// reaches the officer once the broker is back, with the newest clip.
#[tokio::test(flavor = "multi_thread")]
async fn a_small_disk_sheds_the_oldest_clips_never_the_newest_nor_an_alert() {
    let test = "a_small_disk_sheds_the_oldest_clips_never_the_newest_nor_an_alert";
    let Some(disk) = Tmpfs::mount(test, "size=16m") else {
        return;
    };
    let mut broker = Broker::start("");
    let mut receiver = ReceiverProcess::start(
        broker.port,
        &["--broker", &broker.url(), "--trust-on-first-use"],
        &[],
    )
    .await;
    broker.stop();
    let state = disk.path().to_owned();
    let mut rig = Rig::start_adjusted(&[busy_stream()], ROLLS, &mqtt(&broker), |c| {
        c.storage.dir = state.join("clips");
        c.outbox.dir = state.join("outbox");
        c.evidence.dir = state.join("evidence");
    })
    .await;
    wait_buffered(rig.camera(0), 2.5).await;
    let mut events = Vec::new();
    let mut last = None;
    for _ in 0..10 {
        events.push(
            rig.fire(Trigger::now(TriggerKind::Button, "register"))
                .await,
        );
        // Each clip is written, however full the disk was.
        last = Some(rig.next_clip().await);
    }
    let last = last.unwrap();
    let clips = disk.path().join("clips");
    assert!(
        !clips.join(events[0].to_string()).exists(),
        "the oldest clip was given up"
    );
    assert!(last.mp4.exists() && last.manifest_path.exists());

    broker.restart();
    for event in &events {
        receiver
            .seen_or_wait("every alert", |v| {
                v["type"] == "alert" && v["alert"]["event_id"] == event.to_string()
            })
            .await;
    }
    let newest = last.record.event_id.to_string();
    let clip = receiver
        .wait_for("the newest clip", |v| {
            v["type"] == "clip" && v["event_id"] == newest
        })
        .await;
    assert_eq!(clip["verified"], true, "{clip}");
    assert_eq!(
        sha256sum(&ReceiverProcess::path(&clip)),
        sha256sum(&last.mp4)
    );
    assert!(
        receiver.seen_any(|v| v["type"] == "health"
            && v["health"]["kind"] == "outbox_dropped"
            && v["health"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("the disk is full"))),
        "the dropped clips were reported"
    );
    rig.stop().await;
}

/// Idle connections to the control socket cannot take the daemon's descriptors: beyond its
/// limit new ones are closed at once, idle ones after 10 s, a press meanwhile is delivered,
/// and status answers again once they are gone.
#[tokio::test(flavor = "multi_thread")]
async fn idle_control_connections_are_bounded_and_closed() {
    use alertclip::daemon::control::{self, MAX_CONNECTIONS, Request};
    use tokio::io::AsyncReadExt;
    let rig = Rig::start(&[TestStream::h264("/cam")], ROLLS, "").await;
    wait_buffered(rig.camera(0), 2.5).await;
    let socket = rig.dir.path().join("control.sock");
    let mut idle = Vec::new();
    for _ in 0..MAX_CONNECTIONS + 100 {
        idle.push(tokio::net::UnixStream::connect(&socket).await.unwrap());
    }
    // A press meanwhile is taken and clipped.
    let event = rig
        .fire(Trigger::now(TriggerKind::Button, "register"))
        .await;
    // Every idle connection is closed by the daemon: the extra ones at once, the rest when
    // they have been idle too long.
    let closed = async {
        for stream in &mut idle {
            let mut byte = [0u8; 1];
            assert_eq!(stream.read(&mut byte).await.unwrap_or(0), 0);
        }
    };
    tokio::time::timeout(Duration::from_secs(60), closed)
        .await
        .expect("idle control connections are closed");
    let status = control::call(&socket, &Request::Status).await.unwrap();
    assert!(status.ok);
    assert!(status.events.unwrap().iter().any(|e| e.event_id == event));
    rig.stop().await;
}

/// Waits for a watched value the predicate accepts, failing the test after 20 s.
async fn settle<T>(watch: &mut tokio::sync::watch::Receiver<T>, predicate: impl FnMut(&T) -> bool) {
    tokio::time::timeout(Duration::from_secs(20), watch.wait_for(predicate))
        .await
        .expect("the expected state within 20 s")
        .expect("the sender is alive");
}

/// Anyone who may publish on a wireless button's topic can send a message far over its limit
/// (10 MB at QoS 1, which a broker holds for a persistent session and sends again at every
/// reconnection). It is discarded with that session once; the button is back within a
/// reconnection, its next press raises an alert, and the alert channel never went down.
#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_message_on_a_button_topic_cannot_silence_the_box() {
    use alertclip::trigger::buttons::button::ButtonState;
    let broker = Broker::start("");
    let mut receiver = ReceiverProcess::start(broker.port, &["--broker", &broker.url()], &[]).await;
    let topic = "zigbee2mqtt/panic-button";
    let tail = mqtt(&broker)
        + "[[button]]\nid = \"aqara\"\nkind = \"mqtt\"\n\
           topic = \"zigbee2mqtt/panic-button\"\nmatch = { action = \"single\" }\n";
    let rig = Rig::start(&[TestStream::h264("/cam")], ROLLS, &tail).await;
    wait_buffered(rig.camera(0), 2.5).await;
    let mut button = rig.daemon.buttons()[0].status.clone();
    let mut link = rig.daemon.publisher().unwrap().link();
    settle(&mut button, |s| s.state == ButtonState::Ready).await;
    settle(&mut link, |l| l.connected).await;

    let big = rig.dir.path().join("big.json");
    std::fs::write(&big, vec![b'x'; 10 << 20]).unwrap();
    let status = std::process::Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
        ])
        .arg("-f")
        .arg(&big)
        .status()
        .unwrap();
    assert!(status.success());
    // The button's session drops the message, and comes back.
    settle(&mut button, |s| s.state == ButtonState::Unavailable).await;
    settle(&mut button, |s| s.state == ButtonState::Ready).await;
    assert!(
        link.borrow().connected,
        "delivery never shared the button's fate"
    );
    common::broker::mosquitto_pub(broker.port, topic, r#"{"action":"single"}"#, &[]);
    let alert = receiver
        .wait_for("the press after the flood", |v| {
            v["type"] == "alert" && v["alert"]["trigger"]["source"] == "aqara"
        })
        .await;
    assert_eq!(alert["alert"]["trigger"]["kind"], "button");
    rig.stop().await;
}

/// Presses made while the box was stopped are kept by the broker for the button's session and
/// delivered as the box comes back: each still raises an alert (a press is an alarm whenever
/// it was made), which says it may have been made while the box was offline.
#[tokio::test(flavor = "multi_thread")]
async fn presses_queued_while_the_box_was_down_raise_alerts_that_say_so() {
    use alertclip::trigger::buttons::button::ButtonState;
    let broker = Broker::start("");
    let mut receiver = ReceiverProcess::start(broker.port, &["--broker", &broker.url()], &[]).await;
    let topic = "zigbee2mqtt/panic-button";
    let tail = mqtt(&broker)
        + "[[button]]\nid = \"aqara\"\nkind = \"mqtt\"\nlocation = \"register 2\"\n\
           topic = \"zigbee2mqtt/panic-button\"\nmatch = { action = \"single\" }\n";
    let rig = Rig::start(&[TestStream::h264("/cam")], ROLLS, &tail).await;
    let mut button = rig.daemon.buttons()[0].status.clone();
    settle(&mut button, |s| s.state == ButtonState::Ready).await;
    // A press while the box is up: its alert shows the button's subscription is in place.
    wait_buffered(rig.camera(0), 2.5).await;
    common::broker::mosquitto_pub(broker.port, topic, r#"{"action":"single"}"#, &[]);
    let first = receiver
        .wait_for("the live press", |v| v["type"] == "alert")
        .await;
    assert_eq!(first["alert"]["trigger"]["note"], "register 2", "{first}");
    let first = first["alert"]["event_id"].as_str().unwrap().to_owned();
    let port = broker.port;
    let rig = rig
        .restart(ROLLS, &tail, move |_| {
            // The box is down: a member of staff presses twice.
            for _ in 0..2 {
                common::broker::mosquitto_pub(port, topic, r#"{"action":"single"}"#, &[]);
            }
        })
        .await;
    let alert = receiver
        .wait_for("the alert of the queued press", |v| {
            v["type"] == "alert" && v["alert"]["event_id"] != first.as_str()
        })
        .await;
    assert_eq!(alert["alert"]["trigger"]["source"], "aqara");
    let note = alert["alert"]["trigger"]["note"].as_str().unwrap();
    assert!(
        note.starts_with("register 2 (") && note.contains("while the box was offline"),
        "{note}"
    );
    rig.stop().await;
}

/// Ten SIGKILLs at seeded random moments after a trigger (while the clip is recorded, while it
/// is finished, signed, spooled, delivered), each followed by a restart: every alert arrives,
/// and so does every clip that was finished (its sidecar on disk) when the kill came, whole
/// and verified, however often the box was killed on the way.
#[tokio::test(flavor = "multi_thread")]
async fn ten_kills_at_random_moments_lose_no_alert_and_no_finished_clip() {
    let broker = Broker::start("");
    let mut receiver = ReceiverProcess::start(broker.port, &["--broker", &broker.url()], &[]).await;
    let server =
        alertclip::demo::teststream::TestServer::start(&[TestStream::h264("/cam")]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let process = DaemonProcess::configure(
        dir.path(),
        &broker.url(),
        &server.url("/cam"),
        "16KiB",
        "pre_roll = \"1s\"\npost_roll = \"1s\"",
    );
    let (config, socket) = (process.config.clone(), process.socket.clone());
    let start = || process.start();
    // A fixed seed: the same moments on every run, spread over recording and finishing.
    let mut seed: u64 = 0x5eed_a1e7;
    let mut next_delay = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        Duration::from_millis((seed >> 33) % 2_600)
    };
    let mut events = Vec::new();
    let mut finished = Vec::new();
    for _ in 0..10 {
        let mut daemon = start();
        // Streaming with the pre-roll buffered, as its status says.
        loop {
            let status = alertclip::daemon::control::call(
                &socket,
                &alertclip::daemon::control::Request::Status,
            )
            .await;
            if let Ok(status) = status
                && status
                    .cameras
                    .is_some_and(|c| c["cam"].ingest.buffered_s >= 1.2)
            {
                break;
            }
            assert!(daemon.try_wait().unwrap().is_none(), "the daemon exited");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let out = alertclip_command()
            .args(["trigger", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let event = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        // The fault: a kill at a moment nobody chose.
        tokio::time::sleep(next_delay()).await;
        daemon.start_kill().unwrap();
        daemon.wait().await.unwrap();
        if dir
            .path()
            .join("clips")
            .join(&event)
            .join("cam.json")
            .exists()
        {
            finished.push(event.clone());
        }
        events.push(event);
    }
    let mut daemon = start();
    for event in &events {
        receiver
            .seen_or_wait("every alert", |v| {
                v["type"] == "alert" && v["alert"]["event_id"] == event.as_str()
            })
            .await;
    }
    for event in &finished {
        let clip = receiver
            .seen_or_wait("every finished clip", |v| {
                v["type"] == "clip" && v["event_id"] == event.as_str()
            })
            .await;
        assert_eq!(clip["verified"], true, "{clip}");
        let local = dir.path().join("clips").join(event).join("cam.mp4");
        assert_eq!(sha256sum(&ReceiverProcess::path(&clip)), sha256sum(&local));
    }
    eprintln!(
        "{} kills: {} alerts and {} finished clips, all delivered",
        events.len(),
        events.len(),
        finished.len()
    );
    daemon.start_kill().unwrap();
    daemon.wait().await.unwrap();
}

/// A camera that answers OPTIONS, then replies to DESCRIBE announcing a 2 GB body and trickles
/// it, as one hostile RTSP server did: rtspsrc and retina alike read into a buffer of the
/// announced size (and rtspsrc cannot then be stopped). Counts the connections that asked for
/// the stream and have closed.
struct HugeReplyCamera {
    port: u16,
    closed: tokio::sync::watch::Receiver<usize>,
}

impl HugeReplyCamera {
    async fn start() -> HugeReplyCamera {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (closed_tx, closed) = tokio::sync::watch::channel(0usize);
        let closed_tx = std::sync::Arc::new(closed_tx);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let closed_tx = closed_tx.clone();
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buffer = [0u8; 4096];
                    let mut described = false;
                    while let Ok(n) = socket.read(&mut buffer).await {
                        if n == 0 {
                            break;
                        }
                        seen.extend_from_slice(&buffer[..n]);
                        let text = String::from_utf8_lossy(&seen).into_owned();
                        if text.starts_with("OPTIONS") && text.contains("\r\n\r\n") {
                            seen.clear();
                            let reply = "RTSP/1.0 200 OK\r\nCSeq: 1\r\nPublic: OPTIONS, DESCRIBE, SETUP, PLAY\r\n\r\n";
                            if socket.write_all(reply.as_bytes()).await.is_err() {
                                break;
                            }
                        } else if text.starts_with("DESCRIBE") && text.contains("\r\n\r\n") {
                            described = true;
                            let cseq = text
                                .lines()
                                .find_map(|l| l.strip_prefix("CSeq: "))
                                .unwrap_or("2")
                                .to_owned();
                            let reply = format!(
                                "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Type: application/sdp\r\nContent-Length: 2000000000\r\n\r\n"
                            );
                            let mut trickle = socket.write_all(reply.as_bytes()).await.is_ok();
                            // A slow body, until the client lets go.
                            while trickle {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                trickle = socket.write_all(&[b'x'; 4096]).await.is_ok();
                            }
                            break;
                        }
                    }
                    if described {
                        closed_tx.send_modify(|n| *n += 1);
                    }
                });
            }
        });
        HugeReplyCamera { port, closed }
    }

    fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/cam", self.port)
    }
}

/// A camera whose reply announces 2 GB: the box cuts that connection at once and says why,
/// instead of reading it into memory on every reconnect, and still stops when asked.
#[tokio::test(flavor = "multi_thread")]
async fn a_camera_announcing_a_huge_reply_is_cut_said_so_and_the_box_still_stops() {
    huge_reply_is_cut("").await;
}

/// The same, read by GStreamer's rtspsrc.
#[tokio::test(flavor = "multi_thread")]
async fn a_camera_announcing_a_huge_reply_to_rtspsrc_is_cut_said_so_and_the_box_still_stops() {
    huge_reply_is_cut("ingest = \"gstreamer\"").await;
}

async fn huge_reply_is_cut(client: &str) {
    let broker = Broker::start("");
    let mut camera = HugeReplyCamera::start().await;
    let dir = tempfile::tempdir().unwrap();
    let process = DaemonProcess::configure(
        dir.path(),
        &broker.url(),
        &camera.url(),
        "64KiB",
        &format!("stall_timeout = \"2s\"\n{client}"),
    );
    let mut daemon = process.start();
    // The client's connection is let go of, not read for gigabytes.
    tokio::time::timeout(Duration::from_secs(30), camera.closed.wait_for(|n| *n >= 1))
        .await
        .expect("the box kept the hostile camera's connection open")
        .unwrap();
    // And the camera's status says why.
    let reason = loop {
        let status = alertclip::daemon::control::call(
            &process.socket,
            &alertclip::daemon::control::Request::Status,
        )
        .await;
        let error = status
            .ok()
            .and_then(|s| s.cameras)
            .and_then(|c| c["cam"].ingest.last_error.clone());
        if let Some(error) = error {
            break error;
        }
        assert!(daemon.try_wait().unwrap().is_none(), "the daemon exited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(reason.contains("2000000000-byte RTSP reply"), "{reason}");
    // A stop completes: nothing is left stuck reading from the camera.
    let pid = daemon.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let exited = tokio::time::timeout(Duration::from_secs(30), daemon.wait())
        .await
        .expect("the daemon did not stop within 30 s of SIGTERM");
    assert!(exited.unwrap().success());
}
