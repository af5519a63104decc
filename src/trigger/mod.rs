//! Triggers: the one channel through which every source (control socket, buttons, detector,
//! remote commands) asks for a clip.

use std::time::{Duration, SystemTime};

pub mod buttons;

pub use alertclip_wire::{TriggerKind, TriggerRecord};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::clock::{self, ClockMap};
use alertclip_wire::Detection;

/// A request for a clip around a moment.
#[derive(Debug, Clone)]
pub struct Trigger {
    /// What raised it.
    pub kind: TriggerKind,
    /// Which input raised it: `cli`, a button id, a camera's detector ...
    pub source: String,
    /// Free text for officers.
    pub note: Option<String>,
    /// Cameras to clip; empty for all.
    pub cameras: Vec<String>,
    /// When it happened, on both clocks.
    pub at: ClockMap,
    /// What the detector saw, for a `detection` trigger.
    pub detections: Vec<Detection>,
    /// For a footage request: the span it asks for around `at`, instead of each camera's
    /// pre- and post-roll. Such a trigger always opens an event of its own.
    pub window: Option<Window>,
}

/// A span of video around a trigger's moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// How far before the moment it starts.
    pub before: Duration,
    /// How far after the moment it ends.
    pub after: Duration,
}

impl Trigger {
    /// A trigger happening now.
    pub fn now(kind: TriggerKind, source: impl Into<String>) -> Trigger {
        Trigger {
            kind,
            source: source.into(),
            note: None,
            cameras: Vec::new(),
            at: ClockMap::now(),
            detections: Vec::new(),
            window: None,
        }
    }

    /// How it is recorded in clip metadata.
    pub fn record(&self) -> TriggerRecord {
        TriggerRecord {
            kind: self.kind,
            source: self.source.clone(),
            time: clock::rfc3339_ms(self.at.wall),
            note: self.note.clone(),
            detections: self.detections.clone(),
        }
    }

    /// Its wall-clock time.
    pub fn wall(&self) -> SystemTime {
        self.at.wall
    }
}

/// Why a trigger was not accepted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TriggerError {
    /// It named a camera that is not configured.
    #[error("unknown camera \"{camera}\" (configured: {configured})")]
    UnknownCamera {
        /// The unknown id.
        camera: String,
        /// The configured ids, comma-separated.
        configured: String,
    },
    /// The daemon is shutting down.
    #[error("the daemon is shutting down")]
    ShuttingDown,
    /// The event was opened and its clips started, but its alert could not be written to
    /// disk: it is kept in memory and tried again every second until it is.
    #[error(
        "event {event} was raised, but its alert is not on disk ({reason}); it is retried from memory every second: free space on the box"
    )]
    AlertNotSpooled {
        /// The event.
        event: Uuid,
        /// Why it could not be written.
        reason: String,
    },
}

impl TriggerError {
    /// The event a trigger opened even though it failed, if it did.
    pub fn event(&self) -> Option<Uuid> {
        match self {
            TriggerError::AlertNotSpooled { event, .. } => Some(*event),
            _ => None,
        }
    }
}

/// A trigger and where to send the event id it was given.
#[derive(Debug)]
pub(crate) struct Request {
    pub trigger: Trigger,
    pub reply: oneshot::Sender<Result<Uuid, TriggerError>>,
}

/// The sending end of the trigger channel; cheap to clone, one per source.
#[derive(Debug, Clone)]
pub struct Triggers {
    tx: mpsc::Sender<Request>,
}

impl Triggers {
    pub(crate) fn channel(capacity: usize) -> (Triggers, mpsc::Receiver<Request>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Triggers { tx }, rx)
    }

    /// Hands a trigger to the clipper and returns the id of the event it belongs to: a new
    /// event, or the one whose clip it extends. Waits for room rather than dropping.
    pub async fn fire(&self, trigger: Trigger) -> Result<Uuid, TriggerError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request { trigger, reply })
            .await
            .map_err(|_| TriggerError::ShuttingDown)?;
        answer.await.map_err(|_| TriggerError::ShuttingDown)?
    }
}
