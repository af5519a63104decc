//! `alertclip trigger` and `alertclip test-alert`: a clip of now, asked of the running
//! daemon.

use alertclip::config::Config;
use alertclip::daemon::control::{self, Request, Response};

use super::{Failure, Outcome, TriggerArgs, load};

/// Asks the daemon for a clip (marked a test with `test`) and prints the event id.
pub async fn trigger(args: TriggerArgs, test: bool) -> Outcome {
    let config = load(&args.config)?;
    let request = Request::Trigger {
        cameras: args.cameras,
        note: args.note,
        test,
    };
    let response = ask(&config, &request).await?;
    if let Some(event) = response.event_id {
        println!("{event}");
    }
    Ok(())
}

/// Sends `request` to the running daemon; a refusal or no answer is a failure that says why.
pub async fn ask(config: &Config, request: &Request) -> Result<Response, Failure> {
    match control::call(&config.control.socket, request).await {
        Ok(response) if response.ok => Ok(response),
        Ok(response) => Err(Failure::Failed(Some(
            response.error.unwrap_or_else(|| "refused".into()),
        ))),
        Err(error) => Err(Failure::failed(error)),
    }
}
