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
        Ok(runtime) => {
            let code = runtime.block_on(cli::run(cli.command));
            // Everything the command owns has finished; what may be left is a blocking thread
            // stuck inside GStreamer on a camera that stopped answering, which must not keep
            // the process from exiting.
            runtime.shutdown_timeout(std::time::Duration::from_secs(2));
            code
        }
        Err(error) => {
            eprintln!("alertclip: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        }
    }
}
