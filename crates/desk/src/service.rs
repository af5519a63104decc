//! What the service manager is told: ready once the console listens, then what the desk is
//! doing (`systemctl status alertclip-desk` shows the last of it: whether it receives, and the
//! last alert and clip recorded). Nothing is sent when no service manager asked
//! (`NOTIFY_SOCKET` unset).

use sd_notify::NotifyState;

/// The console listens: `systemctl start` returns, and `status` says so.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// What the desk is doing now.
pub fn status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

fn notify(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(error) = sd_notify::notify(false, states) {
        tracing::warn!(%error, "cannot tell the service manager");
    }
}
