//! Health: what the box tells about itself. [`status`] is the device status retained on the
//! alert channel; [`monitor`] watches cameras, buttons and disks for what officers' dispatch
//! should know (a camera offline, a stuck button, disk space running low) and raises health
//! alerts through delivery.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use alertclip_wire::payload::{ButtonSummary, CameraSummary, OutboxSummary, STATUS_SCHEMA, Status};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clip::history::EventLog;
use crate::clock::rfc3339_ms;
use crate::delivery::Publisher;
use crate::delivery::outbox::Outbox;
use crate::detect::DetectStatus;
use crate::ingest::{Camera, CameraState};
use crate::trigger::buttons::button::ButtonState;
use crate::trigger::buttons::{Button, LightShown};

/// A camera as status reports see it: its ingest, and its detector when it has
/// `[camera.detect]`.
#[derive(Debug, Clone)]
pub struct Watched {
    /// The camera.
    pub camera: Camera,
    /// Its detector's status.
    pub detect: Option<watch::Receiver<DetectStatus>>,
}

/// What the status is made of, besides the outbox.
#[derive(Debug, Clone)]
pub struct Parts {
    /// The cameras.
    pub cameras: Vec<Watched>,
    /// The buttons.
    pub buttons: Vec<Button>,
    /// The lights.
    pub lights: Vec<LightShown>,
    /// The recent events, with the officers' responses.
    pub log: EventLog,
}

/// The device's status now.
pub fn status(parts: &Parts, outbox: &Outbox, started_at: SystemTime) -> Status {
    let (cameras, buttons) = (&parts.cameras, &parts.buttons);
    let stats = outbox.stats();
    Status {
        schema: STATUS_SCHEMA.to_owned(),
        state: "online".to_owned(),
        version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        started_at: Some(rfc3339_ms(started_at)),
        cameras: cameras
            .iter()
            .map(|w| {
                let s = w.camera.status.borrow();
                (
                    w.camera.config.id.clone(),
                    CameraSummary {
                        state: s.state.as_str().to_owned(),
                        fps: (s.fps * 10.0).round() / 10.0,
                        kbps: s.kbps.round(),
                        buffered_s: (s.buffered_s * 10.0).round() / 10.0,
                        detect: w.detect.as_ref().map(|d| d.borrow().state),
                    },
                )
            })
            .collect(),
        buttons: buttons
            .iter()
            .map(|b| {
                let s = b.status.borrow();
                (
                    b.id.clone(),
                    ButtonSummary {
                        state: s.state.as_str().to_owned(),
                        last_error: s.last_error.clone(),
                    },
                )
            })
            .collect(),
        outbox: Some(OutboxSummary {
            events: stats.events,
            bytes: stats.bytes,
        }),
        responses: parts.log.responses(),
        lights: parts
            .lights
            .iter()
            .map(|l| (l.name.clone(), l.pattern.borrow().meaning().to_owned()))
            .collect(),
    }
}

/// Watches cameras and disks for what officers' dispatch should know: a camera offline for
/// [`OFFLINE_AFTER`] (and back), and free space running low. Also asks for a status update
/// whenever a camera changes state.
pub async fn monitor(
    publisher: Arc<Publisher>,
    cameras: Vec<Camera>,
    buttons: Vec<Button>,
    dirs: Vec<PathBuf>,
    cancel: CancellationToken,
) {
    let mut button_states: Vec<ButtonState> =
        buttons.iter().map(|b| b.status.borrow().state).collect();
    let mut button_down_since: Vec<Option<tokio::time::Instant>> = vec![None; buttons.len()];
    let mut button_reported: Vec<bool> = vec![false; buttons.len()];
    let mut watchers: Vec<_> = cameras.iter().map(|c| c.status.clone()).collect();
    let mut states: Vec<CameraState> = watchers.iter().map(|w| w.borrow().state).collect();
    let mut down_since: Vec<Option<tokio::time::Instant>> = vec![None; cameras.len()];
    let mut reported: Vec<bool> = vec![false; cameras.len()];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut disk_low = false;
    let mut disk_check: Option<tokio::time::Instant> = None;
    loop {
        let changed =
            futures_util::future::select_all(watchers.iter_mut().map(|w| Box::pin(w.changed())));
        let mut look_at_disks = false;
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
            _ = changed => {}
            _ = publisher.disk_full_seen() => look_at_disks = true,
        }
        for (i, camera) in cameras.iter().enumerate() {
            let (state, error) = {
                let s = watchers[i].borrow_and_update();
                (s.state, s.last_error.clone())
            };
            if state != states[i] {
                states[i] = state;
                publisher.status_changed();
            }
            let streaming = state == CameraState::Streaming;
            match (streaming, down_since[i], reported[i]) {
                (true, _, true) => {
                    publisher.health(
                        "camera_online",
                        Some(&camera.config.id),
                        None,
                        format!("camera {} is streaming again", camera.config.id),
                    );
                    reported[i] = false;
                    down_since[i] = None;
                }
                (true, _, false) => down_since[i] = None,
                (false, None, _) if state != CameraState::Stopped => {
                    down_since[i] = Some(tokio::time::Instant::now())
                }
                (false, Some(since), false) if since.elapsed() >= OFFLINE_AFTER => {
                    publisher.health(
                        "camera_offline",
                        Some(&camera.config.id),
                        None,
                        format!(
                            "camera {} has sent no video for {} s: {}",
                            camera.config.id,
                            since.elapsed().as_secs(),
                            error.as_deref().map_or_else(
                                || "the box is still connecting to it".to_owned(),
                                crate::ingest::camera::explain
                            )
                        ),
                    );
                    reported[i] = true;
                }
                _ => {}
            }
        }
        for (i, button) in buttons.iter().enumerate() {
            let (state, error) = {
                let s = button.status.borrow();
                (s.state, s.last_error.clone())
            };
            if state != button_states[i] {
                publisher.status_changed();
                match (button_states[i], state) {
                    (_, ButtonState::Stuck) => publisher.health(
                        "button_stuck",
                        None,
                        None,
                        format!("button {} has been held too long: stuck or wired wrong; presses are not fired until it is released", button.id),
                    ),
                    (ButtonState::Stuck, ButtonState::Ready) => {
                        publisher.health("button_released", None, None, format!("button {} was released", button.id))
                    }
                    _ => {}
                }
                button_states[i] = state;
            }
            match (state, button_down_since[i], button_reported[i]) {
                (ButtonState::Unavailable, None, _) => {
                    button_down_since[i] = Some(tokio::time::Instant::now())
                }
                (ButtonState::Unavailable, Some(since), false)
                    if since.elapsed() >= OFFLINE_AFTER =>
                {
                    publisher.health(
                        "button_unavailable",
                        None,
                        None,
                        format!(
                            "button {}: {}",
                            button.id,
                            error.unwrap_or_else(|| "unavailable".into())
                        ),
                    );
                    button_reported[i] = true;
                }
                (ButtonState::Ready, _, true) => {
                    publisher.health(
                        "button_available",
                        None,
                        None,
                        format!("button {} is working again", button.id),
                    );
                    button_reported[i] = false;
                    button_down_since[i] = None;
                }
                (ButtonState::Ready, _, false) => button_down_since[i] = None,
                _ => {}
            }
        }
        // While space is short it is looked at every few seconds, and at once when a write
        // found the disk full.
        let every = if disk_low {
            DISK_CHECK_WHILE_LOW
        } else {
            DISK_CHECK_EVERY
        };
        if look_at_disks || disk_check.is_none_or(|at| at.elapsed() >= every) {
            disk_check = Some(tokio::time::Instant::now());
            // Space the alert path gave up is taken back as soon as the disk has it again.
            let taking_back = publisher.clone();
            tokio::task::spawn_blocking(move || taking_back.outbox().replenish_reserve());
            let low: Vec<String> =
                dirs.iter()
                    .filter_map(|dir| {
                        let (free, total) = crate::sys::free_space(dir).ok()?;
                        (free < DISK_LOW_BYTES || (free as f64) < total as f64 * DISK_LOW_SHARE)
                            .then(|| {
                                format!(
                                    "{}: {} MiB free of {} MiB",
                                    dir.display(),
                                    free >> 20,
                                    total >> 20
                                )
                            })
                    })
                    .collect();
            if !low.is_empty() && !disk_low {
                let publisher = publisher.clone();
                let message = format!("disk space is low: {}", low.join("; "));
                tokio::task::spawn_blocking(move || {
                    publisher.urgent_health("disk_low", None, message)
                });
            }
            disk_low = !low.is_empty();
        }
    }
}

/// A camera silent this long is reported offline.
pub const OFFLINE_AFTER: Duration = Duration::from_secs(10);
const DISK_CHECK_EVERY: Duration = Duration::from_secs(60);
const DISK_CHECK_WHILE_LOW: Duration = Duration::from_secs(5);
const DISK_LOW_BYTES: u64 = 200 << 20;
const DISK_LOW_SHARE: f64 = 0.05;
