//! The `alertclip` command: parses the arguments, starts logging and the async runtime, and
//! runs the command (`cli/`, one file per command). The work is done by the library.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        // The daemon logs at its configured level, once its configuration is read.
        Command::Run { .. } => {}
        // The report says what matters; camera reconnect chatter would drown it.
        Command::Check { .. } | Command::Provision(_) => {
            alertclip::daemon::service::init_logging("error")
        }
        _ => alertclip::daemon::service::init_logging("info"),
    }
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(cli::run(cli.command)),
        Err(error) => {
            eprintln!("alertclip: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        }
    }
}
