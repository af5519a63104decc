//! Events: turns triggers into per-camera clip jobs, folds overlapping triggers into the clip
//! in progress, and records each finished clip beside its JSON sidecar.
//!
//! One task (the clipper) owns the table of clips in progress and is the only reader of the
//! trigger channel, so deciding "new event or extension" never races. Each clip is then its
//! own task: it cuts the pre-roll from the ring at once, follows the ring for post-roll, and
//! gives up waiting at a deadline, so a stalled camera yields a shorter clip marked partial
//! and never a hang.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use alertclip_wire::sidecar::{ClipRecord, SIDECAR_VERSION, SiteRecord, TimeSpan};
use alertclip_wire::{Manifest, TriggerKind};
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::camera::{self, Camera};
use crate::clip::{ClipError, ClipWriter, MuxedClip};
use crate::clock::{self, MonoNs, rfc3339_ms};
use crate::config;
use crate::evidence::DeviceKey;
use crate::history::EventLog;
use crate::publish::Publisher;
use crate::ring::ReadEnd;
use crate::storage::{self, Storage};
use crate::trigger::{Request, Trigger, TriggerError};

/// After the last post-roll frame is due, how long a clip waits beyond the camera's
/// `stall_timeout` before it is finished as partial.
const LATE_FRAME_MARGIN: Duration = Duration::from_secs(1);

/// A clip that was written, with where its files are.
#[derive(Debug, Clone)]
pub struct ClipDone {
    /// The signed manifest, as written beside the clip and as published.
    pub manifest: Vec<u8>,
    /// The block size the manifest hashes the clip in.
    pub chunk_size: u64,
    /// The manifest file, `<camera>.manifest.json`.
    pub manifest_path: PathBuf,
    /// What the sidecar says.
    pub record: ClipRecord,
    /// The MP4.
    pub mp4: PathBuf,
    /// The sidecar.
    pub sidecar: PathBuf,
}

/// Why a camera's clip for an event was not written.
#[derive(Debug, thiserror::Error)]
enum JobError {
    #[error("no video from the camera by the end of post-roll")]
    NoVideo,
    #[error(transparent)]
    Clip(#[from] ClipError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The clipper: the only reader of the trigger channel.
pub(crate) struct Clipper {
    context: Arc<JobContext>,
    publisher: Option<Arc<Publisher>>,
    cameras: Vec<Camera>,
    jobs: HashMap<String, Arc<Job>>,
    tracker: TaskTracker,
    /// Fires when clips in progress must finish with what they have.
    jobs_cancel: CancellationToken,
}

/// Where finished clips go.
pub(crate) struct Outputs {
    /// The clip directory.
    pub storage: Storage,
    /// Every clip written is announced here.
    pub done: broadcast::Sender<ClipDone>,
    /// Delivery, when configured.
    pub publisher: Option<Arc<Publisher>>,
    /// Signs each clip's manifest.
    pub key: Arc<DeviceKey>,
    /// Block size clips are hashed in.
    pub chunk_size: u64,
    /// The recent events, for status.
    pub log: EventLog,
}

/// What every clip job needs.
struct JobContext {
    site: SiteRecord,
    storage: Storage,
    done: broadcast::Sender<ClipDone>,
    publisher: Option<Arc<Publisher>>,
    key: Arc<DeviceKey>,
    /// Block size the clip is hashed in, for its manifest.
    chunk_size: u64,
    log: EventLog,
}

impl Clipper {
    pub(crate) fn new(
        site: &config::Site,
        cameras: Vec<Camera>,
        outputs: Outputs,
        tracker: TaskTracker,
        jobs_cancel: CancellationToken,
    ) -> Clipper {
        let site = SiteRecord {
            id: site.id.clone(),
            name: site.name.clone(),
        };
        let publisher = outputs.publisher.clone();
        Clipper {
            context: Arc::new(JobContext {
                site,
                storage: outputs.storage,
                done: outputs.done,
                publisher: outputs.publisher,
                key: outputs.key,
                chunk_size: outputs.chunk_size,
                log: outputs.log,
            }),
            publisher,
            cameras,
            jobs: HashMap::new(),
            tracker,
            jobs_cancel,
        }
    }

    /// Serves triggers until `stop`; triggers still queued then are refused.
    pub(crate) async fn run(
        mut self,
        mut triggers: mpsc::Receiver<Request>,
        stop: CancellationToken,
    ) {
        loop {
            let request = tokio::select! {
                _ = stop.cancelled() => break,
                request = triggers.recv() => request,
            };
            let Some(Request { trigger, reply }) = request else {
                break;
            };
            let result = self.handle(trigger);
            let _ = reply.send(result);
        }
        triggers.close();
        while let Ok(Request { reply, .. }) = triggers.try_recv() {
            let _ = reply.send(Err(TriggerError::ShuttingDown));
        }
    }

    /// Starts or extends the clips a trigger asks for; returns its event id.
    fn handle(&mut self, trigger: Trigger) -> Result<Uuid, TriggerError> {
        let cameras: Vec<Camera> = if trigger.cameras.is_empty() {
            self.cameras.clone()
        } else {
            let mut chosen = Vec::new();
            for id in &trigger.cameras {
                let camera = self
                    .cameras
                    .iter()
                    .find(|c| &c.config.id == id)
                    .ok_or_else(|| TriggerError::UnknownCamera {
                        camera: id.clone(),
                        configured: self
                            .cameras
                            .iter()
                            .map(|c| c.config.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })?;
                if !chosen.iter().any(|c: &Camera| c.config.id == *id) {
                    chosen.push(camera.clone());
                }
            }
            chosen
        };
        // A trigger during a clip joins that clip's event, the newest one if several.
        let joined = cameras
            .iter()
            .filter_map(|c| self.jobs.get(&c.config.id))
            .filter(|job| job.is_open())
            .map(|job| job.event)
            .max();
        let event = joined.unwrap_or_else(Uuid::now_v7);
        if joined.is_none() {
            self.context.log.opened(
                event,
                &trigger,
                cameras.iter().map(|c| c.config.id.clone()).collect(),
                self.publisher.is_some(),
            );
        }
        // The alert goes out before any video work starts.
        if joined.is_none()
            && let Some(publisher) = &self.publisher
        {
            let plans: Vec<config::Camera> = cameras.iter().map(|c| c.config.clone()).collect();
            if let Err(error) = publisher.alert(event, &trigger, &plans) {
                tracing::error!(%event, %error, "cannot spool the alert");
            }
        }
        for camera in cameras {
            let end = trigger.at.mono + camera.config.post_roll.0.as_nanos() as u64;
            if let Some(job) = self.jobs.get(&camera.config.id)
                && job.extend(&trigger, end)
            {
                tracing::info!(camera = %camera.config.id, event = %job.event, source = %trigger.source, "trigger extends the clip in progress");
                continue;
            }
            let from = trigger
                .at
                .mono
                .saturating_sub(camera.config.pre_roll.0.as_nanos() as u64);
            let job = Arc::new(Job::new(event, trigger.clone(), from, end));
            self.jobs.insert(camera.config.id.clone(), job.clone());
            tracing::info!(camera = %camera.config.id, %event, kind = ?trigger.kind, source = %trigger.source, "clip started");
            if let Some(publisher) = &self.publisher {
                // A detection's own camera shows what was detected, boxed.
                let detections = if trigger.source == camera.config.id {
                    trigger.detections.clone()
                } else {
                    Vec::new()
                };
                self.tracker.spawn(snapshot(
                    publisher.clone(),
                    &camera,
                    event,
                    trigger.at.mono,
                    detections,
                ));
            }
            let context = self.context.clone();
            let cancel = self.jobs_cancel.clone();
            self.tracker.spawn(async move {
                let id = camera.config.id.clone();
                match record_clip(&job, &camera, &context, &cancel).await {
                    Ok(done) => {
                        tracing::info!(camera = %id, event = %job.event, file = %done.mp4.display(),
                            duration_ms = done.record.duration_ms, partial = done.record.partial, "clip written");
                        if let Some(publisher) = context.publisher.clone() {
                            let detection = done.record.triggers.first().is_some_and(|t| t.kind == TriggerKind::Detection);
                            let spooled = done.clone();
                            let result = tokio::task::spawn_blocking(move || publisher.clip(&spooled, detection)).await;
                            match result {
                                Ok(Ok(())) => {}
                                Ok(Err(error)) => tracing::error!(camera = %id, event = %job.event, %error, "cannot spool the clip"),
                                Err(error) => tracing::error!(camera = %id, event = %job.event, %error, "spooling the clip failed"),
                            }
                        }
                        context.log.clip_written(done.record.event_id);
                        let _ = context.done.send(done);
                    }
                    Err(error) => tracing::error!(camera = %id, event = %job.event, %error, "clip not written"),
                }
            });
        }
        Ok(event)
    }
}

/// Decodes the frame nearest the trigger and spools it as the camera's snapshot, with
/// `detections` drawn on it.
fn snapshot(
    publisher: Arc<Publisher>,
    camera: &Camera,
    event: Uuid,
    at: MonoNs,
    detections: Vec<crate::detect::Detection>,
) -> impl Future<Output = ()> + use<> {
    let feed = camera.feed.clone();
    let id = camera.config.id.clone();
    async move {
        let max = publisher.chunk_size() as usize;
        let camera = id.clone();
        let result = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let jpeg = crate::snapshot::capture(&feed, at, max, &detections)?;
            let bytes = jpeg.len();
            publisher
                .snapshot(event, &camera, jpeg)
                .map_err(|e| crate::snapshot::SnapshotError::Pipeline(e.to_string()))?;
            Ok::<_, crate::snapshot::SnapshotError>((bytes, started.elapsed()))
        })
        .await;
        match result {
            Ok(Ok((bytes, took))) => {
                tracing::info!(camera = %id, %event, bytes, ms = took.as_millis() as u64, "snapshot spooled")
            }
            Ok(Err(error)) => tracing::warn!(camera = %id, %event, %error, "no snapshot"),
            Err(error) => tracing::error!(camera = %id, %event, %error, "snapshot failed"),
        }
    }
}

/// One camera's clip for one event, shared between the clipper (which may extend it) and
/// the task writing it (which closes it once done).
struct Job {
    event: Uuid,
    plan: Mutex<Plan>,
    extended: Notify,
}

struct Plan {
    /// Requested first instant: the first trigger minus pre-roll.
    from: MonoNs,
    /// Requested last instant: the latest trigger plus post-roll.
    end: MonoNs,
    triggers: Vec<Trigger>,
    /// Still accepting extensions.
    open: bool,
}

impl Job {
    fn new(event: Uuid, trigger: Trigger, from: MonoNs, end: MonoNs) -> Job {
        Job {
            event,
            plan: Mutex::new(Plan {
                from,
                end,
                triggers: vec![trigger],
                open: true,
            }),
            extended: Notify::new(),
        }
    }

    fn plan(&self) -> MutexGuard<'_, Plan> {
        self.plan
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn is_open(&self) -> bool {
        self.plan().open
    }

    /// Records a trigger and pushes the end out; false once the clip is being finished.
    fn extend(&self, trigger: &Trigger, end: MonoNs) -> bool {
        let mut plan = self.plan();
        if !plan.open {
            return false;
        }
        plan.end = plan.end.max(end);
        plan.triggers.push(trigger.clone());
        drop(plan);
        self.extended.notify_one();
        true
    }

    /// Closes the job if its end is still `end`, that is, nothing extended it since.
    fn close_at(&self, end: MonoNs) -> bool {
        let mut plan = self.plan();
        if plan.end == end {
            plan.open = false;
        }
        !plan.open
    }

    fn close(&self) {
        self.plan().open = false;
    }
}

/// Waits for, cuts and writes one camera's clip.
async fn record_clip(
    job: &Job,
    camera: &Camera,
    context: &JobContext,
    cancel: &CancellationToken,
) -> Result<ClipDone, JobError> {
    let feed = &camera.feed;
    let id = &camera.config.id;
    let wait_limit = camera.config.stall_timeout.0 + LATE_FRAME_MARGIN;
    let (from, at) = {
        let plan = job.plan();
        (plan.from, plan.triggers[0].at.mono)
    };

    // The start: normally buffered already; a camera that just connected may need a moment.
    let cut = loop {
        let arrived = feed.arrived();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        if let Some(cut) = feed.ring().start_cut(from, at) {
            break cut;
        }
        let give_up = job.plan().end + wait_limit.as_nanos() as u64;
        tokio::select! {
            _ = &mut arrived => {}
            _ = sleep_until_mono(give_up) => {
                let end = job.plan().end;
                if job.close_at(end) {
                    return Err(JobError::NoVideo);
                }
            }
            _ = cancel.cancelled() => {
                job.close();
                return Err(JobError::NoVideo);
            }
        }
    };

    let mp4 = context
        .storage
        .event_dir(job.event)?
        .join(format!("{id}.mp4"));
    let mut writer = ClipWriter::create(&mp4, &cut.caps, context.chunk_size)?;
    let mut cursor = cut.cursor;
    let mut batch = Vec::with_capacity(256);
    let cut_short: Option<String> = loop {
        let arrived = feed.arrived();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        let extended = job.extended.notified();
        tokio::pin!(extended);
        extended.as_mut().enable();

        let end = job.plan().end;
        let read = feed.ring().read(&mut cursor, end, &mut batch);
        for frame in batch.drain(..) {
            if let Err(error) = writer.push(frame) {
                writer.abort();
                job.close();
                return Err(error.into());
            }
        }
        match read {
            ReadEnd::Reached if job.close_at(end) => break None,
            ReadEnd::Reached => continue,
            ReadEnd::RunEnded => {
                job.close();
                break Some("the camera's stream restarted or changed format".to_owned());
            }
            ReadEnd::Lost => {
                job.close();
                break Some("frames were evicted before they were written".to_owned());
            }
            ReadEnd::Waiting => {}
        }
        tokio::select! {
            _ = &mut arrived => {}
            _ = &mut extended => {}
            _ = sleep_until_mono(end + wait_limit.as_nanos() as u64) => {
                if job.close_at(end) {
                    break Some(format!("the camera sent no frames for {}", humantime::format_duration(wait_limit)));
                }
            }
            _ = cancel.cancelled() => {
                job.close();
                break Some("the daemon shut down before post-roll ended".to_owned());
            }
        }
    };

    let muxed = writer.finish().await?;
    let record = describe(job, camera, context, &cut.caps, &muxed, cut_short);
    let sidecar = mp4.with_extension("json");
    let json = serde_json::to_vec_pretty(&record).map_err(std::io::Error::other)?;
    storage::write_durably(&sidecar, &json)?;
    // The signed manifest, the clip's evidence record: the same bytes are published.
    let manifest = Manifest::for_clip(&record, muxed.block_size, muxed.block_sha256.clone());
    let manifest = context
        .key
        .sign(&serde_json::to_vec(&manifest).map_err(std::io::Error::other)?);
    let manifest_path = mp4.with_extension("manifest.json");
    storage::write_durably(&manifest_path, &manifest)?;
    match context.storage.prune(job.event) {
        Ok(deleted) if !deleted.is_empty() => {
            tracing::info!(
                events = deleted.len(),
                "deleted the oldest clips to stay within storage.max_bytes"
            );
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "could not prune old clips"),
    }
    Ok(ClipDone {
        manifest,
        chunk_size: muxed.block_size,
        manifest_path,
        record,
        mp4,
        sidecar,
    })
}

/// The sidecar of a written clip. Every wall-clock time comes through the first trigger's
/// clock reading, so the times are consistent with each other even if the clock is stepped.
fn describe(
    job: &Job,
    camera: &Camera,
    context: &JobContext,
    caps: &gstreamer::Caps,
    muxed: &MuxedClip,
    cut_short: Option<String>,
) -> ClipRecord {
    let plan = job.plan();
    let map = plan.triggers[0].at;
    let mut reasons = Vec::new();
    // A millisecond of slack: timestamps are rounded to the track's timescale.
    if muxed.start > plan.from + 1_000_000 {
        let buffered = Duration::from_millis(
            (plan.triggers[0].at.mono.saturating_sub(muxed.start)) / 1_000_000,
        );
        reasons.push(format!(
            "only {} of pre-roll was buffered",
            humantime::format_duration(buffered)
        ));
    }
    reasons.extend(cut_short);
    let structure = caps.structure(0);
    ClipRecord {
        version: SIDECAR_VERSION,
        event_id: job.event,
        site: context.site.clone(),
        camera: camera.config.id.clone(),
        file: muxed
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        triggers: plan.triggers.iter().map(Trigger::record).collect(),
        requested: TimeSpan {
            start: rfc3339_ms(map.wall_of(plan.from)),
            end: rfc3339_ms(map.wall_of(plan.end)),
        },
        actual: TimeSpan {
            start: rfc3339_ms(map.wall_of(muxed.start)),
            end: rfc3339_ms(map.wall_of(muxed.end)),
        },
        duration_ms: (muxed.end - muxed.start) / 1_000_000,
        frames: muxed.frames,
        codec: camera::codec_name(caps).unwrap_or("unknown").to_owned(),
        width: structure.and_then(|s| s.get::<i32>("width").ok()),
        height: structure.and_then(|s| s.get::<i32>("height").ok()),
        bytes: muxed.bytes,
        sha256: muxed.sha256.clone(),
        partial: !reasons.is_empty(),
        partial_reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
        clock_map: map.into(),
    }
}

/// Sleeps until a monotonic instant of the pipeline clock.
async fn sleep_until_mono(at: MonoNs) {
    let now = clock::mono_now();
    tokio::time::sleep(Duration::from_nanos(at.saturating_sub(now))).await;
}
