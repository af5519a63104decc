//! Ingest: every camera's stream, as the camera encoded it, into a ring of recent frames.
//!
//! [`camera`] runs one camera (connect, time each access unit, push it into its [`ring`],
//! reconnect with backoff, report its status) in one tokio task, whichever client reads it:
//! [`rtsp`] (retina, the default) or [`rtspsrc`] (GStreamer's, the fallback and for
//! `rtsps://`). Over TCP both read through a [`relay`] that bounds what the camera's RTSP
//! replies can make them hold and lets a stuck connection be cut; [`pool`] keeps the running
//! cameras across reloads so an unchanged camera keeps its buffer. Readers (clips, the
//! detector) follow a ring through its [`camera::CameraFeed`] and never block the camera.

pub mod camera;
pub mod pool;
pub mod relay;
pub mod ring;
mod rtsp;
mod rtspsrc;

pub use camera::{Camera, CameraFeed, CameraState, CameraStatus};
pub use pool::CameraPool;
