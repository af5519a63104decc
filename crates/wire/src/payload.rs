//! The JSON payloads of the alert channel. docs/mqtt.md describes them for people and
//! [`crate::schemas`] as JSON Schemas; the tests check real payloads against them. Members are
//! only ever added (with a default, so an older reader ignores them and a newer one reads an
//! older payload); anything else is a new schema version.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::sidecar::ClipRecord;
use crate::signature::SignatureInfo;

/// `schema` of an alert.
pub const ALERT_SCHEMA: &str = "alertclip.alert.v1";
/// `schema` of a clip manifest.
pub const MANIFEST_SCHEMA: &str = "alertclip.manifest.v1";
/// `schema` of the device status.
pub const STATUS_SCHEMA: &str = "alertclip.status.v1";
/// `schema` of a health alert.
pub const HEALTH_SCHEMA: &str = "alertclip.health.v1";
/// `schema` of an event update.
pub const EVENT_UPDATE_SCHEMA: &str = "alertclip.event_update.v1";

/// The alert, published the moment a trigger opens an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// [`ALERT_SCHEMA`].
    pub schema: String,
    /// The event (UUIDv7).
    pub event_id: Uuid,
    /// The store.
    pub site: SiteInfo,
    /// What raised it.
    pub trigger: TriggerInfo,
    /// When, RFC 3339 UTC with milliseconds.
    pub triggered_at: String,
    /// The cameras being clipped, with how much each clip covers.
    pub cameras: Vec<CameraPlan>,
    /// How far the box's clock can be trusted.
    pub clock: Provenance,
    /// A test of the path, not a real alarm.
    pub test: bool,
    /// The alertclip version that sent it.
    pub device_version: String,
    /// This device's alert number: 1, 2, 3 ... A receiver sees a skipped number as a missing
    /// or suppressed alert, and a repeated one as a replay.
    pub sequence: u64,
    /// SHA-256 of the previous alert from this device as it was published; `null` for the
    /// first.
    pub previous_alert_sha256: Option<String>,
    /// The device's signature over every byte before it (docs/evidence.md). Always the last
    /// member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureInfo>,
}

/// News of an open event: a trigger that joined it, such as a second press of a button or
/// the detector seeing more, published the moment it comes. An update is a link of the same
/// chain as alerts (one sequence for both), so a receiver sees a suppressed update as a gap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventUpdate {
    /// [`EVENT_UPDATE_SCHEMA`].
    pub schema: String,
    /// The event it adds to.
    pub event_id: Uuid,
    /// The event's update number: 1, 2, 3 ..., as in its topic.
    pub update: u32,
    /// `site.id`.
    pub site_id: String,
    /// What joined the event.
    pub trigger: TriggerInfo,
    /// When, RFC 3339 UTC with milliseconds.
    pub triggered_at: String,
    /// The cameras whose clip in this event now covers the trigger too, each now running to
    /// its post-roll after it.
    pub cameras: Vec<String>,
    /// How far the box's clock can be trusted.
    pub clock: Provenance,
    /// A test of the path, not a real alarm.
    pub test: bool,
    /// The alertclip version that sent it.
    pub device_version: String,
    /// The device's next number in its alert chain, shared with alerts.
    pub sequence: u64,
    /// SHA-256 of the previous link of the chain (an alert or an update) as published.
    pub previous_alert_sha256: Option<String>,
    /// The device's signature over every byte before it. Always the last member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureInfo>,
}

/// The store, as an alert carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteInfo {
    /// `site.id`.
    pub id: String,
    /// `site.name`.
    pub name: String,
    /// `site.address`, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// The trigger, as an alert carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerInfo {
    /// `button`, `detection`, `manual`, `remote` or `test`.
    pub kind: TriggerKind,
    /// Which input: a button id, a camera's detector, `cli` ...
    pub source: String,
    /// Free text, such as a button's location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// What the detector saw, for `detection`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detections: Vec<Detection>,
}

/// One camera's part of an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CameraPlan {
    /// The camera's id.
    pub id: String,
    /// Seconds before the trigger the clip covers.
    pub pre_roll_s: f64,
    /// Seconds after the trigger the clip covers.
    pub post_roll_s: f64,
}

/// A clip's manifest, published after its last chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_SCHEMA`].
    pub schema: String,
    /// The event.
    pub event_id: Uuid,
    /// `site.id`.
    pub site_id: String,
    /// The camera's id.
    pub camera: String,
    /// Size of the MP4.
    pub bytes: u64,
    /// SHA-256 of the whole MP4, lowercase hex.
    pub sha256: String,
    /// Size of every chunk but the last.
    pub chunk_size: u64,
    /// Number of chunks, published at `.../clip/<camera>/0` to `.../<chunks - 1>`.
    pub chunks: u32,
    /// SHA-256 of each chunk, in order.
    pub chunk_sha256: Vec<String>,
    /// Length of the video, in milliseconds.
    pub duration_ms: u64,
    /// First instant the file holds, RFC 3339 UTC with milliseconds.
    pub start: String,
    /// Last instant the file holds.
    pub end: String,
    /// `h264` or `h265`.
    pub codec: String,
    /// Picture width, when known.
    pub width: Option<i32>,
    /// Picture height, when known.
    pub height: Option<i32>,
    /// Frames in the file.
    pub frames: u64,
    /// True when the file holds less than was requested.
    pub partial: bool,
    /// Why, when partial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_reason: Option<String>,
    /// Every trigger the clip covers.
    pub triggers: Vec<TriggerRecord>,
    /// The reading of both clocks, taken at the first trigger, through which `start` and `end`
    /// were derived from the monotonic clock frames are timed on.
    pub clock_map: MapRecord,
    /// The device's signature over every byte before it. Always the last member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureInfo>,
}

impl Manifest {
    /// The manifest of a written clip, hashed in `chunk_size` blocks.
    pub fn for_clip(record: &ClipRecord, chunk_size: u64, chunk_sha256: Vec<String>) -> Manifest {
        Manifest {
            schema: MANIFEST_SCHEMA.to_owned(),
            event_id: record.event_id,
            site_id: record.site.id.clone(),
            camera: record.camera.clone(),
            bytes: record.bytes,
            sha256: record.sha256.clone(),
            chunk_size,
            chunks: chunk_sha256.len() as u32,
            chunk_sha256,
            duration_ms: record.duration_ms,
            start: record.actual.start.clone(),
            end: record.actual.end.clone(),
            codec: record.codec.clone(),
            width: record.width,
            height: record.height,
            frames: record.frames,
            partial: record.partial,
            partial_reason: record.partial_reason.clone(),
            triggers: record.triggers.clone(),
            clock_map: record.clock_map.clone(),
            signature: None,
        }
    }
}

/// The device status, retained on `<prefix>/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// [`STATUS_SCHEMA`].
    pub schema: String,
    /// `online`, or `offline` (the last will).
    pub state: String,
    /// The alertclip version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// When the daemon started, RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Each camera.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cameras: BTreeMap<String, CameraSummary>,
    /// Each panic button.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub buttons: BTreeMap<String, ButtonSummary>,
    /// What waits in the outbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox: Option<OutboxSummary>,
    /// The officer side's latest response to each recent event, as the box received it: what
    /// tells a desk that the store got it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub responses: BTreeMap<Uuid, ResponseSummary>,
    /// What each feedback light shows now (`box`, or a button's id): `off`, `sending`,
    /// `delivered`, `failing`, `acknowledged` or `help_on_the_way`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lights: BTreeMap<String, String>,
}

/// An officer's response as a box received and applied it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseSummary {
    /// The command that carried it.
    pub command_id: Uuid,
    /// Where the response has got.
    pub state: crate::command::ResponseState,
    /// The officer.
    pub by: String,
    /// The desk.
    pub desk: String,
    /// When the officer gave it, RFC 3339 UTC.
    pub issued_at: String,
    /// When the box received it, RFC 3339 UTC.
    pub received_at: String,
    /// For people: "help on the way (ETA 6 min), by lee".
    pub summary: String,
}

/// One button in the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ButtonSummary {
    /// `opening`, `ready`, `stuck`, `unavailable` or `stopped`.
    pub state: String,
    /// Why it is unavailable, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// One camera in the status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CameraSummary {
    /// `connecting`, `streaming`, `stalled`, `failed` or `stopped`.
    pub state: String,
    /// Frames per second.
    pub fps: f64,
    /// Encoded kilobits per second.
    pub kbps: f64,
    /// Seconds of video buffered.
    pub buffered_s: f64,
    /// Its detector's state, when it has `[camera.detect]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detect: Option<DetectState>,
}

/// The outbox in the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxSummary {
    /// Events with something still to deliver.
    pub events: u64,
    /// Bytes waiting.
    pub bytes: u64,
}

/// A health alert on `<prefix>/alerts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// [`HEALTH_SCHEMA`].
    pub schema: String,
    /// `camera_offline`, `camera_online`, `outbox_filling`, `outbox_dropped`,
    /// `message_too_large` or `disk_low`.
    pub kind: String,
    /// When, RFC 3339 UTC with milliseconds.
    pub at: String,
    /// The camera concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub camera: Option<String>,
    /// The event concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Uuid>,
    /// What happened, for people.
    pub message: String,
}

/// What raised a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerKind {
    /// A staff panic button.
    Button,
    /// The on-device detector.
    Detection,
    /// A technician, through `alertclip trigger`.
    Manual,
    /// A command from the alert channel.
    Remote,
    /// A test of the whole path, not a real alarm.
    Test,
}

impl TriggerKind {
    /// The name it is published under, such as `button`.
    pub fn as_str(&self) -> &'static str {
        match self {
            TriggerKind::Button => "button",
            TriggerKind::Detection => "detection",
            TriggerKind::Manual => "manual",
            TriggerKind::Remote => "remote",
            TriggerKind::Test => "test",
        }
    }
}

/// A trigger as recorded in a clip's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerRecord {
    /// What raised it.
    pub kind: TriggerKind,
    /// Which input raised it.
    pub source: String,
    /// When, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// Free text, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// What the detector saw, for `detection`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detections: Vec<Detection>,
}

/// One thing the detector saw, as carried in alerts and clip metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// The class name, such as `person`.
    pub label: String,
    /// Objectness times class score, 0 to 1.
    pub score: f32,
    /// `[x0, y0, x1, y1]`, fractions of the picture (0,0 top left).
    #[serde(rename = "box")]
    pub rect: Rect,
    /// The zone its bottom centre fell in; none when the camera has no zones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

/// A box in normalised picture coordinates: 0,0 top left, 1,1 bottom right.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(into = "[f32; 4]", from = "[f32; 4]")]
pub struct Rect {
    /// Left edge.
    pub x0: f32,
    /// Top edge.
    pub y0: f32,
    /// Right edge.
    pub x1: f32,
    /// Bottom edge.
    pub y1: f32,
}

impl From<Rect> for [f32; 4] {
    fn from(r: Rect) -> [f32; 4] {
        [r.x0, r.y0, r.x1, r.y1]
    }
}

impl From<[f32; 4]> for Rect {
    fn from([x0, y0, x1, y1]: [f32; 4]) -> Rect {
        Rect { x0, y0, x1, y1 }
    }
}

impl Rect {
    /// Its area, as a fraction of the picture.
    pub fn area(&self) -> f32 {
        (self.x1 - self.x0).max(0.0) * (self.y1 - self.y0).max(0.0)
    }

    /// Intersection over union.
    pub fn iou(&self, other: &Rect) -> f32 {
        let inter = Rect {
            x0: self.x0.max(other.x0),
            y0: self.y0.max(other.y0),
            x1: self.x1.min(other.x1),
            y1: self.y1.min(other.y1),
        }
        .area();
        let union = self.area() + other.area() - inter;
        if union > 0.0 { inter / union } else { 0.0 }
    }

    /// The middle of its bottom edge: where a standing person's feet are.
    pub fn bottom_centre(&self) -> (f32, f32) {
        ((self.x0 + self.x1) / 2.0, self.y1)
    }
}

/// What a watched camera's detector is doing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectState {
    /// Waiting for the camera's first frames.
    #[default]
    Starting,
    /// Decoding and looking.
    Watching,
    /// Outside its schedule: nothing is decoded.
    OffSchedule,
    /// The decode branch failed; it is retried.
    Failed,
    /// Stopped with the daemon.
    Stopped,
}

impl DetectState {
    /// Its name in status reports, as serialized.
    pub fn as_str(&self) -> &'static str {
        match self {
            DetectState::Starting => "starting",
            DetectState::Watching => "watching",
            DetectState::OffSchedule => "off_schedule",
            DetectState::Failed => "failed",
            DetectState::Stopped => "stopped",
        }
    }
}

/// How far the box's wall clock can be trusted, as recorded in alerts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// Whether the kernel reports the clock synchronised (by NTP, chrony, systemd-timesyncd or
    /// PTP); `None` when it cannot be asked.
    pub synchronized: Option<bool>,
    /// The time service found running: `systemd-timesyncd`, `chrony` or `ntpd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The kernel's estimate of the clock's error, in microseconds, when synchronised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_error_us: Option<i64>,
}

/// A reading of the box's monotonic and wall clocks taken together, as recorded in metadata:
/// the monotonic reading in nanoseconds and the wall reading in RFC 3339 UTC with
/// microseconds, so that anyone can redo the arithmetic from frame times to wall times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapRecord {
    /// Monotonic clock, nanoseconds.
    pub monotonic_ns: u64,
    /// Wall clock at the same instant.
    pub wall: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_kinds_are_named_as_serialized() {
        for kind in [
            TriggerKind::Button,
            TriggerKind::Detection,
            TriggerKind::Manual,
            TriggerKind::Remote,
            TriggerKind::Test,
        ] {
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::Value::from(kind.as_str())
            );
        }
    }
}
