//! One watched camera: follows its frames, decodes a few a second, runs the model on the
//! pictures that changed, and fires a `detection` trigger when the rules say so.
//!
//! Two halves, so that a slow model never holds up the camera:
//! - the feeder (a task) reads new encoded frames from the ring and pushes them into the
//!   decode branch; it starts and stops the branch with the schedule, and starts over at the
//!   newest keyframe when the branch falls behind or the camera reconnects;
//! - the looker (a thread, as inference blocks) takes the newest decoded picture; when it is
//!   still busy with the last one, the next is dropped, never queued.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use alertclip_wire::DetectState;
use gstreamer as gst;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::frames::{self, DecodeBranch, DecodeError, MAX_BACKLOG};
use super::motion::{Gate, MotionGate};
use super::rules::Rules;
use super::yolox::{Found, Wanted};
use super::{Detection, Model};
use crate::clock::{self, ClockMap, MonoNs};
use crate::config::detect::CameraDetect;
use crate::config::{self, HumanDuration, SecretUrl};
use crate::ingest::camera::CameraFeed;
use crate::ingest::ring::{Cursor, Frame, ReadEnd};
use crate::trigger::{Trigger, TriggerKind, Triggers};

/// How often the schedule is looked at, and the longest a quiet camera waits between reads.
const TICK: Duration = Duration::from_secs(1);
/// How long after a decode failure the branch is started again.
const RETRY: Duration = Duration::from_secs(5);
const UNSET: u64 = u64::MAX;
/// The ring of a detection substream: a few seconds of a low-resolution stream.
pub const SUBSTREAM_RING_BYTES: usize = 8 << 20;

/// The camera a `[camera.detect] url` substream is ingested as: the camera's id with
/// `.detect`, its credentials and transport, and only the few seconds of buffer the detector
/// needs to start from a keyframe.
pub fn substream(camera: &config::Camera, url: &SecretUrl) -> config::Camera {
    config::Camera {
        id: format!("{}.detect", camera.id),
        url: url.clone(),
        pre_roll: HumanDuration(Duration::from_secs(4)),
        post_roll: HumanDuration(Duration::ZERO),
        detect: None,
        ..camera.clone()
    }
}

/// A watched camera's detector, for status and health.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DetectStatus {
    /// What it is doing.
    pub state: DetectState,
    /// The GStreamer decoder in use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decoder: Option<String>,
    /// Pictures decoded and offered to the model.
    pub frames: u64,
    /// Pictures the model ran on.
    pub inferences: u64,
    /// Pictures the motion gate let skip the model.
    pub skipped_still: u64,
    /// Pictures dropped because the model was busy with the previous one.
    pub dropped_busy: u64,
    /// The last run's time, pre-processing to post-processing, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_inference_ms: Option<f64>,
    /// Detection triggers fired.
    pub triggers: u64,
    /// The last problem, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// What every watcher shares: the model (one at a time runs it) and its class names.
#[derive(Debug, Clone)]
pub struct Detector {
    /// The loaded model.
    pub model: Arc<Mutex<Model>>,
    /// The model's class names, in output order.
    pub classes: Arc<[String]>,
    /// The site's time zone, for schedules.
    pub time_zone: jiff::tz::TimeZone,
}

/// A running watcher.
#[derive(Debug, Clone)]
pub struct Watcher {
    /// The camera it watches.
    pub camera: String,
    /// Its status.
    pub status: watch::Receiver<DetectStatus>,
}

impl Watcher {
    /// Starts watching `feed` (the frames of camera `camera`, or of its detection substream)
    /// on `tracker`, until `cancel`.
    pub fn spawn(
        camera: &str,
        config: &CameraDetect,
        feed: Arc<CameraFeed>,
        detector: &Detector,
        triggers: Triggers,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Watcher {
        let (status_tx, status) = watch::channel(DetectStatus::default());
        let status_tx = Arc::new(status_tx);
        let (pictures_tx, pictures) = std::sync::mpsc::sync_channel(1);
        let base = Arc::new(AtomicU64::new(UNSET));
        let looker = Looker {
            camera: camera.to_owned(),
            config: config.clone(),
            detector: detector.clone(),
            triggers,
            status: status_tx.clone(),
            runtime: tokio::runtime::Handle::current(),
            base: base.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("detect-{camera}"))
            .spawn(move || looker.run(pictures));
        if let Err(e) = thread {
            status_tx.send_modify(|s| {
                s.state = DetectState::Failed;
                s.last_error = Some(format!("cannot start the detection thread: {e}"));
            });
        }
        let feeder = Feeder {
            camera: camera.to_owned(),
            config: config.clone(),
            fit: detector
                .model
                .lock()
                .map(|m| m.input_size())
                .unwrap_or((416, 416)),
            time_zone: detector.time_zone.clone(),
            feed,
            pictures: pictures_tx,
            status: status_tx,
            base,
        };
        tracker.spawn(feeder.run(cancel));
        Watcher {
            camera: camera.to_owned(),
            status,
        }
    }
}

/// The picture and its decoding pipeline's time, handed from the branch to the looker.
type Picture = gst::Sample;

struct Feeder {
    camera: String,
    config: CameraDetect,
    fit: (usize, usize),
    time_zone: jiff::tz::TimeZone,
    feed: Arc<CameraFeed>,
    pictures: SyncSender<Picture>,
    status: Arc<watch::Sender<DetectStatus>>,
    base: Arc<AtomicU64>,
}

/// The branch in use and where it reads the ring.
struct Reading {
    branch: DecodeBranch,
    cursor: Cursor,
    caps: gst::Caps,
}

impl Feeder {
    async fn run(self, cancel: CancellationToken) {
        let mut reading: Option<Reading> = None;
        let mut frames: Vec<Frame> = Vec::with_capacity(64);
        let mut retry_at: MonoNs = 0;
        let mut scheduled = true;
        let mut checked_schedule: MonoNs = 0;
        loop {
            let arrived = self.feed.arrived();
            let now = clock::mono_now();
            if now.saturating_sub(checked_schedule) >= TICK.as_nanos() as u64 {
                checked_schedule = now;
                let active = self
                    .config
                    .schedule
                    .active_at(SystemTime::now(), &self.time_zone);
                if active != scheduled {
                    tracing::info!(camera = %self.camera, watching = active, "detection schedule");
                    scheduled = active;
                }
                if !scheduled {
                    reading = None;
                    self.status.send_if_modified(|s| {
                        let changed = s.state != DetectState::OffSchedule;
                        s.state = DetectState::OffSchedule;
                        changed
                    });
                }
            }
            if scheduled && reading.is_none() && now >= retry_at {
                match self.start_reading() {
                    Ok(Some(r)) => {
                        self.status.send_modify(|s| {
                            s.state = DetectState::Watching;
                            s.decoder = Some(r.branch.decoder().to_owned());
                        });
                        reading = Some(r);
                    }
                    Ok(None) => {}
                    Err(message) => {
                        self.failed(message);
                        retry_at = now + RETRY.as_nanos() as u64;
                    }
                }
            }
            if let Some(r) = reading.as_mut() {
                match self.feed_branch(r, &mut frames) {
                    Ok(true) => {}
                    Ok(false) => reading = None,
                    Err(message) => {
                        self.failed(message);
                        reading = None;
                        retry_at = now + RETRY.as_nanos() as u64;
                    }
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = arrived => {}
                _ = tokio::time::sleep(TICK) => {}
            }
        }
        drop(reading);
        self.status.send_modify(|s| s.state = DetectState::Stopped);
    }

    fn failed(&self, error: DecodeError) {
        tracing::warn!(camera = %self.camera, %error, "detection");
        self.status.send_modify(|s| {
            s.state = DetectState::Failed;
            s.last_error = Some(error.to_string());
        });
    }

    /// A new branch from the newest keyframe, or `None` while nothing is buffered.
    fn start_reading(&self) -> Result<Option<Reading>, DecodeError> {
        let now = clock::mono_now();
        let Some(cut) = self.feed.ring().start_cut(now, now) else {
            return Ok(None);
        };
        let pictures = self.pictures.clone();
        let status = self.status.clone();
        let base = self.base.clone();
        base.store(UNSET, Ordering::Relaxed);
        let branch =
            DecodeBranch::start(
                &cut.caps,
                self.config.fps,
                self.fit,
                move |sample| match pictures.try_send(sample) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => status.send_modify(|s| s.dropped_busy += 1),
                    Err(TrySendError::Disconnected(_)) => {}
                },
            )?;
        Ok(Some(Reading {
            branch,
            cursor: cut.cursor,
            caps: cut.caps,
        }))
    }

    /// Pushes what arrived since the last call. `Ok(false)` when the branch must start over.
    fn feed_branch(&self, r: &mut Reading, frames: &mut Vec<Frame>) -> Result<bool, DecodeError> {
        if let Some(error) = r.branch.error() {
            return Err(error);
        }
        if r.branch.backlog() > MAX_BACKLOG {
            tracing::warn!(camera = %self.camera, "detection decoding fell behind; skipping to the newest keyframe");
            return Ok(false);
        }
        frames.clear();
        let end = self.feed.ring().read(&mut r.cursor, MonoNs::MAX, frames);
        for frame in frames.iter() {
            if self.base.load(Ordering::Relaxed) == UNSET {
                self.base.store(frame.time, Ordering::Relaxed);
            }
            r.branch.push(frame)?;
        }
        frames.clear();
        Ok(match end {
            ReadEnd::Reached | ReadEnd::Waiting => true,
            // Reconnected or changed caps; or the ring moved on past us.
            ReadEnd::RunEnded | ReadEnd::Lost => {
                tracing::debug!(camera = %self.camera, caps = %r.caps, "detection starts over");
                false
            }
        })
    }
}

struct Looker {
    camera: String,
    config: CameraDetect,
    detector: Detector,
    triggers: Triggers,
    status: Arc<watch::Sender<DetectStatus>>,
    runtime: tokio::runtime::Handle,
    base: Arc<AtomicU64>,
}

impl Looker {
    fn run(self, pictures: Receiver<Picture>) {
        let wanted: Vec<Wanted> = self
            .config
            .labels
            .iter()
            .filter_map(|label| {
                let class = self.detector.classes.iter().position(|c| c == label)?;
                Some(Wanted {
                    class,
                    min_score: self.config.min_score.for_label(label) as f32,
                })
            })
            .collect();
        let mut rules = Rules::new(&self.config);
        let mut gate = MotionGate::default();
        let mut found: Vec<Found> = Vec::with_capacity(32);
        while let Ok(sample) = pictures.recv() {
            let time = self.time_of(&sample);
            let outcome = frames::with_picture(&sample, |picture| {
                if self.config.motion_gate && gate.check(picture, time) == Gate::Skip {
                    return Ok(None);
                }
                let mut model = self
                    .detector
                    .model
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                model.detect(picture, &wanted, &mut found).map(Some)
            });
            let fired = match outcome {
                Ok(Ok(Some(timings))) => {
                    let ms = (timings.pre + timings.inference + timings.post).as_secs_f64() * 1e3;
                    self.status.send_modify(|s| {
                        s.frames += 1;
                        s.inferences += 1;
                        s.last_inference_ms = Some(ms);
                    });
                    rules.observe(&found, &self.detector.classes, time)
                }
                Ok(Ok(None)) => {
                    self.status.send_modify(|s| {
                        s.frames += 1;
                        s.skipped_still += 1;
                    });
                    rules.observe_unchanged(time)
                }
                Ok(Err(e)) => {
                    self.report(&e);
                    None
                }
                Err(e) => {
                    self.report(&e);
                    None
                }
            };
            if let Some(detections) = fired {
                self.fire(detections, time);
            }
        }
    }

    /// The monotonic time of a decoded picture.
    fn time_of(&self, sample: &gst::Sample) -> MonoNs {
        let base = self.base.load(Ordering::Relaxed);
        match (base, sample.buffer().and_then(|b| b.pts())) {
            (UNSET, _) | (_, None) => clock::mono_now(),
            (base, Some(pts)) => base + pts.nseconds(),
        }
    }

    fn report(&self, error: &dyn std::fmt::Display) {
        tracing::warn!(camera = %self.camera, %error, "detection");
        self.status
            .send_modify(|s| s.last_error = Some(error.to_string()));
    }

    fn fire(&self, detections: Vec<Detection>, time: MonoNs) {
        let note = describe(&detections);
        tracing::info!(camera = %self.camera, %note, "detection");
        let now = ClockMap::now();
        let trigger = Trigger {
            kind: TriggerKind::Detection,
            source: self.camera.clone(),
            note: Some(note),
            cameras: vec![self.camera.clone()],
            at: ClockMap {
                mono: time,
                wall: now.wall_of(time),
            },
            detections,
            window: None,
        };
        match self.runtime.block_on(self.triggers.fire(trigger)) {
            Ok(_) => self.status.send_modify(|s| s.triggers += 1),
            Err(e) => self.report(&format!("the detection trigger was not taken: {e}")),
        }
    }
}

/// "person in stockroom", "2 persons", "person, car".
fn describe(detections: &[Detection]) -> String {
    let mut labels: Vec<(&str, usize)> = Vec::new();
    for d in detections {
        match labels.iter_mut().find(|(l, _)| *l == d.label) {
            Some((_, n)) => *n += 1,
            None => labels.push((&d.label, 1)),
        }
    }
    let what: Vec<String> = labels
        .iter()
        .map(|(l, n)| {
            if *n == 1 {
                (*l).to_owned()
            } else {
                format!("{n} × {l}")
            }
        })
        .collect();
    let mut zones: Vec<&str> = detections
        .iter()
        .filter_map(|d| d.zone.as_deref())
        .collect();
    zones.dedup();
    if zones.is_empty() {
        what.join(", ")
    } else {
        format!("{} in {}", what.join(", "), zones.join(", "))
    }
}
