//! For technicians: `alertclip check` probes everything a box depends on, `alertclip
//! provision` writes a box's configuration.

pub mod check;
pub mod provision;
