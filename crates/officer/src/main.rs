//! `alertclip-receive`: the officer side on its own, for a precinct machine that has no need
//! of the box's media stack. The same command as `alertclip receive`.

use std::process::ExitCode;

use clap::Parser;

/// Receive alerts and clips from the alert channel (dispatch desk or phone bridge).
#[derive(Parser)]
#[command(name = "alertclip-receive", version)]
struct Cli {
    #[command(flatten)]
    receive: alertclip_officer::cli::ReceiveArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    alertclip_officer::cli::init_logging();
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(alertclip_officer::cli::receive(cli.receive)),
        Err(error) => {
            eprintln!("alertclip-receive: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        }
    }
}
