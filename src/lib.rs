//! alertclip keeps the last seconds of every store camera in memory, as the cameras encoded
//! them, and cuts them into a playable MP4 when help is called.
//!
//! The modules follow the pipeline, and data flows one way through them: [`ingest`] (each
//! camera into its ring) -> [`clip`] (the clipper, fed by [`trigger`]s from buttons, the
//! [`detect`]or and the control socket, cuts, muxes and stores) -> [`delivery`] (the durable
//! outbox, drained to the broker). [`health`] watches it all for status and health alerts;
//! [`daemon`] wires it together and holds what runs beside it (control socket, systemd,
//! reload); [`setup`] is for technicians (`check`, `provision`). What passes to the
//! officer side is the `alertclip-wire` crate's; the officer side is `alertclip-officer`.

pub mod clip;
pub mod clock;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod delivery;
pub mod demo;
pub mod detect;
pub mod elements;
pub mod evidence;
pub mod health;
pub mod ingest;
pub mod setup;
pub mod sys;
pub mod trigger;

pub use daemon::{Daemon, run};
