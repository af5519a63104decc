//! On-device detection: a YOLOX model on ONNX Runtime watching the cameras that have a
//! `[camera.detect]` table, and firing a trigger of kind `detection` when what they watch for
//! appears where and when they watch for it (docs/detection.md).
//!
//! Per watched camera, [`watch`] follows the camera's ring (or a substream's), decodes it at a
//! low rate in a GStreamer branch ([`frames`]) that also scales and converts to the model's
//! input, skips unchanged pictures ([`motion`]), runs the shared [`model`] on the rest, and
//! applies the camera's [`rules`] (zones, N-of-M persistence, cooldown) within its
//! schedule ([`crate::config::schedule`]). [`yolox`] is the model's own pre- and post-processing.

pub mod frames;
pub mod model;
pub mod motion;
pub mod rules;
pub mod watch;
pub mod yolox;

pub use alertclip_wire::{DetectState, Detection, Rect};
pub use model::{Model, ModelError, Timings};
pub use watch::{DetectStatus, Watcher};
