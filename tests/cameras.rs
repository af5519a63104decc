//! The camera compatibility corpus: every recorded camera dialogue in `tests/cameras/`,
//! replayed by a server that answers as that camera did, is read by both RTSP clients, over
//! TCP and over UDP, into a clip that ffprobe and ffmpeg accept with a keyframe first.

// A test or benchmark that cannot go on fails with the value it got.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use alertclip::ingest::camera::CameraState;
use alertclip::trigger::{Trigger, TriggerKind};
use common::replay::{Dialogue, Hostile, ReplayCamera, RtpSource};
use common::*;

const PRE: f64 = 2.0;
const ROLLS: &str = "pre_roll = \"2s\"\npost_roll = \"1s\"\nstall_timeout = \"10s\"";
const LIMIT: Duration = Duration::from_secs(60);

/// The dialogues rtspsrc cannot follow, as docs/cameras.md lists them: each is checked to
/// fail still, so that the table stays true.
const RTSPSRC_FAILS: &[&str] = &["ffmpeg-server"];

async fn corpus(client: &str, transport: &str) {
    let (h264, h265) = (RtpSource::start().await, RtpSource::h265().await);
    let dialogues = Dialogue::corpus();
    assert!(dialogues.len() >= 10, "the corpus in tests/cameras/");
    let mut replayed = Vec::new();
    for dialogue in &dialogues {
        let source = if dialogue.codec() == "h265" {
            &h265
        } else {
            &h264
        };
        replayed.push(ReplayCamera::start(dialogue, source).await);
    }
    let cameras: Vec<(&str, String)> = dialogues
        .iter()
        .zip(&replayed)
        .map(|(dialogue, camera)| {
            let url = camera.url();
            let url = if dialogue.needs_login() {
                url.replacen("rtsp://", "rtsp://admin:secret@", 1)
            } else {
                url
            };
            (dialogue.name.as_str(), url)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("{ROLLS}\ntransport = \"{transport}\"\n{client}");
    let daemon = alertclip::Daemon::start(config(dir.path(), &cameras, &extra, ""))
        .await
        .unwrap();
    let mut clips = daemon.clips();
    let fails = |name: &str| client.contains("gstreamer") && RTSPSRC_FAILS.contains(&name);
    for (i, dialogue) in dialogues.iter().enumerate() {
        let camera = &daemon.cameras()[i];
        if fails(&dialogue.name) {
            let failed = wait_status(camera, LIMIT, |s| s.state == CameraState::Failed).await;
            eprintln!(
                "{}: fails as documented: {:?}",
                dialogue.name, failed.last_error
            );
        } else {
            let status = wait_buffered(camera, PRE + 0.5).await;
            assert_eq!(
                status.codec.as_deref(),
                Some(dialogue.codec()),
                "{}",
                dialogue.name
            );
            assert_eq!(
                (status.width, status.height),
                (Some(320), Some(240)),
                "{}",
                dialogue.name
            );
        }
    }
    daemon
        .triggers()
        .fire(Trigger::now(TriggerKind::Manual, "corpus"))
        .await
        .unwrap();
    let expected: Vec<&str> = dialogues
        .iter()
        .map(|d| d.name.as_str())
        .filter(|name| !fails(name))
        .collect();
    let mut clipped = Vec::new();
    for _ in &expected {
        let done = next_clip(&mut clips, LIMIT).await;
        let codec = dialogues
            .iter()
            .find(|d| d.name == done.record.camera)
            .unwrap()
            .codec();
        let probe = check_clip(&done, codec);
        assert!(
            probe.duration >= PRE + 1.0 - 0.1,
            "{}: {} s",
            done.record.camera,
            probe.duration
        );
        assert!(
            !done.record.partial,
            "{}: {:?}",
            done.record.camera, done.record.partial_reason
        );
        clipped.push(done.record.camera.clone());
    }
    clipped.sort();
    let mut expected: Vec<String> = expected.into_iter().map(str::to_owned).collect();
    expected.sort();
    assert_eq!(clipped, expected);
    daemon.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_recorded_camera_is_read_by_retina_over_tcp() {
    corpus("", "tcp").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_recorded_camera_is_read_by_retina_over_udp() {
    corpus("", "udp").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn recorded_cameras_are_read_by_rtspsrc_over_tcp_but_the_listed_ones() {
    corpus("ingest = \"gstreamer\"", "tcp").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn recorded_cameras_are_read_by_rtspsrc_over_udp_but_the_listed_ones() {
    corpus("ingest = \"gstreamer\"", "udp").await;
}

/// One packet in a hundred lost on the way (each time a P-frame's, which later frames of its
/// GOP need): the frames that depended on it are dropped to the next keyframe, so the clip
/// has gaps that a keyframe ends, never a frame missing what it refers to.
async fn lossy(client: &str) {
    let source = RtpSource::start().await;
    let dialogue = Dialogue::corpus()
        .into_iter()
        .find(|d| d.name == "hikvision")
        .unwrap();
    let camera = ReplayCamera::start_lossy(&dialogue, &source, Some(100)).await;
    let dir = tempfile::tempdir().unwrap();
    // 5 s of clip: a loss every 2 s or so.
    let extra = format!(
        "pre_roll = \"4s\"\npost_roll = \"1s\"\nstall_timeout = \"10s\"\ntransport = \"udp\"\n{client}"
    );
    let daemon = alertclip::Daemon::start(config(dir.path(), &[("cam", camera.url())], &extra, ""))
        .await
        .unwrap();
    let mut clips = daemon.clips();
    let camera_status = &daemon.cameras()[0];
    wait_buffered(camera_status, 4.5).await;
    daemon
        .triggers()
        .fire(Trigger::now(TriggerKind::Manual, "lossy"))
        .await
        .unwrap();
    let done = next_clip(&mut clips, LIMIT).await;
    // Decodes cleanly (check_clip runs ffmpeg with -xerror), keyframe first.
    let probe = check_clip(&done, "h264");
    assert!(
        probe.packets.first().is_some_and(|p| p.key),
        "keyframe first"
    );
    // A decoder conceals a missing reference without a word, so the clip is read as a player
    // would have it: wherever frames are missing (a step of more than 1.5 frames at 15 fps),
    // the frame after the gap is a keyframe, never one that needed what was lost.
    let mut gaps = 0;
    for pair in probe.packets.windows(2) {
        if pair[1].pts - pair[0].pts > 1.5 / 15.0 {
            gaps += 1;
            assert!(
                pair[1].key,
                "a frame after a gap at {} s is not a keyframe",
                pair[0].pts
            );
        }
    }
    assert!(gaps > 0, "no packet of the clip's was lost: {probe:?}");
    // Packets were lost, and the frames that needed them dropped.
    let status = wait_status(camera_status, LIMIT, |s| s.frames_dropped > 0).await;
    eprintln!(
        "{gaps} gaps in the clip; {} frames dropped",
        status.frames_dropped
    );
    daemon.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_packet_in_a_hundred_lost_over_udp_never_breaks_a_frame_of_a_clip() {
    lossy("").await;
}

/// The camera's resolution changes mid-stream: the new parameter sets start a run of their
/// own, and a clip cut soon after holds the new pictures alone (its one sample entry, and
/// every frame decoding against it), rather than spanning the change.
async fn resolution_change(client: &str) {
    let source = RtpSource::start().await;
    let dialogue = Dialogue::corpus()
        .into_iter()
        .find(|d| d.name == "hikvision")
        .unwrap();
    let camera = ReplayCamera::start(&dialogue, &source).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("{ROLLS}\n{client}");
    let daemon = alertclip::Daemon::start(config(dir.path(), &[("cam", camera.url())], &extra, ""))
        .await
        .unwrap();
    let mut clips = daemon.clips();
    let status = &daemon.cameras()[0];
    let before = wait_buffered(status, PRE + 0.5).await;
    assert_eq!((before.width, before.height), (Some(320), Some(240)));
    source.resize(640, 480);
    wait_status(status, LIMIT, |s| {
        s.width == Some(640) && s.height == Some(480) && s.buffered_s >= 0.5
    })
    .await;
    daemon
        .triggers()
        .fire(Trigger::now(TriggerKind::Manual, "resized"))
        .await
        .unwrap();
    let done = next_clip(&mut clips, LIMIT).await;
    let probe = check_clip(&done, "h264");
    assert_eq!((probe.width, probe.height), (640, 480));
    assert!(
        probe.packets.first().is_some_and(|p| p.key),
        "keyframe first"
    );
    daemon.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resolution_change_mid_stream_starts_a_run_no_clip_spans() {
    resolution_change("").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resolution_change_mid_stream_through_rtspsrc_starts_a_run_no_clip_spans() {
    resolution_change("ingest = \"gstreamer\"").await;
}

/// Cameras that send what no camera should (bytes that are no video, RTP times that run
/// backwards, a frame that never ends) get a status that says so and are reconnected, and never fill a clip; the
/// camera beside them is untouched, and nothing panics.
#[tokio::test(flavor = "multi_thread")]
async fn broken_streams_are_reported_and_never_disturb_a_good_camera() {
    let source = RtpSource::start().await;
    let dialogue = Dialogue::corpus()
        .into_iter()
        .find(|d| d.name == "hikvision")
        .unwrap();
    let good = ReplayCamera::start(&dialogue, &source).await;
    let mut cameras = vec![("good", good.url())];
    let mut broken = Vec::new();
    let reasons = [
        "NAL header",
        "timestamps ran backwards",
        "a frame that never ends",
    ];
    for (name, hostile) in [
        ("garbage", Hostile::Garbage),
        ("backwards", Hostile::Backwards),
        ("endless", Hostile::Endless),
    ] {
        let camera = ReplayCamera::start_hostile(&dialogue, &source, hostile).await;
        cameras.push((name, camera.url()));
        broken.push(camera);
    }
    let dir = tempfile::tempdir().unwrap();
    let daemon = alertclip::Daemon::start(config(dir.path(), &cameras, ROLLS, ""))
        .await
        .unwrap();
    let mut clips = daemon.clips();
    // Each broken camera is seen to fail, with a reason, and to be tried again.
    for (i, (name, _)) in cameras.iter().enumerate().skip(1) {
        let failed = wait_status(&daemon.cameras()[i], Duration::from_secs(90), |s| {
            s.reconnects >= 1 && s.last_error.is_some()
        })
        .await;
        eprintln!("{name}: {:?}", failed.last_error);
        let error = failed.last_error.clone().unwrap_or_default();
        assert!(error.contains(reasons[i - 1]), "{name}: {error}");
        assert!(
            failed.buffered_s < PRE,
            "{name} never buffers pre-roll: {failed:?}"
        );
    }
    wait_buffered(&daemon.cameras()[0], PRE + 0.5).await;
    daemon
        .triggers()
        .fire(Trigger::now(TriggerKind::Manual, "beside broken cameras"))
        .await
        .unwrap();
    // The good camera's clip is whole; a broken camera's, if any, is marked partial.
    let done = loop {
        let done = next_clip(&mut clips, LIMIT).await;
        if done.record.camera == "good" {
            break done;
        }
        assert!(done.record.partial, "{:?}", done.record);
    };
    let probe = check_clip(&done, "h264");
    assert!(probe.duration >= PRE + 1.0 - 0.1, "{}", probe.duration);
    assert!(!done.record.partial, "{:?}", done.record.partial_reason);
    daemon.shutdown(Duration::from_secs(5)).await;
}
