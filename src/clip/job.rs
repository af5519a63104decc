//! One camera's clip for one event: the job the clipper starts and may extend, and the task
//! that waits for the pre-roll, follows the ring for post-roll, muxes, and writes the clip
//! beside its sidecar and signed manifest.
//!
//! A job gives up waiting at a deadline (post-roll end plus the camera's `stall_timeout`), so a
//! stalled camera yields a shorter clip marked partial, never a hang.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use alertclip_wire::Manifest;
use alertclip_wire::sidecar::{ClipRecord, SIDECAR_VERSION, SiteRecord, TimeSpan};
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::clip::Spool;
use crate::clip::history::EventLog;
use crate::clip::mux::{ClipError, ClipWriter, MuxedClip};
use crate::clip::storage::Storage;
use crate::clock::{self, MonoNs, rfc3339_ms};
use crate::evidence::Evidence;
use crate::ingest::camera::{self, Camera};
use crate::ingest::ring::ReadEnd;
use crate::trigger::Trigger;

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
pub(super) enum JobError {
    #[error("no video from the camera by the end of post-roll")]
    NoVideo,
    #[error("{0} exists already: a clip once written is never overwritten")]
    Exists(PathBuf),
    #[error(transparent)]
    Clip(#[from] ClipError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl JobError {
    /// Whether the clip failed because the disk is full.
    pub(super) fn is_disk_full(&self) -> bool {
        match self {
            JobError::Clip(error) => error.is_disk_full(),
            JobError::Io(error) => crate::sys::is_disk_full(error),
            _ => false,
        }
    }
}

/// What every clip job needs.
pub(super) struct JobContext {
    pub(super) site: SiteRecord,
    pub(super) storage: Storage,
    pub(super) done: broadcast::Sender<ClipDone>,
    pub(super) spool: Option<Arc<dyn Spool>>,
    pub(super) evidence: Arc<Evidence>,
    /// Block size the clip is hashed in, for its manifest.
    pub(super) chunk_size: u64,
    pub(super) log: EventLog,
    /// What deadlines are measured on.
    pub(super) clock: JobClock,
}

/// One camera's clip for one event, shared between the clipper (which may extend it) and
/// the task writing it (which closes it once done).
#[derive(Debug)]
pub(super) struct Job {
    /// The event it belongs to.
    pub(super) event: Uuid,
    /// The camera it clips.
    pub(super) camera: String,
    /// A footage request's clip: the span asked for, never extended by other triggers.
    pub(super) requested: bool,
    plan: Mutex<Plan>,
    extended: Notify,
}

#[derive(Debug)]
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
    pub(super) fn new(
        event: Uuid,
        camera: String,
        trigger: Trigger,
        from: MonoNs,
        end: MonoNs,
    ) -> Job {
        Job {
            event,
            camera,
            requested: trigger.window.is_some(),
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

    pub(super) fn is_open(&self) -> bool {
        self.plan().open
    }

    /// Records a trigger and pushes the end out; false once the clip is being finished.
    pub(super) fn extend(&self, trigger: &Trigger, end: MonoNs) -> bool {
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

    pub(super) fn close(&self) {
        self.plan().open = false;
    }
}

/// Waits for, cuts and writes one camera's clip. A clip once written is never overwritten:
/// a file already under its name fails the job.
pub(super) async fn record_clip(
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
            _ = context.clock.sleep_until(give_up) => {
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

    // Room for this clip, whatever the configured limits say: a disk can fill before them.
    let need = clip_estimate(camera, job);
    let (storage, spool, event) = (context.storage.clone(), context.spool.clone(), job.event);
    let _ = tokio::task::spawn_blocking(move || make_room(&storage, spool.as_deref(), need, event))
        .await;
    let mp4 = context
        .storage
        .event_dir(job.event)?
        .join(format!("{id}.mp4"));
    if mp4.exists() {
        job.close();
        return Err(JobError::Exists(mp4));
    }
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
        let read = feed.ring().read_past(&mut cursor, end, &mut batch);
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
            _ = context.clock.sleep_until(end + wait_limit.as_nanos() as u64) => {
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
    // The signed manifest, the clip's evidence record: the same bytes are published.
    let manifest = Manifest::for_clip(&record, muxed.block_size, muxed.block_sha256.clone());
    let manifest = context.evidence.sign_manifest(&manifest);
    let done = ClipDone {
        manifest,
        chunk_size: muxed.block_size,
        manifest_path: mp4.with_extension("manifest.json"),
        record,
        sidecar: mp4.with_extension("json"),
        mp4,
    };
    // Synced writes and pruning block on the disk: off the async workers.
    let (written, storage, event) = (done.clone(), context.storage.clone(), job.event);
    let sealed = muxed.sealed.clone();
    let placed =
        tokio::task::spawn_blocking(move || write_records(&written, &muxed, &storage, event))
            .await
            .map_err(std::io::Error::other)
            .and_then(|placed| placed);
    if let Err(error) = placed {
        let _ = std::fs::remove_file(&done.sidecar);
        let _ = std::fs::remove_file(&sealed);
        return Err(error.into());
    }
    Ok(done)
}

/// Writes a clip's sidecar, then puts the clip under its name beside it, then prunes the
/// oldest clips to stay within the storage cap (sparing `event`). The manifest is written once
/// the clip is spooled ([`complete`]).
fn write_records(
    done: &ClipDone,
    muxed: &MuxedClip,
    storage: &Storage,
    event: Uuid,
) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(&done.record).map_err(std::io::Error::other)?;
    crate::sys::write_durably(&done.sidecar, &json)?;
    muxed.place()?;
    match storage.prune(event) {
        Ok(deleted) if !deleted.is_empty() => {
            tracing::info!(
                events = deleted.len(),
                "deleted the oldest clips to stay within storage.max_bytes"
            );
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "could not prune old clips"),
    }
    Ok(())
}

/// Finishes a written clip: hands it to delivery (when there is any), then writes its signed
/// manifest beside it. The manifest on disk is the mark of a finished clip: one without it is
/// completed again after a restart ([`super::recover`]), so a crash anywhere in between
/// delivers the clip (perhaps twice, which receivers absorb), never loses it. Blocks on the
/// disk.
pub(super) fn complete(done: &ClipDone, spool: Option<&dyn Spool>) -> std::io::Result<()> {
    if let Some(spool) = spool {
        match spool.clip(done) {
            Ok(()) => {}
            // Spooled before a crash, its manifest not yet written.
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(error),
        }
    }
    crate::sys::write_durably(&done.manifest_path, &done.manifest)
}

/// Beyond a clip's estimate, room kept for its sidecar, manifest and the file system's own
/// needs.
const CLIP_SLACK: u64 = 1 << 20;

/// What a clip of this job will take on disk, from the camera's bitrate over what is
/// buffered, with half again for a busier scene.
fn clip_estimate(camera: &Camera, job: &Job) -> u64 {
    let rate = {
        let status = camera.status.borrow();
        if status.buffered_s > 0.5 {
            status.buffered_bytes as f64 / status.buffered_s
        } else {
            status.kbps * 125.0
        }
    };
    let seconds = {
        let plan = job.plan();
        // A GOP's worth more at the start, where the cut goes back to a keyframe.
        Duration::from_nanos(plan.end.saturating_sub(plan.from)) + Duration::from_secs(2)
    };
    (rate * seconds.as_secs_f64() * 1.5) as u64 + CLIP_SLACK
}

/// Frees space on the clip directory's disk until `need` bytes are free: first the oldest
/// events no longer waiting for delivery, then, through delivery, the undelivered clips that
/// go first (a detection event's before a panic's, oldest first), whose local copies then go
/// too. Alerts are never touched, nor `keep`'s clips. Blocks on the disk.
pub(super) fn make_room(storage: &Storage, spool: Option<&dyn Spool>, need: u64, keep: Uuid) {
    let mut deleted = 0;
    let mut dropped = 0;
    let free = loop {
        let free = match crate::sys::free_space(storage.dir()) {
            Ok((free, _)) => free,
            Err(error) => {
                tracing::warn!(%error, "cannot tell the free space for clips");
                return;
            }
        };
        if free >= need {
            break free;
        }
        match storage.shed_oldest_unpinned(keep) {
            Ok(Some(_)) => {
                deleted += 1;
                continue;
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, "could not delete old clips to make room");
                return;
            }
        }
        if spool.is_some_and(|s| s.shed_clip(keep)) {
            dropped += 1;
            continue;
        }
        tracing::warn!(
            free,
            need,
            "the disk is short of space for the next clip and no other clip is left to give up"
        );
        break free;
    };
    if deleted + dropped > 0 {
        tracing::warn!(
            deleted,
            undelivered_dropped = dropped,
            free,
            "the disk ran short: gave up the oldest clips to make room for the new one"
        );
        if let Some(spool) = spool {
            spool.disk_full();
        }
    }
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

/// The clock clip jobs wait on. In the daemon it is the pipeline clock frames are timed on;
/// in tests it is tokio's, so paused time drives a job's deadlines without waiting for them.
#[derive(Debug, Clone, Copy)]
pub(crate) enum JobClock {
    /// GStreamer's system clock, which camera pipelines run on.
    Pipeline,
    /// Tokio's clock, monotonic time 0 at `origin`.
    #[cfg(test)]
    Tokio {
        /// The instant that is monotonic time 0.
        origin: tokio::time::Instant,
    },
}

impl JobClock {
    /// Sleeps until monotonic instant `at`.
    async fn sleep_until(self, at: MonoNs) {
        match self {
            JobClock::Pipeline => {
                let now = clock::mono_now();
                tokio::time::sleep(Duration::from_nanos(at.saturating_sub(now))).await;
            }
            #[cfg(test)]
            JobClock::Tokio { origin } => {
                tokio::time::sleep_until(origin + Duration::from_nanos(at)).await;
            }
        }
    }
}
