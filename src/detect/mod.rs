//! On-device detection: a YOLOX model on ONNX Runtime watching the cameras that have a
//! `[camera.detect]` table, and firing a trigger of kind `detection` when what they watch for
//! appears where and when they watch for it (docs/detection.md).
//!
//! Per watched camera, [`watch`] follows the camera's ring (or a substream's), decodes it at a
//! low rate in a GStreamer branch ([`frames`]) that also scales and converts to the model's
//! input, skips unchanged pictures ([`motion`]), runs the shared [`model`] on the rest, and
//! applies the camera's [`rules`] (zones, N-of-M persistence, cooldown) within its
//! [`schedule`]. [`yolox`] is the model's own pre- and post-processing.

pub mod frames;
pub mod model;
pub mod motion;
pub mod rules;
pub mod schedule;
pub mod watch;
pub mod yolox;

use serde::{Deserialize, Serialize};

pub use model::{Model, ModelError, Timings};
pub use watch::{DetectState, DetectStatus, Watcher};
pub use yolox::Rect;

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
