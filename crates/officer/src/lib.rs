//! The officer side of alertclip: what a precinct runs to receive, verify and keep what the
//! stores' boxes send over the alert channel.
//!
//! [`receive`] subscribes, verifies every signature, follows each box's alert chain and
//! reassembles clips chunk by chunk, presenting a clip only once it matches its signed
//! manifest; [`cli`] is the `receive` command both `alertclip-receive` and `alertclip receive`
//! run. Everything it knows of the wire comes from `alertclip-wire`, and nothing here needs
//! the box's media stack.

pub mod cli;
pub mod receive;
pub mod store;

pub use receive::{ReceiveOptions, Receiver, Report, Sessions};
