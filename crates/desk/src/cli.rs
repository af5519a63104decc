//! The command line: `init` (a config, the database, a certificate and the first admin),
//! `serve`, and the few things an admin does from a shell (accounts, stores, the audit log).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::accounts::{self, Role};
use crate::config::Config;
use crate::db::Db;
use crate::sites::{self, Site};
use crate::{Desk, audit, tls};

/// The desk's commands.
#[derive(clap::Parser, Debug)]
#[command(
    name = "alertclip-desk",
    version,
    about = "The precinct's alertclip desk: a web console for store alerts"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Writes a config, creates the database, a TLS certificate and the first admin account,
    /// and prints the console's URL.
    Init(InitArgs),
    /// Receives and serves the console until SIGTERM or SIGINT.
    Serve {
        /// The config `init` wrote.
        #[arg(long, default_value = "/etc/alertclip-desk/desk.toml")]
        config: PathBuf,
    },
    /// Accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Enrolled stores.
    #[command(subcommand)]
    Site(SiteCommand),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Prints the desk's public signing key, for the boxes' `[desk] keys`, and its
    /// fingerprint (the key is created if it does not exist yet).
    Key {
        #[arg(long, default_value = "/etc/alertclip-desk/desk.toml")]
        config: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
struct InitArgs {
    /// Directory for the config, database, media and certificate.
    #[arg(long, default_value = "/var/lib/alertclip-desk")]
    dir: PathBuf,
    /// Where the config is written. Default: <dir>/desk.toml.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The broker the boxes publish to.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    broker: String,
    /// Address and port the console listens on.
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: String,
    /// Names the console is reached by, for the self-signed certificate (repeatable).
    /// Default: localhost, 127.0.0.1 and this machine's hostname.
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// The first admin's login name.
    #[arg(long, default_value = "admin")]
    admin: String,
    /// File holding the admin's password. Default: one is generated and printed once.
    #[arg(long)]
    password_file: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
enum UserCommand {
    /// Adds an account.
    Add {
        #[arg(long, default_value = "/etc/alertclip-desk/desk.toml")]
        config: PathBuf,
        /// Login name.
        #[arg(long)]
        name: String,
        /// officer, supervisor or admin.
        #[arg(long, default_value = "officer")]
        role: String,
        /// File holding the password. Default: one is generated and printed once.
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
}

#[derive(clap::Subcommand, Debug)]
enum SiteCommand {
    /// Enrols a store with its box's public key (`alertclip key show` on the box).
    Add {
        #[arg(long, default_value = "/etc/alertclip-desk/desk.toml")]
        config: PathBuf,
        /// The box's site.id.
        #[arg(long)]
        id: String,
        /// The store's name.
        #[arg(long)]
        name: String,
        /// File holding the box's PEM public key.
        #[arg(long)]
        key: PathBuf,
        /// Street address.
        #[arg(long)]
        address: Option<String>,
        /// Latitude, degrees.
        #[arg(long)]
        latitude: Option<f64>,
        /// Longitude, degrees.
        #[arg(long)]
        longitude: Option<f64>,
        /// Whom to call.
        #[arg(long)]
        phone: Option<String>,
    },
}

#[derive(clap::Subcommand, Debug)]
enum AuditCommand {
    /// Checks that no row of the audit log was changed or deleted.
    Verify {
        #[arg(long, default_value = "/etc/alertclip-desk/desk.toml")]
        config: PathBuf,
    },
}

/// Runs a parsed command line. Exit status: 0 done, 1 failed, 2 unusable input.
pub async fn run(cli: Cli) -> ExitCode {
    let name = match &cli.command {
        Command::Init(_) => "init",
        Command::Serve { .. } => "serve",
        Command::User(_) => "user",
        Command::Site(_) => "site",
        Command::Audit(_) => "audit",
        Command::Key { .. } => "key",
    };
    match dispatch(cli.command).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("alertclip-desk {name}: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(config: &Path) -> Result<Config, ExitCode> {
    Config::load(config).map_err(|error| {
        eprintln!("alertclip-desk: {error}");
        ExitCode::from(2)
    })
}

/// A password from `file`, or a new one (returned to print).
fn password(file: Option<&Path>) -> anyhow::Result<(String, bool)> {
    match file {
        Some(file) => {
            let password = alertclip_mqtt::read_secret(file)?;
            accounts::check_password(&password)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            Ok((password, false))
        }
        None => Ok((accounts::token()[..24].to_owned(), true)),
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Init(args) => init(args).await,
        Command::Key { config } => {
            let config = match load(&config) {
                Ok(config) => config,
                Err(code) => return Ok(code),
            };
            std::fs::create_dir_all(&config.storage.directory)
                .map_err(|e| anyhow::anyhow!("{}: {e}", config.storage.directory.display()))?;
            let signer = crate::respond::Signer::load_or_create(
                &config.signing_key(),
                &config.desk_name(),
                &config.mqtt.topic_prefix,
            )?;
            print!("{}", signer.public_pem());
            println!("fingerprint {}", signer.fingerprint());
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { config } => {
            let config = match load(&config) {
                Ok(config) => config,
                Err(code) => return Ok(code),
            };
            let desk = Desk::start(config).await?;
            let cancel = CancellationToken::new();
            tokio::spawn(alertclip_officer::cli::cancel_on_signal(
                cancel.clone(),
                "finishing requests",
            ));
            desk.run_until(cancel).await;
            Ok(ExitCode::SUCCESS)
        }
        Command::User(UserCommand::Add {
            config,
            name,
            role,
            password_file,
        }) => {
            let config = match load(&config) {
                Ok(config) => config,
                Err(code) => return Ok(code),
            };
            let role = Role::parse(&role).map_err(|e| anyhow::anyhow!("--role: {e}"))?;
            accounts::check_name(&name).map_err(|e| anyhow::anyhow!("--name {e}"))?;
            let (password, generated) = password(password_file.as_deref())?;
            let hash = accounts::hash_password(&password).map_err(anyhow::Error::msg)?;
            let db = Db::open(config.database())?;
            let login = name.clone();
            db.call_blocking(move |c| accounts::add_user(c, &login, role, &hash))
                .with_context(|| format!("--name {name}: the name may be taken"))?;
            println!("added {name} ({})", role.as_str());
            if generated {
                println!("password: {password}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Site(SiteCommand::Add {
            config,
            id,
            name,
            key,
            address,
            latitude,
            longitude,
            phone,
        }) => {
            let config = match load(&config) {
                Ok(config) => config,
                Err(code) => return Ok(code),
            };
            let public_key = std::fs::read_to_string(&key)
                .with_context(|| format!("--key {}", key.display()))?;
            let site = Site {
                id,
                name,
                address,
                latitude,
                longitude,
                phone,
                public_key,
            };
            let db = Db::open(config.database())?;
            let keys = config.keys();
            let enrolled = site.clone();
            let cluster = config.cluster.is_some();
            db.call_blocking(move |c| {
                c.transaction(|tx| {
                    let result = sites::enrol(tx, &keys, &enrolled);
                    if result.is_ok() {
                        // The desks of a cluster running now receive again with the key.
                        if cluster {
                            crate::cluster::announce(tx, &crate::cluster::registry_changed())?;
                        }
                        audit::record(
                            tx,
                            &audit::Entry {
                                user: None,
                                action: "enrol",
                                target: Some(&enrolled.id),
                                client: Some("command line"),
                            },
                        )?;
                    }
                    Ok(result)
                })
            })??;
            println!(
                "enrolled {} ({}), key fingerprint {}; {}",
                site.name,
                site.id,
                site.fingerprint().unwrap_or_default(),
                if cluster {
                    "the cluster's running desks trust it now"
                } else {
                    "a running desk trusts it once restarted"
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(AuditCommand::Verify { config }) => {
            let config = match load(&config) {
                Ok(config) => config,
                Err(code) => return Ok(code),
            };
            let db = Db::open(config.database())?;
            match db.call_blocking(|c| audit::verify(c))? {
                Ok(rows) => {
                    println!("audit log intact: {rows} rows");
                    Ok(ExitCode::SUCCESS)
                }
                Err(broken) => {
                    println!("audit log BROKEN: {broken}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

async fn init(args: InitArgs) -> anyhow::Result<ExitCode> {
    let dir = &args.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("--dir {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let config_path = args.config.clone().unwrap_or_else(|| dir.join("desk.toml"));
    if config_path.exists() {
        eprintln!(
            "alertclip-desk init: {} exists: remove it first, or edit it",
            config_path.display()
        );
        return Ok(ExitCode::from(2));
    }
    let listen: std::net::SocketAddr = args.listen.parse().map_err(|_| {
        anyhow::anyhow!("--listen: expected address:port, found \"{}\"", args.listen)
    })?;
    let (cert, key) = (dir.join("tls/desk.crt"), dir.join("tls/desk.key"));
    std::fs::create_dir_all(dir.join("tls"))?;
    let mut hosts = args.hosts.clone();
    if hosts.is_empty() {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        hosts = vec!["localhost".into(), "127.0.0.1".into()];
        if !hostname.trim().is_empty() {
            hosts.push(hostname.trim().to_owned());
        }
    }
    tls::write_self_signed(&hosts, &cert, &key)?;
    let toml = format!(
        "# alertclip desk (docs/desk.md). Relative paths are read from this file's directory.\n\n\
         [mqtt]\nbroker = {broker}\n\
         # The other nodes of a broker cluster, tried in turn when this one fails:\n\
         # failover = [\"mqtts://node2.example:8883\", \"mqtts://node3.example:8883\"]\n\n\
         [http]\nlisten = \"{listen}\"\ncertificate = {cert}\nkey = {key}\nidle_timeout = \"30m\"\n\n\
         [storage]\ndirectory = {dir}\n# retention = \"90d\"\n\
         # PostgreSQL rather than directory/desk.sqlite, for several desks (docs/desk.md):\n\
         # database = \"postgres://desk@db.example/alertclip\"\n\
         # database_password_file = \"/etc/alertclip-desk/db.password\"\n\
         # media = \"/srv/alertclip/media\"   # a directory every desk of a cluster mounts\n\n\
         # Several desks sharing the database and the media (docs/desk.md, docs/scale.md):\n\
         # [cluster]\n# name = \"precinct-7\"\n# instance = \"desk-a\"\n\
         # media = \"leader\"   # on brokers without shared subscriptions (NATS)\n",
        broker = toml_string(&args.broker),
        cert = toml_string(&cert.display().to_string()),
        key = toml_string(&key.display().to_string()),
        dir = toml_string(&dir.display().to_string()),
    );
    if let Some(parent) = config_path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&config_path, toml).with_context(|| format!("{}", config_path.display()))?;
    let config = match load(&config_path) {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    let (password, generated) = password(args.password_file.as_deref())?;
    let hash = accounts::hash_password(&password).map_err(anyhow::Error::msg)?;
    let db = Db::open(config.database())?;
    let admin = args.admin.clone();
    db.call_blocking(move |c| accounts::add_user(c, &admin, Role::Admin, &hash))?;
    let host = hosts
        .iter()
        .find(|h| *h != "localhost" && *h != "127.0.0.1")
        .unwrap_or(&hosts[0]);
    println!("config: {}", config_path.display());
    println!("database: {}", config.database().display());
    println!(
        "certificate: {} (self-signed for {})",
        cert.display(),
        hosts.join(", ")
    );
    let signer = crate::respond::Signer::load_or_create(
        &config.signing_key(),
        &config.desk_name(),
        &config.mqtt.topic_prefix,
    )?;
    println!(
        "signing key: {} ({}; `alertclip-desk key` prints it for the boxes' [desk] keys)",
        config.signing_key().display(),
        signer.fingerprint()
    );
    println!("admin: {}", args.admin);
    if generated {
        println!(
            "password: {password}   (shown once: keep it, or add another admin with `alertclip-desk user add`)"
        );
    }
    println!(
        "start it: alertclip-desk serve --config {}",
        config_path.display()
    );
    println!("url: https://{host}:{}/", listen.port());
    Ok(ExitCode::SUCCESS)
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}
