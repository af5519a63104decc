//! A technician looking after a running box: `alertclip status` and `alertclip test-alert`
//! against a daemon with a real RTSP camera and a real mosquitto.

// A test or benchmark that cannot go on fails with the value it got.
#![allow(clippy::unwrap_used)]

mod common;

use alertclip::daemon::control::Response;
use alertclip::demo::teststream::TestStream;
use common::broker::Broker;
use common::receiver::ReceiverProcess;
use common::*;

fn cli(rig: &Rig, args: &[&str]) -> (bool, String, String) {
    let out = alertclip_command()
        .args(args)
        .arg("--config")
        .arg(rig.dir.path().join("alertclip.toml"))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_test_alert_goes_all_the_way_marked_test_and_status_shows_it() {
    let broker = Broker::start("");
    let mut receiver = ReceiverProcess::start(broker.port, &["--broker", &broker.url()], &[]).await;
    let tail = format!("[mqtt]\nurl = \"{}\"\n", broker.url());
    let mut rig = Rig::start(
        &[TestStream::h264("/front")],
        "pre_roll = \"2s\"\npost_roll = \"1s\"",
        &tail,
    )
    .await;
    wait_buffered(rig.camera(0), 2.0).await;

    let (ok, stdout, stderr) = cli(&rig, &["test-alert", "--note", "install check"]);
    assert!(ok, "{stderr}");
    let event = stdout.trim().to_owned();
    assert_eq!(event.len(), 36, "an event id: {stdout}");

    let alert = receiver.wait_for("alert", |v| v["type"] == "alert").await;
    assert_eq!(alert["alert"]["event_id"], event);
    assert_eq!(alert["alert"]["test"], true);
    assert_eq!(alert["alert"]["trigger"]["kind"], "test");
    assert_eq!(alert["alert"]["trigger"]["note"], "install check");
    let done = rig.next_clip().await;
    assert_eq!(done.record.event_id.to_string(), event);
    assert_eq!(
        done.record.triggers[0].kind,
        alertclip::trigger::TriggerKind::Test
    );
    let clip = receiver.wait_for("clip", |v| v["type"] == "clip").await;
    assert_eq!(clip["verified"], true);
    assert_eq!(clip["manifest"]["event_id"], event);

    // status, for scripts: the camera, the outbox and broker, and the event delivered.
    let (ok, stdout, stderr) = cli(&rig, &["status", "--json"]);
    assert!(ok, "{stderr}");
    let status: Response = serde_json::from_str(&stdout).unwrap();
    let front = &status.cameras.as_ref().unwrap()["front"];
    assert_eq!(
        front.ingest.state,
        alertclip::ingest::camera::CameraState::Streaming
    );
    assert!(
        front.ingest.fps > 5.0 && front.ingest.buffered_s > 1.0,
        "{front:?}"
    );
    assert!(front.last_frame_age_s.unwrap() < 2.0, "{front:?}");
    assert_eq!(status.version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    assert!(status.broker.as_ref().unwrap().connected);
    assert!(status.outbox.is_some());
    let events = status.events.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_id.to_string(), event);
    assert_eq!(events[0].kind, alertclip::trigger::TriggerKind::Test);
    assert_eq!(events[0].clips, 1);
    assert_eq!(
        events[0].delivery,
        alertclip::clip::history::Delivery::AlertAcknowledged
    );

    // status, for people.
    let (ok, stdout, _) = cli(&rig, &["status"]);
    assert!(ok);
    for expected in [
        "front",
        "streaming",
        "broker: connected",
        "outbox: ",
        "test",
        "alert acknowledged",
    ] {
        assert!(stdout.contains(expected), "{expected:?} in\n{stdout}");
    }
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn status_without_a_daemon_says_it_cannot_reach_it() {
    let dir = tempfile::tempdir().unwrap();
    config_text(
        dir.path(),
        &[("cam", "rtsp://127.0.0.1:9/x".into())],
        "",
        "",
    );
    let out = alertclip_command()
        .args(["status", "--config"])
        .arg(dir.path().join("alertclip.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot reach the daemon"), "{stderr}");
}
