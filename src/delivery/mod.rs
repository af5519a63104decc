//! Delivery to the officer alert channel: the durable [`outbox`], and the task that drains
//! it to the broker ([`deliver`]).
//!
//! [`Publisher`] is delivery's face to the rest of the box. It implements the clipper's
//! [`Spool`] (an event's signed alert, its snapshots, its clips with their signed manifests)
//! and takes health alerts, turning each into messages in the outbox, durably, before it
//! returns. What delivery learns flows out on channels, never by being asked: each alert the
//! broker acknowledges ([`Publisher::acked_alerts`]) and the broker link
//! ([`Publisher::link`]), for the feedback lights and the event history.

pub mod deliver;
pub mod outbox;

pub use deliver::deliver;

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use alertclip_mqtt::{LinkStatus, SecretError, Settings};
use alertclip_wire::TriggerKind;
use alertclip_wire::command::ResponseState;
use alertclip_wire::payload::{HEALTH_SCHEMA, Health, STATUS_SCHEMA, Status};
use alertclip_wire::topics::Topics;
use tokio::sync::{Notify, broadcast, watch};
use uuid::Uuid;

use crate::clip::{ClipDone, Spool};
use crate::clock::rfc3339_ms;
use crate::config::{self, Config};
use outbox::{Class, Dropped, NewClip, NewMessage, Order, Outbox};

/// Room for the topic and MQTT headers beside the largest payload.
const PACKET_OVERHEAD: usize = 4 << 10;
/// The client's own limit on what it sends: above the chunk size, since a manifest grows by
/// about 70 bytes per chunk and may outgrow a small chunk size.
const MIN_MAX_OUTGOING: usize = 1 << 20;
/// The largest message the delivery session takes: it subscribes to nothing, so anything is
/// unasked for.
const MAX_INCOMING: usize = 64 << 10;
/// The outbox is reported filling above this share of its size, and again once it fell
/// below the lower one.
const FILLING_ABOVE: f64 = 0.8;
const FILLING_CLEARED_BELOW: f64 = 0.6;
/// Ranks within an event (see [`outbox`]): the alert, then snapshots, then each camera's
/// chunks and manifest.
const RANK_ALERT: u16 = 0;
/// An event update, in the alerts' class under a key of its own (see [`outbox`]).
const RANK_UPDATE: u16 = 1;
const RANK_SNAPSHOT: u16 = 100;
const RANK_CLIP: u16 = 1000;

/// Turns events and health into spooled messages. Shared by the clipper, health monitoring
/// and the delivery task.
#[derive(Debug)]
pub struct Publisher {
    outbox: Arc<Outbox>,
    topics: Topics,
    chunk_size: u64,
    cameras: Vec<String>,
    filling: AtomicBool,
    status_wanted: Notify,
    link: watch::Sender<LinkStatus>,
    /// Every alert the broker acknowledges, by event.
    acked: broadcast::Sender<Uuid>,
    /// Every response from the officer side the box applied: the event and its new state.
    responses: broadcast::Sender<(Uuid, ResponseState)>,
    /// Fires when a write found the disk full, so free space is looked at now.
    disk_full: Notify,
}

impl Publisher {
    /// The publisher for `config`'s `[mqtt]` section, with its outbox opened.
    pub fn open(config: &Config, mqtt: &config::Mqtt) -> io::Result<Publisher> {
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
            chunk_size: mqtt.chunk_size.0,
            cameras: config.cameras.iter().map(|c| c.id.clone()).collect(),
            filling: AtomicBool::new(false),
            status_wanted: Notify::new(),
            link: watch::channel(LinkStatus::default()).0,
            acked: broadcast::channel(64).0,
            responses: broadcast::channel(64).0,
            disk_full: Notify::new(),
        })
    }

    /// Every alert the broker acknowledges from now on, by event.
    pub fn acked_alerts(&self) -> broadcast::Receiver<Uuid> {
        self.acked.subscribe()
    }

    /// Every response from the officer side applied from now on: the event and its state.
    pub fn responses(&self) -> broadcast::Receiver<(Uuid, ResponseState)> {
        self.responses.subscribe()
    }

    /// A response from the officer side was applied: the lights hear of it, and the status
    /// is published again, so the desk sees the store received it.
    pub fn responded(&self, event: Uuid, state: ResponseState) {
        let _ = self.responses.send((event, state));
        self.status_wanted.notify_one();
    }

    /// Spools the box's signed answer to a command, blocking on the disk; in the health
    /// alerts' class, ahead of media.
    pub fn spool_answer(&self, signed: Vec<u8>) -> io::Result<()> {
        self.spool(NewMessage {
            order: Order {
                class: Class::Health,
                event: Uuid::now_v7(),
                rank: 0,
            },
            topic: self.topics.answers(),
            payload: signed,
            retain: false,
        })
    }

    /// The broker link, as it changes.
    pub fn link(&self) -> watch::Receiver<LinkStatus> {
        self.link.subscribe()
    }

    /// The broker link now.
    pub fn link_status(&self) -> LinkStatus {
        self.link.borrow().clone()
    }

    /// The topics.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// The outbox.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    fn outbox_handle(&self) -> Arc<Outbox> {
        self.outbox.clone()
    }

    /// Logs a health alert and spools it on a blocking thread: for async callers, which must
    /// not wait on the disk. Its place in the outbox is taken now.
    pub fn health(
        self: &Arc<Self>,
        kind: &str,
        camera: Option<&str>,
        event: Option<Uuid>,
        message: String,
    ) {
        let message = self.health_message(kind, camera, event, message);
        let publisher = self.clone();
        tokio::task::spawn_blocking(move || publisher.spool_health(message));
    }

    /// Logs and spools a health alert, blocking on the disk.
    fn health_now(&self, kind: &str, camera: Option<&str>, event: Option<Uuid>, message: String) {
        let message = self.health_message(kind, camera, event, message);
        self.spool_health(message);
    }

    fn spool_health(&self, message: io::Result<NewMessage>) {
        if let Err(error) = message.and_then(|m| self.spool(m)) {
            tracing::error!(%error, "could not spool a health alert");
        }
    }

    /// Logs and spools a health alert about the alert path itself (an alert not on disk, the
    /// disk full), blocking on the disk: it may take the space held for alerts.
    pub fn urgent_health(&self, kind: &str, event: Option<Uuid>, message: String) {
        let spooled = self
            .health_message(kind, None, event, message)
            .and_then(|m| self.outbox.push_reserved(m));
        match spooled {
            Ok(dropped) => self.after_push(dropped),
            Err(error) => tracing::error!(%error, "could not spool a health alert"),
        }
    }

    /// Asks for free space to be looked at now: a write found the disk full.
    pub fn disk_full(&self) {
        self.disk_full.notify_one();
    }

    /// Resolves when a write found the disk full since last asked.
    pub fn disk_full_seen(&self) -> tokio::sync::futures::Notified<'_> {
        self.disk_full.notified()
    }

    /// A health alert as an outbox message, logged.
    fn health_message(
        &self,
        kind: &str,
        camera: Option<&str>,
        event: Option<Uuid>,
        message: String,
    ) -> io::Result<NewMessage> {
        tracing::warn!(%kind, camera = camera.unwrap_or("-"), %message, "health alert");
        let health = Health {
            schema: HEALTH_SCHEMA.to_owned(),
            kind: kind.to_owned(),
            at: rfc3339_ms(SystemTime::now()),
            camera: camera.map(str::to_owned),
            event_id: event,
            message,
        };
        let payload = serde_json::to_vec(&health).map_err(io::Error::other)?;
        Ok(NewMessage {
            order: Order {
                class: Class::Health,
                event: Uuid::now_v7(),
                rank: 0,
            },
            topic: self.topics.health(),
            payload,
            retain: false,
        })
    }

    fn spool(&self, message: NewMessage) -> io::Result<()> {
        let dropped = self.outbox.push(message)?;
        self.after_push(dropped);
        Ok(())
    }

    /// Reports a clip dropped to make room (`why`: what was full).
    fn report_dropped(&self, drop: &Dropped, why: &str) {
        let kind = if drop.detection { "detection" } else { "panic" };
        self.health_now(
            "outbox_dropped",
            Some(&drop.camera),
            Some(drop.event),
            format!(
                "{why}: dropped the {kind} clip of camera {} for event {} ({} bytes undelivered)",
                drop.camera, drop.event, drop.bytes
            ),
        );
    }

    /// Reports clips dropped to make room, and the outbox filling up.
    fn after_push(&self, dropped: Vec<Dropped>) {
        for drop in &dropped {
            self.report_dropped(drop, "the outbox is full");
        }
        let stats = self.outbox.stats();
        let share = stats.bytes as f64 / self.outbox.max_bytes().max(1) as f64;
        if share > FILLING_ABOVE && !self.filling.swap(true, Ordering::Relaxed) {
            self.health_now(
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
        self.status_wanted.notify_one();
    }

    /// Position of a camera in the configuration, which orders its messages within an event.
    fn camera_index(&self, camera: &str) -> u16 {
        self.cameras
            .iter()
            .position(|c| c == camera)
            .unwrap_or(0)
            .min(400) as u16
    }

    /// Changes the link status; its watchers (the lights) wake only when the connection or its
    /// error changes, not on every acknowledgement.
    fn update_link(&self, update: impl FnOnce(&mut LinkStatus)) {
        self.link.send_if_modified(|link| {
            let before = (link.connected, link.last_error.clone());
            update(link);
            (link.connected, &link.last_error) != (before.0, &before.1)
        });
    }

    fn alert_acknowledged(&self, event: Uuid) {
        let _ = self.acked.send(event);
    }

    /// Asks the delivery task to republish the status now.
    pub fn status_changed(&self) {
        self.status_wanted.notify_one();
    }

    /// Resolves when the status should be republished.
    fn status_wanted(&self) -> tokio::sync::futures::Notified<'_> {
        self.status_wanted.notified()
    }
}

impl Spool for Publisher {
    fn alert(&self, event: Uuid, payload: Vec<u8>) -> io::Result<()> {
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

    fn update(&self, event: Uuid, number: u32, payload: Vec<u8>) -> io::Result<()> {
        self.spool(NewMessage {
            order: Order {
                class: Class::Alert,
                // Called in chain order, and UUIDv7s from one process sort in the order they
                // were made: updates and alerts leave in the order they were chained.
                event: Uuid::now_v7(),
                rank: RANK_UPDATE,
            },
            topic: self.topics.update(event, number),
            payload,
            retain: false,
        })
    }

    fn snapshot(&self, event: Uuid, camera: &str, jpeg: Vec<u8>) -> io::Result<()> {
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

    fn clip(&self, done: &ClipDone) -> io::Result<()> {
        let record = &done.record;
        // Detection clips are the first to go when the outbox is full.
        let detection = record
            .triggers
            .first()
            .is_some_and(|t| t.kind == TriggerKind::Detection);
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

    fn max_payload(&self) -> u64 {
        self.chunk_size
    }

    fn shed_clip(&self, keep: Uuid) -> bool {
        match self.outbox.drop_one_clip(keep) {
            Some(drop) => {
                self.report_dropped(&drop, "the disk is full");
                true
            }
            None => false,
        }
    }

    fn disk_full(&self) {
        Publisher::disk_full(self);
    }

    fn alert_health(&self, kind: &str, event: Uuid, message: String) {
        self.disk_full();
        self.urgent_health(kind, Some(event), message);
    }
}

/// The MQTT settings of a daemon: its `[mqtt]` section, with the offline status as last will.
pub fn settings(
    config: &Config,
    mqtt: &config::Mqtt,
    topics: &Topics,
) -> Result<Settings, SecretError> {
    let offline = Status {
        schema: STATUS_SCHEMA.to_owned(),
        state: "offline".to_owned(),
        version: None,
        started_at: None,
        cameras: BTreeMap::new(),
        buttons: BTreeMap::new(),
        outbox: None,
        responses: BTreeMap::new(),
        lights: BTreeMap::new(),
    };
    let mut settings = Settings::new(mqtt.url.clone(), mqtt.client_id(&config.site))
        .login(mqtt.username.as_deref(), mqtt.password_file.as_deref())?;
    settings.protocol = mqtt.protocol;
    settings.failover = mqtt.failover.clone();
    settings.ca_file = mqtt.ca_file.clone();
    settings.client_auth = mqtt.cert_file.clone().zip(mqtt.key_file.clone());
    settings.keepalive = mqtt.keepalive.0;
    settings.max_outgoing = (mqtt.chunk_size.0 as usize + PACKET_OVERHEAD).max(MIN_MAX_OUTGOING);
    settings.max_incoming = MAX_INCOMING;
    // A status of plain data always serialises.
    settings.will = Some((
        topics.status(),
        serde_json::to_vec(&offline).unwrap_or_default(),
    ));
    Ok(settings)
}
