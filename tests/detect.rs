//! The detector with the real ONNX Runtime and the real YOLOX-Nano model (fetched by
//! `models/fetch.sh --test-images`, which `make test` runs): photos, a live RTSP camera
//! showing a person, an empty scene, schedules, and what a missing runtime or model says.

// A test or benchmark that cannot go on fails with the value it got.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use alertclip::demo::teststream::TestStream;
use alertclip::detect::Rect;
use alertclip::detect::frames;
use alertclip::detect::yolox::{Found, Wanted};
use alertclip::detect::{DetectState, DetectStatus, Model, ModelError};
use alertclip::trigger::TriggerKind;
use common::broker::Broker;
use common::receiver::ReceiverProcess;
use common::*;

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

fn runtime() -> PathBuf {
    models()
        .join("onnxruntime")
        .join(std::env::consts::ARCH)
        .join("libonnxruntime.so.1.31.1")
}

fn model_path() -> PathBuf {
    models().join("yolox-nano.onnx")
}

fn image(name: &str) -> PathBuf {
    models().join("test-images").join(name)
}

fn load() -> Model {
    gstreamer::init().expect("GStreamer");
    Model::load(&runtime(), &model_path(), 80, 2)
        .unwrap_or_else(|e| panic!("{e} (run models/fetch.sh --test-images)"))
}

/// The `[detect]` section pointing at the fetched runtime and model.
fn detect_section() -> String {
    format!(
        "[detect]\nruntime = \"{}\"\nmodel = \"{}\"\n",
        runtime().display(),
        model_path().display()
    )
}

/// People at a low threshold, so that "no person" means none at all, not one just below 0.5.
const PERSON: [Wanted; 1] = [Wanted {
    class: 0,
    min_score: 0.3,
}];

fn detect(model: &mut Model, name: &str) -> Vec<Found> {
    let sample = frames::load_still(&image(name), model.input_size()).expect("decodes");
    let mut found = Vec::new();
    frames::with_picture(&sample, |picture| {
        model.detect(picture, &PERSON, &mut found).expect("runs")
    })
    .expect("a BGR picture");
    found
}

/// A box in pixels of a 512 x 512 image, drawn by hand around the person.
fn px(x0: f32, y0: f32, x1: f32, y1: f32) -> Rect {
    Rect {
        x0: x0 / 512.0,
        y0: y0 / 512.0,
        x1: x1 / 512.0,
        y1: y1 / 512.0,
    }
}

#[test]
fn finds_the_person_in_photos_with_one_and_none_in_photos_without() {
    if skip_without_onnx_runtime("finds_the_person_in_photos_with_one_and_none_in_photos_without") {
        return;
    }
    let mut model = load();
    // One model, pictures in turn: each run must see its own picture.
    for (name, reference) in [
        ("astronaut.png", px(20.0, 15.0, 365.0, 512.0)),
        ("camera.png", px(0.0, 62.0, 305.0, 512.0)),
    ] {
        let found = detect(&mut model, name);
        assert_eq!(found.len(), 1, "{name}: one person, found {found:?}");
        let person = found[0];
        assert!(person.score > 0.8, "{name}: {person:?}");
        let iou = person.rect.iou(&reference);
        assert!(
            iou > 0.7,
            "{name}: IoU {iou:.2} with {reference:?}: {person:?}"
        );
    }
    for name in ["chelsea.png", "coffee.png", "astronaut.png"] {
        let found = detect(&mut model, name);
        if name == "astronaut.png" {
            assert_eq!(
                found.len(),
                1,
                "the model is still good after other pictures"
            );
        } else {
            assert!(found.is_empty(), "{name}: nobody there, found {found:?}");
        }
    }
}

#[test]
fn a_missing_runtime_or_model_names_the_path_and_the_fix() {
    if skip_without_onnx_runtime("a_missing_runtime_or_model_names_the_path_and_the_fix") {
        return;
    }
    let missing = Path::new("/nonexistent/libonnxruntime.so.1.31.1");
    let error = Model::load(missing, &model_path(), 80, 1).unwrap_err();
    assert!(matches!(error, ModelError::RuntimeMissing(_)), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains("/nonexistent/libonnxruntime.so.1.31.1") && text.contains("models/fetch.sh"),
        "{text}"
    );

    let error = Model::load(&runtime(), Path::new("/nonexistent/model.onnx"), 80, 1).unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("detect.model")
            && text.contains("/nonexistent/model.onnx")
            && text.contains("models/fetch.sh"),
        "{text}"
    );

    // A file that is not a model, and a model with the wrong class count.
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"not a model").unwrap();
    let text = Model::load(&runtime(), &junk, 80, 1)
        .unwrap_err()
        .to_string();
    assert!(text.contains("junk.onnx"), "{text}");
    let text = Model::load(&runtime(), &model_path(), 3, 1)
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("80 classes") && text.contains("detect.classes lists 3"),
        "{text}"
    );
}

#[test]
fn the_daemon_refuses_to_start_without_its_model_and_says_how_to_get_it() {
    if skip_without_onnx_runtime(
        "the_daemon_refuses_to_start_without_its_model_and_says_how_to_get_it",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alertclip.toml");
    std::fs::write(
        &config,
        format!(
            "[site]\nid = \"s\"\nname = \"Store\"\n[storage]\ndir = \"{0}/clips\"\n[control]\nsocket = \"{0}/sock\"\n\
             [evidence]\ndir = \"{0}/evidence\"\n[outbox]\ndir = \"{0}/outbox\"\n\
             [detect]\nruntime = \"{1}\"\nmodel = \"{0}/missing.onnx\"\n\
             [[camera]]\nid = \"cam\"\nurl = \"rtsp://127.0.0.1:9/x\"\n[camera.detect]\n",
            dir.path().display(),
            runtime().display()
        ),
    )
    .unwrap();
    let out = alertclip_command()
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("missing.onnx") && stderr.contains("models/fetch.sh"),
        "{stderr}"
    );
}

/// A camera showing `image` (or the moving-ball pattern), 640x360 at 15 fps.
fn scene(path: &str, image_name: Option<&str>) -> TestStream {
    TestStream {
        width: 640,
        height: 360,
        image: image_name.map(image),
        ..TestStream::h264(path)
    }
}

async fn wait_detect(
    detector: Option<&tokio::sync::watch::Receiver<DetectStatus>>,
    what: &str,
    mut done: impl FnMut(&DetectStatus) -> bool,
) -> DetectStatus {
    let mut status = detector.cloned().expect("the camera is watched");
    let found = tokio::time::timeout(patience(Duration::from_secs(60)), async {
        loop {
            let now = status.borrow_and_update().clone();
            if done(&now) {
                return now;
            }
            status.changed().await.expect("detector running");
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("{what}: {:?}", status.borrow()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_on_camera_triggers_an_alert_with_boxes_and_a_clip_and_an_empty_scene_does_not() {
    if skip_without_onnx_runtime(
        "a_person_on_camera_triggers_an_alert_with_boxes_and_a_clip_and_an_empty_scene_does_not",
    ) {
        return;
    }
    let broker = Broker::start("");
    let mut receiver = ReceiverProcess::start(broker.port, &["--broker", &broker.url()], &[]).await;
    let tail = format!("{}[mqtt]\nurl = \"{}\"\n", detect_section(), broker.url());
    // A cooldown longer than the test, which takes minutes under emulation.
    let camera = "pre_roll = \"2s\"\npost_roll = \"1s\"\n[camera.detect]\nfps = 4\nmin_frames = 2\nwindow = 3\n\
                  cooldown = \"1h\"";
    let mut rig = Rig::start(
        &[
            scene("/person", Some("astronaut.png")),
            scene("/empty", None),
        ],
        camera,
        &tail,
    )
    .await;

    // The alert goes out first, carrying what was seen.
    let alert = receiver.wait_for("alert", |v| v["type"] == "alert").await;
    let alert = &alert["alert"];
    assert_schema("alert", alert);
    assert_eq!(alert["trigger"]["kind"], "detection");
    assert_eq!(alert["trigger"]["source"], "person");
    assert_eq!(alert["cameras"][0]["id"], "person");
    let detections = alert["trigger"]["detections"]
        .as_array()
        .expect("detections");
    assert_eq!(detections.len(), 1, "{detections:?}");
    assert_eq!(detections[0]["label"], "person");
    assert!(
        detections[0]["score"].as_f64().unwrap() > 0.8,
        "{detections:?}"
    );
    // The camera shows the square photo 360 px high in the middle of its 640x360 picture
    // (black bars left and right), so the box is there, in the camera picture's terms.
    let rect: Vec<f32> = detections[0]["box"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let seen = Rect::from([rect[0], rect[1], rect[2], rect[3]]);
    let photo = px(20.0, 15.0, 365.0, 512.0);
    let reference = Rect {
        x0: (140.0 + photo.x0 * 360.0) / 640.0,
        x1: (140.0 + photo.x1 * 360.0) / 640.0,
        ..photo
    };
    assert!(seen.iou(&reference) > 0.7, "{seen:?} against {reference:?}");

    // The snapshot has the box drawn on it: yellow along the box's left edge, mid-height.
    let snapshot = receiver
        .wait_for("snapshot", |v| v["type"] == "snapshot")
        .await;
    let picture = image::open(ReceiverProcess::path(&snapshot))
        .expect("a JPEG")
        .to_rgb8();
    let x = (seen.x0 * picture.width() as f32) as u32 + 1;
    let y = ((seen.y0 + seen.y1) / 2.0 * picture.height() as f32) as u32;
    let [r, g, b] = picture.get_pixel(x, y).0;
    assert!(
        r > 170 && g > 170 && b < 110,
        "yellow at ({x}, {y}): {:?}",
        [r, g, b]
    );

    // And the clip, with the detection in its metadata.
    let done = rig.next_clip().await;
    assert_eq!(done.record.camera, "person");
    let trigger = &done.record.triggers[0];
    assert_eq!(trigger.kind, TriggerKind::Detection);
    assert_eq!(trigger.detections.len(), 1);
    assert_eq!(trigger.note.as_deref(), Some("person"));
    check_clip(&done, "h264");
    let clip = receiver.wait_for("clip", |v| v["type"] == "clip").await;
    assert_eq!(clip["verified"], true);

    // Meanwhile the empty scene was looked at again and again, and never triggered: two
    // whole windows of three frames, each of which would have fired on two detections.
    let empty = wait_detect(rig.detector(1), "the empty scene looked at", |s| {
        s.inferences >= 6
    })
    .await;
    assert_eq!(empty.state, DetectState::Watching);
    assert_eq!(empty.triggers, 0, "{empty:?}");
    assert_eq!(empty.decoder.as_deref(), Some("avdec_h264"));
    let person = rig.detector(0).unwrap().borrow().clone();
    assert_eq!(
        person.triggers, 1,
        "one trigger, then the cooldown: {person:?}"
    );
    assert!(
        person.skipped_still > 0,
        "the still picture is gated: {person:?}"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn outside_its_schedule_a_camera_is_not_watched() {
    if skip_without_onnx_runtime("outside_its_schedule_a_camera_is_not_watched") {
        return;
    }
    // Every day, from two to three hours from now on this machine's clock.
    let now = jiff::Zoned::now();
    let start = now
        .checked_add(jiff::SignedDuration::from_hours(2))
        .unwrap();
    let end = now
        .checked_add(jiff::SignedDuration::from_hours(3))
        .unwrap();
    let camera = format!(
        "pre_roll = \"2s\"\npost_roll = \"1s\"\n[camera.detect]\nfps = 4\nmin_frames = 1\nwindow = 1\n\
         schedule = [\"{:02}:{:02}-{:02}:{:02}\"]",
        start.hour(),
        start.minute(),
        end.hour(),
        end.minute()
    );
    let rig = Rig::start(
        &[scene("/person", Some("astronaut.png"))],
        &camera,
        &detect_section(),
    )
    .await;
    wait_buffered(rig.camera(0), 2.0).await;
    let status = wait_detect(rig.detector(0), "off schedule", |s| {
        s.state == DetectState::OffSchedule
    })
    .await;
    // Long enough for a watched camera to have fired several times over.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status_after = rig.detector(0).unwrap().borrow().clone();
    assert_eq!(status_after.frames, 0, "{status:?} {status_after:?}");
    assert_eq!(status_after.triggers, 0);
    assert_eq!(status_after.state, DetectState::OffSchedule);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_substream_is_watched_and_the_main_stream_is_clipped() {
    if skip_without_onnx_runtime("a_substream_is_watched_and_the_main_stream_is_clipped") {
        return;
    }
    // The main stream shows the moving ball; the substream, at a quarter of the size, a person.
    let main = scene("/main", None);
    let sub = TestStream {
        width: 320,
        height: 180,
        image: Some(image("camera.png")),
        ..TestStream::h264("/sub")
    };
    let server = alertclip::demo::teststream::TestServer::start(&[main, sub]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let camera = format!(
        "pre_roll = \"2s\"\npost_roll = \"1s\"\n[camera.detect]\nurl = \"{}\"\nfps = 4\nmin_frames = 1\nwindow = 1",
        server.url("/sub")
    );
    let config = config(
        dir.path(),
        &[("front", server.url("/main"))],
        &camera,
        &detect_section(),
    );
    let daemon = alertclip::Daemon::start(config).await.unwrap();
    let mut clips = daemon.clips();
    let done = next_clip(&mut clips, Duration::from_secs(60)).await;
    assert_eq!(done.record.camera, "front");
    assert_eq!(done.record.triggers[0].kind, TriggerKind::Detection);
    assert_eq!(done.record.triggers[0].source, "front");
    assert_eq!(done.record.triggers[0].detections[0].label, "person");
    let probe = check_clip(&done, "h264");
    assert_eq!(
        (probe.width, probe.height),
        (640, 360),
        "the clip is of the main stream"
    );
    let status = daemon.watched()[0]
        .detect
        .as_ref()
        .unwrap()
        .borrow()
        .clone();
    assert_eq!(status.triggers, 1, "{status:?}");
    daemon.shutdown(Duration::from_secs(5)).await;
}
