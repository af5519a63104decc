//! Test harness: real RTSP test cameras, daemons started in-process, and clips checked by an
//! independent reader (ffprobe and ffmpeg).
#![allow(dead_code)]

pub mod broker;
pub mod disk;
pub mod nats;
pub mod receiver;
pub mod replay;
pub mod tls;
pub mod unit;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use alertclip::clip::ClipDone;
use alertclip::config::Config;
use alertclip::detect::DetectStatus;
use alertclip::ingest::camera::{Camera, CameraState, CameraStatus};
use serde::Deserialize;
use tokio::sync::broadcast;

/// The `alertclip` binary as a command. Under a cross-test runner (`ALERTCLIP_TEST_RUNNER`,
/// which scripts/aarch64.sh sets to qemu-aarch64), through it, as cargo runs the tests.
pub fn alertclip_command() -> Command {
    let argv = alertclip_argv();
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]);
    command
}

/// [`alertclip`] for tokio.
pub fn alertclip_command_async() -> tokio::process::Command {
    let argv = alertclip_argv();
    let mut command = tokio::process::Command::new(&argv[0]);
    command.args(&argv[1..]);
    command
}

/// Why ONNX Runtime cannot run here, if it cannot. Under qemu-user (scripts/aarch64.sh) its
/// aarch64 library reads the CPU it runs on from `/proc/cpuinfo`, and crashes creating its
/// environment on an x86 host's: the script shows it an ARM one, as root, in a mount namespace
/// of the tests' own. Without that (not root), the detector's tests say so and skip.
pub fn onnx_runtime_unavailable() -> Option<&'static str> {
    let arm =
        std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|text| text.contains("CPU implementer"));
    std::env::var_os("ALERTCLIP_TEST_RUNNER")
        .filter(|_| !arm)
        .map(|_| {
            "ONNX Runtime crashes under qemu-user with the host's x86 /proc/cpuinfo (scripts/aarch64.sh shows it an ARM one only as root); the detector is tested natively"
        })
}

/// How far a clip's length may stray beyond what its keyframes explain, in seconds: a frame
/// of rounding, and under emulation (qemu-user, where frames arrive late and in bursts, and
/// a frame's place on the clock comes from its arrival) a few more.
pub fn rounding() -> f64 {
    match std::env::var_os("ALERTCLIP_TEST_RUNNER") {
        Some(_) => 0.35,
        None => 0.1,
    }
}

/// A test's limit on waiting for something, scaled for emulation: under a cross-test runner
/// (qemu-user) the box's code runs many times slower, the detector's inference some fifty.
pub fn patience(limit: Duration) -> Duration {
    match std::env::var_os("ALERTCLIP_TEST_RUNNER") {
        Some(_) => limit * 5,
        None => limit,
    }
}

/// Prints why a test is skipped and returns true when ONNX Runtime cannot run here.
pub fn skip_without_onnx_runtime(test: &str) -> bool {
    match onnx_runtime_unavailable() {
        Some(reason) => {
            eprintln!("{test}: skipped: {reason}");
            true
        }
        None => false,
    }
}

/// The command line that starts the `alertclip` binary, through the cross-test runner if any.
pub fn alertclip_argv() -> Vec<std::ffi::OsString> {
    let binary = std::ffi::OsString::from(env!("CARGO_BIN_EXE_alertclip"));
    match std::env::var_os("ALERTCLIP_TEST_RUNNER") {
        Some(runner) => vec![runner, binary],
        None => vec![binary],
    }
}

/// A config for `cameras` (id, url) writing into `dir`, with `extra` TOML appended to each
/// camera table (pre_roll, post_roll ...) and `tail` after everything.
pub fn config(dir: &Path, cameras: &[(&str, String)], camera_extra: &str, tail: &str) -> Config {
    let text = config_text(dir, cameras, camera_extra, tail);
    Config::parse(&text, Path::new("test.toml")).expect("test config is valid")
}

/// The text of [`config`], also written to `dir/alertclip.toml` for the command line.
pub fn config_text(
    dir: &Path,
    cameras: &[(&str, String)],
    camera_extra: &str,
    tail: &str,
) -> String {
    let mut text = format!(
        "[site]\nid = \"test-site\"\nname = \"Test Store\"\naddress = \"12 Main St\"\n\n[storage]\ndir = \"{}\"\n\n\
         [control]\nsocket = \"{}\"\n\n[evidence]\ndir = \"{}\"\n",
        dir.join("clips").display(),
        dir.join("control.sock").display(),
        dir.join("evidence").display(),
    );
    // The outbox always lives in the test's directory; a test may size it in `tail`.
    if tail.contains("[outbox]") {
        text.push_str(&tail.replace(
            "[outbox]",
            &format!("[outbox]\ndir = \"{}\"", dir.join("outbox").display()),
        ));
    } else {
        text.push_str(&format!(
            "[outbox]\ndir = \"{}\"\n",
            dir.join("outbox").display()
        ));
        text.push_str(tail);
    }
    for (id, url) in cameras {
        text.push_str(&format!(
            "\n[[camera]]\nid = \"{id}\"\nurl = \"{url}\"\n{camera_extra}\n"
        ));
    }
    let _ = std::fs::write(dir.join("alertclip.toml"), &text);
    text
}

/// Waits until the camera streams with at least `seconds` buffered.
pub async fn wait_buffered(camera: &Camera, seconds: f64) -> CameraStatus {
    wait_status(camera, Duration::from_secs(60), |s| {
        s.state == CameraState::Streaming && s.buffered_s >= seconds
    })
    .await
}

/// Waits for a status the predicate accepts, failing the test after `limit` ([`patience`]).
pub async fn wait_status(
    camera: &Camera,
    limit: Duration,
    predicate: impl FnMut(&CameraStatus) -> bool,
) -> CameraStatus {
    let mut status = camera.status.clone();
    match tokio::time::timeout(patience(limit), status.wait_for(predicate)).await {
        Ok(Ok(status)) => status.clone(),
        _ => panic!(
            "camera {} never reached the expected state; last: {:?}",
            camera.config.id,
            camera.status.borrow()
        ),
    }
}

/// The next clip written, failing the test after `limit` ([`patience`]).
pub async fn next_clip(clips: &mut broadcast::Receiver<ClipDone>, limit: Duration) -> ClipDone {
    tokio::time::timeout(patience(limit), clips.recv())
        .await
        .expect("a clip within the time limit")
        .expect("clip channel open")
}

/// What ffprobe reads from a clip.
#[derive(Debug)]
pub struct Probe {
    pub codec: String,
    pub width: u32,
    pub height: u32,
    pub has_b_frames: u32,
    pub duration: f64,
    pub packets: Vec<Packet>,
}

#[derive(Debug, Clone, Copy)]
pub struct Packet {
    pub pts: f64,
    pub dts: f64,
    pub key: bool,
}

#[derive(Deserialize)]
struct FfprobeOut {
    streams: Vec<FfStream>,
    format: FfFormat,
    packets: Vec<FfPacket>,
}
#[derive(Deserialize)]
struct FfStream {
    codec_name: String,
    width: u32,
    height: u32,
    #[serde(default)]
    has_b_frames: u32,
}
#[derive(Deserialize)]
struct FfFormat {
    duration: String,
}
#[derive(Deserialize)]
struct FfPacket {
    pts_time: String,
    dts_time: String,
    flags: String,
}

/// Reads a clip with ffprobe.
pub fn ffprobe(path: &Path) -> Probe {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .arg("stream=codec_name,width,height,has_b_frames:format=duration:packet=pts_time,dts_time,flags")
        .args(["-of", "json"])
        .arg(path)
        .output()
        .expect("ffprobe runs (scripts/setup.sh installs ffmpeg)");
    assert!(
        out.status.success(),
        "ffprobe failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: FfprobeOut = serde_json::from_slice(&out.stdout).expect("ffprobe JSON");
    let stream = &parsed.streams[0];
    Probe {
        codec: stream.codec_name.clone(),
        width: stream.width,
        height: stream.height,
        has_b_frames: stream.has_b_frames,
        duration: parsed.format.duration.parse().expect("duration"),
        packets: parsed
            .packets
            .iter()
            .map(|p| Packet {
                pts: p.pts_time.parse().expect("pts"),
                dts: p.dts_time.parse().expect("dts"),
                key: p.flags.contains('K'),
            })
            .collect(),
    }
}

impl Probe {
    /// What every clip must be: a keyframe first, decode times rising, no frame shown before
    /// it is decoded.
    pub fn assert_well_formed(&self, path: &Path) {
        assert!(!self.packets.is_empty(), "{}: no packets", path.display());
        assert!(
            self.packets[0].key,
            "{}: first frame is not a keyframe",
            path.display()
        );
        for (i, w) in self.packets.windows(2).enumerate() {
            assert!(
                w[1].dts > w[0].dts,
                "{}: DTS not rising at packet {}: {:?}",
                path.display(),
                i + 1,
                w
            );
        }
        for p in &self.packets {
            assert!(p.pts >= p.dts, "{}: PTS before DTS: {p:?}", path.display());
        }
    }

    /// Frames per second over the clip.
    pub fn fps(&self) -> f64 {
        self.packets.len() as f64 / self.duration
    }
}

/// Decodes every frame with ffmpeg; panics with its complaints if any.
pub fn assert_decodes(path: &Path) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-xerror", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{} does not decode cleanly: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// SHA-256 of a file, lowercase hex, computed independently of the daemon.
pub fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Checks a written clip against its sidecar and an independent reader, and returns the probe.
pub fn check_clip(done: &ClipDone, codec: &str) -> Probe {
    let probe = ffprobe(&done.mp4);
    probe.assert_well_formed(&done.mp4);
    assert_decodes(&done.mp4);
    let ffprobe_name = if codec == "h265" { "hevc" } else { codec };
    assert_eq!(probe.codec, ffprobe_name);
    let record = &done.record;
    assert_eq!(record.codec, codec);
    assert_eq!(
        record.frames as usize,
        probe.packets.len(),
        "sidecar frame count"
    );
    assert_eq!(record.bytes, std::fs::metadata(&done.mp4).unwrap().len());
    assert_eq!(record.sha256, sha256sum(&done.mp4), "sidecar hash");
    assert!(
        (record.duration_ms as f64 / 1000.0 - probe.duration).abs() < 0.1,
        "sidecar duration {} vs {}",
        record.duration_ms,
        probe.duration
    );
    let on_disk: alertclip_wire::ClipRecord =
        serde_json::from_slice(&std::fs::read(&done.sidecar).unwrap()).expect("sidecar parses");
    assert_eq!(&on_disk, record);
    assert_eq!(done.mp4.parent(), done.sidecar.parent());
    probe
}

/// The directory of an event's files.
pub fn event_dir(root: &Path, done: &ClipDone) -> PathBuf {
    root.join("clips").join(done.record.event_id.to_string())
}

/// A daemon run as its own process (`alertclip run`), for tests that kill it: its
/// configuration in `dir` (site test-site, camera `cam` at `camera`, delivery to `broker`
/// with `chunk_size`, `rolls` in the camera's table).
pub struct DaemonProcess {
    pub config: PathBuf,
    pub socket: PathBuf,
}

impl DaemonProcess {
    pub fn configure(
        dir: &Path,
        broker: &str,
        camera: &str,
        chunk_size: &str,
        rolls: &str,
    ) -> DaemonProcess {
        let config = dir.join("alertclip.toml");
        std::fs::write(
            &config,
            format!(
                "[site]\nid = \"test-site\"\nname = \"Test Store\"\n[storage]\ndir = \"{0}/clips\"\n[evidence]\ndir = \"{0}/evidence\"\n[control]\nsocket = \"{0}/c.sock\"\n\
                 [outbox]\ndir = \"{0}/outbox\"\n[mqtt]\nurl = \"{broker}\"\nchunk_size = \"{chunk_size}\"\n\
                 [[camera]]\nid = \"cam\"\nurl = \"{camera}\"\n{rolls}\n",
                dir.display(),
            ),
        )
        .unwrap();
        DaemonProcess {
            config,
            socket: dir.join("c.sock"),
        }
    }

    /// Starts it; killed when the handle is dropped.
    pub fn start(&self) -> tokio::process::Child {
        alertclip_command_async()
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }
}

/// A stream whose clips are large: noise at 640x480 keeps the encoder at 4 Mbit/s.
pub fn busy_stream() -> alertclip::demo::teststream::TestStream {
    alertclip::demo::teststream::TestStream {
        width: 640,
        height: 480,
        bitrate_kbps: 4_000,
        pattern: "snow".into(),
        ..alertclip::demo::teststream::TestStream::h264("/cam")
    }
}

/// A daemon in-process against its own RTSP test cameras, in a temporary directory. Camera
/// ids are the streams' paths without the leading `/`.
pub struct Rig {
    pub dir: tempfile::TempDir,
    pub server: alertclip::demo::teststream::TestServer,
    pub daemon: alertclip::Daemon,
    pub clips: broadcast::Receiver<ClipDone>,
}

impl Rig {
    /// Starts cameras for `streams`, each with `camera_extra` in its table and `tail` after.
    pub async fn start(
        streams: &[alertclip::demo::teststream::TestStream],
        camera_extra: &str,
        tail: &str,
    ) -> Rig {
        Rig::start_adjusted(streams, camera_extra, tail, |_| {}).await
    }

    /// [`Rig::start`], with the configuration changed by `adjust` before the daemon starts
    /// (directories moved onto a small file system ...).
    pub async fn start_adjusted(
        streams: &[alertclip::demo::teststream::TestStream],
        camera_extra: &str,
        tail: &str,
        adjust: impl FnOnce(&mut Config),
    ) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let server = alertclip::demo::teststream::TestServer::start(streams).unwrap();
        let cameras: Vec<(&str, String)> = streams
            .iter()
            .map(|s| (s.path.trim_start_matches('/'), server.url(&s.path)))
            .collect();
        let mut config = config(dir.path(), &cameras, camera_extra, tail);
        adjust(&mut config);
        let daemon = alertclip::Daemon::start(config).await.unwrap();
        let clips = daemon.clips();
        Rig {
            dir,
            server,
            daemon,
            clips,
        }
    }

    /// The i-th camera.
    pub fn camera(&self, i: usize) -> &Camera {
        &self.daemon.cameras()[i]
    }

    /// Camera `i`'s detector status, when it is watched.
    pub fn detector(&self, i: usize) -> Option<&tokio::sync::watch::Receiver<DetectStatus>> {
        self.daemon.watched()[i].detect.as_ref()
    }

    /// Fires a trigger and returns its event id.
    pub async fn fire(&self, trigger: alertclip::trigger::Trigger) -> uuid::Uuid {
        self.daemon.triggers().fire(trigger).await.unwrap()
    }

    /// The next clip written, within a minute.
    pub async fn next_clip(&mut self) -> ClipDone {
        next_clip(&mut self.clips, Duration::from_secs(60)).await
    }

    /// The directory of an event's files.
    pub fn event_dir(&self, done: &ClipDone) -> PathBuf {
        event_dir(self.dir.path(), done)
    }

    /// Shuts the daemon down and, once `between` has done what it does to the files it left,
    /// starts a new one on the same directory and cameras with `tail` after the cameras.
    pub async fn restart(self, camera_extra: &str, tail: &str, between: impl FnOnce(&Path)) -> Rig {
        let cameras: Vec<(String, String)> = self
            .daemon
            .cameras()
            .iter()
            .map(|c| (c.config.id.clone(), c.config.url.expose().to_owned()))
            .collect();
        self.daemon.shutdown(Duration::from_secs(5)).await;
        between(self.dir.path());
        let cameras: Vec<(&str, String)> = cameras
            .iter()
            .map(|(id, url)| (id.as_str(), url.clone()))
            .collect();
        let daemon =
            alertclip::Daemon::start(config(self.dir.path(), &cameras, camera_extra, tail))
                .await
                .unwrap();
        let clips = daemon.clips();
        Rig {
            dir: self.dir,
            server: self.server,
            daemon,
            clips,
        }
    }

    /// Shuts the daemon down; returns its directory, for a test that looks at it afterwards.
    pub async fn stop(self) -> tempfile::TempDir {
        self.daemon.shutdown(Duration::from_secs(5)).await;
        self.dir
    }
}

/// Checks a payload against its published JSON Schema (the wire contract's
/// `schemas/<name>.v1.json`), formats (date-time, uuid) included.
pub fn assert_schema(name: &str, value: &serde_json::Value) {
    let path = format!("crates/wire/schemas/{name}.v1.json");
    let text = alertclip_wire::schemas::by_name(name).expect("a schema of that name");
    let schema: serde_json::Value = serde_json::from_str(text).unwrap();
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{name} payload does not match {path}: {errors:?}\n{value:#}"
    );
}
