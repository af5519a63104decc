//! `desk.toml`: where the desk listens, which broker it reads, and where it keeps what it
//! receives. Relative paths are read from the config file's directory, so `init` can write
//! a self-contained directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use alertclip_officer::cli::{BrokerLogin, ReceiveArgs};
use alertclip_officer::receive::ReceiveOptions;
use alertclip_wire::topics::DEFAULT_PREFIX;
use serde::Deserialize;

use crate::db::Location;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The broker the stores' boxes publish to.
    pub mqtt: MqttConfig,
    /// The web console.
    pub http: HttpConfig,
    /// The database, media and keys.
    pub storage: StorageConfig,
    /// Several desks sharing one PostgreSQL database and one media directory.
    pub cluster: Option<ClusterConfig>,
}

/// One desk of several (docs/scale.md): they share `storage.database` (PostgreSQL) and
/// `storage.media`, and the broker hands each clip chunk and snapshot to one of them; the
/// one that leads (a PostgreSQL advisory lock) receives the alerts and sends the officers'
/// responses, and another takes over within seconds when it stops.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The cluster's name, the same on every desk of it: the broker session of the alerts,
    /// which passes from desk to desk, and the group of the media's shared subscription.
    pub name: String,
    /// This desk's own name among them. Default: the host name.
    pub instance: Option<String>,
    /// How the desks share the snapshots and clips: `"shared"` (the default), an MQTT 5
    /// shared subscription that hands each to one desk; `"leader"`, for brokers without
    /// shared subscriptions (NATS, RabbitMQ): the leading desk receives them too.
    #[serde(default)]
    pub media: MediaSharing,
}

/// [`ClusterConfig::media`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaSharing {
    /// An MQTT 5 shared subscription of every desk's.
    #[default]
    Shared,
    /// The leader's own subscription.
    Leader,
}

/// The broker, with the same options as `alertclip receive`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host[:port]` or `mqtts://host[:port]`.
    pub broker: String,
    /// Further nodes of the broker's cluster, tried in turn when the one connected to fails.
    #[serde(default)]
    pub failover: Vec<String>,
    /// `"3.1.1"` (the default) or `"5"`.
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// PEM certificate authorities for mqtts:// (default: the system's).
    pub ca: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with `key`).
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// User name for the broker.
    pub username: Option<String>,
    /// File holding the broker password (with `username`).
    pub password_file: Option<PathBuf>,
    /// Client id; the broker keeps messages for it while the desk is down. Default:
    /// `alertclip-desk-<hostname>`.
    pub client_id: Option<String>,
    /// The boxes' topic prefix, `{site}` standing for the site id. Default: the boxes' own.
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
}

/// The web console.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address and port to listen on. Default: `0.0.0.0:8443`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// PEM certificate chain served over HTTPS (`init` writes a self-signed one).
    pub certificate: PathBuf,
    /// PEM private key of `certificate`.
    pub key: PathBuf,
    /// A session unused this long ends. Default: `"30m"`.
    #[serde(default = "default_idle", with = "humantime_serde")]
    pub idle_timeout: Duration,
}

/// Where the desk keeps things.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Holds `desk.sqlite` (the database), `media/` (what the boxes sent, as received) and
    /// `keys/` (the enrolled stores' public keys).
    pub directory: PathBuf,
    /// Events older than this are deleted, with their media, unless under an evidence hold.
    /// Default: kept until deleted by hand.
    #[serde(default, with = "humantime_serde::option")]
    pub retention: Option<Duration>,
    /// The database: a `postgres://user@host:port/name` URL, for one PostgreSQL database that
    /// several desks share, or the path of an SQLite file. Default: `desk.sqlite` in
    /// `directory`.
    pub database: Option<String>,
    /// File holding the PostgreSQL user's password, so that it stays out of this file.
    /// Default: the URL's own, if it has one.
    pub database_password_file: Option<PathBuf>,
    /// Where received alerts, snapshots and clips are kept: for a cluster, a directory every
    /// desk of it mounts. Default: `media/` in `directory`.
    pub media: Option<PathBuf>,
}

fn default_protocol() -> String {
    "3.1.1".into()
}
fn default_prefix() -> String {
    DEFAULT_PREFIX.into()
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8443))
}
fn default_idle() -> Duration {
    Duration::from_secs(30 * 60)
}

/// A config that cannot be used, saying which file and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// The file.
    pub path: String,
    /// What is wrong, and where in it.
    pub message: String,
}

impl Config {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let error = |message: String| ConfigError {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| error(format!("{e} (alertclip-desk init writes one)")))?;
        let mut config: Config = toml::from_str(&text).map_err(|e| error(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve(base);
        config.receive_options().map_err(error)?;
        config.check_database().map_err(error)?;
        config.check_cluster().map_err(error)?;
        if config.http.idle_timeout < Duration::from_secs(60) {
            return Err(error(
                "http.idle_timeout: expected at least \"1m\"".to_owned(),
            ));
        }
        Ok(config)
    }

    fn resolve(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        join(&mut self.http.certificate);
        join(&mut self.http.key);
        join(&mut self.storage.directory);
        for p in [
            &mut self.storage.database_password_file,
            &mut self.storage.media,
        ]
        .into_iter()
        .flatten()
        {
            join(p);
        }
        if let Some(path) = &mut self.storage.database
            && !path.contains("://")
            && Path::new(path.as_str()).is_relative()
        {
            *path = base.join(&*path).display().to_string();
        }
        for p in [
            &mut self.mqtt.ca,
            &mut self.mqtt.cert,
            &mut self.mqtt.key,
            &mut self.mqtt.password_file,
        ]
        .into_iter()
        .flatten()
        {
            join(p);
        }
    }

    /// Where the database is: `storage.database`, or `desk.sqlite` in the storage directory.
    pub fn database(&self) -> Location {
        match &self.storage.database {
            Some(url) if url.contains("://") => Location::Postgres {
                url: url.clone(),
                password_file: self.storage.database_password_file.clone(),
            },
            Some(path) => Location::Sqlite(PathBuf::from(path)),
            None => Location::Sqlite(self.storage.directory.join("desk.sqlite")),
        }
    }

    fn check_database(&self) -> Result<(), String> {
        let storage = &self.storage;
        match storage.database.as_deref() {
            Some(url) if url.contains("://") => {
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    return Err(format!(
                        "storage.database: expected a postgres:// URL or the path of an SQLite file, not {}",
                        crate::db::Location::Postgres {
                            url: url.to_owned(),
                            password_file: None
                        }
                        .display()
                    ));
                }
                url.parse::<::postgres::Config>().map_err(|e| {
                    format!("storage.database: not a PostgreSQL URL the desk can read: {e}")
                })?;
            }
            _ if storage.database_password_file.is_some() => {
                return Err(
                    "storage.database_password_file: only for a postgres:// storage.database"
                        .into(),
                );
            }
            _ => {}
        }
        Ok(())
    }

    fn check_cluster(&self) -> Result<(), String> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        let named = |key: &str, value: &str| {
            alertclip_wire::id::check(value).map_err(|e| format!("cluster.{key}: {e}"))
        };
        named("name", &cluster.name)?;
        named("instance", &self.instance())?;
        if !matches!(self.database(), Location::Postgres { .. }) {
            return Err(
                "cluster: several desks share a PostgreSQL database: set storage.database to a postgres:// URL"
                    .into(),
            );
        }
        if self.mqtt.client_id.is_some() {
            return Err(
                "mqtt.client_id: a desk of a cluster takes its broker client ids from cluster.name and cluster.instance; remove it"
                    .into(),
            );
        }
        Ok(())
    }

    /// This desk's name within its cluster: `cluster.instance`, or the host name.
    fn instance(&self) -> String {
        self.cluster
            .as_ref()
            .and_then(|c| c.instance.clone())
            .unwrap_or_else(|| {
                let hostname =
                    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                hostname.trim().to_owned()
            })
    }

    /// Where received alerts, snapshots and clips are kept, as the receiver lays them out.
    pub fn media(&self) -> PathBuf {
        self.storage
            .media
            .clone()
            .unwrap_or_else(|| self.storage.directory.join("media"))
    }

    /// The desk's own signing key, for what it sends the boxes (created on first start).
    pub fn signing_key(&self) -> PathBuf {
        self.storage.directory.join("signing.key")
    }

    /// The name the desk signs its commands with: its broker client id (in a cluster,
    /// `<cluster.name>-<cluster.instance>`, that of its media session).
    pub fn desk_name(&self) -> String {
        if let Some(cluster) = &self.cluster {
            return format!("{}-{}", cluster.name, self.instance());
        }
        self.mqtt.client_id.clone().unwrap_or_else(|| {
            let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("alertclip-desk-{}", hostname.trim())
        })
    }

    /// The enrolled stores' public keys, one `<site>.pub` each: what the receiver trusts.
    pub fn keys(&self) -> PathBuf {
        self.storage.directory.join("keys")
    }

    /// The client id of the session that receives alerts and of the one that sends
    /// responses (with `-commands`): in a cluster, its name, passed from desk to desk with
    /// the lead, so that the broker keeps what arrives for it meanwhile.
    pub fn links_client_id(&self) -> String {
        match &self.cluster {
            Some(cluster) => cluster.name.clone(),
            None => self.desk_name(),
        }
    }

    /// The receiver's options, checked as `alertclip receive` checks its flags (the error
    /// names the key).
    pub fn receive_options(&self) -> Result<ReceiveOptions, String> {
        let mqtt = &self.mqtt;
        let args = ReceiveArgs {
            broker: mqtt.broker.clone(),
            failover: mqtt.failover.clone(),
            protocol: mqtt.protocol.clone(),
            login: BrokerLogin {
                ca: mqtt.ca.clone(),
                cert: mqtt.cert.clone(),
                key: mqtt.key.clone(),
                username: mqtt.username.clone(),
                password_file: mqtt.password_file.clone(),
            },
            client_id: Some(self.desk_name()),
            site: "+".into(),
            topic_prefix: mqtt.topic_prefix.clone(),
            out: self.media(),
            json: false,
            keys: Some(self.keys()),
            trust_on_first_use: false,
        };
        if mqtt.cert.is_some() != mqtt.key.is_some() {
            return Err("mqtt.cert and mqtt.key: expected both or neither".into());
        }
        if mqtt.password_file.is_some() && mqtt.username.is_none() {
            return Err("mqtt.password_file: needs mqtt.username".into());
        }
        args.options().map_err(|e| as_key(&e))
    }
}

/// A receiver's flag error (`--password-file x: ...`) as this file's key (`mqtt.password_file`).
fn as_key(error: &str) -> String {
    let Some(rest) = error.strip_prefix("--") else {
        return format!("mqtt: {error}");
    };
    let end = rest.find([':', ' ']).unwrap_or(rest.len());
    format!("mqtt.{}{}", rest[..end].replace('-', "_"), &rest[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(storage: &str) -> (tempfile::TempDir, Result<Config, ConfigError>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("desk.toml");
        std::fs::write(
            &path,
            format!(
                "[mqtt]\nbroker = \"mqtt://127.0.0.1:1883\"\n[http]\nlisten = \"127.0.0.1:8443\"\n\
                 certificate = \"c.pem\"\nkey = \"k.pem\"\n[storage]\ndirectory = \"data\"\n{storage}"
            ),
        )
        .unwrap();
        let config = Config::load(&path);
        (dir, config)
    }

    #[test]
    fn the_database_is_sqlite_by_default_or_where_storage_database_says() {
        let (dir, config) = load("");
        let expected = Location::Sqlite(dir.path().join("data/desk.sqlite"));
        assert_eq!(config.unwrap().database().display(), expected.display());

        let (dir, config) = load("database = \"elsewhere.sqlite\"\n");
        let expected = Location::Sqlite(dir.path().join("elsewhere.sqlite"));
        assert_eq!(config.unwrap().database().display(), expected.display());

        let (dir, config) = load(
            "database = \"postgres://desk:hunter2@db.example:5433/alertclip\"\n\
             database_password_file = \"db.password\"\n",
        );
        match config.unwrap().database() {
            Location::Postgres { url, password_file } => {
                assert_eq!(url, "postgres://desk:hunter2@db.example:5433/alertclip");
                assert_eq!(password_file, Some(dir.path().join("db.password")));
            }
            other => panic!("expected PostgreSQL, got {}", other.display()),
        }
    }

    #[test]
    fn a_database_the_desk_cannot_use_is_refused_naming_the_key_and_hiding_the_password() {
        let (_dir, config) = load("database = \"mysql://desk:hunter2@db.example/alertclip\"\n");
        let message = config.unwrap_err().to_string();
        assert!(
            message.contains("storage.database: expected a postgres:// URL"),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");

        let (_dir, config) = load("database = \"postgres://desk@db.example:notaport/x\"\n");
        let message = config.unwrap_err().to_string();
        assert!(
            message.contains("storage.database: not a PostgreSQL URL"),
            "{message}"
        );

        let (_dir, config) = load("database_password_file = \"db.password\"\n");
        let message = config.unwrap_err().to_string();
        assert!(
            message.contains("storage.database_password_file: only for a postgres://"),
            "{message}"
        );
    }

    #[test]
    fn a_cluster_names_its_desks_from_its_name_and_instance_and_shares_the_media() {
        let (_dir, config) = load(
            "database = \"postgres://desk@db.example/alertclip\"\nmedia = \"/srv/media\"\n\
             [cluster]\nname = \"precinct-7\"\ninstance = \"desk-a\"\n",
        );
        let config = config.unwrap();
        assert_eq!(config.desk_name(), "precinct-7-desk-a");
        assert_eq!(config.links_client_id(), "precinct-7");
        assert_eq!(config.media(), PathBuf::from("/srv/media"));
    }

    #[test]
    fn a_cluster_it_cannot_run_is_refused_naming_the_key() {
        let cluster = "[cluster]\nname = \"precinct-7\"\ninstance = \"desk-a\"\n";
        let (_dir, config) = load(cluster);
        let message = config.unwrap_err().to_string();
        assert!(
            message.contains("cluster: several desks share a PostgreSQL database"),
            "{message}"
        );

        let postgres = "database = \"postgres://desk@db.example/alertclip\"\n";
        let (_dir, config) = load(&format!("{postgres}[cluster]\nname = \"precinct 7\"\n"));
        let message = config.unwrap_err().to_string();
        assert!(message.contains("cluster.name: "), "{message}");

        let (_dir, config) = load(&format!(
            "{postgres}[cluster]\nname = \"p\"\ninstance = \"a/b\"\n"
        ));
        let message = config.unwrap_err().to_string();
        assert!(message.contains("cluster.instance: "), "{message}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("desk.toml");
        std::fs::write(
            &path,
            format!(
                "[mqtt]\nbroker = \"mqtt://127.0.0.1:1883\"\nclient_id = \"mine\"\n[http]\n\
                 listen = \"127.0.0.1:8443\"\ncertificate = \"c.pem\"\nkey = \"k.pem\"\n\
                 [storage]\ndirectory = \"data\"\n{postgres}{cluster}"
            ),
        )
        .unwrap();
        let message = Config::load(&path).unwrap_err().to_string();
        assert!(
            message.contains("mqtt.client_id: a desk of a cluster takes its broker client ids"),
            "{message}"
        );
    }
}
