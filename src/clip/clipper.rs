//! The clipper: turns triggers into events and per-camera clip jobs, and folds a trigger that
//! comes during a clip into that clip instead of starting a duplicate.
//!
//! It is the only reader of the trigger channel and owns the [`EventTable`] of clips in
//! progress, so deciding "new event or extension" never races. Each clip is then a [`job`] of
//! its own.
//!
//! [`job`]: super::job

use std::collections::HashMap;
use std::sync::Arc;

use alertclip_wire::TriggerKind;
use alertclip_wire::payload::{
    ALERT_SCHEMA, Alert, CameraPlan, EVENT_UPDATE_SCHEMA, EventUpdate, SiteInfo, TriggerInfo,
};
use alertclip_wire::sidecar::SiteRecord;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::Spool;
use super::job::{ClipDone, Job, JobClock, JobContext, complete, record_clip};
use crate::clip::history::{Delivery, EventLog};
use crate::clip::storage::Storage;
use crate::clock::{self, MonoNs, rfc3339_ms};
use crate::config;
use crate::evidence::Evidence;
use crate::ingest::camera::Camera;
use crate::trigger::{Request, Trigger, TriggerError};

/// The clipper: the only reader of the trigger channel.
pub(crate) struct Clipper {
    context: Arc<JobContext>,
    /// The store, as alerts carry it.
    site: SiteInfo,
    cameras: Vec<Camera>,
    table: EventTable,
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
    pub spool: Option<Arc<dyn Spool>>,
    /// Signs each alert and each clip's manifest.
    pub evidence: Arc<Evidence>,
    /// Block size clips are hashed in.
    pub chunk_size: u64,
    /// The recent events, for status.
    pub log: EventLog,
}

impl Clipper {
    pub(crate) fn new(
        site: &config::Site,
        cameras: Vec<Camera>,
        outputs: Outputs,
        tracker: TaskTracker,
        jobs_cancel: CancellationToken,
    ) -> Clipper {
        Clipper {
            context: Arc::new(JobContext {
                site: SiteRecord {
                    id: site.id.clone(),
                    name: site.name.clone(),
                },
                storage: outputs.storage,
                done: outputs.done,
                spool: outputs.spool,
                evidence: outputs.evidence,
                chunk_size: outputs.chunk_size,
                log: outputs.log,
                clock: JobClock::Pipeline,
            }),
            site: SiteInfo {
                id: site.id.clone(),
                name: site.name.clone(),
                address: site.address.clone(),
            },
            cameras,
            table: EventTable::default(),
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
            let result = self.handle(trigger).await;
            let _ = reply.send(result);
        }
        triggers.close();
        while let Ok(Request { reply, .. }) = triggers.try_recv() {
            let _ = reply.send(Err(TriggerError::ShuttingDown));
        }
    }

    /// The cameras a trigger names, each once, in the order named (all when it names none).
    fn cameras_of(&self, trigger: &Trigger) -> Result<Vec<Camera>, TriggerError> {
        if trigger.cameras.is_empty() {
            return Ok(self.cameras.clone());
        }
        let mut chosen: Vec<Camera> = Vec::new();
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
            if !chosen.iter().any(|c| c.config.id == *id) {
                chosen.push(camera.clone());
            }
        }
        Ok(chosen)
    }

    /// Starts or extends the clips a trigger asks for; returns its event id once the alert of
    /// every event it opened, and the update of every event it joined, is durably spooled.
    async fn handle(&mut self, trigger: Trigger) -> Result<Uuid, TriggerError> {
        let cameras = self.cameras_of(&trigger)?;
        let spans: Vec<Span> = cameras
            .iter()
            .map(|c| Span::of(&c.config, &trigger))
            .collect();
        let assigned = self.table.assign(&trigger, &spans);
        let mut links = Vec::new();
        for (event, ids) in &assigned.opened {
            let opened: Vec<&Camera> = cameras
                .iter()
                .filter(|c| ids.contains(&c.config.id))
                .collect();
            self.context.log.opened(
                *event,
                &trigger,
                opened.iter().map(|c| c.config.id.clone()).collect(),
                self.context.spool.is_some(),
            );
            links.push(Link::Alert(alert(
                &self.site, *event, &trigger, &opened, &spans,
            )));
        }
        for joined in &assigned.joined {
            tracing::info!(event = %joined.event, update = joined.number, cameras = ?joined.cameras,
                source = %trigger.source, "trigger joins the event in progress");
            links.push(Link::Update(update(&self.site, joined, &trigger)));
        }
        // The alerts and updates go out before any video work starts.
        let mut not_spooled = None;
        if let Some(spool) = &self.context.spool {
            for link in links {
                let evidence = self.context.evidence.clone();
                if let Err(error) = spool_link(spool.clone(), evidence.clone(), link.clone()).await
                {
                    let event = link.event();
                    tracing::error!(%event, %error, "cannot spool {}: retrying from memory", link.what());
                    if let Link::Alert(_) = link {
                        self.context.log.set_delivery(event, Delivery::Retrying);
                    }
                    not_spooled.get_or_insert((event, format!("{}: {error}", link.what())));
                    self.tracker.spawn(retry_link(
                        spool.clone(),
                        evidence,
                        link,
                        error.to_string(),
                        self.context.log.clone(),
                        self.jobs_cancel.clone(),
                    ));
                }
            }
        }
        for job in assigned.started {
            let Some(camera) = cameras.iter().find(|c| c.config.id == job.camera) else {
                continue;
            };
            self.start(camera.clone(), job, &trigger);
        }
        match not_spooled {
            Some((event, reason)) => Err(TriggerError::AlertNotSpooled { event, reason }),
            None => Ok(assigned.event),
        }
    }

    /// Runs a new job: its snapshot, then its clip.
    fn start(&self, camera: Camera, job: Arc<Job>, trigger: &Trigger) {
        let event = job.event;
        tracing::info!(camera = %camera.config.id, %event, kind = ?trigger.kind, source = %trigger.source, "clip started");
        if let Some(spool) = &self.context.spool {
            // A detection's own camera shows what was detected, boxed.
            let detections = if trigger.source == camera.config.id {
                trigger.detections.clone()
            } else {
                Vec::new()
            };
            self.tracker.spawn(snapshot(
                spool.clone(),
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
            // However the task ends, its job stops taking triggers, which then clip anew.
            let _closed = CloseOnDrop(job.clone());
            match record_clip(&job, &camera, &context, &cancel).await {
                Ok(done) => {
                    let (finished, spool) = (done.clone(), context.spool.clone());
                    let result = tokio::task::spawn_blocking(move || complete(&finished, spool.as_deref()))
                        .await
                        .map_err(std::io::Error::other)
                        .and_then(|completed| completed);
                    match result {
                        Ok(()) => tracing::info!(camera = %id, %event, file = %done.mp4.display(),
                            duration_ms = done.record.duration_ms, partial = done.record.partial, "clip written"),
                        // On disk with its sidecar: the next start completes it.
                        Err(error) => tracing::error!(camera = %id, %event, %error,
                            "clip written but not spooled; it is spooled again when the daemon next starts"),
                    }
                    context.log.clip_written(done.record.event_id);
                    let _ = context.done.send(done);
                }
                Err(error) => {
                    tracing::error!(camera = %id, %event, %error, "clip not written");
                    if error.is_disk_full()
                        && let Some(spool) = &context.spool
                    {
                        spool.disk_full();
                    }
                }
            }
        });
    }
}

/// A link of the alert chain, built but not yet chained or signed.
#[derive(Debug, Clone)]
enum Link {
    /// The alert of a new event.
    Alert(Alert),
    /// News of an event in progress.
    Update(EventUpdate),
}

impl Link {
    fn event(&self) -> Uuid {
        match self {
            Link::Alert(alert) => alert.event_id,
            Link::Update(update) => update.event_id,
        }
    }

    /// What it is, for people.
    fn what(&self) -> String {
        match self {
            Link::Alert(alert) => format!("the alert of event {}", alert.event_id),
            Link::Update(update) => {
                format!("update {} of event {}", update.update, update.event_id)
            }
        }
    }
}

/// Chains, signs and spools an alert or an update, on a blocking thread: the chain advances
/// only once it is on disk.
async fn spool_link(
    spool: Arc<dyn Spool>,
    evidence: Arc<Evidence>,
    mut link: Link,
) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || {
        match &mut link {
            Link::Alert(alert) => {
                let event = alert.event_id;
                evidence.sign_chained(alert, |payload| spool.alert(event, payload.to_vec()))
            }
            Link::Update(update) => {
                let (event, number) = (update.event_id, update.update);
                evidence.sign_chained(update, |payload| {
                    spool.update(event, number, payload.to_vec())
                })
            }
        }
        .map(|_| ())
        .map_err(std::io::Error::other)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// How often an alert or update that could not be spooled is tried again.
const ALERT_RETRY_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps an alert or update that could not be spooled in memory and tries again every second
/// until it is on disk (and so on its way), saying so at once on the health channel. At
/// shutdown it is tried a last time; one lost then is logged as lost.
async fn retry_link(
    spool: Arc<dyn Spool>,
    evidence: Arc<Evidence>,
    link: Link,
    first_error: String,
    log: EventLog,
    stop: CancellationToken,
) {
    let (event, what) = (link.event(), link.what());
    let since = std::time::Instant::now();
    let tell = |kind: &'static str, message: String| {
        let spool = spool.clone();
        tokio::task::spawn_blocking(move || spool.alert_health(kind, event, message))
    };
    let _ = tell(
        "alert_not_spooled",
        format!(
            "{what} could not be written to disk ({first_error}); the box keeps it in memory and tries again every second: free space on the box"
        ),
    )
    .await;
    let mut attempts = 1u32;
    loop {
        let stopping = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tokio::time::sleep(ALERT_RETRY_EVERY) => false,
        };
        attempts += 1;
        match spool_link(spool.clone(), evidence.clone(), link.clone()).await {
            Ok(()) => {
                tracing::warn!(%event, attempts, "{what} is spooled at last");
                if let Link::Alert(_) = link {
                    log.set_delivery(event, Delivery::Queued);
                }
                let _ = tell(
                    "alert_spooled_late",
                    format!(
                        "{what} reached the disk {} s late, after space was freed",
                        since.elapsed().as_secs()
                    ),
                )
                .await;
                return;
            }
            Err(error) if stopping => {
                tracing::error!(%event, %error, "the daemon stopped before {what} could be written to disk: it is lost");
                return;
            }
            Err(error) => {
                tracing::debug!(%event, %error, attempts, "{what} still cannot be spooled")
            }
        }
    }
}

/// Closes its job when dropped.
struct CloseOnDrop(Arc<Job>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// A trigger as alerts and updates carry it.
fn trigger_info(trigger: &Trigger) -> TriggerInfo {
    TriggerInfo {
        kind: trigger.kind,
        source: trigger.source.clone(),
        note: trigger.note.clone(),
        detections: trigger.detections.clone(),
    }
}

/// The update of an event a trigger joined, not yet chained or signed.
fn update(site: &SiteInfo, joined: &Joined, trigger: &Trigger) -> EventUpdate {
    EventUpdate {
        schema: EVENT_UPDATE_SCHEMA.to_owned(),
        event_id: joined.event,
        update: joined.number,
        site_id: site.id.clone(),
        trigger: trigger_info(trigger),
        triggered_at: rfc3339_ms(trigger.at.wall),
        cameras: joined.cameras.clone(),
        clock: clock::provenance(),
        test: trigger.kind == TriggerKind::Test,
        device_version: env!("CARGO_PKG_VERSION").to_owned(),
        sequence: 0,
        previous_alert_sha256: None,
        signature: None,
    }
}

/// The alert of a new event, not yet chained or signed.
fn alert(
    site: &SiteInfo,
    event: Uuid,
    trigger: &Trigger,
    cameras: &[&Camera],
    spans: &[Span],
) -> Alert {
    Alert {
        schema: ALERT_SCHEMA.to_owned(),
        event_id: event,
        site: site.clone(),
        trigger: trigger_info(trigger),
        triggered_at: rfc3339_ms(trigger.at.wall),
        cameras: cameras
            .iter()
            .map(|c| {
                let span = spans.iter().find(|s| s.camera == c.config.id);
                let seconds = |ns: MonoNs| ns as f64 / 1e9;
                CameraPlan {
                    id: c.config.id.clone(),
                    pre_roll_s: span.map_or(c.config.pre_roll.0.as_secs_f64(), |s| {
                        seconds(s.pre_roll_ns)
                    }),
                    post_roll_s: span.map_or(c.config.post_roll.0.as_secs_f64(), |s| {
                        seconds(s.post_roll_ns)
                    }),
                }
            })
            .collect(),
        clock: clock::provenance(),
        test: trigger.kind == TriggerKind::Test,
        device_version: env!("CARGO_PKG_VERSION").to_owned(),
        sequence: 0,
        previous_alert_sha256: None,
        signature: None,
    }
}

/// What one camera's clip covers around a trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Span {
    camera: String,
    pre_roll_ns: MonoNs,
    post_roll_ns: MonoNs,
}

impl Span {
    /// The camera's pre- and post-roll, or the window a footage request asks for.
    fn of(camera: &config::Camera, trigger: &Trigger) -> Span {
        let (pre, post) = match trigger.window {
            Some(window) => (window.before, window.after),
            None => (camera.pre_roll.0, camera.post_roll.0),
        };
        Span {
            camera: camera.id.clone(),
            pre_roll_ns: pre.as_nanos() as MonoNs,
            post_roll_ns: post.as_nanos() as MonoNs,
        }
    }
}

/// What a trigger was given.
#[derive(Debug, Default)]
struct Assigned {
    /// The event the trigger answers with: the one it joined, or the one it opened.
    event: Uuid,
    /// The event opened for it, with the cameras it clips, if any: for a trigger that joined
    /// nothing, or for the cameras whose clip in the joined event is already finished (their
    /// footage then goes out as an event of its own).
    opened: Vec<(Uuid, Vec<String>)>,
    /// The events in progress the trigger joined, each with its update.
    joined: Vec<Joined>,
    /// New jobs to run.
    started: Vec<Arc<Job>>,
}

/// An event in progress that a trigger joined.
#[derive(Debug, PartialEq, Eq)]
struct Joined {
    event: Uuid,
    /// The event's update number for this trigger: 1 for its first, 2 ...
    number: u32,
    /// The cameras whose clip in the event now covers the trigger (extended or new to it).
    cameras: Vec<String>,
}

/// The events with clips in progress, and every job each has started. An event is forgotten
/// once none of its jobs is open; until then, no camera gets a second clip in it, so a clip
/// once written is never rewritten under the same name.
#[derive(Default)]
struct EventTable {
    events: HashMap<Uuid, Vec<Arc<Job>>>,
    /// The last update number of each event, while it is in `events`.
    updates: HashMap<Uuid, u32>,
}

impl EventTable {
    /// Decides where `trigger` goes, for the cameras of `spans`: a camera with a clip in
    /// progress has it extended; the trigger joins the newest event among those clips, and a
    /// camera new to that event starts its clip there; a camera whose clip in that event is
    /// already finished, and every camera when no clip is in progress, goes to a new event.
    fn assign(&mut self, trigger: &Trigger, spans: &[Span]) -> Assigned {
        self.events
            .retain(|_, jobs| jobs.iter().any(|job| job.is_open()));
        let events = &self.events;
        self.updates.retain(|event, _| events.contains_key(event));
        // A footage request is an event of its own: the span it asks for, not an extension.
        let joined = spans
            .iter()
            .filter(|_| trigger.window.is_none())
            .filter_map(|span| self.open_job(&span.camera).map(|job| job.event))
            .max();
        let mut assigned = Assigned::default();
        let mut joined_cameras: Vec<(Uuid, String)> = Vec::new();
        let mut left = Vec::new();
        for span in spans {
            let end = trigger.at.mono.saturating_add(span.post_roll_ns);
            if trigger.window.is_none()
                && let Some(job) = self.open_job(&span.camera)
                && job.extend(trigger, end)
            {
                joined_cameras.push((job.event, span.camera.clone()));
                continue;
            }
            let Some(event) = joined else {
                left.push(span);
                continue;
            };
            let jobs = self.events.entry(event).or_default();
            if jobs.iter().any(|job| job.camera == span.camera) {
                // Its clip in this event is finished, or finishing: never a second one.
                left.push(span);
            } else {
                let job = new_job(event, trigger, span);
                jobs.push(job.clone());
                assigned.started.push(job);
                joined_cameras.push((event, span.camera.clone()));
            }
        }
        for (event, camera) in joined_cameras {
            match assigned.joined.iter_mut().find(|j| j.event == event) {
                Some(joined) => joined.cameras.push(camera),
                None => {
                    let number = self.updates.entry(event).or_default();
                    *number = number.saturating_add(1);
                    assigned.joined.push(Joined {
                        event,
                        number: *number,
                        cameras: vec![camera],
                    });
                }
            }
        }
        assigned.event = joined.unwrap_or_default();
        if !left.is_empty() {
            let event = Uuid::now_v7();
            if joined.is_none() {
                assigned.event = event;
            }
            let jobs: Vec<Arc<Job>> = left
                .iter()
                .map(|span| new_job(event, trigger, span))
                .collect();
            assigned
                .opened
                .push((event, left.iter().map(|s| s.camera.clone()).collect()));
            assigned.started.extend(jobs.iter().cloned());
            self.events.insert(event, jobs);
        }
        assigned
    }

    /// The open job of `camera` in the newest event that has one; a footage request's clip
    /// is the span it asked for, and never takes other triggers.
    fn open_job(&self, camera: &str) -> Option<&Arc<Job>> {
        self.events
            .values()
            .flatten()
            .filter(|job| job.camera == camera && !job.requested && job.is_open())
            .max_by_key(|job| job.event)
    }
}

fn new_job(event: Uuid, trigger: &Trigger, span: &Span) -> Arc<Job> {
    let from = trigger.at.mono.saturating_sub(span.pre_roll_ns);
    let end = trigger.at.mono.saturating_add(span.post_roll_ns);
    Arc::new(Job::new(
        event,
        span.camera.clone(),
        trigger.clone(),
        from,
        end,
    ))
}

/// Decodes the frame nearest the trigger and spools it as the camera's snapshot, with
/// `detections` drawn on it.
fn snapshot(
    spool: Arc<dyn Spool>,
    camera: &Camera,
    event: Uuid,
    at: MonoNs,
    detections: Vec<crate::detect::Detection>,
) -> impl Future<Output = ()> + use<> {
    let feed = camera.feed.clone();
    let id = camera.config.id.clone();
    async move {
        let max = spool.max_payload() as usize;
        let camera = id.clone();
        let result = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let jpeg = crate::clip::snapshot::capture(&feed, at, max, &detections)?;
            let bytes = jpeg.len();
            spool
                .snapshot(event, &camera, jpeg)
                .map_err(crate::clip::snapshot::SnapshotError::Spool)?;
            Ok::<_, crate::clip::snapshot::SnapshotError>((bytes, started.elapsed()))
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

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::clip::job::JobError;
    use crate::clock::ClockMap;
    use crate::ingest::CameraFeed;
    use crate::ingest::ring::FrameRing;

    const SECOND: MonoNs = 1_000_000_000;

    fn trigger(at_s: u64) -> Trigger {
        Trigger {
            kind: TriggerKind::Button,
            source: "b1".into(),
            note: None,
            cameras: Vec::new(),
            at: ClockMap {
                mono: 100 * SECOND + at_s * SECOND,
                wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + at_s),
            },
            detections: Vec::new(),
            window: None,
        }
    }

    fn span(camera: &str, post_roll_s: u64) -> Span {
        Span {
            camera: camera.into(),
            pre_roll_ns: 10 * SECOND,
            post_roll_ns: post_roll_s * SECOND,
        }
    }

    fn cameras(assigned: &Assigned) -> Vec<(Uuid, String)> {
        assigned
            .started
            .iter()
            .map(|job| (job.event, job.camera.clone()))
            .collect()
    }

    fn joined(event: Uuid, number: u32, cameras: &[&str]) -> Joined {
        Joined {
            event,
            number,
            cameras: cameras.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn a_footage_request_is_an_event_of_its_own_and_takes_no_other_trigger() {
        let mut table = EventTable::default();
        let spans = [span("front", 10)];
        let press = table.assign(&trigger(0), &spans);
        let mut request = trigger(2);
        request.window = Some(crate::trigger::Window {
            before: Duration::from_secs(30),
            after: Duration::ZERO,
        });
        let asked = table.assign(&request, &spans);
        assert!(asked.joined.is_empty(), "not an extension of the press");
        assert_ne!(asked.event, press.event);
        assert_eq!(asked.opened, vec![(asked.event, vec!["front".into()])]);
        // A press while the request's clip is open joins the press's event, never the
        // request's: a panic press stays an alert of its own kind.
        let again = table.assign(&trigger(3), &spans);
        assert_eq!(again.event, press.event);
        assert_eq!(again.joined, vec![joined(press.event, 1, &["front"])]);
    }

    #[test]
    fn a_trigger_during_clips_extends_them_in_the_same_event() {
        let mut table = EventTable::default();
        let spans = [span("front", 10), span("back", 10)];
        let first = table.assign(&trigger(0), &spans);
        assert_eq!(
            first.opened,
            vec![(first.event, vec!["front".into(), "back".into()])]
        );
        assert_eq!(
            cameras(&first),
            vec![(first.event, "front".into()), (first.event, "back".into())]
        );
        let second = table.assign(&trigger(5), &spans);
        assert_eq!(second.event, first.event);
        assert!(second.opened.is_empty() && second.started.is_empty());
        assert_eq!(
            second.joined,
            vec![joined(first.event, 1, &["front", "back"])]
        );
        // Each trigger that joins is the event's next update.
        let third = table.assign(&trigger(6), &spans[..1]);
        assert_eq!(third.joined, vec![joined(first.event, 2, &["front"])]);
    }

    #[test]
    fn a_camera_whose_clip_is_finished_never_gets_a_second_clip_in_that_event() {
        let mut table = EventTable::default();
        let spans = [span("front", 10), span("back", 2)];
        let first = table.assign(&trigger(0), &spans);
        // The back camera's shorter post-roll is over (or it stalled): its clip is written.
        let back = first.started.iter().find(|j| j.camera == "back").unwrap();
        back.close();
        let second = table.assign(&trigger(5), &spans);
        assert_eq!(
            second.event, first.event,
            "the trigger joins the event in progress"
        );
        assert_eq!(second.joined, vec![joined(first.event, 1, &["front"])]);
        // The back camera's footage around the second trigger goes out as an event of its own.
        let [(opened, opened_cameras)] = second.opened.as_slice() else {
            panic!("{:?}", second.opened)
        };
        assert_ne!(*opened, first.event);
        assert_eq!(opened_cameras, &vec!["back".to_owned()]);
        assert_eq!(cameras(&second), vec![(*opened, "back".into())]);
        // A job closing while the trigger is being assigned is treated the same.
        let front = first.started.iter().find(|j| j.camera == "front").unwrap();
        front.close();
        let third = table.assign(&trigger(6), &[span("front", 10), span("back", 2)]);
        assert_eq!(third.event, *opened);
        assert_eq!(third.joined, vec![joined(*opened, 1, &["front", "back"])]);
        let third_jobs = cameras(&third);
        assert_eq!(
            third_jobs,
            vec![(*opened, "front".into())],
            "front is new to that event"
        );
    }

    #[test]
    fn once_every_clip_is_finished_a_trigger_opens_a_new_event() {
        let mut table = EventTable::default();
        let spans = [span("front", 10)];
        let first = table.assign(&trigger(0), &spans);
        first.started.iter().for_each(|job| job.close());
        let second = table.assign(&trigger(30), &spans);
        assert_ne!(second.event, first.event);
        assert_eq!(second.opened.len(), 1);
        assert!(table.events.len() == 1, "the finished event is forgotten");
        assert!(second.joined.is_empty());
        assert!(table.updates.is_empty());
    }

    #[test]
    fn a_camera_new_to_the_event_starts_its_clip_in_it() {
        let mut table = EventTable::default();
        let first = table.assign(&trigger(0), &[span("front", 10)]);
        let second = table.assign(&trigger(3), &[span("front", 10), span("back", 10)]);
        assert_eq!(second.event, first.event);
        assert!(second.opened.is_empty());
        assert_eq!(
            second.joined,
            vec![joined(first.event, 1, &["front", "back"])]
        );
        assert_eq!(cameras(&second), vec![(first.event, "back".into())]);
    }

    /// A job whose camera sends nothing gives up at post-roll end plus the camera's
    /// `stall_timeout` and a second, on paused time: the deadline, without the wait.
    #[tokio::test(start_paused = true)]
    async fn a_camera_that_sends_nothing_ends_its_job_at_the_deadline() {
        gstreamer::init().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[site]\nid = \"s\"\nname = \"S\"\n[storage]\ndir = \"{}\"\n[[camera]]\nid = \"front\"\nurl = \"rtsp://127.0.0.1:9/x\"\npre_roll = \"2s\"\npost_roll = \"3s\"\nstall_timeout = \"4s\"\n",
            dir.path().join("clips").display()
        );
        let config = config::Config::parse(&text, Path::new("alertclip.toml")).unwrap();
        let (_status_tx, status) = tokio::sync::watch::channel(Default::default());
        let camera = Camera {
            config: config.cameras[0].clone(),
            feed: Arc::new(CameraFeed::new(FrameRing::new(
                Duration::from_secs(3),
                1 << 20,
            ))),
            status,
        };
        let origin = tokio::time::Instant::now();
        let context = JobContext {
            site: SiteRecord {
                id: "s".into(),
                name: "S".into(),
            },
            storage: Storage::open(&config.storage.dir, u64::MAX).unwrap(),
            done: broadcast::channel(1).0,
            spool: None,
            evidence: Arc::new(Evidence::open(&dir.path().join("evidence"), false).unwrap()),
            chunk_size: 1 << 20,
            log: EventLog::default(),
            clock: JobClock::Tokio { origin },
        };
        let mut at = trigger(0);
        at.at.mono = 20 * SECOND;
        let job = new_job(Uuid::now_v7(), &at, &Span::of(&camera.config, &at));
        let result = record_clip(&job, &camera, &context, &CancellationToken::new()).await;
        assert!(matches!(result, Err(JobError::NoVideo)), "{result:?}");
        // Trigger at 20 s, post-roll 3 s, stall timeout 4 s, one second's margin.
        assert_eq!(origin.elapsed(), Duration::from_secs(20 + 3 + 4 + 1));
        assert!(!job.is_open());
    }
}
