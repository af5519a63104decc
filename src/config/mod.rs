//! The configuration file: its serde structs, their defaults, human units and validation.
//!
//! Every error names the file, the key path and what was expected, because the person reading
//! it is a technician on an SSH session with the file open in an editor.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

pub mod detect;
pub mod schedule;

pub use alertclip_mqtt::{BrokerUrl, Protocol};

/// Where the daemon and the CLI look for the configuration when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/alertclip/alertclip.toml";

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The store this box watches. Required.
    pub site: Site,
    /// The cameras to buffer, as `[[camera]]` tables. At least one is required.
    #[serde(rename = "camera", default)]
    pub cameras: Vec<Camera>,
    /// Memory limits of the pre-roll ring.
    #[serde(default)]
    pub buffer: Buffer,
    /// Where finished clips are written.
    #[serde(default)]
    pub storage: Storage,
    /// The local control socket used by `alertclip trigger`.
    #[serde(default)]
    pub control: Control,
    /// Delivery to the officer alert channel. Without it, clips are only written locally.
    #[serde(default)]
    pub mqtt: Option<Mqtt>,
    /// The durable spool of messages waiting for the broker.
    #[serde(default)]
    pub outbox: Outbox,
    /// The device's signing key and alert chain.
    #[serde(default)]
    pub evidence: Evidence,
    /// Panic buttons, as `[[button]]` tables (docs/buttons.md).
    #[serde(rename = "button", default)]
    pub buttons: Vec<Button>,
    /// A light or buzzer for the whole box that shows whether help was called.
    #[serde(default)]
    pub feedback: Option<Light>,
    /// The officer desks whose responses this box takes (docs/responses.md). Needs `[mqtt]`.
    #[serde(default)]
    pub desk: Option<Desk>,
    /// A buzzer that chirps when an officer acknowledges an alert (docs/buttons.md). Needs
    /// `[desk]`.
    #[serde(default)]
    pub buzzer: Option<Buzzer>,
    /// The detector's runtime and model, shared by every camera with a `[camera.detect]`
    /// table (docs/detection.md).
    #[serde(default)]
    pub detect: detect::Detect,
    /// What the daemon logs.
    #[serde(default)]
    pub log: Log,
}

/// `[log]`: what the daemon logs, and how much.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// `RUST_LOG`-style directives: a level (`"error"`, `"warn"`, `"info"`, `"debug"`,
    /// `"trace"`), optionally followed by per-module ones such as
    /// `"info,alertclip::detect=debug"`. The `RUST_LOG` environment variable wins. Default:
    /// `"info"`.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: default_log_level(),
        }
    }
}

fn default_log_level() -> String {
    "info".to_owned()
}

/// One `[[button]]` table: a panic button, and optionally a light beside it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Button {
    /// Letters, digits, '-', '_' or '.'; unique among buttons. The trigger's source. Required.
    pub id: String,
    /// `"gpio"` (a contact on the box's GPIO header), `"evdev"` (a USB button that presents as a
    /// keyboard) or `"mqtt"` (a wireless button bridged to MQTT, such as Zigbee2MQTT). Required.
    pub kind: ButtonKind,
    /// Where it is, for officers: "register 2". Default: none.
    #[serde(default)]
    pub location: Option<String>,
    /// Cameras a press clips. Default: all.
    #[serde(default)]
    pub cameras: Vec<String>,
    /// A press counts only once held this long: fewer accidental alerts, a slower alert.
    /// Default: `"0s"` (at once).
    #[serde(default = "default_hold")]
    pub hold: HumanDuration,
    /// A button held this long is reported as stuck and not fired again until released.
    /// Default: `"60s"`.
    #[serde(default = "default_stuck_after")]
    pub stuck_after: HumanDuration,
    /// gpio and evdev: a level change counts once it has held this long. Default: `"30ms"`.
    #[serde(default = "default_debounce")]
    pub debounce: HumanDuration,
    /// gpio: the chip: a path (`/dev/gpiochip0`), a name (`gpiochip0`) or a label
    /// (`pinctrl-bcm2711`). Default: the chip that has the named `line`.
    #[serde(default)]
    pub chip: Option<String>,
    /// gpio: the line: an offset (`17`) or a name (`"GPIO17"`). Required for gpio.
    #[serde(default)]
    pub line: Option<LineSpec>,
    /// gpio: `"pull-up"`, `"pull-down"` or `"disabled"`. Default: `"pull-up"` (a button to
    /// ground).
    #[serde(default)]
    pub bias: Bias,
    /// gpio: the line is active when low (a button to ground with a pull-up). Default: `true`.
    #[serde(default = "yes")]
    pub active_low: bool,
    /// evdev: the input device, best a stable `/dev/input/by-id/...` name. Required for evdev.
    #[serde(default)]
    pub device: Option<PathBuf>,
    /// evdev: the key the button sends, such as `"KEY_F12"`. Required for evdev.
    #[serde(default)]
    pub key: Option<String>,
    /// evdev: take the device exclusively, so the key does not type into anything else.
    /// Default: `true`.
    #[serde(default = "yes")]
    pub grab: bool,
    /// mqtt: the topic the button's bridge publishes on, such as
    /// `"zigbee2mqtt/panic-button-1"`. Required for mqtt.
    #[serde(default)]
    pub topic: Option<String>,
    /// mqtt: JSON fields a message must have to count as a press, such as
    /// `{ action = "single" }`. Default: none (every message is a press).
    #[serde(default, rename = "match")]
    pub match_fields: serde_json::Map<String, serde_json::Value>,
    /// mqtt: the bridge's broker, when not the delivery broker of `[mqtt]`. Default: `[mqtt]`'s.
    #[serde(default)]
    pub broker: Option<BrokerUrl>,
    /// mqtt: user name for `broker`. Default: none.
    #[serde(default)]
    pub username: Option<String>,
    /// mqtt: file holding the password for `broker`. Default: none.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// A light or buzzer beside this button. Default: none.
    #[serde(default)]
    pub feedback: Option<Light>,
}

/// How a button reaches the box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ButtonKind {
    /// A GPIO line.
    Gpio,
    /// A key of an input device.
    Evdev,
    /// Messages on an MQTT topic.
    Mqtt,
}

/// A GPIO line: its offset on the chip, or its name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum LineSpec {
    /// Offset on the chip.
    Offset(u32),
    /// Name, such as `GPIO17`.
    Name(String),
}

impl fmt::Display for LineSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineSpec::Offset(offset) => write!(f, "line {offset}"),
            LineSpec::Name(name) => f.write_str(name),
        }
    }
}

/// A GPIO input's bias.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bias {
    /// Pulled up: the button connects the line to ground.
    #[default]
    PullUp,
    /// Pulled down: the button connects the line to 3.3 V.
    PullDown,
    /// No bias: the circuit provides one.
    Disabled,
}

/// A light (or buzzer) on a GPIO line that shows whether help was called: slow blink while the
/// alert waits for the broker, steady for `confirm_for` once the broker has it, fast blink while
/// delivery fails.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Light {
    /// The chip, as for a button. Default: the chip that has the named `line`.
    #[serde(default)]
    pub chip: Option<String>,
    /// The line: an offset or a name. Required.
    pub line: LineSpec,
    /// The light is on when the line is low. Default: `false`.
    #[serde(default)]
    pub active_low: bool,
    /// How long the light stays on once the broker has the alert. Default: `"10s"`.
    #[serde(default = "default_confirm_for")]
    pub confirm_for: HumanDuration,
}

/// `[desk]`: the officer desks whose responses to alerts this box takes, and shows staff on
/// its lights (docs/responses.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Desk {
    /// The desks' public keys, each as `alertclip-desk key` prints it (PEM, in a `'''`
    /// multi-line string) or as its 32 bytes in base64. A response signed by any other key
    /// is refused. Required: at least one.
    pub keys: Vec<String>,
    /// A response issued longer ago than this is refused: a replay, or a desk whose clock is
    /// wrong. Default: `"10m"`.
    #[serde(default = "default_max_age")]
    pub max_age: HumanDuration,
    /// How long a light shows a response (acknowledged, help on the way), and how long it
    /// stays on waiting for one once the broker has the alert. Default: `"30m"`.
    #[serde(default = "default_show_for")]
    pub show_for: HumanDuration,
    /// Footage requests taken in any hour; more are refused. Default: `12`.
    #[serde(default = "default_requests_per_hour")]
    pub requests_per_hour: u32,
}

impl Desk {
    /// The keys, read; the error names the entry and what was expected.
    pub fn verifying_keys(
        &self,
    ) -> Result<Vec<alertclip_wire::signature::VerifyingKey>, (String, String)> {
        if self.keys.is_empty() {
            return Err((
                "desk.keys".into(),
                "expected at least one desk public key (alertclip-desk key prints it)".into(),
            ));
        }
        self.keys
            .iter()
            .enumerate()
            .map(|(i, text)| {
                alertclip_wire::signature::parse_public_key(text).ok_or_else(|| {
                    (
                        format!("desk.keys[{i}]"),
                        "expected an Ed25519 public key: PEM as `alertclip-desk key` prints it, or 32 bytes in base64".into(),
                    )
                })
            })
            .collect()
    }
}

/// `[buzzer]`: a buzzer on a GPIO line that chirps twice when an officer acknowledges an
/// alert, so that staff hear that a person saw it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Buzzer {
    /// The chip, as for a button. Default: the chip that has the named `line`.
    #[serde(default)]
    pub chip: Option<String>,
    /// The line: an offset or a name. Required.
    pub line: LineSpec,
    /// The buzzer sounds when the line is low. Default: `false`.
    #[serde(default)]
    pub active_low: bool,
}

/// `[evidence]`: where the device's signing key lives (docs/evidence.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// Directory of the device key (`device.key`, created on first start, mode 0600), its
    /// public half (`device.pub`) and the alert chain (`chain.json`). Back it up: a new key
    /// must be registered with the precinct again. Default: `"/var/lib/alertclip/evidence"`.
    #[serde(default = "default_evidence_dir")]
    pub dir: PathBuf,
}

impl Default for Evidence {
    fn default() -> Self {
        Evidence {
            dir: default_evidence_dir(),
        }
    }
}

fn default_evidence_dir() -> PathBuf {
    PathBuf::from("/var/lib/alertclip/evidence")
}

/// `[mqtt]`: the broker alerts, snapshots and clips are delivered through.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mqtt {
    /// `mqtt://host:port` (port 1883 by default) or `mqtts://host:port` (TLS, port 8883 by
    /// default). Required.
    pub url: BrokerUrl,
    /// Further nodes of a broker cluster, tried in turn when the one connected to fails
    /// (docs/scale.md), with the same scheme as `url`. Default: none.
    #[serde(default)]
    pub failover: Vec<BrokerUrl>,
    /// MQTT protocol version: `"3.1.1"` or `"5"`. Default: `"3.1.1"`.
    #[serde(default)]
    pub protocol: Protocol,
    /// PEM file of the certificate authorities to trust for `mqtts://`. Default: the system's
    /// (`/etc/ssl/certs/ca-certificates.crt`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS. Default: none.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`. Default: none.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// User name for the broker. Default: none.
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the broker password. Default: none.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// MQTT client id; the broker keeps the session under it. Default: the site id.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Keep-alive interval. Default: `"30s"`.
    #[serde(default = "default_keepalive")]
    pub keepalive: HumanDuration,
    /// Prefix of every topic, where `{site}` stands for `site.id` (as one whole level). Default:
    /// `"alertclip/v1/{site}"`, so one broker ACL line per device confines it to its own
    /// prefix; the officer side reads the same template (`alertclip receive --topic-prefix`).
    #[serde(default)]
    pub topic_prefix: Option<String>,
    /// Largest payload published: clips go out in chunks of this size, and snapshots are
    /// scaled to fit. Default: `"100KiB"`, under AWS IoT Core's 128 KB limit.
    #[serde(default = "default_chunk_size")]
    pub chunk_size: ByteSize,
    /// How often the retained status is republished, besides on every change.
    /// Default: `"60s"`.
    #[serde(default = "default_status_interval")]
    pub status_interval: HumanDuration,
}

/// `[outbox]`: the durable spool of messages waiting for the broker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outbox {
    /// Directory of the spool. Default: `"/var/lib/alertclip/outbox"`.
    #[serde(default = "default_outbox_dir")]
    pub dir: PathBuf,
    /// Most the spool may hold. When full, clips of the oldest detection events are dropped
    /// first, then the oldest panic clips; alerts are never dropped. Default: `"1GiB"`.
    #[serde(default = "default_outbox_max_bytes")]
    pub max_bytes: ByteSize,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox {
            dir: default_outbox_dir(),
            max_bytes: default_outbox_max_bytes(),
        }
    }
}

impl Mqtt {
    /// The topic prefix in force.
    pub fn prefix(&self, site: &Site) -> String {
        let template = self
            .topic_prefix
            .as_deref()
            .unwrap_or(alertclip_wire::topics::DEFAULT_PREFIX);
        alertclip_wire::topics::prefix_of(template, &site.id)
    }

    /// The client id in force.
    pub fn client_id(&self, site: &Site) -> String {
        self.client_id.clone().unwrap_or_else(|| site.id.clone())
    }
}

/// `[site]`: the store's identity, carried in every clip's metadata.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// A short stable identifier (letters, digits, `-`, `_`, `.`). Required.
    pub id: String,
    /// A human-readable name for officers, such as "Corner Market". Required.
    pub name: String,
    /// The street address officers are sent to, carried in every alert. Default: none.
    #[serde(default)]
    pub address: Option<String>,
    /// The store's time zone, as an IANA name such as `"America/Chicago"`, for detection
    /// schedules. Default: the box's own (`/etc/localtime`).
    #[serde(default)]
    pub timezone: Option<String>,
}

/// One `[[camera]]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Camera {
    /// A short stable identifier (letters, digits, `-`, `_`, `.`), unique on this box. Required.
    pub id: String,
    /// `rtsp://` or `rtsps://` URL of the camera's stream. Credentials may be embedded
    /// (`rtsp://user:pass@host/...`) or given with `username` and `password_file`. Required.
    pub url: SecretUrl,
    /// User name for the camera, when it is not in the URL. Default: none.
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the camera's password (trailing newline ignored). Default: none.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// RTP transport: `"tcp"` (interleaved in the RTSP connection, robust through NAT and
    /// lossy Wi-Fi) or `"udp"`. Default: `"tcp"`.
    #[serde(default)]
    pub transport: Transport,
    /// Which RTSP client reads the camera: `"retina"` (a Rust client, a quarter of the CPU,
    /// built for the quirks of IP cameras) or `"gstreamer"` (GStreamer's rtspsrc, the
    /// fallback for a camera retina cannot read, and the only one for `rtsps://`).
    /// Default: `"retina"`, or `"gstreamer"` for an `rtsps://` URL.
    #[serde(default)]
    pub ingest: Option<IngestClient>,
    /// How much video before a trigger a clip holds. Default: `"30s"` (staff usually press
    /// after the theft has begun).
    #[serde(default = "default_pre_roll")]
    pub pre_roll: HumanDuration,
    /// How much video after a trigger a clip holds. Default: `"10s"`.
    #[serde(default = "default_post_roll")]
    pub post_roll: HumanDuration,
    /// A camera that sends no frame for this long is torn down and reconnected. Default: `"5s"`.
    #[serde(default = "default_stall_timeout")]
    pub stall_timeout: HumanDuration,
    /// Watch this camera with the detector. Default: not watched.
    #[serde(default)]
    pub detect: Option<detect::CameraDetect>,
}

/// The RTSP client that reads a camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IngestClient {
    /// The `retina` crate: one tokio task per camera, frames handed over without a copy.
    Retina,
    /// GStreamer's `rtspsrc`, with its jitter buffer; also reads `rtsps://`.
    Gstreamer,
}

impl Camera {
    /// The client that reads this camera: the configured one, else retina, or rtspsrc for
    /// `rtsps://` (retina has no TLS).
    pub fn ingest_client(&self) -> IngestClient {
        match self.ingest {
            Some(client) => client,
            None if self.url.is_tls() => IngestClient::Gstreamer,
            None => IngestClient::Retina,
        }
    }
}

/// RTP transport for a camera.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// RTP interleaved in the RTSP TCP connection.
    #[default]
    Tcp,
    /// RTP over UDP.
    Udp,
}

/// `[buffer]`: memory limits of the pre-roll ring.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Buffer {
    /// Hard cap on encoded bytes held per camera. Default: one MiB per second of
    /// `pre_roll + 10s` (room for an 8 Mbit/s stream), so `"40MiB"` for a 30 s pre-roll.
    #[serde(default)]
    pub max_bytes_per_camera: Option<ByteSize>,
}

/// `[storage]`: where finished clips go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    /// Directory for finished clips, one sub-directory per event.
    /// Default: `"/var/lib/alertclip/clips"`.
    #[serde(default = "default_storage_dir")]
    pub dir: PathBuf,
    /// Once clips take more than this, the oldest events' clips are deleted. Default: `"2GiB"`.
    #[serde(default = "default_storage_max_bytes")]
    pub max_bytes: ByteSize,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            dir: default_storage_dir(),
            max_bytes: default_storage_max_bytes(),
        }
    }
}

/// `[control]`: the local control socket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Control {
    /// Path of the Unix socket (mode 0660). Default: `"/run/alertclip/control.sock"`.
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            socket: default_socket(),
        }
    }
}

fn default_pre_roll() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_post_roll() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_stall_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn default_storage_dir() -> PathBuf {
    PathBuf::from("/var/lib/alertclip/clips")
}
fn default_storage_max_bytes() -> ByteSize {
    ByteSize(2 << 30)
}
fn default_socket() -> PathBuf {
    PathBuf::from("/run/alertclip/control.sock")
}
fn default_hold() -> HumanDuration {
    HumanDuration(Duration::ZERO)
}
fn default_stuck_after() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_debounce() -> HumanDuration {
    HumanDuration(Duration::from_millis(30))
}
fn default_confirm_for() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_max_age() -> HumanDuration {
    HumanDuration(Duration::from_secs(10 * 60))
}
fn default_show_for() -> HumanDuration {
    HumanDuration(Duration::from_secs(30 * 60))
}
fn default_requests_per_hour() -> u32 {
    12
}
fn yes() -> bool {
    true
}
fn default_keepalive() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_chunk_size() -> ByteSize {
    ByteSize(100 << 10)
}
fn default_status_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_outbox_dir() -> PathBuf {
    PathBuf::from("/var/lib/alertclip/outbox")
}
fn default_outbox_max_bytes() -> ByteSize {
    ByteSize(1 << 30)
}

/// A configuration that could not be used, with everything needed to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The configuration file.
        file: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{file}:{line}: {message}")]
    Syntax {
        /// The configuration file.
        file: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// What the TOML parser said.
        message: String,
    },
    /// A key has a value that cannot be used.
    #[error("{file}: {key}: {message}{}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Invalid {
        /// The configuration file.
        file: PathBuf,
        /// Dotted key path, such as `camera[1].pre_roll`.
        key: String,
        /// 1-based line, when known.
        line: Option<usize>,
        /// What was expected and what was found.
        message: String,
    },
}

impl Config {
    /// Reads, parses and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates configuration text; `file` is only used in error messages.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let deserializer = toml::Deserializer::parse(text).map_err(|e| ConfigError::Syntax {
            file: file.to_owned(),
            line: e.span().map(|s| line_of(s.start)).unwrap_or(1),
            message: e.message().to_owned(),
        })?;
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            ConfigError::Invalid {
                file: file.to_owned(),
                key: if key == "." {
                    "(top level)".to_owned()
                } else {
                    key
                },
                line: inner.span().map(|s| line_of(s.start)),
                message: inner.message().to_owned(),
            }
        })?;
        config
            .validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                file: file.to_owned(),
                key,
                line: None,
                message,
            })?;
        Ok(config)
    }

    /// Checks what serde cannot: identifiers, URLs, uniqueness, and that values make sense
    /// together. Returns the key path and the message of the first problem.
    fn validate(&self) -> Result<(), (String, String)> {
        check_id(&self.site.id).map_err(|m| ("site.id".to_owned(), m))?;
        if self.site.name.trim().is_empty() {
            return Err((
                "site.name".into(),
                "must not be empty: officers see this name".into(),
            ));
        }
        check_text(&self.site.name, MAX_NAME).map_err(|m| ("site.name".to_owned(), m))?;
        if let Some(address) = &self.site.address {
            check_text(address, MAX_ADDRESS).map_err(|m| ("site.address".to_owned(), m))?;
        }
        if self.control.socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err((
                "control.socket".into(),
                format!(
                    "expected a path of at most {MAX_SOCKET_PATH} bytes (the limit of a Unix socket's name), found {}",
                    self.control.socket.as_os_str().len()
                ),
            ));
        }
        if self.cameras.is_empty() {
            return Err((
                "camera".into(),
                "no camera configured: add a [[camera]] table with an id and a url".into(),
            ));
        }
        for (i, camera) in self.cameras.iter().enumerate() {
            let key = |k: &str| format!("camera[{i}].{k}");
            check_id(&camera.id).map_err(|m| (key("id"), m))?;
            if let Some(j) = self.cameras[..i].iter().position(|c| c.id == camera.id) {
                return Err((
                    key("id"),
                    format!("duplicate camera id \"{}\" (also camera[{j}])", camera.id),
                ));
            }
            if camera.username.is_some() && camera.url.has_credentials() {
                return Err((
                    key("username"),
                    "the url already holds credentials: give them in one place only".into(),
                ));
            }
            if camera.password_file.is_some() && camera.username.is_none() {
                return Err((key("password_file"), "needs a username as well".into()));
            }
            if camera.pre_roll.0.is_zero() && camera.post_roll.0.is_zero() {
                return Err((
                    key("post_roll"),
                    "pre_roll and post_roll are both zero".into(),
                ));
            }
            for (name, value) in [
                ("pre_roll", camera.pre_roll),
                ("post_roll", camera.post_roll),
            ] {
                if value.0 > MAX_ROLL {
                    return Err((
                        key(name),
                        format!(
                            "expected at most \"10m\", found \"{value:?}\": longer is a mistake (a pre-roll is kept in memory, a post-roll holds the clip back from officers)"
                        ),
                    ));
                }
            }
            if camera.ingest == Some(IngestClient::Retina) && camera.url.is_tls() {
                return Err((
                    key("ingest"),
                    "\"retina\" cannot read rtsps:// (it has no TLS): remove the key, or set \"gstreamer\"".into(),
                ));
            }
            if camera.stall_timeout.0 > Duration::from_secs(300) {
                return Err((key("stall_timeout"), "expected at most \"5m\"".into()));
            }
            if camera.stall_timeout.0 < Duration::from_secs(1) {
                return Err((
                    key("stall_timeout"),
                    "expected at least \"1s\": shorter timeouts reconnect healthy cameras".into(),
                ));
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err((
                "log.level".into(),
                format!(
                    "expected a level such as \"info\" or directives such as \"info,alertclip::detect=debug\": {e}"
                ),
            ));
        }
        crate::config::schedule::time_zone(self.site.timezone.as_deref())
            .map_err(|m| ("site.timezone".to_owned(), m))?;
        if self.cameras.iter().any(|c| c.detect.is_some()) {
            self.detect.validate()?;
        }
        for (i, camera) in self.cameras.iter().enumerate() {
            if let Some(detect) = &camera.detect {
                detect.validate(i, &self.detect)?;
            }
        }
        if let Some(mqtt) = &self.mqtt {
            mqtt.validate(&self.site)?;
        }
        for (i, button) in self.buttons.iter().enumerate() {
            button.validate(i, self)?;
        }
        if let Some(desk) = &self.desk {
            if self.mqtt.is_none() {
                return Err((
                    "desk".into(),
                    "needs [mqtt]: responses come from the desk over the alert channel".into(),
                ));
            }
            desk.verifying_keys()?;
            for (name, value) in [("max_age", desk.max_age), ("show_for", desk.show_for)] {
                if value.0 < Duration::from_secs(60) || value.0 > Duration::from_secs(24 * 3600) {
                    return Err((
                        format!("desk.{name}"),
                        format!("expected \"1m\" to \"24h\", found \"{value:?}\""),
                    ));
                }
            }
        }
        if let Some(desk) = &self.desk
            && !(1..=600).contains(&desk.requests_per_hour)
        {
            return Err((
                "desk.requests_per_hour".into(),
                format!("expected 1 to 600, found {}", desk.requests_per_hour),
            ));
        }
        if self.buzzer.is_some() && self.desk.is_none() {
            return Err((
                "buzzer".into(),
                "needs [desk]: it chirps when a desk acknowledges an alert".into(),
            ));
        }
        if let Some(cap) = self.buffer.max_bytes_per_camera
            && cap.0 < 1 << 20
        {
            return Err((
                "buffer.max_bytes_per_camera".into(),
                format!("expected at least \"1MiB\", found {} bytes", cap.0),
            ));
        }
        Ok(())
    }

    /// Checks that every file the configuration names (passwords, TLS files, the detector's
    /// model) is a regular file this process can read: a missing, unreadable or directory
    /// file is a configuration error naming the key and the file, for `run` and `check` to
    /// refuse with before anything starts. `file` is the configuration file, for the message.
    pub fn check_files(&self, file: &Path) -> Result<(), ConfigError> {
        let mut named: Vec<(String, &Path)> = Vec::new();
        for (i, camera) in self.cameras.iter().enumerate() {
            if let Some(path) = &camera.password_file {
                named.push((format!("camera[{i}].password_file"), path));
            }
        }
        if let Some(mqtt) = &self.mqtt {
            for (name, path) in [
                ("password_file", &mqtt.password_file),
                ("ca_file", &mqtt.ca_file),
                ("cert_file", &mqtt.cert_file),
                ("key_file", &mqtt.key_file),
            ] {
                if let Some(path) = path {
                    named.push((format!("mqtt.{name}"), path));
                }
            }
        }
        for (i, button) in self.buttons.iter().enumerate() {
            if let Some(path) = &button.password_file {
                named.push((format!("button[{i}].password_file"), path));
            }
        }
        if self.cameras.iter().any(|c| c.detect.is_some()) {
            named.push(("detect.model".into(), &self.detect.model));
        }
        for (key, path) in named {
            // Looked at before it is opened: opening a pipe would wait for a writer.
            let problem = match std::fs::metadata(path) {
                Ok(m) if !m.is_file() => Some("is not a regular file".to_owned()),
                Ok(_) => std::fs::File::open(path).err().map(|e| e.to_string()),
                Err(e) => Some(e.to_string()),
            };
            if let Some(problem) = problem {
                let model = key == "detect.model";
                return Err(ConfigError::Invalid {
                    file: file.to_owned(),
                    key,
                    line: None,
                    message: if model {
                        format!("{}: {problem}: {}", path.display(), detect::SETUP_HINT)
                    } else {
                        format!(
                            "{}: {problem}: expected a readable file (check the path, and that the alertclip user may read it)",
                            path.display()
                        )
                    },
                });
            }
        }
        Ok(())
    }

    /// The byte cap of one camera's ring: the configured cap, or one MiB per second of
    /// `pre_roll + 10s`.
    pub fn ring_bytes(&self, camera: &Camera) -> usize {
        match self.buffer.max_bytes_per_camera {
            Some(cap) => cap.0 as usize,
            None => ((camera.pre_roll.0.as_secs() + 10) << 20) as usize,
        }
    }

    /// The block size clips are hashed (and delivered) in: `mqtt.chunk_size`, or its default
    /// without `[mqtt]`.
    pub fn chunk_size(&self) -> u64 {
        self.mqtt
            .as_ref()
            .map_or(default_chunk_size().0, |m| m.chunk_size.0)
    }

    /// The camera with this id.
    pub fn camera(&self, id: &str) -> Option<&Camera> {
        self.cameras.iter().find(|c| c.id == id)
    }
}

impl Button {
    /// Checks a button's keys against its kind: what it needs, and nothing that would be
    /// silently ignored.
    fn validate(&self, i: usize, config: &Config) -> Result<(), (String, String)> {
        let key = |k: &str| format!("button[{i}].{k}");
        check_id(&self.id).map_err(|m| (key("id"), m))?;
        if let Some(j) = config.buttons[..i].iter().position(|b| b.id == self.id) {
            return Err((
                key("id"),
                format!("duplicate button id \"{}\" (also button[{j}])", self.id),
            ));
        }
        for camera in &self.cameras {
            if config.camera(camera).is_none() {
                let known: Vec<&str> = config.cameras.iter().map(|c| c.id.as_str()).collect();
                return Err((
                    key("cameras"),
                    format!(
                        "unknown camera \"{camera}\" (configured: {})",
                        known.join(", ")
                    ),
                ));
            }
        }
        if let Some(location) = &self.location {
            check_text(location, MAX_NAME).map_err(|m| (key("location"), m))?;
        }
        if self.hold.0 > Duration::from_secs(60) {
            return Err((key("hold"), "expected at most \"1m\"".into()));
        }
        if self.debounce.0 > Duration::from_secs(1) {
            return Err((
                key("debounce"),
                "expected at most \"1s\": longer makes presses slow".into(),
            ));
        }
        if self.stuck_after.0 <= self.hold.0 {
            return Err((key("stuck_after"), "must be longer than hold".into()));
        }
        let kind = match self.kind {
            ButtonKind::Gpio => "gpio",
            ButtonKind::Evdev => "evdev",
            ButtonKind::Mqtt => "mqtt",
        };
        let present = [
            ("chip", self.chip.is_some(), ButtonKind::Gpio),
            ("line", self.line.is_some(), ButtonKind::Gpio),
            ("device", self.device.is_some(), ButtonKind::Evdev),
            ("key", self.key.is_some(), ButtonKind::Evdev),
            ("topic", self.topic.is_some(), ButtonKind::Mqtt),
            ("match", !self.match_fields.is_empty(), ButtonKind::Mqtt),
            ("broker", self.broker.is_some(), ButtonKind::Mqtt),
            ("username", self.username.is_some(), ButtonKind::Mqtt),
            (
                "password_file",
                self.password_file.is_some(),
                ButtonKind::Mqtt,
            ),
        ];
        for (name, set, for_kind) in present {
            if set && for_kind != self.kind {
                return Err((key(name), format!("does not apply to kind = \"{kind}\"")));
            }
        }
        let missing = |name: &str, example: &str| {
            Err((
                key(name),
                format!("required for kind = \"{kind}\", for example {name} = {example}"),
            ))
        };
        match self.kind {
            ButtonKind::Gpio if self.line.is_none() => return missing("line", "\"GPIO17\""),
            ButtonKind::Evdev if self.device.is_none() => {
                return missing("device", "\"/dev/input/by-id/usb-...-event-kbd\"");
            }
            ButtonKind::Evdev if self.key.is_none() => return missing("key", "\"KEY_F12\""),
            ButtonKind::Mqtt if self.topic.is_none() => {
                return missing("topic", "\"zigbee2mqtt/panic-button\"");
            }
            ButtonKind::Mqtt if self.broker.is_none() && config.mqtt.is_none() => {
                return Err((
                    key("broker"),
                    "needed when there is no [mqtt] section to share".into(),
                ));
            }
            _ => {}
        }
        if let Some(key_name) = &self.key
            && key_name.parse::<evdev::KeyCode>().is_err()
        {
            return Err((
                key("key"),
                format!("expected a key name like \"KEY_F12\", found \"{key_name}\""),
            ));
        }
        if let Some(topic) = &self.topic
            && (topic.is_empty() || topic.contains(['+', '#']))
        {
            return Err((
                key("topic"),
                format!("expected a topic without wildcards, found \"{topic}\""),
            ));
        }
        if self.password_file.is_some() && self.username.is_none() {
            return Err((key("password_file"), "needs a username as well".into()));
        }
        Ok(())
    }
}

impl Mqtt {
    fn validate(&self, site: &Site) -> Result<(), (String, String)> {
        let key = |k: &str| format!("mqtt.{k}");
        if (self.cert_file.is_some()) != (self.key_file.is_some()) {
            return Err((key("key_file"), "cert_file and key_file go together".into()));
        }
        if !self.url.tls && (self.ca_file.is_some() || self.cert_file.is_some()) {
            return Err((
                key("url"),
                "TLS files are set but the URL is mqtt://: use mqtts://".into(),
            ));
        }
        if let Some(other) = self.failover.iter().find(|f| f.tls != self.url.tls) {
            return Err((
                key("failover"),
                format!(
                    "\"{other}\" and url \"{}\" differ in scheme: every node of the cluster is reached the same way (all mqtt:// or all mqtts://)",
                    self.url
                ),
            ));
        }
        if self.password_file.is_some() && self.username.is_none() {
            return Err((key("password_file"), "needs a username as well".into()));
        }
        if self.chunk_size.0 < 4 << 10 || self.chunk_size.0 > 64 << 20 {
            return Err((
                key("chunk_size"),
                format!(
                    "expected between \"4KiB\" and \"64MiB\", found {} bytes",
                    self.chunk_size.0
                ),
            ));
        }
        if self.keepalive.0 < Duration::from_secs(5) {
            return Err((key("keepalive"), "expected at least \"5s\"".into()));
        }
        // MQTT carries it in 16 bits of seconds.
        if self.keepalive.0 > Duration::from_secs(u16::MAX as u64) {
            return Err((
                key("keepalive"),
                "expected at most \"18h 12m 15s\" (65535 s, the most MQTT can say)".into(),
            ));
        }
        if self.status_interval.0 < Duration::from_secs(1) {
            return Err((key("status_interval"), "expected at least \"1s\"".into()));
        }
        // The rule the officer side reads prefixes by, so that what is published is received.
        if let Some(template) = &self.topic_prefix {
            check_text(template, MAX_TOPIC_PREFIX).map_err(|m| (key("topic_prefix"), m))?;
            if let Err(expected) = alertclip_wire::TopicLayout::new(template, Some(&site.id)) {
                return Err((key("topic_prefix"), expected));
            }
        }
        let client_id = self.client_id(site);
        if client_id.is_empty() {
            return Err((key("client_id"), "must not be empty".into()));
        }
        if client_id.len() > MAX_CLIENT_ID
            || client_id
                .chars()
                .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err((
                key("client_id"),
                format!(
                    "expected at most {MAX_CLIENT_ID} bytes without spaces or control characters"
                ),
            ));
        }
        Ok(())
    }
}

/// Identifiers end up in file names and MQTT topics: the wire contract's rule.
fn check_id(id: &str) -> Result<(), String> {
    alertclip_wire::id::check(id)
}

/// The longest duration any setting takes: beyond it, arithmetic on instants could overflow,
/// and no setting of the box means that much.
const MAX_DURATION: Duration = Duration::from_secs(30 * 86_400);

/// Checks text that goes into alerts and onto officers' screens: at most `max` characters,
/// no control characters. Every such field is bounded, so that an alert always fits in a
/// message.
pub fn check_text(text: &str, max: usize) -> Result<(), String> {
    let chars = text.chars().count();
    if chars > max {
        return Err(format!("expected at most {max} characters, found {chars}"));
    }
    if text.chars().any(char::is_control) {
        return Err("expected text without control characters (newlines, tabs, NUL ...)".into());
    }
    Ok(())
}

/// Longest topic prefix and client id: brokers refuse longer, or the box would never connect.
const MAX_TOPIC_PREFIX: usize = 200;
const MAX_CLIENT_ID: usize = 128;
/// Longest pre-roll and post-roll.
const MAX_ROLL: Duration = Duration::from_secs(600);
/// A Unix socket's name holds 108 bytes with its terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// Longest store name, address and button location: what an officer's screen shows.
const MAX_NAME: usize = 120;
const MAX_ADDRESS: usize = 300;

/// A duration written with a unit, such as `"10s"`, `"500ms"` or `"1m 30s"`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl fmt::Debug for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration like \"10s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                let duration = humantime::parse_duration(v.trim()).map_err(|_| {
                    E::custom(format!("expected a duration like \"10s\", found \"{v}\""))
                })?;
                if duration > MAX_DURATION {
                    return Err(E::custom(format!(
                        "expected at most 30 days, found \"{v}\": no setting of the box means that much"
                    )));
                }
                Ok(HumanDuration(duration))
            }
        }
        d.deserialize_str(V)
    }
}

/// A size in bytes written with a unit, such as `"64MiB"`, `"500MB"` or `"1GiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `"64MiB"`, `"1.5GB"`, `"4096"` (bytes) and the like; units are case-insensitive.
    pub fn parse(text: &str) -> Option<ByteSize> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: f64 = number.parse().ok()?;
        let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            _ => return None,
        };
        let bytes = number * multiplier as f64;
        (bytes.is_finite() && bytes < u64::MAX as f64).then_some(ByteSize(bytes as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size like \"64MiB\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                ByteSize::parse(v).ok_or_else(|| {
                    E::custom(format!(
                        "expected a size like \"64MiB\" or \"500MB\", found \"{v}\""
                    ))
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("expected a size like \"64MiB\", found {v}")))
            }
        }
        d.deserialize_any(V)
    }
}

/// A camera URL, which may embed a password: it prints with the password replaced by `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps a URL after checking its scheme.
    pub fn new(url: &str) -> Result<SecretUrl, String> {
        let lower = url.to_ascii_lowercase();
        let rest = ["rtsp://", "rtsps://"]
            .iter()
            .find_map(|s| lower.strip_prefix(s))
            .ok_or_else(|| {
                format!(
                    "expected an rtsp:// or rtsps:// URL, found \"{}\"",
                    SecretUrl(url.to_owned())
                )
            })?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(format!(
                "the URL \"{}\" has no host",
                SecretUrl(url.to_owned())
            ));
        }
        Ok(SecretUrl(url.to_owned()))
    }

    /// The URL with its password, for handing to GStreamer only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the URL holds `user@` or `user:pass@`.
    pub fn has_credentials(&self) -> bool {
        self.userinfo_range().is_some()
    }

    /// Byte range of the `user[:pass]` part, if any. A password typed with `/`, `#`, `?` or
    /// `@` in it, not percent-encoded, is still all of it: the userinfo ends at the last `@`
    /// that is followed by a host and preceded by a user name free of those characters (so
    /// `rtsp://cam/live@main` has none).
    fn userinfo_range(&self) -> Option<std::ops::Range<usize>> {
        let start = self.0.find("://")? + 3;
        let rest = &self.0[start..];
        let looks_like_host = |after: &str| {
            let host = &after[..after.find(['/', '?', '#']).unwrap_or(after.len())];
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-_:[]%".contains(c))
        };
        let user_is_plain = |userinfo: &str| {
            let user = &userinfo[..userinfo.find(':').unwrap_or(userinfo.len())];
            !user.contains(['/', '?', '#'])
        };
        rest.match_indices('@')
            .map(|(at, _)| at)
            .rev()
            .find(|&at| looks_like_host(&rest[at + 1..]) && user_is_plain(&rest[..at]))
            .map(|at| start..start + at)
    }

    /// The user name and password the URL holds (the password empty when only a user is).
    pub fn userinfo(&self) -> Option<(&str, &str)> {
        let userinfo = &self.0[self.userinfo_range()?];
        Some(userinfo.split_once(':').unwrap_or((userinfo, "")))
    }

    /// The URL without its `user[:pass]@`: what may be sent where no credentials belong.
    pub fn without_userinfo(&self) -> String {
        match self.userinfo_range() {
            Some(range) => format!("{}{}", &self.0[..range.start], &self.0[range.end + 1..]),
            None => self.0.clone(),
        }
    }

    /// Whether it is `rtsps://`: RTSP over TLS.
    pub fn is_tls(&self) -> bool {
        self.0
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("rtsps://"))
    }

    /// The server's host and port (554 for `rtsp://`, 322 for `rtsps://` when none is given).
    pub fn host_port(&self) -> Option<(String, u16)> {
        let start = self
            .userinfo_range()
            .map_or(self.0.find("://")? + 3, |r| r.end + 1);
        let rest = &self.0[start..];
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        let default = if self.is_tls() { 322 } else { 554 };
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']')?;
                (host, after.strip_prefix(':'))
            }
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        let port = match port {
            Some(port) => port.parse().ok()?,
            None => default,
        };
        (!host.is_empty()).then(|| (host.to_owned(), port))
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // An `@` that ends no recognisable login still hides everything before it.
        if self.userinfo_range().is_none()
            && let (Some(scheme), Some(at)) = (self.0.find("://"), self.0.rfind('@'))
            && self.0[scheme + 3..at].contains(':')
        {
            return write!(f, "{}***{}", &self.0[..scheme + 3], &self.0[at..]);
        }
        match self.userinfo_range() {
            Some(range) => {
                let userinfo = &self.0[range.clone()];
                match userinfo.find(':') {
                    Some(colon) => write!(
                        f,
                        "{}{}:***{}",
                        &self.0[..range.start],
                        &userinfo[..colon],
                        &self.0[range.end..]
                    ),
                    None => f.write_str(&self.0),
                }
            }
            None => f.write_str(&self.0),
        }
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SecretUrl::new(&s).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camera_urls_give_their_server_and_hide_any_password() {
        let url = |u: &str| SecretUrl::new(u).unwrap();
        assert_eq!(
            url("rtsp://cam.local/stream").host_port(),
            Some(("cam.local".into(), 554))
        );
        assert_eq!(
            url("rtsps://10.0.0.5/s").host_port(),
            Some(("10.0.0.5".into(), 322))
        );
        assert_eq!(
            url("rtsp://[fe80::1]:8554/s").host_port(),
            Some(("fe80::1".into(), 8554))
        );
        // A password typed with '/', '#' and '@' in it is all hidden, and not taken for the host.
        let tricky = url("rtsp://admin:Sl/a#sh@:x@10.0.0.7:8554/Streaming/101");
        assert_eq!(tricky.host_port(), Some(("10.0.0.7".into(), 8554)));
        assert_eq!(
            tricky.to_string(),
            "rtsp://admin:***@10.0.0.7:8554/Streaming/101"
        );
        assert!(!tricky.to_string().contains("Sl/a"));
        assert_eq!(
            tricky.without_userinfo(),
            "rtsp://10.0.0.7:8554/Streaming/101"
        );
        // A login before an `@` with no host after it is hidden all the same.
        assert_eq!(url("rtsp://u:hunter2@").to_string(), "rtsp://***@");
    }

    const MINIMAL: &str = r#"
[site]
id = "store-1"
name = "Corner Market"

[[camera]]
id = "front"
url = "rtsp://10.0.0.5/stream1"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("alertclip.toml"))
    }

    fn error(text: &str) -> String {
        parse(text)
            .expect_err("config should be rejected")
            .to_string()
    }

    #[test]
    fn the_rtsp_client_is_retina_unless_named_or_the_camera_speaks_tls() {
        let with = |url: &str, ingest: &str| {
            MINIMAL.replace("rtsp://10.0.0.5/stream1\"", &format!("{url}\"\n{ingest}"))
        };
        let client = |text: String| parse(&text).unwrap().cameras[0].ingest_client();
        assert_eq!(
            client(with("rtsps://10.0.0.5/s", "")),
            IngestClient::Gstreamer
        );
        let named = "ingest = \"gstreamer\"";
        assert_eq!(
            client(with("rtsp://10.0.0.5/s", named)),
            IngestClient::Gstreamer
        );
        let message = error(&with("rtsps://10.0.0.5/s", "ingest = \"retina\""));
        assert!(message.contains("camera[0].ingest"), "{message}");
        assert!(message.contains("cannot read rtsps://"), "{message}");
        let message = error(&with("rtsp://10.0.0.5/s", "ingest = \"ffmpeg\""));
        assert!(message.contains("ingest"), "{message}");
        assert!(
            message.contains("retina") && message.contains("gstreamer"),
            "{message}"
        );
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let config = parse(MINIMAL).unwrap();
        let camera = &config.cameras[0];
        assert_eq!(camera.pre_roll.0, Duration::from_secs(30));
        assert_eq!(camera.post_roll.0, Duration::from_secs(10));
        assert_eq!(camera.stall_timeout.0, Duration::from_secs(5));
        assert_eq!(camera.transport, Transport::Tcp);
        assert_eq!(camera.ingest_client(), IngestClient::Retina);
        assert_eq!(config.ring_bytes(camera), 40 << 20);
        assert_eq!(
            config.storage.dir,
            PathBuf::from("/var/lib/alertclip/clips")
        );
        assert_eq!(
            config.control.socket,
            PathBuf::from("/run/alertclip/control.sock")
        );
    }

    #[test]
    fn shipped_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("alertclip.example.toml");
        let config = Config::load(&path).unwrap();
        assert!(!config.cameras.is_empty());
    }

    #[test]
    fn bad_duration_names_file_key_and_expectation() {
        let text = format!(
            "{MINIMAL}\n[[camera]]\nid = \"back\"\nurl = \"rtsp://x/y\"\npre_roll = \"ten\"\n"
        );
        let message = error(&text);
        assert!(
            message.starts_with(
                "alertclip.toml: camera[1].pre_roll: expected a duration like \"10s\", found \"ten\""
            ),
            "{message}"
        );
        assert!(message.ends_with("(line 13)"), "{message}");
    }

    #[test]
    fn unknown_key_is_rejected_with_its_path() {
        let message = error(&format!("{MINIMAL}pre_rol = \"5s\"\n"));
        assert!(message.contains("camera[0]"), "{message}");
        assert!(message.contains("unknown field `pre_rol`"), "{message}");
    }

    #[test]
    fn syntax_error_gives_a_line() {
        let message = error("[site]\nid = \"a\"\nname = \n");
        assert!(message.starts_with("alertclip.toml:3: "), "{message}");
    }

    #[test]
    fn missing_site_and_cameras_are_explained() {
        assert!(error("").contains("missing field `site`"));
        let message = error("[site]\nid = \"a\"\nname = \"b\"\n");
        assert!(message.contains("no camera configured"), "{message}");
    }

    #[test]
    fn duplicate_and_unsafe_ids_are_rejected() {
        let dup = format!("{MINIMAL}\n[[camera]]\nid = \"front\"\nurl = \"rtsp://b/c\"\n");
        assert!(
            error(&dup).contains("camera[1].id: duplicate camera id \"front\" (also camera[0])")
        );
        let unsafe_id = MINIMAL.replace("id = \"front\"", "id = \"../etc\"");
        assert!(error(&unsafe_id).contains("camera[0].id: expected 1 to 64 letters"));
    }

    #[test]
    fn urls_must_be_rtsp_and_passwords_never_print() {
        let http = MINIMAL.replace("rtsp://10.0.0.5", "http://admin:hunter2@10.0.0.5");
        let message = error(&http);
        assert!(
            message.contains("expected an rtsp:// or rtsps:// URL"),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");

        let url = SecretUrl::new("rtsp://admin:hunter2@10.0.0.5:554/s?x=@").unwrap();
        assert_eq!(url.to_string(), "rtsp://admin:***@10.0.0.5:554/s?x=@");
        assert!(!format!("{url:?}").contains("hunter2"));
        assert_eq!(url.expose(), "rtsp://admin:hunter2@10.0.0.5:554/s?x=@");
        let plain = SecretUrl::new("rtsps://cam/live@main").unwrap();
        assert!(!plain.has_credentials());
        assert_eq!(plain.to_string(), "rtsps://cam/live@main");
    }

    #[test]
    fn credentials_in_two_places_are_rejected() {
        let text =
            MINIMAL.replace("rtsp://10.0.0.5", "rtsp://u:p@10.0.0.5") + "username = \"admin\"\n";
        assert!(error(&text).contains("camera[0].username: the url already holds credentials"));
        let text = MINIMAL.to_owned() + "password_file = \"/etc/alertclip/pw\"\n";
        assert!(error(&text).contains("camera[0].password_file: needs a username"));
    }

    #[test]
    fn byte_sizes_parse_with_units() {
        assert_eq!(ByteSize::parse("64MiB"), Some(ByteSize(64 << 20)));
        assert_eq!(ByteSize::parse("1.5 GB"), Some(ByteSize(1_500_000_000)));
        assert_eq!(ByteSize::parse("4096"), Some(ByteSize(4096)));
        assert_eq!(ByteSize::parse("2gib"), Some(ByteSize(2 << 30)));
        assert_eq!(ByteSize::parse("lots"), None);
        assert_eq!(ByteSize::parse("5 parsecs"), None);
        let text = format!("{MINIMAL}\n[buffer]\nmax_bytes_per_camera = \"big\"\n");
        assert!(error(&text).contains(
            "buffer.max_bytes_per_camera: expected a size like \"64MiB\" or \"500MB\", found \"big\""
        ));
        let text = format!("{MINIMAL}\n[buffer]\nmax_bytes_per_camera = \"64MiB\"\n");
        let config = parse(&text).unwrap();
        assert_eq!(config.ring_bytes(&config.cameras[0]), 64 << 20);
    }

    #[test]
    fn mqtt_section_parses_with_defaults() {
        let text = format!("{MINIMAL}\n[mqtt]\nurl = \"mqtts://broker.example\"\n");
        let config = parse(&text).unwrap();
        let mqtt = config.mqtt.as_ref().unwrap();
        assert_eq!(
            mqtt.url,
            BrokerUrl {
                tls: true,
                host: "broker.example".into(),
                port: 8883
            }
        );
        assert_eq!(mqtt.protocol, Protocol::V311);
        assert_eq!(mqtt.prefix(&config.site), "alertclip/v1/store-1");
        assert_eq!(mqtt.client_id(&config.site), "store-1");
        assert_eq!(mqtt.chunk_size, ByteSize(102_400));
        assert_eq!(config.outbox.max_bytes, ByteSize(1 << 30));
        assert!(parse(MINIMAL).unwrap().mqtt.is_none());
    }

    #[test]
    fn broker_urls_are_checked() {
        assert_eq!(
            BrokerUrl::parse("mqtt://10.0.0.2:1884")
                .unwrap()
                .to_string(),
            "mqtt://10.0.0.2:1884"
        );
        assert_eq!(
            BrokerUrl::parse("mqtt://[::1]").unwrap().to_string(),
            "mqtt://[::1]:1883"
        );
        for bad in [
            "http://x",
            "mqtt://",
            "mqtt://h:port",
            "mqtt://u:p@h",
            "mqtt://h/topic",
        ] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad}");
        }
        let text = format!("{MINIMAL}\n[mqtt]\nurl = \"tcp://b\"\n");
        assert!(
            error(&text).contains("mqtt.url: expected a URL like \"mqtts://broker.example:8883\"")
        );
        let text = format!("{MINIMAL}\n[mqtt]\nurl = \"mqtt://b\"\nca_file = \"/x\"\n");
        assert!(error(&text).contains("mqtt.url: TLS files are set but the URL is mqtt://"));
        let text = format!(
            "{MINIMAL}\n[mqtt]\nurl = \"mqtts://a\"\nfailover = [\"mqtts://b\", \"mqtt://c\"]\n"
        );
        assert!(
            error(&text).contains(
                "mqtt.failover: \"mqtt://c:1883\" and url \"mqtts://a:8883\" differ in scheme"
            ),
            "{}",
            error(&text)
        );
        let text =
            format!("{MINIMAL}\n[mqtt]\nurl = \"mqtt://a\"\nfailover = [\"mqtt://b:1884\"]\n");
        assert_eq!(
            parse(&text).unwrap().mqtt.unwrap().failover[0].to_string(),
            "mqtt://b:1884"
        );
        let text = format!("{MINIMAL}\n[mqtt]\nurl = \"mqtt://b\"\nprotocol = \"4\"\n");
        assert!(error(&text).contains("mqtt.protocol: unknown variant `4`"));
        let text = format!("{MINIMAL}\n[mqtt]\nurl = \"mqtt://b\"\ntopic_prefix = \"a/#\"\n");
        assert!(
            error(&text).contains("mqtt.topic_prefix: level \"#\" of \"a/#\": expected plain text")
        );
    }

    #[test]
    fn buttons_of_each_kind_parse_with_defaults() {
        let text = format!(
            "{MINIMAL}\n[mqtt]\nurl = \"mqtt://b\"\n\
             [[button]]\nid = \"register\"\nkind = \"gpio\"\nline = \"GPIO17\"\nlocation = \"register 2\"\n\
             feedback = {{ line = 27 }}\n\
             [[button]]\nid = \"foot\"\nkind = \"evdev\"\ndevice = \"/dev/input/by-id/usb-x-event-kbd\"\nkey = \"KEY_F12\"\nhold = \"1s\"\n\
             [[button]]\nid = \"aqara\"\nkind = \"mqtt\"\ntopic = \"zigbee2mqtt/aqara\"\nmatch = {{ action = \"single\" }}\ncameras = [\"front\"]\n"
        );
        let config = parse(&text).unwrap();
        let gpio = &config.buttons[0];
        assert_eq!(gpio.line, Some(LineSpec::Name("GPIO17".into())));
        assert_eq!(
            (gpio.bias, gpio.active_low, gpio.debounce.0),
            (Bias::PullUp, true, Duration::from_millis(30))
        );
        assert_eq!(gpio.stuck_after.0, Duration::from_secs(60));
        let light = gpio.feedback.as_ref().unwrap();
        assert_eq!(
            (light.line.clone(), light.confirm_for.0),
            (LineSpec::Offset(27), Duration::from_secs(10))
        );
        assert_eq!(config.buttons[1].hold.0, Duration::from_secs(1));
        assert!(config.buttons[1].grab);
        assert_eq!(config.buttons[2].match_fields["action"], "single");
    }

    #[test]
    fn button_keys_must_fit_their_kind() {
        let button = |body: &str| format!("{MINIMAL}\n[[button]]\nid = \"b\"\n{body}\n");
        let cases = [
            (
                "kind = \"gpio\"",
                "button[0].line: required for kind = \"gpio\"",
            ),
            (
                "kind = \"gpio\"\nline = 4\ntopic = \"x\"",
                "button[0].topic: does not apply to kind = \"gpio\"",
            ),
            (
                "kind = \"evdev\"\ndevice = \"/dev/input/event0\"\nkey = \"F12\"",
                "button[0].key: expected a key name like \"KEY_F12\"",
            ),
            (
                "kind = \"mqtt\"\ntopic = \"z2m/b\"",
                "button[0].broker: needed when there is no [mqtt] section",
            ),
            (
                "kind = \"mqtt\"\ntopic = \"z2m/#\"\nbroker = \"mqtt://b\"",
                "button[0].topic: expected a topic without wildcards",
            ),
            ("kind = \"usb\"", "button[0].kind: unknown variant `usb`"),
            (
                "kind = \"gpio\"\nline = 4\ncameras = [\"back\"]",
                "button[0].cameras: unknown camera \"back\" (configured: front)",
            ),
            (
                "kind = \"gpio\"\nline = 4\nhold = \"1m\"",
                "button[0].stuck_after: must be longer than hold",
            ),
        ];
        for (body, expected) in cases {
            let message = error(&button(body));
            assert!(message.contains(expected), "{body}: {message}");
        }
    }

    #[test]
    fn transport_must_be_tcp_or_udp() {
        let text = MINIMAL.to_owned() + "transport = \"http\"\n";
        let message = error(&text);
        assert!(
            message.contains("camera[0].transport: unknown variant `http`"),
            "{message}"
        );
    }
}
