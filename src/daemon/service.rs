//! Living under systemd: where logs go, readiness, the watchdog and status lines.
//!
//! Under systemd (`Type=notify`), the daemon says READY=1 once its cameras are started,
//! pings the watchdog from its main loop (a hung daemon is restarted), and says when it
//! reloads or stops. Outside systemd every notification is a no-op. Logs go to the journal,
//! with their fields, when the service's output is connected to it; to standard error as
//! plain text otherwise.

use std::io::IsTerminal;
use std::time::Duration;

use sd_notify::NotifyState;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Starts logging at `directives` (`RUST_LOG` syntax, such as `"info,alertclip::detect=debug"`);
/// the `RUST_LOG` environment variable, when set, wins.
pub fn init_logging(directives: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(directives))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // systemd sets JOURNAL_STREAM when standard error goes to the journal.
    let journald = std::env::var_os("JOURNAL_STREAM").and_then(|_| tracing_journald::layer().ok());
    let registry = tracing_subscriber::registry().with(filter);
    match journald {
        Some(journald) => {
            let _ = registry
                .with(journald.with_syslog_identifier("alertclip".to_owned()))
                .try_init();
        }
        None => {
            let _ = registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::io::stderr)
                        .with_ansi(std::io::stderr().is_terminal()),
                )
                .try_init();
        }
    }
}

/// The service manager, if the daemon runs under one.
#[derive(Debug, Clone, Copy)]
pub struct Supervisor {
    watchdog: Option<Duration>,
}

impl Supervisor {
    /// Reads what systemd passed in the environment.
    pub fn from_env() -> Supervisor {
        let mut usec = 0;
        let watchdog =
            sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec));
        Supervisor { watchdog }
    }

    /// How often to ping the watchdog: half its timeout, when it is enabled.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|timeout| timeout / 2)
    }

    /// Startup is done.
    pub fn ready(&self, status: &str) {
        notify(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// The daemon is alive.
    pub fn ping(&self) {
        notify(&[NotifyState::Watchdog]);
    }

    /// A one-line status for `systemctl status`.
    pub fn status(&self, status: &str) {
        notify(&[NotifyState::Status(status)]);
    }

    /// The configuration is being reloaded (followed by [`Supervisor::ready`]).
    pub fn reloading(&self) {
        let mut states = vec![NotifyState::Reloading];
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            states.push(now);
        }
        notify(&states);
    }

    /// The daemon is shutting down.
    pub fn stopping(&self) {
        notify(&[NotifyState::Stopping]);
    }
}

fn notify(states: &[NotifyState]) {
    if let Err(error) = sd_notify::notify(false, states) {
        tracing::warn!(%error, "cannot notify the service manager");
    }
}
