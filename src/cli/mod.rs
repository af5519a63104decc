//! The `alertclip` command line: the arguments of every subcommand, one file per command,
//! and the one place exit statuses are decided ([`Failure`]).

mod check;
mod demo;
mod key;
mod provision;
mod run;
mod status;
mod trigger;
mod verify;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use alertclip::config::{self, Config};

/// Why a command did not succeed, and so its exit status.
#[derive(Debug)]
pub enum Failure {
    /// Exit 1: it failed. The message says why; none when the command's own output did.
    Failed(Option<String>),
    /// Exit 2: the configuration, a file it names, or an option cannot be used.
    Unusable(String),
}

impl Failure {
    /// Exit 1 with `message`.
    pub fn failed(message: impl std::fmt::Display) -> Failure {
        Failure::Failed(Some(message.to_string()))
    }
}

/// What a command returns.
pub type Outcome = Result<(), Failure>;

/// Runs the parsed command line; prints a failure as `alertclip <command>: <why>`.
pub async fn run(command: Command) -> ExitCode {
    let (name, outcome) = match command {
        Command::Run { config } => ("run", run::run(&config).await),
        Command::Trigger(args) => ("trigger", trigger::trigger(args, false).await),
        Command::TestAlert(args) => ("test-alert", trigger::trigger(args, true).await),
        Command::Provision(args) => ("provision", provision::provision(args).await),
        Command::Check { config, json } => ("check", check::check(&config, json).await),
        Command::Status { config, json } => ("status", status::status(&config, json).await),
        Command::Receive(args) => return alertclip_officer::cli::receive(args).await,
        Command::Key {
            command: KeyCommand::Show { config },
        } => ("key show", key::show(&config)),
        Command::Verify {
            clip,
            manifest,
            pubkey,
        } => (
            "verify",
            verify::verify(&clip, &manifest, pubkey.as_deref()),
        ),
        Command::Demo {
            out,
            pre_roll,
            post_roll,
            codec,
        } => ("demo", demo::demo(out, pre_roll, post_roll, codec).await),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Failed(message)) => {
            if let Some(message) = message {
                eprintln!("alertclip {name}: {message}");
            }
            ExitCode::FAILURE
        }
        Err(Failure::Unusable(message)) => {
            eprintln!("alertclip {name}: {message}");
            ExitCode::from(2)
        }
    }
}

/// The configuration at `path`; one that cannot be used is exit 2, with the file, the key and
/// what was expected.
fn load(path: &Path) -> Result<Config, Failure> {
    Config::load(path).map_err(|error| Failure::Unusable(error.to_string()))
}

#[derive(Parser)]
#[command(
    name = "alertclip",
    version,
    about = "Cuts pre-roll clips from store cameras when help is called"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Run the daemon: buffer every camera and cut clips on triggers.
    Run {
        /// Configuration file.
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Ask the running daemon for a clip now; prints the event id.
    Trigger(TriggerArgs),
    /// Send a test alert, snapshot and clip through the whole path, marked `test: true`, so
    /// the precinct side can see it works without raising a real alarm.
    TestAlert(TriggerArgs),
    /// Write this box's configuration from flags, asking for what is missing on a terminal;
    /// then create the device key and run `check`.
    Provision(ProvisionArgs),
    /// Check a box: validate the configuration and probe every camera, the broker, the
    /// detector, the buttons, free space and the clock. Exit 0 when all pass, 1 when
    /// something fails, 2 when the configuration cannot be used.
    Check {
        /// Configuration file.
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the running daemon's cameras, buttons, outbox, broker and last events.
    Status {
        /// Configuration file (to find the control socket).
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// Print the daemon's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Receive alerts and clips from the alert channel (dispatch desk or phone bridge): the
    /// officer side, as `alertclip-receive` runs it.
    Receive(alertclip_officer::cli::ReceiveArgs),
    /// The device's signing key.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Check a clip against its signed manifest: exit 0 valid, 1 invalid.
    Verify {
        /// The clip (MP4).
        clip: PathBuf,
        /// Its manifest (JSON, as written beside the clip or received).
        manifest: PathBuf,
        /// The device's public key (PEM or base64) to check the signature against.
        #[arg(long, value_name = "KEY")]
        pubkey: Option<PathBuf>,
    },
    /// Run the whole path on this machine with a simulated camera.
    Demo {
        /// Where the clip is written.
        #[arg(long, default_value = "alertclip-demo")]
        out: PathBuf,
        /// Video kept before the trigger.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        pre_roll: Duration,
        /// Video kept after the trigger.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        post_roll: Duration,
        /// Codec of the simulated camera.
        #[arg(long, value_enum, default_value_t = Codec::H264)]
        codec: Codec,
    },
}

/// What `provision` takes.
#[derive(clap::Args)]
pub struct ProvisionArgs {
    /// Where to write the configuration; passwords go in files beside it.
    #[arg(long, default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// The store's short identifier.
    #[arg(long)]
    pub site_id: Option<String>,
    /// The store's name, as officers see it.
    #[arg(long)]
    pub site_name: Option<String>,
    /// The street address officers are sent to.
    #[arg(long)]
    pub address: Option<String>,
    /// The store's IANA time zone, for detection schedules.
    #[arg(long)]
    pub timezone: Option<String>,
    /// A camera as id=rtsp://user:password@host/path (repeat for each).
    #[arg(long = "camera", value_name = "ID=URL")]
    pub cameras: Vec<String>,
    /// The alert channel's broker: mqtts://host:8883.
    #[arg(long)]
    pub broker: Option<String>,
    /// TLS files and the broker login.
    #[command(flatten)]
    pub login: alertclip_officer::cli::BrokerLogin,
    /// A button: id=gpio:LINE, id=evdev:DEVICE:KEY or id=mqtt:TOPIC (repeat for each).
    #[arg(long = "button", value_name = "SPEC")]
    pub buttons: Vec<String>,
    /// Where clips, the outbox and the device key live. Default: /var/lib/alertclip.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Print the configuration instead of writing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Replace an existing configuration (kept as a backup).
    #[arg(long)]
    pub force: bool,
    /// Do not ask for confirmation before writing.
    #[arg(long)]
    pub yes: bool,
}

/// What `trigger` and `test-alert` take.
#[derive(clap::Args)]
pub struct TriggerArgs {
    /// Configuration file (to find the control socket).
    #[arg(long, default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// A camera to clip (repeat for several; default: all).
    #[arg(long = "camera", value_name = "ID")]
    pub cameras: Vec<String>,
    /// A note recorded with the trigger.
    #[arg(long)]
    pub note: Option<String>,
}

/// What `key` does.
#[derive(Subcommand)]
pub enum KeyCommand {
    /// Print the public key and its fingerprint, for the precinct to register (creates the
    /// key if there is none yet).
    Show {
        /// Configuration file (to find the key).
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
}

/// The simulated camera's codec.
#[derive(Clone, Copy, ValueEnum)]
pub enum Codec {
    H264,
    H265,
}
