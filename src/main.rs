//! The `alertclip` command: arguments, logging, configuration and signals. The work is done
//! by the library.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use alertclip::config::{self, Config};
use alertclip::control::{self, Request};
use alertclip::demo::{self, DemoOptions};
use alertclip::teststream::TestCodec;

/// Exit status for a configuration that cannot be used.
const EXIT_CONFIG: u8 = 2;

#[derive(Parser)]
#[command(
    name = "alertclip",
    version,
    about = "Cuts pre-roll clips from store cameras when help is called"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
struct ProvisionArgs {
    /// Where to write the configuration; passwords go in files beside it.
    #[arg(long, default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    /// The store's short identifier.
    #[arg(long)]
    site_id: Option<String>,
    /// The store's name, as officers see it.
    #[arg(long)]
    site_name: Option<String>,
    /// The street address officers are sent to.
    #[arg(long)]
    address: Option<String>,
    /// The store's IANA time zone, for detection schedules.
    #[arg(long)]
    timezone: Option<String>,
    /// A camera as id=rtsp://user:password@host/path (repeat for each).
    #[arg(long = "camera", value_name = "ID=URL")]
    cameras: Vec<String>,
    /// The alert channel's broker: mqtts://host:8883.
    #[arg(long)]
    broker: Option<String>,
    #[command(flatten)]
    login: alertclip_officer::cli::BrokerLogin,
    /// A button: id=gpio:LINE, id=evdev:DEVICE:KEY or id=mqtt:TOPIC (repeat for each).
    #[arg(long = "button", value_name = "SPEC")]
    buttons: Vec<String>,
    /// Where clips, the outbox and the device key live. Default: /var/lib/alertclip.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Print the configuration instead of writing anything.
    #[arg(long)]
    dry_run: bool,
    /// Replace an existing configuration (kept as a backup).
    #[arg(long)]
    force: bool,
    /// Do not ask for confirmation before writing.
    #[arg(long)]
    yes: bool,
}

/// What `trigger` and `test-alert` take.
#[derive(clap::Args)]
struct TriggerArgs {
    /// Configuration file (to find the control socket).
    #[arg(long, default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    /// A camera to clip (repeat for several; default: all).
    #[arg(long = "camera", value_name = "ID")]
    cameras: Vec<String>,
    /// A note recorded with the trigger.
    #[arg(long)]
    note: Option<String>,
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Print the public key and its fingerprint, for the precinct to register (creates the
    /// key if there is none yet).
    Show {
        /// Configuration file (to find the key).
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Codec {
    H264,
    H265,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon logs at its configured level, once its configuration is read.
    match cli.command {
        Command::Run { .. } => {}
        // The report says what matters; camera reconnect chatter would drown it.
        Command::Check { .. } | Command::Provision(_) => alertclip::service::init_logging("error"),
        _ => alertclip::service::init_logging("info"),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("alertclip: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Run { config } => run(config).await,
            Command::Key {
                command: KeyCommand::Show { config },
            } => key_show(&config),
            Command::Verify {
                clip,
                manifest,
                pubkey,
            } => verify(&clip, &manifest, pubkey.as_deref()),
            Command::Trigger(args) => trigger(args, false).await,
            Command::TestAlert(args) => trigger(args, true).await,
            Command::Status { config, json } => status(config, json).await,
            Command::Check { config, json } => check(config, json).await,
            Command::Provision(args) => provision(args).await,
            Command::Receive(args) => alertclip_officer::cli::receive(args).await,
            Command::Demo {
                out,
                pre_roll,
                post_roll,
                codec,
            } => {
                let codec = match codec {
                    Codec::H264 => TestCodec::H264,
                    Codec::H265 => TestCodec::H265,
                };
                match demo::run(DemoOptions {
                    out,
                    pre_roll,
                    post_roll,
                    codec,
                })
                .await
                {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(error) => {
                        eprintln!("alertclip demo: {error:#}");
                        ExitCode::FAILURE
                    }
                }
            }
        }
    })
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|error| {
        eprintln!("alertclip: {error}");
        ExitCode::from(EXIT_CONFIG)
    })
}

async fn run(path: PathBuf) -> ExitCode {
    let config = match load(&path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    alertclip::service::init_logging(&config.log.level);
    let cancel = CancellationToken::new();
    tokio::spawn(watch_signals(cancel.clone()));
    match alertclip::run(config, &path, cancel).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("alertclip: {error}");
            if error.is_config() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The first SIGTERM or SIGINT shuts down gracefully; a second exits at once.
async fn watch_signals(cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    for count in 0.. {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        if count == 0 {
            tracing::info!(
                "signal received: finishing clips in progress (signal again to exit at once)"
            );
            cancel.cancel();
        } else {
            tracing::warn!("second signal: exiting now");
            std::process::exit(130);
        }
    }
}

fn key_show(path: &Path) -> ExitCode {
    let config = match load(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    match alertclip::evidence::DeviceKey::load_or_create(&config.evidence.dir) {
        Ok(key) => {
            println!(
                "key id:      {}\nfingerprint: {}\n{}",
                key.key_id(),
                key.fingerprint(),
                key.public_pem().trim_end()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("alertclip key show: {error}");
            ExitCode::FAILURE
        }
    }
}

fn verify(clip: &Path, manifest: &Path, pubkey: Option<&Path>) -> ExitCode {
    let invalid = |reason: String| {
        println!("INVALID: {reason}");
        ExitCode::FAILURE
    };
    let key = match pubkey {
        Some(path) => match std::fs::read_to_string(path)
            .ok()
            .and_then(|t| alertclip_wire::signature::parse_public_key(&t))
        {
            Some(key) => Some(key),
            None => {
                eprintln!(
                    "alertclip verify: {}: not an Ed25519 public key (PEM or base64)",
                    path.display()
                );
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        None => None,
    };
    let manifest_bytes = match std::fs::read(manifest) {
        Ok(bytes) => bytes,
        Err(error) => return invalid(format!("{}: {error}", manifest.display())),
    };
    match alertclip_wire::digest::check_clip(clip, &manifest_bytes, key.as_ref()) {
        Ok(check) => {
            for finding in &check.findings {
                println!("{finding}");
            }
            match check.failure {
                None => {
                    println!("VALID");
                    ExitCode::SUCCESS
                }
                Some(reason) => invalid(reason),
            }
        }
        Err(error) => invalid(format!("{}: {error}", clip.display())),
    }
}

async fn trigger(args: TriggerArgs, test: bool) -> ExitCode {
    let TriggerArgs {
        config: path,
        cameras,
        note,
    } = args;
    let name = if test { "test-alert" } else { "trigger" };
    let config = match load(&path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let request = Request::Trigger {
        cameras,
        note,
        test,
    };
    match ask(name, &config, &request).await {
        Ok(response) => {
            if let Some(event) = response.event_id {
                println!("{event}");
            }
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// Sends `request` to the running daemon; a refusal or no answer is printed as `command`'s.
async fn ask(
    command: &str,
    config: &Config,
    request: &Request,
) -> Result<control::Response, ExitCode> {
    match control::call(&config.control.socket, request).await {
        Ok(response) if response.ok => Ok(response),
        Ok(response) => {
            eprintln!(
                "alertclip {command}: {}",
                response.error.unwrap_or_else(|| "refused".into())
            );
            Err(ExitCode::FAILURE)
        }
        Err(error) => {
            eprintln!("alertclip {command}: {error}");
            Err(ExitCode::FAILURE)
        }
    }
}

async fn provision(args: ProvisionArgs) -> ExitCode {
    use alertclip::provision::{self, Answers};
    let mut answers = Answers {
        site_id: args.site_id,
        site_name: args.site_name,
        address: args.address,
        timezone: args.timezone,
        cameras: args.cameras,
        broker: args.broker,
        ca: args.login.ca,
        cert: args.login.cert,
        key: args.login.key,
        username: args.login.username,
        password_file: args.login.password_file,
        buttons: args.buttons,
        state_dir: args.state_dir,
    };
    let fail = |error: String| {
        eprintln!("alertclip provision: {error}");
        ExitCode::from(EXIT_CONFIG)
    };
    if let Err(error) = provision::complete(&mut answers).await {
        return fail(error);
    }
    let dir = args.config.parent().unwrap_or(Path::new(".")).to_owned();
    let (text, secrets) = match provision::render(&answers, &dir) {
        Ok(rendered) => rendered,
        Err(error) => return fail(error),
    };
    if args.dry_run {
        if let Err(error) = Config::parse(&text, &args.config) {
            return fail(format!("the configuration would be invalid: {error}"));
        }
        print!("{text}");
        for (path, _) in &secrets {
            println!("# and a password in {} (mode 0600)", path.display());
        }
        return ExitCode::SUCCESS;
    }
    if !args.yes && std::io::stdin().is_terminal() {
        print!("{text}\nWrite this to {}? [y/N] ", args.config.display());
        let _ = std::io::Write::flush(&mut std::io::stdout());
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        if !line.trim().eq_ignore_ascii_case("y") {
            eprintln!("alertclip provision: nothing written");
            return ExitCode::FAILURE;
        }
    }
    let written = match provision::write(&args.config, &text, &secrets, args.force) {
        Ok(written) => written,
        Err(error) => return fail(error),
    };
    println!("wrote {}", written.config.display());
    if let Some(backup) = &written.backup {
        println!("the previous configuration is in {}", backup.display());
    }
    for secret in &written.secrets {
        println!("wrote {} (mode 0600)", secret.display());
    }
    let config = match load(&args.config) {
        Ok(config) => config,
        Err(code) => return code,
    };
    match alertclip::evidence::DeviceKey::load_or_create(&config.evidence.dir) {
        Ok(key) => println!(
            "device key {} (fingerprint {}): register it with the precinct (alertclip key show)",
            key.key_id(),
            key.fingerprint()
        ),
        Err(error) => return fail(format!("evidence.dir: {error}")),
    }
    println!();
    check(args.config, false).await
}

async fn check(path: PathBuf, json: bool) -> ExitCode {
    let config = match load(&path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if let Err(error) = gstreamer::init() {
        eprintln!("alertclip check: GStreamer: {error} (run scripts/setup.sh to install it)");
        return ExitCode::FAILURE;
    }
    let report = alertclip::check::run(&config, &path).await;
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(error) => eprintln!("alertclip check: {error}"),
        }
    } else {
        print!("{}", report.render());
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn status(path: PathBuf, json: bool) -> ExitCode {
    let config = match load(&path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let response = match ask("status", &config, &Request::Status).await {
        Ok(response) => response,
        Err(code) => return code,
    };
    if json {
        match serde_json::to_string_pretty(&response) {
            Ok(text) => println!("{text}"),
            Err(error) => {
                eprintln!("alertclip status: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", control::render_status(&response));
    }
    ExitCode::SUCCESS
}
