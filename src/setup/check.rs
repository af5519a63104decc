//! `alertclip check`: everything a box needs, probed once, for a technician on site.
//!
//! Each camera is connected to and watched for a few seconds (codec, resolution, fps,
//! bitrate, keyframe interval against pre-roll), and so is its detection substream when it
//! has one; the broker is connected to with the configured TLS and credentials and sent a
//! `check` health message on the device's own topic; the detector's runtime and model are
//! loaded and run once; each button device is opened; the clip and outbox directories' free
//! space and the clock's synchronisation are read. Probes run side by side, so the whole check takes as long as the slowest camera.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::future::Either;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{self, ButtonKind, Config};
use crate::ingest::camera::{Camera, CameraState};
use alertclip_mqtt::{LinkEvent, Session, Tag};
use alertclip_wire::payload::{HEALTH_SCHEMA, Health};
use alertclip_wire::topics::Topics;

/// How long a camera has to start streaming.
const CAMERA_CONNECT: Duration = Duration::from_secs(15);
/// How long a streaming camera is watched: enough for two keyframes of a 4 s GOP.
const CAMERA_WATCH: Duration = Duration::from_secs(9);
/// How long the broker has to accept the connection, and then the message.
const BROKER_WAIT: Duration = Duration::from_secs(10);

/// How a probe went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Works.
    Pass,
    /// Works, but worth a look.
    Warn,
    /// Does not work.
    Fail,
}

impl Outcome {
    /// How the table shows it: quiet when it passes, loud otherwise.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "ok",
            Outcome::Warn => "WARN",
            Outcome::Fail => "FAIL",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// What was probed: `camera front`, `broker`, `detector` ...
    pub subject: String,
    /// How it went.
    pub outcome: Outcome,
    /// What was found, and for a problem, what to do.
    pub detail: String,
}

impl Finding {
    fn new(subject: impl Into<String>, outcome: Outcome, detail: impl Into<String>) -> Finding {
        Finding {
            subject: subject.into(),
            outcome,
            detail: detail.into(),
        }
    }
}

/// The whole check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Whether nothing failed.
    pub ok: bool,
    /// Every probe, in a fixed order.
    pub findings: Vec<Finding>,
}

impl Report {
    /// A table for people.
    pub fn render(&self) -> String {
        let width = self
            .findings
            .iter()
            .map(|f| f.subject.len())
            .max()
            .unwrap_or(0)
            .max(7);
        let mut out = String::new();
        for f in &self.findings {
            out.push_str(&format!(
                "{:<width$}  {:<4}  {}\n",
                f.subject,
                f.outcome.label(),
                f.detail
            ));
        }
        out.push_str(if self.ok {
            "\nall checks passed\n"
        } else {
            "\nsome checks failed\n"
        });
        out
    }
}

/// Probes everything `config` names. `path` is the configuration file, for the report.
pub async fn run(config: &Config, path: &Path) -> Report {
    let mut findings = vec![Finding::new(
        "config",
        Outcome::Pass,
        format!("{} is valid", path.display()),
    )];
    let mut cameras = Vec::new();
    for camera in &config.cameras {
        let password = match read_password(camera) {
            Ok(password) => password,
            Err(error) => {
                let message = format!("password_file {error}");
                let finding = Finding::new(format!("camera {}", camera.id), Outcome::Fail, message);
                cameras.push(Either::Left(std::future::ready(finding)));
                continue;
            }
        };
        cameras.push(Either::Right(probe_camera(
            camera.clone(),
            config.ring_bytes(camera),
            password.clone(),
            Some(camera.pre_roll.0),
        )));
        // A detection substream is a stream of its own: it can fail while the main one works.
        if let Some(url) = camera.detect.as_ref().and_then(|d| d.url.as_ref()) {
            cameras.push(Either::Right(probe_camera(
                crate::detect::watch::substream(camera, url),
                crate::detect::watch::SUBSTREAM_RING_BYTES,
                password,
                None,
            )));
        }
    }
    let (cameras, broker, detector) = tokio::join!(
        futures_util::future::join_all(cameras),
        probe_broker(config),
        tokio::task::spawn_blocking({
            let config = config.clone();
            move || probe_detector(&config)
        }),
    );
    findings.extend(cameras);
    findings.extend(broker);
    match detector {
        Ok(finding) => findings.extend(finding),
        Err(e) => findings.push(Finding::new("detector", Outcome::Fail, e.to_string())),
    }
    findings.extend(config.buttons.iter().map(probe_button));
    findings.extend(probe_space(config));
    findings.push(probe_clock());
    Report {
        ok: findings.iter().all(|f| f.outcome != Outcome::Fail),
        findings,
    }
}

/// The camera's password, from its `password_file`.
pub fn read_password(
    camera: &config::Camera,
) -> Result<Option<String>, alertclip_mqtt::SecretError> {
    camera
        .password_file
        .as_deref()
        .map(alertclip_mqtt::read_secret)
        .transpose()
}

/// Connects to one camera, watches it for a few seconds and reports what it sends: codec,
/// resolution, fps, bitrate and keyframe interval, held against `pre_roll` when clips are cut
/// from this stream (a detection substream has none).
pub async fn probe_camera(
    camera: config::Camera,
    ring_bytes: usize,
    password: Option<String>,
    pre_roll: Option<Duration>,
) -> Finding {
    let subject = format!("camera {}", camera.id);
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    let running = Camera::spawn(camera, ring_bytes, password, &tracker, cancel.clone());
    let finding = watch_camera(subject, &running, pre_roll).await;
    drop(running);
    cancel.cancel();
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
    finding
}

async fn watch_camera(subject: String, camera: &Camera, pre_roll: Option<Duration>) -> Finding {
    let mut status = camera.status.clone();
    // Streaming, or refused for good: a wrong password will not get better by retrying.
    let settled = tokio::time::timeout(
        CAMERA_CONNECT,
        status.wait_for(|s| {
            s.state == CameraState::Streaming
                || s.last_error.as_deref().is_some_and(is_refused_login)
        }),
    )
    .await;
    // The guard wait_for returns holds the status's lock: let go of it at once.
    let streaming = matches!(&settled, Ok(Ok(s)) if s.state == CameraState::Streaming);
    drop(settled);
    if !streaming {
        let error = camera.status.borrow().last_error.clone();
        let hint = match error.as_deref() {
            Some(e) if is_refused_login(e) => ": check the camera's username and password",
            Some(e) if e.contains("404") => {
                ": the camera has no stream at that path; check the URL's path (the camera's manual lists it)"
            }
            Some(e) if e.contains("codec") || e.contains("offers") => "",
            _ => ": is the camera on, and the URL right?",
        };
        return Finding::new(
            subject,
            Outcome::Fail,
            format!(
                "no video within {} s: {}{hint}",
                CAMERA_CONNECT.as_secs(),
                error.unwrap_or_else(|| "no answer".into())
            ),
        );
    }
    // Watch long enough to see two keyframes, or give up on that after CAMERA_WATCH.
    let started = Instant::now();
    while started.elapsed() < CAMERA_WATCH {
        if camera.feed.ring().status().keyframe_interval.is_some()
            && started.elapsed() > Duration::from_secs(2)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let s = camera.status.borrow().clone();
    let gop = camera.feed.ring().status().keyframe_interval;
    let mut detail = format!(
        "{} {}x{}, {:.1} fps, {:.0} kbit/s",
        s.codec.as_deref().unwrap_or("?"),
        s.width.unwrap_or(0),
        s.height.unwrap_or(0),
        s.fps,
        s.kbps
    );
    let mut outcome = Outcome::Pass;
    match gop {
        Some(gop) => {
            detail.push_str(&format!(", keyframe every {:.1} s", gop.as_secs_f64()));
            if let Some(pre_roll) = pre_roll.filter(|&pre_roll| gop > pre_roll) {
                outcome = Outcome::Warn;
                detail.push_str(&format!(
                    ": longer than pre_roll ({} s), so clips may start up to {:.1} s early; set the camera's keyframe interval (I-frame interval, GOP) lower",
                    pre_roll.as_secs_f64(),
                    gop.as_secs_f64()
                ));
            }
        }
        None => {
            outcome = Outcome::Warn;
            detail.push_str(&format!(
                ", fewer than two keyframes in {} s: set the camera's keyframe interval to 1-2 s",
                CAMERA_WATCH.as_secs()
            ));
        }
    }
    Finding::new(subject, outcome, detail)
}

/// Whether a camera error means the camera refused the credentials.
fn is_refused_login(error: &str) -> bool {
    let error = error.to_lowercase();
    error.contains("401") || error.contains("unauthorized") || error.contains("not authorized")
}

async fn probe_broker(config: &Config) -> Option<Finding> {
    let mqtt = config.mqtt.as_ref()?;
    let subject = "broker";
    let topics = Topics::new(mqtt.prefix(&config.site));
    let mut settings = match crate::delivery::settings(config, mqtt, &topics) {
        Ok(settings) => settings,
        Err(e) => {
            let message = format!("mqtt.password_file {e}");
            return Some(Finding::new(subject, Outcome::Fail, message));
        }
    };
    // Its own client id, so that a running daemon's session is left alone.
    settings.client_id = format!("{}-check", settings.client_id);
    settings.will = None;
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    let (session, mut events) = match Session::<()>::start(&settings, &tracker, cancel.clone()) {
        Ok(started) => started,
        Err(e) => return Some(Finding::new(subject, Outcome::Fail, format!("mqtt.{e}"))),
    };
    let finding = broker_exchange(
        &settings.url.to_string(),
        mqtt.protocol,
        &session,
        &mut events,
        &topics,
    )
    .await;
    session.disconnect().await;
    cancel.cancel();
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), tracker.wait()).await;
    Some(Finding::new(subject, finding.0, finding.1))
}

async fn broker_exchange(
    url: &str,
    protocol: crate::config::Protocol,
    session: &Session<()>,
    events: &mut tokio::sync::mpsc::UnboundedReceiver<LinkEvent<()>>,
    topics: &Topics,
) -> (Outcome, String) {
    let deadline = tokio::time::Instant::now() + BROKER_WAIT;
    let mut last_error = None;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(LinkEvent::Connected)) => break,
            Ok(Some(LinkEvent::Disconnected(reason))) => last_error = Some(reason),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                return (
                    Outcome::Fail,
                    format!(
                        "cannot connect to {url} within {} s: {}",
                        BROKER_WAIT.as_secs(),
                        last_error.unwrap_or_else(|| "no answer".into())
                    ),
                );
            }
        }
    }
    let message = Health {
        schema: HEALTH_SCHEMA.to_owned(),
        kind: "check".to_owned(),
        at: crate::clock::rfc3339_ms(std::time::SystemTime::now()),
        camera: None,
        event_id: None,
        message: "alertclip check: a technician's test of the connection".to_owned(),
    };
    let payload = serde_json::to_vec(&message).unwrap_or_default();
    let topic = topics.health();
    if session
        .publish(Tag::Message(()), &topic, payload, false)
        .is_err()
    {
        return (
            Outcome::Fail,
            format!("connected to {url}, but the publish could not be queued"),
        );
    }
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(LinkEvent::Acked(()))) => {
                let caveat = match protocol {
                    crate::config::Protocol::V311 => {
                        " (MQTT 3.1.1 brokers acknowledge even what their ACL drops: use protocol = \"5\" to have refusals reported)"
                    }
                    crate::config::Protocol::V5 => "",
                };
                return (
                    Outcome::Pass,
                    format!("connected to {url}; published on {topic}, acknowledged{caveat}"),
                );
            }
            Ok(Some(LinkEvent::Refused((), reason))) => {
                return (
                    Outcome::Fail,
                    format!(
                        "connected to {url}, but the broker refused a publish on {topic}: {reason}: allow this device to publish under {}/# in the broker's ACL",
                        topics.status().trim_end_matches("/status")
                    ),
                );
            }
            Ok(Some(LinkEvent::Disconnected(reason))) => {
                return (
                    Outcome::Fail,
                    format!("connected to {url}, then disconnected: {reason}"),
                );
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                return (
                    Outcome::Fail,
                    format!(
                        "connected to {url}, but no acknowledgement within {} s",
                        BROKER_WAIT.as_secs()
                    ),
                );
            }
        }
    }
}

fn probe_detector(config: &Config) -> Option<Finding> {
    if config.cameras.iter().all(|c| c.detect.is_none()) {
        return None;
    }
    let detect = &config.detect;
    let subject = "detector";
    let loaded = Instant::now();
    let mut model = match crate::detect::Model::load(
        &detect.runtime,
        &detect.model,
        detect.classes.len(),
        detect.threads,
    ) {
        Ok(model) => model,
        Err(e) => return Some(Finding::new(subject, Outcome::Fail, e.to_string())),
    };
    let load_ms = loaded.elapsed().as_millis();
    let (width, height) = model.input_size();
    let grey = vec![128u8; width * height * 3];
    let picture = crate::detect::yolox::Picture {
        data: &grey,
        width,
        height,
        stride: width * 3,
    };
    let mut found = Vec::new();
    Some(match model.detect(&picture, &[], &mut found) {
        Ok(t) => Finding::new(
            subject,
            Outcome::Pass,
            format!(
                "{} loaded in {load_ms} ms ({width}x{height}, {} classes); one inference {:.1} ms",
                detect.model.display(),
                detect.classes.len(),
                (t.pre + t.inference + t.post).as_secs_f64() * 1e3
            ),
        ),
        Err(e) => Finding::new(subject, Outcome::Fail, e.to_string()),
    })
}

fn probe_button(button: &crate::config::Button) -> Finding {
    let subject = format!("button {}", button.id);
    let result = match button.kind {
        ButtonKind::Gpio => match &button.line {
            Some(line) => crate::trigger::buttons::gpio::GpioInput::open(
                &button.id,
                button.chip.as_deref(),
                line,
                button.bias,
                button.active_low,
                button.debounce.0,
            )
            .map(|_| "GPIO line available".to_owned())
            .map_err(|e| e.to_string()),
            None => Err("no line".to_owned()),
        },
        ButtonKind::Evdev => match (&button.device, &button.key) {
            (Some(device), Some(key)) => {
                crate::trigger::buttons::keyboard::KeyInput::open(device, key, false)
                    .map(|_| format!("{} has {key}", device.display()))
                    .map_err(|e| e.to_string())
            }
            _ => Err("no device or key".to_owned()),
        },
        ButtonKind::Mqtt => Ok(format!(
            "wireless, on topic {} (presses arrive through the broker)",
            button.topic.as_deref().unwrap_or("?")
        )),
    };
    match result {
        Ok(detail) => Finding::new(subject, Outcome::Pass, detail),
        Err(error) if error.contains("busy") => Finding::new(
            subject,
            Outcome::Warn,
            format!("{error} (held by the running daemon?)"),
        ),
        Err(error) => Finding::new(subject, Outcome::Fail, error),
    }
}

fn probe_space(config: &Config) -> Vec<Finding> {
    let mut dirs = vec![(
        "clips",
        config.storage.dir.clone(),
        config.storage.max_bytes.0,
    )];
    if config.mqtt.is_some() {
        dirs.push((
            "outbox",
            config.outbox.dir.clone(),
            config.outbox.max_bytes.0,
        ));
    }
    dirs.into_iter()
        .map(|(name, dir, wanted)| {
            let subject = format!("disk {name}");
            match free_bytes(&dir) {
                Ok(free) if free >= wanted => Finding::new(
                    subject,
                    Outcome::Pass,
                    format!(
                        "{}: {} free, {} allowed",
                        dir.display(),
                        human(free),
                        human(wanted)
                    ),
                ),
                Ok(free) => Finding::new(
                    subject,
                    Outcome::Warn,
                    format!(
                        "{}: only {} free of the {} it may use: free space or lower the limit",
                        dir.display(),
                        human(free),
                        human(wanted)
                    ),
                ),
                Err(e) => Finding::new(subject, Outcome::Fail, format!("{}: {e}", dir.display())),
            }
        })
        .collect()
}

/// Free bytes on the file system of `dir`, or of its nearest existing parent (the daemon
/// creates it).
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let existing = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    crate::sys::free_space(existing).map(|(free, _)| free)
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.0} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

fn probe_clock() -> Finding {
    let provenance = crate::clock::provenance();
    let source = provenance
        .source
        .as_deref()
        .unwrap_or("no time service found");
    match provenance.synchronized {
        Some(true) => Finding::new(
            "clock",
            Outcome::Pass,
            format!(
                "synchronised ({source}), estimated error {} us",
                provenance.estimated_error_us.unwrap_or(0)
            ),
        ),
        Some(false) => Finding::new(
            "clock",
            Outcome::Warn,
            format!(
                "not synchronised ({source}): clip times may be off; enable systemd-timesyncd or chrony"
            ),
        ),
        None => Finding::new(
            "clock",
            Outcome::Warn,
            "cannot ask the kernel whether the clock is synchronised",
        ),
    }
}
