//! `alertclip run`: the daemon, until a signal.

use std::path::Path;

use tokio_util::sync::CancellationToken;

use super::{Failure, Outcome, load};

/// Runs the daemon of the configuration at `path` until SIGTERM or SIGINT.
pub async fn run(path: &Path) -> Outcome {
    let config = load(path)?;
    config
        .check_files(path)
        .map_err(|error| Failure::Unusable(error.to_string()))?;
    alertclip::daemon::service::init_logging(&config.log.level);
    let cancel = CancellationToken::new();
    // The first signal shuts down gracefully; a second exits at once.
    tokio::spawn(alertclip_officer::cli::cancel_on_signal(
        cancel.clone(),
        "finishing clips in progress",
    ));
    alertclip::run(config, path, cancel).await.map_err(|error| {
        if error.is_config() {
            Failure::Unusable(error.to_string())
        } else {
            Failure::failed(error)
        }
    })
}
