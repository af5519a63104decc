//! alertclip keeps the last seconds of every store camera in memory, as the cameras encoded
//! them, and cuts them into a playable MP4 when help is called.
//!
//! Data flows one way: [`camera`] ingest -> [`ring`] -> [`events`] (the clipper, fed by
//! [`trigger`]s) -> [`clip`] muxing -> [`storage`], and with `[mqtt]`, -> [`publish`] (the
//! outbox and the broker). [`daemon`] wires it together; [`control`] is the local socket the
//! CLI talks to. The officer side is the `alertclip-officer` crate; what passes between the
//! two is the `alertclip-wire` crate's.

pub mod annotate;
pub mod camera;
pub mod cameras;
pub mod check;
pub mod clip;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod demo;
pub mod detect;
pub mod events;
pub mod evidence;
pub mod feedback;
pub mod history;
pub mod localbroker;
pub mod provision;
pub mod publish;
pub mod ring;
pub mod service;
pub mod snapshot;
pub mod storage;
pub mod teststream;
pub mod trigger;

pub use daemon::{Daemon, run};

/// The name a unit enum serializes to, such as `streaming`: how states appear in status.
pub(crate) fn serde_name(value: impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}
