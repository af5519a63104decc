//! What goes over MQTT: topic names and the JSON payloads, shared by the daemon that
//! publishes them and the receiver that reads them. docs/mqtt.md describes them for people
//! and docs/schemas/ as JSON Schemas; a test checks each payload against its schema.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::clock::MapRecord;
use crate::events::ClipRecord;
use crate::evidence::SignatureInfo;
use crate::trigger::{TriggerKind, TriggerRecord};

/// `schema` of an alert.
pub const ALERT_SCHEMA: &str = "alertclip.alert.v1";
/// `schema` of a clip manifest.
pub const MANIFEST_SCHEMA: &str = "alertclip.manifest.v1";
/// `schema` of the device status.
pub const STATUS_SCHEMA: &str = "alertclip.status.v1";
/// `schema` of a health alert.
pub const HEALTH_SCHEMA: &str = "alertclip.health.v1";

/// The topics of one device, under its prefix (`alertclip/v1/<site_id>` by default).
#[derive(Debug, Clone)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    /// Topics under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Topics {
        Topics {
            prefix: prefix.into(),
        }
    }

    /// `<prefix>/status`: retained device status, and the last will.
    pub fn status(&self) -> String {
        format!("{}/status", self.prefix)
    }

    /// `<prefix>/alerts`: health alerts.
    pub fn health(&self) -> String {
        format!("{}/alerts", self.prefix)
    }

    /// `<prefix>/events/<event_id>`: the alert.
    pub fn alert(&self, event: Uuid) -> String {
        format!("{}/events/{event}", self.prefix)
    }

    /// `<prefix>/events/<event_id>/snapshot/<camera>`: a JPEG.
    pub fn snapshot(&self, event: Uuid, camera: &str) -> String {
        format!("{}/events/{event}/snapshot/{camera}", self.prefix)
    }

    /// `<prefix>/events/<event_id>/clip/<camera>`: the manifest; chunk `n` is at
    /// `<that>/<n>`.
    pub fn clip(&self, event: Uuid, camera: &str) -> String {
        format!("{}/events/{event}/clip/{camera}", self.prefix)
    }
}

/// Whether `topic` matches the subscription `filter` (with `+` and `#` wildcards).
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match (level, topic_levels.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (want, Some(got)) if want == got => {}
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}

/// What a topic under `alertclip/v1/` carries, as the receiver sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicKind {
    /// `<site>/status`
    Status { site: String },
    /// `<site>/alerts`
    Health { site: String },
    /// `<site>/events/<event>`
    Alert { site: String, event: Uuid },
    /// `<site>/events/<event>/snapshot/<camera>`
    Snapshot {
        site: String,
        event: Uuid,
        camera: String,
    },
    /// `<site>/events/<event>/clip/<camera>`
    Manifest {
        site: String,
        event: Uuid,
        camera: String,
    },
    /// `<site>/events/<event>/clip/<camera>/<n>`
    Chunk {
        site: String,
        event: Uuid,
        camera: String,
        index: u32,
    },
}

impl TopicKind {
    /// Reads a topic of the default layout (`alertclip/v1/<site>/...`).
    pub fn parse(topic: &str) -> Option<TopicKind> {
        let rest = topic.strip_prefix("alertclip/v1/")?;
        let parts: Vec<&str> = rest.split('/').collect();
        let site = (*parts.first()?).to_owned();
        let event = || parts.get(2).and_then(|e| Uuid::parse_str(e).ok());
        Some(match parts.as_slice() {
            [_, "status"] => TopicKind::Status { site },
            [_, "alerts"] => TopicKind::Health { site },
            [_, "events", _] => TopicKind::Alert {
                site,
                event: event()?,
            },
            [_, "events", _, "snapshot", camera] => TopicKind::Snapshot {
                site,
                event: event()?,
                camera: (*camera).to_owned(),
            },
            [_, "events", _, "clip", camera] => TopicKind::Manifest {
                site,
                event: event()?,
                camera: (*camera).to_owned(),
            },
            [_, "events", _, "clip", camera, index] => TopicKind::Chunk {
                site,
                event: event()?,
                camera: (*camera).to_owned(),
                index: index.parse().ok()?,
            },
            _ => return None,
        })
    }
}

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
    pub clock: ClockInfo,
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
    pub detections: Vec<crate::detect::Detection>,
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

/// The clock's provenance.
pub type ClockInfo = crate::clock::Provenance;

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
    pub detect: Option<crate::detect::DetectState>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_topics_like_a_broker() {
        assert!(topic_matches("zigbee2mqtt/button", "zigbee2mqtt/button"));
        assert!(!topic_matches(
            "zigbee2mqtt/button",
            "zigbee2mqtt/button/action"
        ));
        assert!(topic_matches(
            "zigbee2mqtt/+/action",
            "zigbee2mqtt/b1/action"
        ));
        assert!(topic_matches("a/#", "a/b/c"));
        assert!(topic_matches("a/#", "a"));
        assert!(!topic_matches("a/+", "a/b/c"));
        assert!(!topic_matches("a/b", "a"));
    }
}
