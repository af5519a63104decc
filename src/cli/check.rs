//! `alertclip check`: everything a box depends on, probed.

use std::path::Path;

use super::{Failure, Outcome, load};

/// Prints the report (a table, or JSON); exit 1 when something fails.
pub async fn check(path: &Path, json: bool) -> Outcome {
    let config = load(path)?;
    config
        .check_files(path)
        .map_err(|error| Failure::Unusable(error.to_string()))?;
    gstreamer::init().map_err(|error| {
        Failure::failed(format!(
            "GStreamer: {error} (run scripts/setup.sh to install it)"
        ))
    })?;
    let report = alertclip::setup::check::run(&config, path).await;
    if json {
        let text = serde_json::to_string_pretty(&report).map_err(Failure::failed)?;
        println!("{text}");
    } else {
        print!("{}", report.render());
    }
    if report.ok {
        Ok(())
    } else {
        Err(Failure::Failed(None))
    }
}
