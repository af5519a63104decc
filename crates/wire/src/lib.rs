//! The contract between an alertclip box and the officer side: what passes over the alert
//! channel, and how to check it.
//!
//! The box and the officer side upgrade on their own schedules, so everything they must agree
//! on lives here and nowhere else: the topic layout with its one default prefix ([`topics`]),
//! the JSON payloads and their schemas ([`payload`], [`schemas`]), the clip sidecar
//! ([`sidecar`]), the signature over a payload's exact bytes ([`signature`]), the per-device
//! alert chain ([`chain`]), the officer side's commands to a box and its answers ([`command`]), clip digests and offline verification ([`digest`]), and the rule
//! for identifiers that end up in topics and file names ([`id`]).
//!
//! It depends on serde, the crypto crates and humantime (to read times) only: no async
//! runtime, no media stack. A box crate and an officer crate both depend on it, so no cycle
//! can run between them.

pub mod chain;
pub mod command;
pub mod digest;
pub mod id;
pub mod payload;
pub mod schemas;
pub mod sidecar;
pub mod signature;
pub mod topics;

pub use chain::{ChainState, Link};
pub use digest::{ClipCheck, Digests};
pub use payload::{
    Alert, ButtonSummary, CameraPlan, CameraSummary, DetectState, Detection, EventUpdate, Health,
    Manifest, MapRecord, OutboxSummary, Provenance, Rect, ResponseSummary, SiteInfo, Status,
    TriggerInfo, TriggerKind, TriggerRecord,
};
pub use sidecar::{ClipRecord, SiteRecord, TimeSpan};
pub use signature::{SignatureInfo, Verdict};
pub use topics::{TopicKind, TopicLayout, Topics};
