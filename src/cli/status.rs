//! `alertclip status`: what the running daemon reports of itself.

use std::path::Path;

use alertclip::daemon::control::{self, Request};

use super::trigger::ask;
use super::{Failure, Outcome, load};

/// Prints the daemon's status, as tables or as JSON.
pub async fn status(path: &Path, json: bool) -> Outcome {
    let config = load(path)?;
    let response = ask(&config, &Request::Status).await?;
    if json {
        let text = serde_json::to_string_pretty(&response).map_err(Failure::failed)?;
        println!("{text}");
    } else {
        print!("{}", control::render_status(&response));
    }
    Ok(())
}
