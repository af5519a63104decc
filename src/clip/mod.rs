//! Clips: from a trigger to the files of an event.
//!
//! The [`clipper`] is the only reader of the trigger channel: it opens events, joins or
//! extends the clips in progress, and runs one clip [`job`] per camera, which cuts the pre-roll
//! from the ring, follows it for post-roll and hands frames to [`mux`] (MP4 without
//! re-encoding, timed by [`retime`]). Each finished clip is written to [`storage`] beside its
//! sidecar and signed manifest; what a crash interrupted there is finished at the next start
//! ([`recover`]). A [`snapshot`] of the frame nearest the trigger, with
//! detections drawn by [`annotate`], goes out first.

pub mod annotate;
pub mod clipper;
pub mod history;
pub mod job;
pub mod mux;
pub mod recover;
pub mod retime;
pub mod snapshot;
pub mod storage;

pub use job::ClipDone;

use std::io;

use uuid::Uuid;

/// Where the clipper hands an event's messages for delivery: defined here and implemented by
/// delivery, so that clips never depend on how, or whether, they are delivered. Each call
/// returns once the message is durably spooled, so each blocks on disk: call it from a
/// blocking thread.
pub trait Spool: Send + Sync {
    /// The alert of a new event, as published: signed and chained.
    fn alert(&self, event: Uuid, payload: Vec<u8>) -> io::Result<()>;
    /// Update `number` of an open event (a trigger that joined it), as published: signed
    /// and chained.
    fn update(&self, event: Uuid, number: u32, payload: Vec<u8>) -> io::Result<()>;
    /// A camera's snapshot for an event: a JPEG.
    fn snapshot(&self, event: Uuid, camera: &str, jpeg: Vec<u8>) -> io::Result<()>;
    /// A finished clip, with its signed manifest.
    fn clip(&self, clip: &ClipDone) -> io::Result<()>;
    /// The largest payload delivery takes in one message, which bounds a snapshot.
    fn max_payload(&self) -> u64;
    /// Drops the undelivered clip that goes first when the disk runs short (a detection
    /// event's before a panic's, oldest first; never an alert), saying so on the health
    /// channel; never one of `keep`'s. False when none is left.
    fn shed_clip(&self, keep: Uuid) -> bool;
    /// A write found the disk full: look at free space now, and tell people.
    fn disk_full(&self);
    /// Something people must hear of at once about an event's alert (it could not be spooled
    /// and is retried from memory; it was spooled late): a health alert of `kind`, which may
    /// take the space held for alerts.
    fn alert_health(&self, kind: &str, event: Uuid, message: String);
}
