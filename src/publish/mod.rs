//! Delivery to the officer alert channel: what is published, the durable outbox it waits in,
//! and the MQTT session that drains it.
//!
//! The clipper hands [`Publisher`] an alert the moment a trigger opens an event, then each
//! camera's snapshot and finished clip; the publisher turns them into messages and spools them
//! in the [`outbox`]. One task ([`deliver`]) owns the MQTT session and publishes from the
//! outbox in its order, removing each message once the broker acknowledges it.

pub mod outbox;

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::camera::{Camera, CameraState};
use crate::clock::{self, rfc3339_ms};
use crate::config::{self, Config};
use crate::events::ClipDone;
use crate::evidence::{Chain, DeviceKey};
use crate::trigger::button::ButtonState;
use crate::trigger::buttons::Button;
use crate::trigger::{Trigger, TriggerKind};
use alertclip_mqtt::{LinkEvent, Session, Settings, Tag};
use alertclip_wire::payload::{
    ALERT_SCHEMA, Alert, ButtonSummary, CameraPlan, CameraSummary, HEALTH_SCHEMA, Health,
    OutboxSummary, STATUS_SCHEMA, SiteInfo, Status, TriggerInfo,
};
use alertclip_wire::topics::{Topics, topic_matches};
use outbox::{Class, Dropped, Key, NewClip, NewMessage, Order, Outbox};

/// Publishes kept unacknowledged at once.
const WINDOW: usize = 16;
/// Room for the topic and MQTT headers beside the largest payload.
const PACKET_OVERHEAD: usize = 4 << 10;
/// The client's own limit on what it sends: above the chunk size, since a manifest grows by
/// about 70 bytes per chunk and may outgrow a small chunk size.
const MIN_MAX_OUTGOING: usize = 1 << 20;
/// A disconnection this soon after a publish this large suggests the broker's size limit.
const LARGE_PUBLISH: usize = 32 << 10;
const SIZE_LIMIT_WINDOW: Duration = Duration::from_secs(5);
/// The outbox is reported filling above this share of its size, and again once it fell
/// below the lower one.
const FILLING_ABOVE: f64 = 0.8;
const FILLING_CLEARED_BELOW: f64 = 0.6;
/// Ranks within an event (see [`outbox`]): the alert, then snapshots, then each camera's
/// chunks and manifest.
const RANK_ALERT: u16 = 0;
const RANK_SNAPSHOT: u16 = 100;
const RANK_CLIP: u16 = 1000;

/// Turns events into spooled messages. Shared by the clipper and the delivery task.
#[derive(Debug)]
pub struct Publisher {
    outbox: Arc<Outbox>,
    topics: Topics,
    site: SiteInfo,
    chunk_size: u64,
    cameras: Vec<String>,
    filling: AtomicBool,
    status_changed: Notify,
    link: std::sync::Mutex<LinkStatus>,
    key: Arc<DeviceKey>,
    chain: Chain,
    /// Every alert the broker acknowledges, by event: feedback lights listen.
    acked: broadcast::Sender<Uuid>,
    /// Topics other parts of the daemon listen to on the delivery broker (wireless buttons).
    subscriptions: std::sync::Mutex<Vec<(String, Subscriber)>>,
}

/// Where messages on a subscribed topic go: (topic, payload).
pub type Subscriber = mpsc::UnboundedSender<(String, bytes::Bytes)>;

/// The broker connection, for status and health.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LinkStatus {
    /// Connected now.
    pub connected: bool,
    /// Why the last connection ended or failed, with a hint where one is known.
    pub last_error: Option<String>,
    /// When the broker last acknowledged a message, RFC 3339 UTC.
    pub last_ack: Option<String>,
}

impl Publisher {
    /// The publisher for `config`'s `[mqtt]` section, with its outbox opened; alerts are
    /// signed with `key` and chained in `chain`.
    pub fn open(
        config: &Config,
        mqtt: &config::Mqtt,
        key: Arc<DeviceKey>,
        chain: Chain,
    ) -> io::Result<Publisher> {
        let outbox = Outbox::open(&config.outbox.dir, config.outbox.max_bytes.0)?;
        let pending = outbox.stats();
        if pending.messages > 0 {
            tracing::info!(
                messages = pending.messages,
                bytes = pending.bytes,
                "outbox holds undelivered messages from before"
            );
        }
        Ok(Publisher {
            outbox: Arc::new(outbox),
            topics: Topics::new(mqtt.prefix(&config.site)),
            site: SiteInfo {
                id: config.site.id.clone(),
                name: config.site.name.clone(),
                address: config.site.address.clone(),
            },
            chunk_size: mqtt.chunk_size.0,
            cameras: config.cameras.iter().map(|c| c.id.clone()).collect(),
            filling: AtomicBool::new(false),
            status_changed: Notify::new(),
            link: std::sync::Mutex::new(LinkStatus::default()),
            key,
            chain,
            acked: broadcast::channel(64).0,
            subscriptions: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Every alert the broker acknowledges from now on, by event.
    pub fn acked_alerts(&self) -> broadcast::Receiver<Uuid> {
        self.acked.subscribe()
    }

    /// Messages on `filter` from the delivery broker. Subscribe before delivery starts: the
    /// subscriptions are made on every connection.
    pub fn subscribe(&self, filter: &str) -> mpsc::UnboundedReceiver<(String, bytes::Bytes)> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut subscriptions) = self.subscriptions.lock() {
            subscriptions.push((filter.to_owned(), tx));
        }
        rx
    }

    /// The largest payload this device publishes.
    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// The topics.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// The outbox.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Spools the alert of a new event: done before any video work, so it goes first. The
    /// alert is the next link of the device's chain, and signed.
    pub fn alert(
        &self,
        event: Uuid,
        trigger: &Trigger,
        cameras: &[config::Camera],
    ) -> io::Result<()> {
        let mut alert = Alert {
            schema: ALERT_SCHEMA.to_owned(),
            event_id: event,
            site: self.site.clone(),
            trigger: TriggerInfo {
                kind: trigger.kind,
                source: trigger.source.clone(),
                note: trigger.note.clone(),
                detections: trigger.detections.clone(),
            },
            triggered_at: rfc3339_ms(trigger.at.wall),
            cameras: cameras
                .iter()
                .map(|c| CameraPlan {
                    id: c.id.clone(),
                    pre_roll_s: c.pre_roll.0.as_secs_f64(),
                    post_roll_s: c.post_roll.0.as_secs_f64(),
                })
                .collect(),
            clock: clock::provenance(),
            test: trigger.kind == TriggerKind::Test,
            device_version: env!("CARGO_PKG_VERSION").to_owned(),
            sequence: 0,
            previous_alert_sha256: None,
            signature: None,
        };
        let payload = self
            .chain
            .append(|sequence, previous| {
                alert.sequence = sequence;
                alert.previous_alert_sha256 = previous;
                // A struct of plain data always serialises.
                self.key
                    .sign(&serde_json::to_vec(&alert).unwrap_or_default())
            })
            .map_err(io::Error::other)?;
        self.spool(NewMessage {
            order: Order {
                class: Class::Alert,
                event,
                rank: RANK_ALERT,
            },
            topic: self.topics.alert(event),
            payload,
            retain: false,
        })
    }

    /// Spools a camera's snapshot (a JPEG) for an event.
    pub fn snapshot(&self, event: Uuid, camera: &str, jpeg: Vec<u8>) -> io::Result<()> {
        self.spool(NewMessage {
            order: Order {
                class: Class::Media,
                event,
                rank: RANK_SNAPSHOT + self.camera_index(camera),
            },
            topic: self.topics.snapshot(event, camera),
            payload: jpeg,
            retain: false,
        })
    }

    /// Spools a finished clip: pins the file and spools its chunks and signed manifest.
    pub fn clip(&self, done: &ClipDone, detection: bool) -> io::Result<()> {
        let record = &done.record;
        let rank = RANK_CLIP + 2 * self.camera_index(&record.camera);
        let dropped = self.outbox.push_clip(NewClip {
            order: Order {
                class: Class::Media,
                event: record.event_id,
                rank,
            },
            camera: record.camera.clone(),
            topic: self.topics.clip(record.event_id, &record.camera),
            file: done.mp4.clone(),
            chunk_size: done.chunk_size,
            manifest: done.manifest.clone(),
            detection,
        })?;
        self.after_push(dropped);
        Ok(())
    }

    /// Spools a health alert, and logs it.
    pub fn health(&self, kind: &str, camera: Option<&str>, event: Option<Uuid>, message: String) {
        tracing::warn!(%kind, camera = camera.unwrap_or("-"), %message, "health alert");
        let health = Health {
            schema: HEALTH_SCHEMA.to_owned(),
            kind: kind.to_owned(),
            at: rfc3339_ms(SystemTime::now()),
            camera: camera.map(str::to_owned),
            event_id: event,
            message,
        };
        let result = serde_json::to_vec(&health)
            .map_err(io::Error::other)
            .and_then(|payload| {
                self.spool(NewMessage {
                    order: Order {
                        class: Class::Health,
                        event: Uuid::now_v7(),
                        rank: 0,
                    },
                    topic: self.topics.health(),
                    payload,
                    retain: false,
                })
            });
        if let Err(error) = result {
            tracing::error!(%error, "could not spool a health alert");
        }
    }

    fn spool(&self, message: NewMessage) -> io::Result<()> {
        let dropped = self.outbox.push(message)?;
        self.after_push(dropped);
        Ok(())
    }

    /// Reports clips dropped to make room, and the outbox filling up.
    fn after_push(&self, dropped: Vec<Dropped>) {
        for drop in dropped {
            let kind = if drop.detection { "detection" } else { "panic" };
            self.health(
                "outbox_dropped",
                Some(&drop.camera),
                Some(drop.event),
                format!(
                    "the outbox is full: dropped the {kind} clip of camera {} for event {} ({} bytes undelivered)",
                    drop.camera, drop.event, drop.bytes
                ),
            );
        }
        let stats = self.outbox.stats();
        let share = stats.bytes as f64 / self.outbox.max_bytes().max(1) as f64;
        if share > FILLING_ABOVE && !self.filling.swap(true, Ordering::Relaxed) {
            self.health(
                "outbox_filling",
                None,
                None,
                format!(
                    "the outbox holds {} of its {} bytes: the broker may be unreachable",
                    stats.bytes,
                    self.outbox.max_bytes()
                ),
            );
        } else if share < FILLING_CLEARED_BELOW {
            self.filling.store(false, Ordering::Relaxed);
        }
        self.status_changed.notify_one();
    }

    /// Position of a camera in the configuration, which orders its messages within an event.
    fn camera_index(&self, camera: &str) -> u16 {
        self.cameras
            .iter()
            .position(|c| c == camera)
            .unwrap_or(0)
            .min(400) as u16
    }

    /// The broker connection now.
    pub fn link_status(&self) -> LinkStatus {
        self.link.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn update_link(&self, update: impl FnOnce(&mut LinkStatus)) {
        if let Ok(mut link) = self.link.lock() {
            update(&mut link);
        }
    }

    /// Asks the delivery task to republish the status now.
    pub fn status_changed(&self) {
        self.status_changed.notify_one();
    }
}

/// The MQTT settings of a daemon: its `[mqtt]` section, with the offline status as last will.
pub fn daemon_settings(
    config: &Config,
    mqtt: &config::Mqtt,
    topics: &Topics,
) -> io::Result<Settings> {
    let offline = Status {
        schema: STATUS_SCHEMA.to_owned(),
        state: "offline".to_owned(),
        version: None,
        started_at: None,
        cameras: BTreeMap::new(),
        buttons: BTreeMap::new(),
        outbox: None,
    };
    let mut settings = Settings::new(mqtt.url.clone(), mqtt.client_id(&config.site))
        .login(mqtt.username.as_deref(), mqtt.password_file.as_deref())
        .map_err(|e| io::Error::new(e.source.kind(), format!("mqtt.password_file {e}")))?;
    settings.protocol = mqtt.protocol;
    settings.ca_file = mqtt.ca_file.clone();
    settings.client_auth = mqtt.cert_file.clone().zip(mqtt.key_file.clone());
    settings.keepalive = mqtt.keepalive.0;
    settings.max_outgoing = (mqtt.chunk_size.0 as usize + PACKET_OVERHEAD).max(MIN_MAX_OUTGOING);
    settings.will = Some((
        topics.status(),
        serde_json::to_vec(&offline).map_err(io::Error::other)?,
    ));
    Ok(settings)
}

/// The device's status now.
pub fn status(
    cameras: &[Camera],
    buttons: &[Button],
    outbox: &Outbox,
    started_at: SystemTime,
) -> Status {
    let stats = outbox.stats();
    Status {
        schema: STATUS_SCHEMA.to_owned(),
        state: "online".to_owned(),
        version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        started_at: Some(rfc3339_ms(started_at)),
        cameras: cameras
            .iter()
            .map(|c| {
                let s = c.status.borrow();
                (
                    c.config.id.clone(),
                    CameraSummary {
                        state: crate::serde_name(s.state),
                        fps: (s.fps * 10.0).round() / 10.0,
                        kbps: s.kbps.round(),
                        buffered_s: (s.buffered_s * 10.0).round() / 10.0,
                        detect: c.detect.as_ref().map(|d| d.borrow().state),
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
                        state: crate::serde_name(s.state),
                        last_error: s.last_error.clone(),
                    },
                )
            })
            .collect(),
        outbox: Some(OutboxSummary {
            events: stats.events,
            bytes: stats.bytes,
        }),
    }
}

/// Publishes from the outbox until `cancel`: keeps up to [`WINDOW`] messages unacknowledged,
/// in outbox order, removes each once acknowledged, and republishes the retained status on
/// connecting, on change and every `status_interval`. Incoming messages (for remote commands
/// and wireless buttons) go to `incoming`.
pub async fn deliver(
    publisher: Arc<Publisher>,
    session: Session<Key>,
    mut events: mpsc::UnboundedReceiver<LinkEvent<Key>>,
    status: impl Fn() -> Status + Send,
    status_interval: Duration,
    cancel: CancellationToken,
) {
    let outbox = publisher.outbox.clone();
    let mut in_flight: HashSet<Key> = HashSet::new();
    let mut connected = false;
    let mut failures = 0u32;
    let mut last_large: Option<(usize, tokio::time::Instant)> = None;
    let mut tick = tokio::time::interval(status_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let publish_status = |session: &Session<Key>| {
        if let Ok(payload) = serde_json::to_vec(&status()) {
            let _ = session.publish(Tag::Untracked, &publisher.topics.status(), payload, true);
        }
    };
    loop {
        let changed = outbox.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        while connected && in_flight.len() < WINDOW {
            match outbox.next(&in_flight) {
                Ok(Some(ready)) => {
                    let size = ready.payload.len();
                    let key = ready.key.clone();
                    if session
                        .publish(
                            Tag::Message(ready.key),
                            &ready.topic,
                            ready.payload,
                            ready.retain,
                        )
                        .is_err()
                    {
                        break;
                    }
                    in_flight.insert(key);
                    if size >= LARGE_PUBLISH {
                        last_large = Some((size, tokio::time::Instant::now()));
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::error!(%error, "cannot read the outbox");
                    break;
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            event = events.recv() => match event {
                None => break,
                Some(LinkEvent::Connected) => {
                    tracing::info!(after_failures = failures, "connected to the broker");
                    connected = true;
                    failures = 0;
                    in_flight.clear();
                    publisher.update_link(|l| l.connected = true);
                    if let Ok(subscriptions) = publisher.subscriptions.lock() {
                        for (filter, _) in subscriptions.iter() {
                            session.subscribe(filter);
                        }
                    }
                    publish_status(&session);
                }
                Some(LinkEvent::Acked(key)) => {
                    in_flight.remove(&key);
                    publisher.update_link(|l| l.last_ack = Some(rfc3339_ms(SystemTime::now())));
                    if let Some(event) = key.alert_event() {
                        let _ = publisher.acked.send(event);
                    }
                    if let Err(error) = outbox.ack(&key) {
                        tracing::error!(%error, "cannot remove a delivered message from the outbox");
                    }
                }
                Some(LinkEvent::Refused(_key, reason)) => {
                    // Kept in flight, so not retried before the next connection; kept on disk.
                    tracing::error!(%reason, "the broker refused a message; it stays in the outbox");
                    publisher.update_link(|l| l.last_error = Some(format!("the broker refused a message: {reason}")));
                }
                Some(LinkEvent::TooLarge(key, reason)) => {
                    in_flight.remove(&key);
                    match outbox.reject(&key) {
                        Ok(Some(path)) => publisher.health(
                            "message_too_large",
                            None,
                            None,
                            format!("a message could not be sent ({reason}); set aside as {}", path.display()),
                        ),
                        Ok(None) => {}
                        Err(error) => tracing::error!(%error, "cannot set an oversized message aside"),
                    }
                }
                Some(LinkEvent::Incoming { topic, payload, retained }) => {
                    // A retained message is old news replayed on subscribing, not an event.
                    if retained {
                        continue;
                    }
                    if let Ok(subscriptions) = publisher.subscriptions.lock() {
                        for (filter, tx) in subscriptions.iter() {
                            if topic_matches(filter, &topic) {
                                let _ = tx.send((topic.clone(), payload.clone()));
                            }
                        }
                    }
                }
                Some(LinkEvent::Disconnected(error)) => {
                    let hint = match last_large {
                        Some((size, at)) if connected && at.elapsed() < SIZE_LIMIT_WINDOW => format!(
                            " (the broker closed the connection right after a {size}-byte publish: its maximum \
                             packet size is probably smaller; lower mqtt.chunk_size)"
                        ),
                        _ => String::new(),
                    };
                    failures += 1;
                    let error = format!("{error}{hint}");
                    if connected || failures == 1 || failures.is_power_of_two() {
                        tracing::warn!(%error, failures, "broker connection lost or refused; messages wait in the outbox");
                    }
                    publisher.update_link(|l| {
                        l.connected = false;
                        l.last_error = Some(error);
                    });
                    connected = false;
                    in_flight.clear();
                    last_large = None;
                }
            },
            _ = &mut changed => {}
            _ = tick.tick() => if connected { publish_status(&session) },
            _ = publisher.status_changed.notified() => if connected { publish_status(&session) },
        }
    }
    if connected {
        let offline = Status {
            schema: STATUS_SCHEMA.to_owned(),
            state: "offline".to_owned(),
            version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            started_at: None,
            cameras: BTreeMap::new(),
            buttons: BTreeMap::new(),
            outbox: Some(OutboxSummary {
                events: outbox.stats().events,
                bytes: outbox.stats().bytes,
            }),
        };
        if let Ok(payload) = serde_json::to_vec(&offline) {
            let _ = session.publish(Tag::Untracked, &publisher.topics.status(), payload, true);
        }
        session.disconnect().await;
        // Give the event loop a moment to send both before it is stopped.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(event) = events.recv().await {
                if matches!(event, LinkEvent::Disconnected(_)) {
                    break;
                }
            }
        })
        .await;
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
    let mut disk_check = tokio::time::Instant::now();
    loop {
        let changed =
            futures_util::future::select_all(watchers.iter_mut().map(|w| Box::pin(w.changed())));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
            _ = changed => {}
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
                            error.unwrap_or_else(|| "connecting".into())
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
        if disk_check.elapsed() >= DISK_CHECK_EVERY {
            disk_check = tokio::time::Instant::now();
            let low: Vec<String> =
                dirs.iter()
                    .filter_map(|dir| {
                        let (free, total) = crate::storage::free_space(dir)?;
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
                publisher.health(
                    "disk_low",
                    None,
                    None,
                    format!("disk space is low: {}", low.join("; ")),
                );
            }
            disk_low = !low.is_empty();
        }
    }
}

/// A camera silent this long is reported offline.
pub const OFFLINE_AFTER: Duration = Duration::from_secs(10);
const DISK_CHECK_EVERY: Duration = Duration::from_secs(60);
const DISK_LOW_BYTES: u64 = 200 << 20;
const DISK_LOW_SHARE: f64 = 0.05;
