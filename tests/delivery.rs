//! Delivery over MQTT against a real mosquitto: alert, snapshot and clip reach the receiver,
//! verified, through outages, restarts and limits.

mod common;

use std::time::Duration;

use alertclip::teststream::TestStream;
use alertclip::trigger::{Trigger, TriggerKind};
use common::broker::Broker;
use common::receiver::ReceiverProcess;
use common::*;

const ROLLS: &str = "pre_roll = \"2s\"\npost_roll = \"1s\"";

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
    let status = std::process::Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "alertclip/v1/test-site/status",
            "-C",
            "1",
            "-W",
            "5",
        ])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["state"], "online");
    assert_eq!(status["cameras"]["cam"]["state"], "streaming");
    rig.stop().await;
    // A clean shutdown leaves "offline" retained.
    let status = std::process::Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "alertclip/v1/test-site/status",
            "-C",
            "1",
            "-W",
            "5",
        ])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
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
