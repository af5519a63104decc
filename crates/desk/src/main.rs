//! `alertclip-desk`: the precinct's web console (see the library's documentation).

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    alertclip_officer::cli::init_logging();
    alertclip_desk::cli::run(alertclip_desk::cli::Cli::parse()).await
}
