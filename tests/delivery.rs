//! Delivery over MQTT against a real mosquitto: alert, snapshot and clip reach the receiver,
//! verified, through outages, restarts and limits.

// A test or benchmark that cannot go on fails with the value it got.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use alertclip::demo::teststream::TestStream;
use alertclip::trigger::{Trigger, TriggerKind};
use common::broker::{Broker, TopicRecorder, mosquitto_pub};
use common::receiver::ReceiverProcess;
use common::*;

const ROLLS: &str = "pre_roll = \"2s\"\npost_roll = \"1s\"";

/// The device's retained status, as any subscriber gets it.
fn retained_status(port: &str) -> serde_json::Value {
    let out = std::process::Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            port,
            "-t",
            "alertclip/v1/test-site/status",
            "-C",
            "1",
            "-W",
            "5",
        ])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status {:?}: {e}", String::from_utf8_lossy(&out.stdout)))
}

fn mqtt(broker: &Broker, extra: &str) -> String {
    format!("[mqtt]\nurl = \"{}\"\n{extra}\n", broker.url())
}

#[tokio::test(flavor = "multi_thread")]
async fn trigger_reaches_the_receiver_as_alert_snapshot_and_verified_clip() {
    let broker = Broker::start("");
    let port = broker.port.to_string();
    let mut receiver = ReceiverProcess::start(broker.port, &["--broker", &broker.url()], &[]).await;
    let mut rig = Rig::start(&[TestStream::h264("/cam")], ROLLS, &mqtt(&broker, "")).await;
    wait_buffered(rig.camera(0), 2.5).await;
    let mut trigger = Trigger::now(TriggerKind::Button, "register-2");
    trigger.note = Some("register 2".into());
    let event = rig.fire(trigger).await;
    let local = rig.next_clip().await;

    let alert = receiver.wait_for("alert", |v| v["type"] == "alert").await;
    let alert = &alert["alert"];
    assert_schema("alert", alert);
    assert_eq!(alert["schema"], "alertclip.alert.v1");
    assert_eq!(alert["event_id"], event.to_string());
    assert_eq!(alert["site"]["id"], "test-site");
    assert_eq!(alert["site"]["address"], "12 Main St");
    assert_eq!(alert["trigger"]["kind"], "button");
    assert_eq!(alert["trigger"]["source"], "register-2");
    assert_eq!(alert["trigger"]["note"], "register 2");
    assert_eq!(alert["cameras"][0]["id"], "cam");
    assert_eq!(alert["cameras"][0]["pre_roll_s"], 2.0);
    assert_eq!(alert["test"], false);

    let snapshot = receiver
        .wait_for("snapshot", |v| v["type"] == "snapshot")
        .await;
    let jpeg = std::fs::read(ReceiverProcess::path(&snapshot)).unwrap();
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "a JPEG");
    let probe = ffprobe_image(&ReceiverProcess::path(&snapshot));
    assert_eq!(probe, (320, 240));

    let clip = receiver.wait_for("clip", |v| v["type"] == "clip").await;
    assert_eq!(clip["verified"], true);
    assert_schema("manifest", &clip["manifest"]);
    let received = ReceiverProcess::path(&clip);
    assert_eq!(
        sha256sum(&received),
        local.record.sha256,
        "the officer gets the very file cut on the box"
    );
    assert_eq!(clip["manifest"]["sha256"], local.record.sha256);
    assert_eq!(clip["manifest"]["frames"], local.record.frames);
    ffprobe(&received).assert_well_formed(&received);

    // Everything delivered leaves the outbox.
    let publisher = rig.daemon.publisher().unwrap().clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while publisher.outbox().stats().messages > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "outbox not drained: {:?}",
            publisher.outbox().stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The retained status says the device is online, with its camera.
    let status = retained_status(&port);
    assert_schema("status", &status);
    assert_eq!(status["state"], "online");
    assert_eq!(status["cameras"]["cam"]["state"], "streaming");
    rig.stop().await;
    // A clean shutdown leaves "offline" retained.
    let status = retained_status(&port);
    assert_schema("status", &status);
    assert_eq!(status["state"], "offline");
    receiver.stop().await;
}

fn ffprobe_image(path: &std::path::Path) -> (u64, u64) {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=width,height",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["streams"][0]["width"].as_u64().unwrap(),
        v["streams"][0]["height"].as_u64().unwrap(),
    )
}

/// Buffers, triggers, and waits for the receiver's verified clip of that event; returns the
/// local clip and the receiver's report.
async fn deliver_one(
    rig: &mut Rig,
    receiver: &mut ReceiverProcess,
) -> (alertclip::clip::ClipDone, serde_json::Value) {
    wait_buffered(rig.camera(0), 2.5).await;
    let event = rig.fire(Trigger::now(TriggerKind::Manual, "test")).await;
    let local = rig.next_clip().await;
    let id = event.to_string();
    receiver
        .wait_for("alert", |v| {
            v["type"] == "alert" && v["alert"]["event_id"] == id.as_str()
        })
        .await;
    let clip = receiver
        .wait_for("clip", |v| {
            v["type"] == "clip" && v["event_id"] == id.as_str()
        })
        .await;
    assert_eq!(clip["manifest"]["sha256"], local.record.sha256);
    assert_eq!(
        sha256sum(&ReceiverProcess::path(&clip)),
        local.record.sha256
    );
    (local, clip)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_box_with_its_own_topic_prefix_is_received_under_that_prefix() {
    let broker = Broker::start("");
    let mut receiver = ReceiverProcess::start(
        broker.port,
        &[
            "--broker",
            &broker.url(),
            "--topic-prefix",
            "acme/stores/{site}",
        ],
        &[],
    )
    .await;
    let mut rig = Rig::start(
        &[TestStream::h264("/cam")],
        ROLLS,
        &mqtt(&broker, "topic_prefix = \"acme/stores/{site}\""),
    )
    .await;
    let (_, clip) = deliver_one(&mut rig, &mut receiver).await;
    assert_eq!(clip["site"], "test-site");
    assert_eq!(clip["verified"], true);
    let alert = receiver.seen.iter().find(|v| v["type"] == "alert").unwrap();
    assert_eq!(alert["alert"]["site"]["id"], "test-site");
    rig.stop().await;
    receiver.stop().await;
}

/// Waits until the daemon's broker connection reports an error the predicate accepts.
async fn wait_link_error(rig: &Rig, what: &str, predicate: impl Fn(&str) -> bool) -> String {
    let publisher = rig.daemon.publisher().unwrap().clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(error) = publisher.link_status().last_error
            && predicate(&error)
        {
            return error;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {what}; link: {:?}",
            publisher.link_status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_delivers_and_a_wrong_ca_is_refused_with_nothing_lost() {
    let pki = common::tls::Pki::new("alertclip test CA");
    let mut broker = Broker::start("");
    let server = pki.server();
    let ca = broker.file("ca.pem", pki.ca_pem().as_bytes());
    let cert = broker.file("server.pem", server.cert.as_bytes());
    let key = broker.file("server.key", server.key.as_bytes());
    broker.reconfigure(&format!(
        "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\nallow_anonymous true",
        ca.display(),
        cert.display(),
        key.display()
    ));
    let device = pki.client("device");
    let device_cert = broker.file("device.pem", device.cert.as_bytes());
    let device_key = broker.file("device.key", device.key.as_bytes());
    let officer = pki.client("officer");
    let officer_cert = broker.file("officer.pem", officer.cert.as_bytes());
    let officer_key = broker.file("officer.key", officer.key.as_bytes());
    let url = format!("mqtts://127.0.0.1:{}", broker.port);
    let (ca_s, oc, ok) = (
        ca.display().to_string(),
        officer_cert.display().to_string(),
        officer_key.display().to_string(),
    );
    let mut receiver = ReceiverProcess::start(
        broker.port,
        &["--broker", &url, "--ca", &ca_s, "--cert", &oc, "--key", &ok],
        &["--cafile", &ca_s, "--cert", &oc, "--key", &ok],
    )
    .await;
    let tail = format!(
        "[mqtt]\nurl = \"{url}\"\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        ca.display(),
        device_cert.display(),
        device_key.display()
    );
    let mut rig = Rig::start(&[TestStream::h264("/cam")], ROLLS, &tail).await;
    deliver_one(&mut rig, &mut receiver).await;
    rig.stop().await;

    // A device that trusts another CA does not connect, says why, and keeps its alert.
    let other = common::tls::Pki::new("some other CA");
    let wrong_ca = broker.file("wrong-ca.pem", other.ca_pem().as_bytes());
    let tail = tail.replace(&ca.display().to_string(), &wrong_ca.display().to_string());
    let rig = Rig::start(&[TestStream::h264("/cam")], ROLLS, &tail).await;
    let error = wait_link_error(&rig, "TLS error", |e| e.contains("TLS")).await;
    assert!(
        error.contains("certificate") || error.contains("UnknownIssuer"),
        "{error}"
    );
    assert!(
        error.contains("mqtt.ca_file"),
        "the error says what to check: {error}"
    );
    wait_buffered(rig.camera(0), 0.5).await;
    rig.fire(Trigger::now(TriggerKind::Manual, "test")).await;
    let stats = rig.daemon.publisher().unwrap().outbox().stats();
    assert_eq!(stats.events, 1, "the alert waits in the outbox");
    rig.stop().await;
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_and_an_acl_confine_the_device_to_its_prefix() {
    let mut broker = Broker::start("");
    let passwords = broker.file("passwords", b"");
    for (user, password) in [("device", "device-secret"), ("officer", "officer-secret")] {
        let status = std::process::Command::new("mosquitto_passwd")
            .arg("-b")
            .arg(&passwords)
            .args([user, password])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let acl = broker.file(
        "acl",
        b"user device\ntopic readwrite alertclip/v1/test-site/#\n\nuser officer\ntopic read alertclip/v1/#\ntopic write alertclip/v1/probe/#\n",
    );
    broker.reconfigure(&format!(
        "allow_anonymous false\npassword_file {}\nacl_file {}",
        passwords.display(),
        acl.display()
    ));
    let officer_password = broker.file("officer.password", b"officer-secret\n");
    let device_password = broker.file("device.password", b"device-secret\n");
    let op = officer_password.display().to_string();
    let mut receiver = ReceiverProcess::start(
        broker.port,
        &[
            "--broker",
            &broker.url(),
            "--username",
            "officer",
            "--password-file",
            &op,
        ],
        &["-u", "officer", "-P", "officer-secret"],
    )
    .await;
    let tail = mqtt(
        &broker,
        &format!(
            "username = \"device\"\npassword_file = \"{}\"",
            device_password.display()
        ),
    );
    let mut rig = Rig::start(&[TestStream::h264("/cam")], ROLLS, &tail).await;
    deliver_one(&mut rig, &mut receiver).await;
    rig.stop().await;

    // A device whose prefix the ACL does not grant publishes nothing the officer sees: the
    // broker drops what it may not publish (MQTT 3.1.1 has no way to say so).
    let tail = mqtt(
        &broker,
        &format!(
            "username = \"device\"\npassword_file = \"{}\"\ntopic_prefix = \"alertclip/v1/elsewhere\"",
            device_password.display()
        ),
    );
    let mut rig = Rig::start(&[TestStream::h264("/cam")], ROLLS, &tail).await;
    wait_buffered(rig.camera(0), 2.5).await;
    rig.fire(Trigger::now(TriggerKind::Manual, "test")).await;
    rig.next_clip().await;
    rig.stop().await;

    // A wrong password is refused, and the error says so.
    let wrong = broker.file("wrong.password", b"guess\n");
    let tail = mqtt(
        &broker,
        &format!(
            "username = \"device\"\npassword_file = \"{}\"",
            wrong.display()
        ),
    );
    let rig = Rig::start(&[TestStream::h264("/cam")], ROLLS, &tail).await;
    let error = wait_link_error(&rig, "refusal", |e| e.contains("refused")).await;
    assert!(
        error.contains("user name or password") || error.contains("not authorised"),
        "{error}"
    );
    rig.stop().await;
    let elsewhere: Vec<_> = receiver
        .seen
        .iter()
        .filter(|v| v["site"] == "elsewhere")
        .collect();
    assert!(
        elsewhere.is_empty(),
        "the ACL kept the stray device out: {elsewhere:?}"
    );
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mqtt_5_delivers_the_same() {
    let broker = Broker::start("");
    let mut receiver = ReceiverProcess::start(
        broker.port,
        &["--broker", &broker.url(), "--protocol", "5"],
        &[],
    )
    .await;
    let mut rig = Rig::start(
        &[TestStream::h264("/cam")],
        ROLLS,
        &mqtt(&broker, "protocol = \"5\""),
    )
    .await;
    deliver_one(&mut rig, &mut receiver).await;
    rig.stop().await;
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_limited_to_128_kib_packets_gets_the_clip_in_chunks() {
    let broker = Broker::start("max_packet_size 131072");
    let mut receiver = ReceiverProcess::start(broker.port, &["--broker", &broker.url()], &[]).await;
    // A 640x480 stream at 2 Mbit/s: clips of several hundred kilobytes, many chunks.
    let stream = TestStream {
        width: 640,
        height: 480,
        bitrate_kbps: 2_000,
        pattern: "snow".into(),
        ..TestStream::h264("/cam")
    };
    let mut rig = Rig::start(&[stream], ROLLS, &mqtt(&broker, "")).await;
    let (local, clip) = deliver_one(&mut rig, &mut receiver).await;
    assert!(local.record.bytes > 300_000, "{}", local.record.bytes);
    assert!(clip["manifest"]["chunks"].as_u64().unwrap() > 2);
    rig.stop().await;

    // Chunks larger than the broker takes: the broker drops the connection without a word,
    // and the error suggests why.
    let rig = Rig::start(
        &[TestStream {
            width: 640,
            height: 480,
            bitrate_kbps: 2_000,
            pattern: "snow".into(),
            ..TestStream::h264("/cam")
        }],
        ROLLS,
        &mqtt(&broker, "chunk_size = \"512KiB\""),
    )
    .await;
    wait_buffered(rig.camera(0), 2.5).await;
    rig.fire(Trigger::now(TriggerKind::Manual, "test")).await;
    let error = wait_link_error(&rig, "size hint", |e| e.contains("chunk_size")).await;
    assert!(error.contains("maximum packet size"), "{error}");
    rig.stop().await;
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_stopped_during_a_clip_transfer_and_started_again_delivers_it_whole_once() {
    let mut broker = Broker::start("");
    let mut receiver = ReceiverProcess::start(broker.port, &["--broker", &broker.url()], &[]).await;
    // Small chunks make the transfer long enough to interrupt.
    let tail = mqtt(&broker, "chunk_size = \"4KiB\"");
    let mut rig = Rig::start(
        &[busy_stream()],
        "pre_roll = \"4s\"\npost_roll = \"1s\"",
        &tail,
    )
    .await;
    wait_buffered(rig.camera(0), 4.5).await;
    let event = rig.fire(Trigger::now(TriggerKind::Manual, "test")).await;
    let local = rig.next_clip().await;
    let outbox = rig.daemon.publisher().unwrap().clone();
    let spooled = outbox.outbox().stats().messages;
    assert!(spooled > 200, "{spooled} messages");
    while outbox.outbox().stats().messages > spooled * 3 / 4 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    broker.stop();
    // Acknowledgements already on their way still count: the box must have seen the broker
    // go before what is left is counted.
    let mut link = outbox.link();
    tokio::time::timeout(Duration::from_secs(30), link.wait_for(|l| !l.connected))
        .await
        .expect("the box notices the broker is gone")
        .unwrap();
    let left = outbox.outbox().stats().messages;
    assert!(
        left > 0 && left < spooled,
        "stopped mid-transfer: {left} of {spooled} left"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        outbox.outbox().stats().messages,
        left,
        "nothing is lost while the broker is down"
    );
    broker.restart();
    let id = event.to_string();
    let clip = receiver
        .wait_for("clip", |v| {
            v["type"] == "clip" && v["event_id"] == id.as_str()
        })
        .await;
    assert_eq!(
        sha256sum(&ReceiverProcess::path(&clip)),
        local.record.sha256
    );
    // Drained, and reported once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while outbox.outbox().stats().messages > 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    rig.stop().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), receiver.next()).await;
    let clips = receiver
        .seen
        .iter()
        .filter(|v| v["type"] == "clip" && v["event_id"] == id.as_str())
        .count();
    assert_eq!(clips, 1);
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn daemon_killed_mid_transfer_resumes_after_restart() {
    let broker = Broker::start("");
    let mut receiver = ReceiverProcess::start(broker.port, &["--broker", &broker.url()], &[]).await;
    let server = alertclip::demo::teststream::TestServer::start(&[busy_stream()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let process = DaemonProcess::configure(
        dir.path(),
        &broker.url(),
        &server.url("/cam"),
        "4KiB",
        "pre_roll = \"4s\"\npost_roll = \"1s\"",
    );
    let config = process.config.clone();
    let start = || process.start();
    let mut daemon = start();
    // Buffered once the status says so.
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Ok(status) = alertclip::daemon::control::call(
            &dir.path().join("c.sock"),
            &alertclip::daemon::control::Request::Status,
        )
        .await
        else {
            continue;
        };
        if status.cameras.unwrap()["cam"].ingest.buffered_s >= 4.5 {
            break;
        }
    }
    let out = alertclip_command()
        .args(["trigger", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let event = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    // Killed once the broker has acknowledged part of the clip (the saved watermark appears).
    let outbox = dir.path().join("outbox");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let partial = std::fs::read_dir(&outbox)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".acked"))
            })
            .unwrap_or(false);
        if partial {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the transfer never started"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    daemon.start_kill().unwrap();
    daemon.wait().await.unwrap();
    let pinned = std::fs::read_dir(&outbox)
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".mp4"));
    assert!(pinned, "killed before the clip was delivered");

    let mut daemon = start();
    let clip = receiver
        .wait_for("clip", |v| {
            v["type"] == "clip" && v["event_id"] == event.as_str()
        })
        .await;
    let local = dir.path().join("clips").join(&event).join("cam.mp4");
    assert_eq!(sha256sum(&ReceiverProcess::path(&clip)), sha256sum(&local));
    daemon.start_kill().unwrap();
    let _ = daemon.wait().await;
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_outbox_drops_clips_keeps_alerts_and_says_so() {
    let mut broker = Broker::start("");
    let mut receiver = ReceiverProcess::start(broker.port, &["--broker", &broker.url()], &[]).await;
    broker.stop();
    let tail = mqtt(&broker, "") + "[outbox]\nmax_bytes = \"2MiB\"\n";
    let mut rig = Rig::start(
        &[busy_stream()],
        "pre_roll = \"2s\"\npost_roll = \"1s\"",
        &tail,
    )
    .await;
    wait_buffered(rig.camera(0), 2.5).await;
    let mut events = Vec::new();
    for _ in 0..3 {
        events.push(rig.fire(Trigger::now(TriggerKind::Manual, "test")).await);
        rig.next_clip().await;
    }
    let stats = rig.daemon.publisher().unwrap().outbox().stats();
    assert!(stats.bytes <= 2 << 20, "{stats:?}");
    broker.restart();
    let mut alerts = Vec::new();
    let mut dropped = Vec::new();
    let mut clips = Vec::new();
    // As long as the receiver's own waits: both sides reconnect after their backoff.
    let deadline = tokio::time::Instant::now() + patience(Duration::from_secs(120));
    while alerts.len() < 3 || dropped.is_empty() || clips.is_empty() {
        let v = tokio::time::timeout_at(deadline, receiver.next())
            .await
            .unwrap_or_else(|_| {
                panic!("3 alerts, a drop and a clip; got alerts {alerts:?}, dropped {dropped:?}, clips {clips:?}")
            });
        match v["type"].as_str() {
            Some("alert") => alerts.push(v["alert"]["event_id"].as_str().unwrap().to_owned()),
            Some("health") if v["health"]["kind"] == "outbox_dropped" => {
                assert_schema("health", &v["health"]);
                dropped.push(v["health"]["event_id"].as_str().unwrap().to_owned())
            }
            Some("clip") => clips.push(v["event_id"].as_str().unwrap().to_owned()),
            _ => {}
        }
    }
    let ids: Vec<String> = events.iter().map(|e| e.to_string()).collect();
    assert_eq!(alerts, ids, "every alert survives, in order");
    assert_eq!(dropped[0], ids[0], "the oldest clip goes first");
    assert!(
        clips.iter().all(|c| !dropped.contains(c)),
        "no dropped clip arrives"
    );
    rig.stop().await;
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_triggers_during_a_one_minute_outage_are_all_delivered_alerts_first() {
    let mut broker = Broker::start("");
    let mut receiver = ReceiverProcess::start(broker.port, &["--broker", &broker.url()], &[]).await;
    // The order the box publishes in, as the broker delivers it to one subscriber (the
    // receiver takes alerts and media on sessions of their own).
    let mut recorder = TopicRecorder::start(
        broker.port,
        "alertclip/v1/test-site/events/#",
        "alertclip/v1/test-site/events/probe",
    )
    .await;
    let mut rig = Rig::start(
        &[TestStream::h264("/cam")],
        "pre_roll = \"1s\"\npost_roll = \"1s\"",
        &mqtt(&broker, ""),
    )
    .await;
    wait_buffered(rig.camera(0), 1.5).await;
    let outage = tokio::time::Instant::now();
    broker.stop();
    let mut events = Vec::new();
    for _ in 0..20 {
        events.push(
            rig.fire(Trigger::now(TriggerKind::Manual, "test"))
                .await
                .to_string(),
        );
        // Each trigger after the previous clip is cut, so each is an event of its own.
        rig.next_clip().await;
    }
    tokio::time::sleep_until(outage + Duration::from_secs(60)).await;
    assert!(rig.daemon.publisher().unwrap().outbox().stats().events >= 20);
    broker.restart();
    let back = tokio::time::Instant::now();
    let mut first_alert_after = None;
    let mut order = Vec::new();
    let mut clips = 0;
    while clips < 20 {
        let v = receiver.next().await;
        if v["type"] == "alert" {
            first_alert_after.get_or_insert(back.elapsed());
        }
        match v["type"].as_str() {
            Some("alert") => {
                order.push(("alert", v["alert"]["event_id"].as_str().unwrap().to_owned()))
            }
            Some(kind @ ("snapshot" | "clip")) => {
                clips += (kind == "clip") as usize;
                order.push((
                    if kind == "clip" { "clip" } else { "snapshot" },
                    v["event_id"].as_str().unwrap().to_owned(),
                ));
            }
            _ => {}
        }
    }
    let alerts: Vec<&String> = order
        .iter()
        .filter(|(k, _)| *k == "alert")
        .map(|(_, e)| e)
        .collect();
    assert_eq!(
        alerts,
        events.iter().collect::<Vec<_>>(),
        "all 20 alerts, oldest first"
    );
    // Every alert before any media, as published: alerts, snapshots and manifests in the
    // broker's order (chunks, one level below a manifest, left out), up to the 20th manifest.
    let levels = |t: &String| t.matches('/').count();
    let mut published = Vec::new();
    while published
        .iter()
        .filter(|t: &&String| t.contains("/clip/"))
        .count()
        < 20
    {
        let topic = recorder.next().await;
        if levels(&topic) != 7 {
            published.push(topic);
        }
    }
    let first_media = published.iter().position(|t| levels(t) != 4).unwrap();
    assert_eq!(
        first_media, 20,
        "every alert before any snapshot or clip: {published:?}"
    );
    // Backoff had reached 30 s: the reconnection must not wait it out (box and receiver
    // each probe the broker every 250 ms; 2 s is the box's promise, 5 s leaves room for both).
    let first_alert_after = first_alert_after.unwrap();
    eprintln!(
        "the first alert reached the receiver {first_alert_after:?} after the broker was back"
    );
    assert!(
        first_alert_after < Duration::from_secs(5),
        "the first alert came {first_alert_after:?} after the broker was back"
    );
    rig.stop().await;
    receiver.stop().await;
    recorder.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_camera_going_offline_and_back_is_reported_on_the_alerts_topic() {
    let broker = Broker::start("");
    let mut receiver = ReceiverProcess::start(broker.port, &["--broker", &broker.url()], &[]).await;
    let rig = Rig::start(
        &[TestStream::h264("/cam")],
        "stall_timeout = \"1s\"",
        &mqtt(&broker, ""),
    )
    .await;
    wait_buffered(rig.camera(0), 0.5).await;
    rig.server.take_down("/cam");
    let offline = receiver
        .wait_for("camera_offline", |v| {
            v["type"] == "health" && v["health"]["kind"] == "camera_offline"
        })
        .await;
    assert_schema("health", &offline["health"]);
    assert_eq!(offline["health"]["camera"], "cam");
    let message = offline["health"]["message"].as_str().unwrap();
    assert!(message.contains("no video"), "{offline}");
    // For people: what happened and what to do, not GStreamer's internals.
    assert!(
        message.contains("no stream at that path") || message.contains("stopped"),
        "{offline}"
    );
    assert!(
        !message.contains(".c(") && !message.contains("Gst"),
        "{offline}"
    );
    // The retained status says so too.
    let port = broker.port.to_string();
    let status = retained_status(&port);
    assert_ne!(status["cameras"]["cam"]["state"], "streaming");
    rig.server.bring_up("/cam");
    receiver
        .wait_for("camera_online", |v| {
            v["type"] == "health" && v["health"]["kind"] == "camera_online"
        })
        .await;
    rig.stop().await;
    receiver.stop().await;
}

/// Fires a trigger that opens a new event, whose alert must reach the receiver as link
/// `sequence` of the chain, and no chain problem reported so far.
async fn next_alert_continues_the_chain(
    rig: &mut Rig,
    receiver: &mut ReceiverProcess,
    sequence: u64,
) {
    let event = rig
        .fire(Trigger::now(TriggerKind::Manual, "test"))
        .await
        .to_string();
    let alert = receiver
        .wait_for("next alert", |v| {
            v["type"] == "alert" && v["alert"]["event_id"] == event.as_str()
        })
        .await;
    assert_eq!(alert["alert"]["sequence"], sequence);
    assert!(
        receiver.seen.iter().all(|v| v["type"] != "chain"),
        "{:?}",
        receiver.seen
    );
}

/// A receiver at a precinct that registered the device's public key, and the directory the
/// key is kept in.
async fn receiver_with_device_key(
    rig: &Rig,
    broker: &Broker,
) -> (ReceiverProcess, tempfile::TempDir) {
    let keys = tempfile::tempdir().unwrap();
    std::fs::copy(
        rig.dir.path().join("evidence/device.pub"),
        keys.path().join("test-site.pub"),
    )
    .unwrap();
    let keys_arg = keys.path().display().to_string();
    let receiver = ReceiverProcess::start(
        broker.port,
        &["--broker", &broker.url(), "--keys", &keys_arg],
        &[],
    )
    .await;
    (receiver, keys)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_with_the_device_key_verifies_alert_and_clip_signatures() {
    let broker = Broker::start("");
    let mut rig = Rig::start(&[TestStream::h264("/cam")], ROLLS, &mqtt(&broker, "")).await;
    let (mut receiver, _keys) = receiver_with_device_key(&rig, &broker).await;
    let (_, clip) = deliver_one(&mut rig, &mut receiver).await;
    assert_eq!(clip["signature"], "valid");
    let alert = receiver
        .seen
        .iter()
        .find(|v| v["type"] == "alert")
        .unwrap()
        .clone();
    assert_eq!(alert["signature"], "valid");
    assert_eq!(alert["alert"]["sequence"], 1);
    assert_eq!(
        alert["alert"]["previous_alert_sha256"],
        serde_json::Value::Null
    );
    // The next event continues the chain: no chain report.
    next_alert_continues_the_chain(&mut rig, &mut receiver, 2).await;
    rig.stop().await;
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trigger_during_an_event_reaches_the_officer_at_once_as_a_signed_update() {
    let broker = Broker::start("");
    let rolls = "pre_roll = \"2s\"\npost_roll = \"4s\"";
    let mut rig = Rig::start(&[TestStream::h264("/cam")], rolls, &mqtt(&broker, "")).await;
    let (mut receiver, _keys) = receiver_with_device_key(&rig, &broker).await;
    wait_buffered(rig.camera(0), 2.5).await;
    let event = rig
        .fire(Trigger::now(TriggerKind::Button, "register-2"))
        .await;
    receiver.wait_for("alert", |v| v["type"] == "alert").await;
    // Pressed again at another button within post-roll: the same event, and news at once,
    // before its clip is finished.
    let mut again = Trigger::now(TriggerKind::Button, "door");
    again.note = Some("front door".into());
    assert_eq!(rig.fire(again).await, event, "the press joins the event");
    let update = receiver.wait_for("update", |v| v["type"] == "update").await;
    assert!(
        !receiver.seen_any(|v| v["type"] == "clip"),
        "the update came only after the clip: {:?}",
        receiver.seen
    );
    assert_eq!(update["signature"], "valid");
    let update = &update["update"];
    assert_schema("event_update", update);
    assert_eq!(update["event_id"], event.to_string());
    assert_eq!(update["update"], 1);
    assert_eq!(update["site_id"], "test-site");
    assert_eq!(update["trigger"]["source"], "door");
    assert_eq!(update["trigger"]["note"], "front door");
    assert_eq!(update["cameras"], serde_json::json!(["cam"]));
    assert_eq!(update["sequence"], 2, "the update is the chain's next link");
    let stored = receiver
        .dir()
        .join("test-site")
        .join(event.to_string())
        .join("update-1.json");
    assert!(stored.exists(), "{}", stored.display());

    // The clip covers both presses; the next event's alert follows the update in the chain.
    let local = rig.next_clip().await;
    assert_eq!(local.record.triggers.len(), 2);
    next_alert_continues_the_chain(&mut rig, &mut receiver, 3).await;
    rig.stop().await;
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wireless_button_press_raises_a_button_alert_with_its_location() {
    let broker = Broker::start("");
    let publish = |payload: &str, retain: bool| {
        let extra: &[&str] = if retain { &["-r"] } else { &[] };
        mosquitto_pub(broker.port, "zigbee2mqtt/panic-button", payload, extra);
    };
    // A retained message from before: replayed when the box subscribes, never a press.
    publish(r#"{"action":"single","battery":97}"#, true);
    let mut receiver = ReceiverProcess::start(broker.port, &["--broker", &broker.url()], &[]).await;
    let tail = mqtt(&broker, "")
        + "[[button]]\nid = \"aqara\"\nkind = \"mqtt\"\nlocation = \"register 2\"\n\
           topic = \"zigbee2mqtt/panic-button\"\nmatch = { action = \"single\" }\n";
    let mut rig = Rig::start(&[TestStream::h264("/cam")], ROLLS, &tail).await;
    wait_buffered(rig.camera(0), 2.5).await;
    let button = rig.daemon.buttons()[0].clone();
    assert_eq!(
        button.status.borrow().state,
        alertclip::trigger::buttons::button::ButtonState::Ready
    );
    // Reports that are not presses, then a press.
    publish(r#"{"battery":96,"linkquality":120}"#, false);
    publish(r#"{"action":"double"}"#, false);
    publish(r#"{"action":"single","battery":96}"#, false);
    let alert = receiver.wait_for("alert", |v| v["type"] == "alert").await;
    assert_eq!(alert["alert"]["trigger"]["kind"], "button");
    assert_eq!(alert["alert"]["trigger"]["source"], "aqara");
    assert_eq!(alert["alert"]["trigger"]["note"], "register 2");
    let local = rig.next_clip().await;
    assert_eq!(local.record.triggers[0].note.as_deref(), Some("register 2"));
    let mut status = button.status.clone();
    tokio::time::timeout(Duration::from_secs(5), status.wait_for(|s| s.presses == 1))
        .await
        .unwrap()
        .unwrap();
    rig.stop().await;
    let alerts = receiver
        .seen
        .iter()
        .filter(|v| v["type"] == "alert")
        .count();
    assert_eq!(
        alerts, 1,
        "only the matching, live message is a press: {:?}",
        receiver.seen
    );
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn buttons_that_cannot_be_opened_are_reported_and_the_rest_keep_working() {
    let broker = Broker::start("");
    let port = broker.port.to_string();
    let mut receiver = ReceiverProcess::start(broker.port, &["--broker", &broker.url()], &[]).await;
    let tail = mqtt(&broker, "")
        + "[[button]]\nid = \"header\"\nkind = \"gpio\"\nchip = \"gpiochip0\"\nline = 17\n\
           [[button]]\nid = \"foot\"\nkind = \"evdev\"\ndevice = \"/dev/input/by-id/usb-footswitch-event-kbd\"\nkey = \"KEY_F12\"\n\
           [[button]]\nid = \"aqara\"\nkind = \"mqtt\"\ntopic = \"zigbee2mqtt/b\"\n";
    let rig = Rig::start(&[TestStream::h264("/cam")], ROLLS, &tail).await;
    let unavailable = receiver
        .wait_for("two button_unavailable alerts", {
            let mut seen = 0;
            move |v| {
                seen +=
                    (v["type"] == "health" && v["health"]["kind"] == "button_unavailable") as u32;
                seen == 2
            }
        })
        .await;
    assert_schema("health", &unavailable["health"]);
    let messages: Vec<String> = receiver
        .seen
        .iter()
        .filter(|v| v["health"]["kind"] == "button_unavailable")
        .map(|v| v["health"]["message"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("button header:") && m.contains("gpiochip0")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("button foot:") && m.contains("usb-footswitch")),
        "{messages:?}"
    );
    // The status says which, and the wireless button still works.
    let status = retained_status(&port);
    assert_schema("status", &status);
    assert_eq!(status["buttons"]["header"]["state"], "unavailable");
    assert_eq!(status["buttons"]["aqara"]["state"], "ready");
    mosquitto_pub(broker.port, "zigbee2mqtt/b", "press", &[]);
    let alert = receiver.wait_for("alert", |v| v["type"] == "alert").await;
    assert_eq!(alert["alert"]["trigger"]["source"], "aqara");
    rig.stop().await;
    receiver.stop().await;
}
