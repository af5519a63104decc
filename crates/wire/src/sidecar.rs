//! The JSON sidecar written beside every clip on the box (`<camera>.json`): what the clip
//! holds and why, for technicians and for the manifest that is published from it.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::payload::{MapRecord, TriggerRecord};

/// Version of the sidecar format; bumped on incompatible changes.
pub const SIDECAR_VERSION: u32 = 1;

/// The JSON sidecar written beside every clip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipRecord {
    /// Sidecar format version, currently 1.
    pub version: u32,
    /// The event this clip belongs to (UUIDv7, time-ordered).
    pub event_id: Uuid,
    /// The store.
    pub site: SiteRecord,
    /// The camera's id.
    pub camera: String,
    /// The MP4's file name, beside this sidecar.
    pub file: String,
    /// Every trigger the clip covers, in order.
    pub triggers: Vec<TriggerRecord>,
    /// What the triggers asked for: pre-roll before the first, post-roll after the last.
    pub requested: TimeSpan,
    /// What the file holds.
    pub actual: TimeSpan,
    /// Length of the file's video, in milliseconds.
    pub duration_ms: u64,
    /// Frames in the file.
    pub frames: u64,
    /// `h264` or `h265`.
    pub codec: String,
    /// Frame width in pixels, when the stream states it.
    pub width: Option<i32>,
    /// Frame height in pixels, when the stream states it.
    pub height: Option<i32>,
    /// Size of the MP4.
    pub bytes: u64,
    /// SHA-256 of the MP4, lowercase hex.
    pub sha256: String,
    /// True when the file holds less than was requested.
    pub partial: bool,
    /// Why the file holds less than was requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_reason: Option<String>,
    /// The reading of both clocks, taken at the first trigger, through which the times above
    /// were derived from the monotonic clock frames are timed on.
    pub clock_map: MapRecord,
}

/// The store, as recorded in a sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteRecord {
    /// `site.id`.
    pub id: String,
    /// `site.name`.
    pub name: String,
}

/// A span of wall-clock time, RFC 3339 UTC with milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeSpan {
    /// First instant.
    pub start: String,
    /// Last instant.
    pub end: String,
}
