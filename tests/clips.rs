//! End to end: RTSP test cameras -> ingest -> ring -> trigger -> MP4 checked by ffprobe.

// A test or benchmark that cannot go on fails with the value it got.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use alertclip::clip::ClipDone;
use alertclip::demo::teststream::TestStream;
use alertclip::ingest::camera::CameraState;
use alertclip::trigger::{Trigger, TriggerKind};
use common::*;

const PRE: f64 = 3.0;
const POST: f64 = 2.0;
const GOP: f64 = 1.0;
/// The stall timeout is the default's double: these tests check a clip's length, and under
/// qemu on a loaded machine the test server's H.265 encoder can fall seconds behind, which a
/// short timeout would turn into a stall (tests of stalls set their own).
const ROLLS: &str = "pre_roll = \"3s\"\npost_roll = \"2s\"\nstall_timeout = \"10s\"";
const LIMIT: Duration = Duration::from_secs(60);

fn manual() -> Trigger {
    Trigger::now(TriggerKind::Manual, "test")
}

/// Duration within one GOP (plus rounding) above pre + post.
fn assert_full_length(done: &ClipDone, probe: &Probe) {
    let want = PRE + POST;
    let record = &done.record;
    assert!(
        probe.duration >= want - rounding() && probe.duration <= want + GOP + rounding(),
        "camera {}: duration {} not within one GOP of {want}; partial: {:?}; requested {:?}, \
         actual {:?}",
        record.camera,
        probe.duration,
        record.partial_reason,
        record.requested,
        record.actual
    );
    assert!(
        (probe.fps() - 15.0).abs() < 1.0,
        "frame count {} disagrees with duration {} at 15 fps",
        probe.packets.len(),
        probe.duration
    );
}

/// The fallback client, on the same tests as the default.
const GSTREAMER: &str = "ingest = \"gstreamer\"";

async fn single_camera_clip(stream: TestStream, codec: &str, client: &str) {
    let extra = format!("{ROLLS}\n{client}");
    let mut rig = Rig::start(&[stream], &extra, "").await;
    let status = wait_buffered(rig.camera(0), PRE + 0.5).await;
    assert_eq!(status.codec.as_deref(), Some(codec));
    assert_eq!((status.width, status.height), (Some(320), Some(240)));

    let trigger = manual();
    let triggered_at = trigger.at.wall;
    let event = rig.fire(trigger).await;
    let done = rig.next_clip().await;
    let probe = check_clip(&done, codec);
    assert_full_length(&done, &probe);
    assert_eq!((probe.width, probe.height), (320, 240));
    let record = &done.record;
    assert_eq!(record.event_id, event);
    assert_eq!(record.camera, "cam");
    assert_eq!(record.site.id, "test-site");
    assert!(!record.partial, "{:?}", record.partial_reason);
    assert_eq!(record.triggers.len(), 1);
    assert_eq!(
        record.triggers[0].time,
        alertclip::clock::rfc3339_ms(triggered_at)
    );
    // The file starts no later than requested and ends no earlier.
    assert!(
        record.actual.start <= record.requested.start,
        "{:?} vs {:?}",
        record.actual,
        record.requested
    );
    assert!(
        record.actual.end >= record.requested.end,
        "{:?} vs {:?}",
        record.actual,
        record.requested
    );
    assert_eq!(done.mp4, rig.event_dir(&done).join("cam.mp4"));
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn h264_clip_holds_pre_and_post_roll() {
    single_camera_clip(TestStream::h264("/cam"), "h264", "").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn h265_clip_holds_pre_and_post_roll() {
    single_camera_clip(TestStream::h265("/cam"), "h265", "").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn h264_clip_through_rtspsrc_holds_pre_and_post_roll() {
    single_camera_clip(TestStream::h264("/cam"), "h264", GSTREAMER).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn h265_clip_through_rtspsrc_holds_pre_and_post_roll() {
    single_camera_clip(TestStream::h265("/cam"), "h265", GSTREAMER).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn udp_transport_gives_the_same_clip() {
    udp_clip("").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn udp_transport_through_rtspsrc_gives_the_same_clip() {
    udp_clip(GSTREAMER).await;
}

async fn udp_clip(client: &str) {
    let extra = format!("{ROLLS}\ntransport = \"udp\"\n{client}");
    let mut rig = Rig::start(&[TestStream::h264("/cam")], &extra, "").await;
    wait_buffered(rig.camera(0), PRE + 0.5).await;
    rig.fire(manual()).await;
    let done = rig.next_clip().await;
    assert_full_length(&done, &check_clip(&done, "h264"));
    assert!(!done.record.partial, "{:?}", done.record.partial_reason);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn b_frame_stream_gets_valid_decode_times() {
    b_frame_clip("").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn b_frame_stream_through_rtspsrc_gets_valid_decode_times() {
    b_frame_clip(GSTREAMER).await;
}

async fn b_frame_clip(client: &str) {
    let extra = format!("{ROLLS}\n{client}");
    let mut rig = Rig::start(
        &[TestStream {
            bframes: 2,
            ..TestStream::h264("/cam")
        }],
        &extra,
        "",
    )
    .await;
    wait_buffered(rig.camera(0), PRE + 0.5).await;
    rig.fire(manual()).await;
    let done = rig.next_clip().await;
    let probe = check_clip(&done, "h264");
    assert!(
        probe.has_b_frames > 0,
        "the test stream should reorder frames"
    );
    assert!(
        probe.packets.iter().any(|p| p.pts > p.dts),
        "decode times trail presentation times"
    );
    assert_full_length(&done, &probe);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_cameras_are_clipped_for_one_event() {
    let mut rig = Rig::start(&[TestStream::h264("/a"), TestStream::h265("/b")], ROLLS, "").await;
    for i in 0..2 {
        wait_buffered(rig.camera(i), PRE + 0.5).await;
    }
    let event = rig.fire(manual()).await;
    let mut done = [rig.next_clip().await, rig.next_clip().await];
    done.sort_by(|x, y| x.record.camera.cmp(&y.record.camera));
    assert_eq!(done[0].record.camera, "a");
    assert_eq!(done[1].record.camera, "b");
    assert_full_length(&done[0], &check_clip(&done[0], "h264"));
    assert_full_length(&done[1], &check_clip(&done[1], "h265"));
    assert!(done.iter().all(|d| d.record.event_id == event));

    // A trigger for one camera clips only that one.
    let mut only_b = manual();
    only_b.cameras = vec!["b".into()];
    let second = rig.fire(only_b).await;
    assert_ne!(second, event);
    let done = rig.next_clip().await;
    assert_eq!(
        (done.record.camera.as_str(), done.record.event_id),
        ("b", second)
    );
    let mut files: Vec<String> = std::fs::read_dir(rig.event_dir(&done))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        vec!["b.json", "b.manifest.json", "b.mp4"],
        "the clip, its sidecar and its signed manifest"
    );

    let mut unknown = manual();
    unknown.cameras = vec!["c".into()];
    let error = rig.daemon.triggers().fire(unknown).await.unwrap_err();
    assert_eq!(error.to_string(), "unknown camera \"c\" (configured: a, b)");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn camera_that_drops_mid_clip_is_reconnected_and_the_clip_is_partial() {
    let extra = "pre_roll = \"3s\"\npost_roll = \"6s\"\nstall_timeout = \"2s\"";
    let mut rig = Rig::start(&[TestStream::h264("/cam")], extra, "").await;
    let camera = rig.camera(0).clone();
    wait_buffered(&camera, PRE + 0.5).await;
    rig.fire(manual()).await;

    rig.server.take_down("/cam");
    let failed = wait_status(&camera, LIMIT, |s| {
        matches!(s.state, CameraState::Failed | CameraState::Stalled)
    })
    .await;
    assert!(failed.last_error.is_some());
    rig.server.bring_up("/cam");
    let back = wait_status(&camera, LIMIT, |s| {
        s.state == CameraState::Streaming && s.reconnects >= 1
    })
    .await;
    assert!(back.fps > 0.0);

    let done = rig.next_clip().await;
    let probe = check_clip(&done, "h264");
    assert!(done.record.partial, "a clip cut short is marked partial");
    let reason = done.record.partial_reason.clone().unwrap_or_default();
    assert!(
        reason.contains("restarted") || reason.contains("no frames"),
        "{reason}"
    );
    assert!(
        probe.duration >= PRE - 0.1 && probe.duration < PRE + 6.0,
        "{}",
        probe.duration
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_camera_is_reported_and_reconnected() {
    let rig = Rig::start(&[TestStream::h264("/cam")], "stall_timeout = \"1s\"", "").await;
    wait_buffered(rig.camera(0), 0.5).await;
    rig.server.stall("/cam", true);
    let stalled = wait_status(rig.camera(0), LIMIT, |s| s.state == CameraState::Stalled).await;
    assert_eq!(stalled.last_error.as_deref(), Some("no frame for 1s"));
    wait_status(rig.camera(0), LIMIT, |s| {
        s.state == CameraState::Streaming && s.reconnects >= 1
    })
    .await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn trigger_before_pre_roll_is_buffered_gives_a_shorter_clip() {
    let mut rig = Rig::start(
        &[TestStream::h264("/cam")],
        "pre_roll = \"20s\"\npost_roll = \"1s\"",
        "",
    )
    .await;
    let status = wait_buffered(rig.camera(0), 1.0).await;
    assert!(status.buffered_s < 5.0);
    rig.fire(manual()).await;
    let done = rig.next_clip().await;
    let probe = check_clip(&done, "h264");
    assert!(
        probe.duration > 1.5 && probe.duration < 8.0,
        "{}",
        probe.duration
    );
    assert!(done.record.partial);
    let reason = done.record.partial_reason.as_deref().unwrap_or_default();
    assert!(reason.contains("of pre-roll was buffered"), "{reason}");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn overlapping_triggers_extend_one_clip() {
    let mut rig = Rig::start(&[TestStream::h264("/cam")], ROLLS, "").await;
    wait_buffered(rig.camera(0), PRE + 0.5).await;
    let first = rig.fire(manual()).await;
    // The second press comes a second into the first one's post-roll.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut press = Trigger::now(TriggerKind::Button, "register-2");
    press.note = Some("second press".into());
    let second = rig.fire(press).await;
    assert_eq!(
        first, second,
        "the second trigger joins the event in progress"
    );

    let done = rig.next_clip().await;
    let probe = check_clip(&done, "h264");
    let kinds: Vec<_> = done
        .record
        .triggers
        .iter()
        .map(|t| (t.source.as_str(), t.note.as_deref()))
        .collect();
    assert_eq!(
        kinds,
        vec![("test", None), ("register-2", Some("second press"))]
    );
    // The clip runs to the second trigger's post-roll: about a second longer.
    assert!(
        probe.duration >= PRE + POST + 0.9 && probe.duration <= PRE + POST + 1.0 + GOP + 0.1,
        "{}",
        probe.duration
    );
    let events_on_disk = std::fs::read_dir(rig.dir.path().join("clips"))
        .unwrap()
        .count();
    assert_eq!(events_on_disk, 1, "one event directory");
    assert_eq!(std::fs::read_dir(rig.event_dir(&done)).unwrap().count(), 3);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn byte_cap_holds_against_a_high_bitrate_camera() {
    // Noise at 640x480 makes the encoder spend its whole 12 Mbit/s budget.
    let stream = TestStream {
        width: 640,
        height: 480,
        pattern: "snow".into(),
        bitrate_kbps: 12_000,
        ..TestStream::h264("/cam")
    };
    let cap: u64 = 2 << 20;
    let tail = "[buffer]\nmax_bytes_per_camera = \"2MiB\"\n";
    let mut rig = Rig::start(&[stream], "pre_roll = \"10s\"\npost_roll = \"1s\"", tail).await;
    // Watch every status update for a few seconds of streaming at full rate.
    let mut status = rig.camera(0).status.clone();
    let mut seen = 0;
    let mut peak = 0;
    let deadline = tokio::time::Instant::now() + LIMIT;
    while seen < 12 {
        tokio::time::timeout_at(deadline, status.changed())
            .await
            .expect("status updates")
            .unwrap();
        let s = status.borrow_and_update().clone();
        if s.state == CameraState::Streaming && s.kbps > 4_000.0 {
            seen += 1;
            peak = peak.max(s.buffered_bytes);
            assert!(
                s.buffered_bytes <= cap,
                "ring holds {} bytes over the {cap} cap",
                s.buffered_bytes
            );
            assert!(
                s.buffered_s < 10.0,
                "{} s buffered cannot fit",
                s.buffered_s
            );
        }
    }
    assert!(peak > cap / 2, "the stream filled the ring ({peak} bytes)");
    rig.fire(manual()).await;
    let done = rig.next_clip().await;
    check_clip(&done, "h264");
    assert!(done.record.partial);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn camera_without_h264_or_h265_is_reported() {
    let rig = Rig::start(&[TestStream::mjpeg("/cam")], "", "").await;
    let failed = wait_status(rig.camera(0), LIMIT, |s| s.state == CameraState::Failed).await;
    let error = failed.last_error.unwrap_or_default();
    assert!(
        error.contains("no H.264 or H.265 video (offered: JPEG)"),
        "{error}"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_camera_does_not_disturb_another() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        alertclip::demo::teststream::TestServer::start(&[TestStream::h264("/cam")]).unwrap();
    // A port nothing listens on: bind one, note it, free it.
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cameras = [
        ("good", server.url("/cam")),
        (
            "dead",
            format!("rtsp://admin:hunter2@127.0.0.1:{dead_port}/x"),
        ),
    ];
    let daemon = alertclip::Daemon::start(config(dir.path(), &cameras, ROLLS, ""))
        .await
        .unwrap();
    let mut clips = daemon.clips();
    let dead = wait_status(&daemon.cameras()[1], LIMIT, |s| {
        s.state == CameraState::Failed
    })
    .await;
    assert!(
        !dead.last_error.unwrap_or_default().contains("hunter2"),
        "passwords never appear in errors"
    );
    wait_buffered(&daemon.cameras()[0], PRE + 0.5).await;
    daemon.triggers().fire(manual()).await.unwrap();
    let done = next_clip(&mut clips, LIMIT).await;
    assert_eq!(done.record.camera, "good");
    assert_full_length(&done, &check_clip(&done, "h264"));
    daemon.shutdown(Duration::from_secs(5)).await;
}
