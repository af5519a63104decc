//! The `receive` command: its flags, turned into [`ReceiveOptions`], and its run until a
//! signal. `alertclip-receive` and the box's `alertclip receive` are this same command.

use std::path::PathBuf;
use std::process::ExitCode;

use alertclip_mqtt::{BrokerUrl, Protocol, Settings};
use alertclip_wire::TopicLayout;
use alertclip_wire::topics::DEFAULT_PREFIX;
use tokio_util::sync::CancellationToken;

use crate::receive::{self, ReceiveOptions};

/// Exit status for options that cannot be used.
const EXIT_USAGE: u8 = 2;

/// How to log in to a broker: TLS files and credentials.
#[derive(clap::Args, Debug, Clone)]
pub struct BrokerLogin {
    /// PEM certificate authorities for mqtts:// (default: the system's).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// PEM client certificate for mutual TLS.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// User name for the broker.
    #[arg(long)]
    pub username: Option<String>,
    /// File holding the broker password.
    #[arg(long, value_name = "FILE", requires = "username")]
    pub password_file: Option<PathBuf>,
}

/// What `receive` takes.
#[derive(clap::Args, Debug, Clone)]
pub struct ReceiveArgs {
    /// Broker URL: mqtt://host[:port] or mqtts://host[:port].
    #[arg(long)]
    pub broker: String,
    /// Another node of the broker's cluster, tried when the one connected to fails (the same
    /// scheme as --broker); repeatable.
    #[arg(long, value_name = "URL")]
    pub failover: Vec<String>,
    /// MQTT protocol version: 3.1.1 or 5.
    #[arg(long, default_value = "3.1.1")]
    pub protocol: String,
    /// TLS files and credentials.
    #[command(flatten)]
    pub login: BrokerLogin,
    /// Client id; the broker keeps messages for it while the receiver is down.
    /// Default: alertclip-receive-<hostname>.
    #[arg(long)]
    pub client_id: Option<String>,
    /// One site's id, or + for every site.
    #[arg(long, default_value = "+")]
    pub site: String,
    /// The boxes' topic prefix (their `[mqtt] topic_prefix`), with {site} standing for the
    /// site id; a prefix without {site} is one box's, and needs --site.
    #[arg(long, value_name = "TEMPLATE", default_value = DEFAULT_PREFIX)]
    pub topic_prefix: String,
    /// Directory for alerts, snapshots and verified clips.
    #[arg(long)]
    pub out: PathBuf,
    /// Print one JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Directory of registered device public keys, each named after its site (`<site-id>.pub`, a
    /// PEM file as `alertclip key show` prints it): a key vouches only for its own site.
    #[arg(long, value_name = "DIR")]
    pub keys: Option<PathBuf>,
    /// Trust the first key each site signs with, and only that key afterwards.
    #[arg(long)]
    pub trust_on_first_use: bool,
}

impl ReceiveArgs {
    /// The options these flags describe; the error names the flag and what it expected.
    pub fn options(self) -> Result<ReceiveOptions, String> {
        let url = BrokerUrl::parse(&self.broker).map_err(|e| format!("--broker: {e}"))?;
        let failover = self
            .failover
            .iter()
            .map(|text| {
                let node = BrokerUrl::parse(text).map_err(|e| format!("--failover: {e}"))?;
                if node.tls != url.tls {
                    return Err(format!(
                        "--failover: \"{node}\" and --broker \"{url}\" differ in scheme: every node of the cluster is reached the same way"
                    ));
                }
                Ok(node)
            })
            .collect::<Result<Vec<_>, String>>()?;
        let protocol = match self.protocol.as_str() {
            "3.1.1" => Protocol::V311,
            "5" => Protocol::V5,
            other => {
                return Err(format!(
                    "--protocol: expected 3.1.1 or 5, found \"{other}\""
                ));
            }
        };
        let site = Some(self.site.as_str()).filter(|s| *s != "+");
        if let Some(site) = site {
            alertclip_wire::id::check(site).map_err(|e| format!("--site: {e}, or +"))?;
        }
        let layout = TopicLayout::new(&self.topic_prefix, site)
            .map_err(|e| format!("--topic-prefix: {e}"))?;
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let client_id = self
            .client_id
            .unwrap_or_else(|| format!("alertclip-receive-{}", hostname.trim()));
        let mut settings = Settings::new(url, client_id)
            .login(
                self.login.username.as_deref(),
                self.login.password_file.as_deref(),
            )
            .map_err(|e| format!("--password-file {e}"))?;
        settings.protocol = protocol;
        settings.failover = failover;
        settings.ca_file = self.login.ca;
        settings.client_auth = self.login.cert.zip(self.login.key);
        // Clips arrive in chunks of up to a few MiB; the receiver only publishes nothing.
        settings.max_incoming = 64 << 20;
        // What was received is acknowledged once it is stored, so that a receiver that dies
        // in between gets it again.
        settings.manual_acks = true;
        Ok(ReceiveOptions {
            settings,
            layout,
            out: self.out,
            json: self.json,
            keys: self.keys,
            trust_on_first_use: self.trust_on_first_use,
            sessions: Default::default(),
        })
    }
}

/// Runs `receive` until SIGTERM or SIGINT, printing each report to standard output. Exit
/// status: 0 after a signal, 1 when receiving failed, 2 for options that cannot be used.
pub async fn receive(args: ReceiveArgs) -> ExitCode {
    let options = match args.options() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("alertclip receive: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let cancel = CancellationToken::new();
    tokio::spawn(cancel_on_signal(cancel.clone(), "closing the session"));
    let json = options.json;
    let mut out = std::io::stdout();
    let print = move |report| receive::print(&mut out, &report, json);
    match receive::run(options, cancel, print).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("alertclip receive: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Cancels `cancel` on the first SIGTERM or SIGINT, saying it is `finishing` (what a clean
/// stop still does); a second signal exits at once. Both binaries stop this way.
pub async fn cancel_on_signal(cancel: CancellationToken, finishing: &'static str) {
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
            tracing::info!("signal received: {finishing} (signal again to exit at once)");
            cancel.cancel();
        } else {
            tracing::warn!("second signal: exiting now");
            std::process::exit(130);
        }
    }
}

/// Logs to standard error at `info` (`RUST_LOG` to change it), reports going to standard
/// output.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal: not into a log file or the journal.
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
