//! `alertclip provision`: writes a box's configuration from a technician's answers or flags.
//!
//! Whatever is not given as a flag is asked for when standard input is a terminal; without a
//! terminal, a missing required value is an error naming its flag. Passwords are never written
//! into the configuration: each goes into a file of its own beside it (mode 0600), named by
//! `password_file`. An existing configuration is only replaced with `--force`, and then kept as
//! a backup. The written configuration is parsed and validated before anything is written.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::{self, Config, ConfigError};
use crate::setup::check::{self, Finding, Outcome};

/// Why a configuration could not be provisioned. Each says which flag (or file) and what was
/// expected; none echoes a camera URL, which may hold a password.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// A value that is needed has no flag, and there is no terminal to ask on.
    #[error("{flag} is required (or run provision on a terminal to be asked)")]
    Missing {
        /// The flag that gives it.
        flag: &'static str,
    },
    /// A value that is needed was not given, nor answered.
    #[error("{flag} is required{hint}")]
    Required {
        /// The flag that gives it.
        flag: &'static str,
        /// What it looks like, after a colon, where that helps.
        hint: &'static str,
    },
    /// A flag's value is not what was expected.
    #[error("{flag}: {expected}")]
    Flag {
        /// The flag, with the id of the camera or button it describes where there is one.
        flag: String,
        /// What was expected.
        expected: String,
    },
    /// The configuration these answers make would not load.
    #[error("the configuration would be invalid: {0}")]
    Invalid(#[source] ConfigError),
    /// The configuration exists and `--force` was not given.
    #[error("{0} exists: pass --force to replace it (it is kept as a backup)")]
    Exists(PathBuf),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The `--password-file` cannot be read.
    #[error("--password-file {0}")]
    Secret(#[source] alertclip_mqtt::SecretError),
    /// An answer could not be read from the terminal.
    #[error("cannot read the answer: {0}")]
    Terminal(#[source] std::io::Error),
}

impl ProvisionError {
    fn flag(flag: impl Into<String>, expected: impl Into<String>) -> ProvisionError {
        ProvisionError::Flag {
            flag: flag.into(),
            expected: expected.into(),
        }
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ProvisionError + '_ {
        move |source| ProvisionError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// What the technician said, by flags or answers.
#[derive(Debug, Clone, Default)]
pub struct Answers {
    /// `[site] id`.
    pub site_id: Option<String>,
    /// `[site] name`.
    pub site_name: Option<String>,
    /// `[site] address`.
    pub address: Option<String>,
    /// `[site] timezone`.
    pub timezone: Option<String>,
    /// `id=URL` per camera; credentials in the URL are moved into a password file.
    pub cameras: Vec<String>,
    /// `[mqtt] url`.
    pub broker: Option<String>,
    /// `[mqtt] ca_file`.
    pub ca: Option<PathBuf>,
    /// `[mqtt] cert_file`.
    pub cert: Option<PathBuf>,
    /// `[mqtt] key_file`.
    pub key: Option<PathBuf>,
    /// `[mqtt] username`.
    pub username: Option<String>,
    /// A file holding the broker password, copied beside the configuration.
    pub password_file: Option<PathBuf>,
    /// `id=gpio:LINE`, `id=evdev:DEVICE:KEY` or `id=mqtt:TOPIC` per button.
    pub buttons: Vec<String>,
    /// Where clips, the outbox and the device key live, when not `/var/lib/alertclip`.
    pub state_dir: Option<PathBuf>,
}

/// What was written.
#[derive(Debug)]
pub struct Written {
    /// The configuration file.
    pub config: PathBuf,
    /// The previous configuration, when `--force` replaced one.
    pub backup: Option<PathBuf>,
    /// Password files written.
    pub secrets: Vec<PathBuf>,
}

/// Asks for what is missing, on a terminal; fails naming the flag otherwise. Each camera
/// entered on the terminal is probed at once (codec, resolution, fps, bitrate, keyframe
/// interval), so a wrong address or password is fixed while the technician is at it; one that
/// fails is kept only when they say so.
pub async fn complete(answers: &mut Answers) -> Result<(), ProvisionError> {
    let interactive = std::io::stdin().is_terminal();
    let ask = |question: &str, flag: &'static str| -> Result<String, ProvisionError> {
        if !interactive {
            return Err(ProvisionError::Missing { flag });
        }
        print!("{question}: ");
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(ProvisionError::Terminal)?;
        Ok(line.trim().to_owned())
    };
    if answers.site_id.is_none() {
        answers.site_id = Some(ask("Site id (letters, digits, - _ .)", "--site-id")?);
    }
    if answers.site_name.is_none() {
        answers.site_name = Some(ask("Store name, as officers see it", "--site-name")?);
    }
    if answers.address.is_none() && interactive {
        answers.address =
            Some(ask("Street address (empty for none)", "--address")?).filter(|a| !a.is_empty());
    }
    if answers.cameras.is_empty() {
        loop {
            let spec = ask(
                "Camera as id=rtsp://user:password@host/path (empty when done)",
                "--camera",
            )?;
            if spec.is_empty() {
                break;
            }
            let (camera, password) = match camera_table(&spec) {
                Ok(camera) => camera,
                Err(error) => {
                    println!("  {error}");
                    continue;
                }
            };
            println!("  probing {} ...", camera.id);
            let finding = probe(camera, password).await;
            println!("  {:<4}  {}", finding.outcome.label(), finding.detail);
            if finding.outcome == Outcome::Fail
                && !ask("  Keep this camera anyway? [y/N]", "--camera")?.eq_ignore_ascii_case("y")
            {
                continue;
            }
            answers.cameras.push(spec);
        }
    }
    if answers.broker.is_none() && interactive {
        answers.broker = Some(ask(
            "Alert channel broker, mqtts://host:8883 (empty to keep clips on the box)",
            "--broker",
        )?)
        .filter(|b| !b.is_empty());
    }
    Ok(())
}

/// Probes a camera as `check` does, with the default pre-roll its keyframe interval is held
/// against.
async fn probe(camera: config::Camera, password: Option<String>) -> Finding {
    if let Err(error) = gstreamer::init() {
        return Finding {
            subject: format!("camera {}", camera.id),
            outcome: Outcome::Fail,
            detail: format!("GStreamer: {error}"),
        };
    }
    let pre_roll = camera.pre_roll.0;
    check::probe_camera(camera, PROBE_RING_BYTES, password, Some(pre_roll)).await
}

/// Ring memory for a probe: a few seconds of any camera's main stream.
const PROBE_RING_BYTES: usize = 16 << 20;

/// `id=URL` as the camera table the configuration will hold, with the password taken out of
/// the URL.
fn camera_table(spec: &str) -> Result<(config::Camera, Option<String>), ProvisionError> {
    let (id, url, login) = parse_camera(spec)?;
    let mut table = toml::Table::new();
    table.insert("id".into(), id.into());
    table.insert("url".into(), url.into());
    let password = login.map(|(user, password)| {
        table.insert("username".into(), user.into());
        password
    });
    let camera = config::Camera::deserialize(table)
        .map_err(|e| ProvisionError::flag(format!("--camera {id}"), e.message()))?;
    Ok((camera, password))
}

/// Splits `id=rtsp://user:password@host/path` into the id, the URL without its login, and the
/// login.
fn parse_camera(spec: &str) -> Result<(&str, String, Option<Login>), ProvisionError> {
    // Not echoed in errors: the URL may hold a password.
    let (id, url) = spec
        .split_once('=')
        .map(|(id, url)| (id.trim(), url))
        .filter(|(id, _)| !id.is_empty() && !id.contains("://"))
        .ok_or_else(|| {
            ProvisionError::flag("--camera", "expected id=rtsp://..., the camera's id first")
        })?;
    let (url, login) = split_credentials(url.trim())
        .map_err(|expected| ProvisionError::flag(format!("--camera {id}"), expected))?;
    Ok((id, url, login))
}

/// A user name and its password.
type Login = (String, String);

/// A TOML string literal.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// The configuration text, and the password files it names (path, contents).
pub fn render(
    answers: &Answers,
    dir: &Path,
) -> Result<(String, Vec<(PathBuf, String)>), ProvisionError> {
    let mut secrets = Vec::new();
    let required = |value: &Option<String>, flag: &'static str| {
        value
            .clone()
            .filter(|v| !v.is_empty())
            .ok_or(ProvisionError::Required { flag, hint: "" })
    };
    let mut text = String::from(
        "# Written by alertclip provision. Every key: alertclip.example.toml.\n\n[site]\n",
    );
    text.push_str(&format!(
        "id = {}\n",
        quoted(&required(&answers.site_id, "--site-id")?)
    ));
    text.push_str(&format!(
        "name = {}\n",
        quoted(&required(&answers.site_name, "--site-name")?)
    ));
    if let Some(address) = &answers.address {
        text.push_str(&format!("address = {}\n", quoted(address)));
    }
    if let Some(timezone) = &answers.timezone {
        text.push_str(&format!("timezone = {}\n", quoted(timezone)));
    }
    if let Some(state) = &answers.state_dir {
        for (section, name) in [
            ("storage", "clips"),
            ("outbox", "outbox"),
            ("evidence", "evidence"),
        ] {
            text.push_str(&format!(
                "\n[{section}]\ndir = {}\n",
                quoted(&state.join(name).to_string_lossy())
            ));
        }
    }
    if answers.cameras.is_empty() {
        return Err(ProvisionError::Required {
            flag: "--camera",
            hint: ": at least one camera, as id=rtsp://...",
        });
    }
    for camera in &answers.cameras {
        let (id, url, login) = parse_camera(camera)?;
        text.push_str(&format!(
            "\n[[camera]]\nid = {}\nurl = {}\n",
            quoted(id),
            quoted(&url)
        ));
        if let Some((user, password)) = login {
            let file = dir.join(format!("{id}.password"));
            text.push_str(&format!(
                "username = {}\npassword_file = {}\n",
                quoted(&user),
                quoted(&file.to_string_lossy())
            ));
            secrets.push((file, password));
        }
    }
    if let Some(broker) = &answers.broker {
        text.push_str(&format!("\n[mqtt]\nurl = {}\n", quoted(broker)));
        for (key, value) in [
            ("ca_file", &answers.ca),
            ("cert_file", &answers.cert),
            ("key_file", &answers.key),
        ] {
            if let Some(path) = value {
                text.push_str(&format!("{key} = {}\n", quoted(&path.to_string_lossy())));
            }
        }
        if let Some(user) = &answers.username {
            text.push_str(&format!("username = {}\n", quoted(user)));
        }
        if let Some(source) = &answers.password_file {
            let password = alertclip_mqtt::read_secret(source).map_err(ProvisionError::Secret)?;
            let file = dir.join("mqtt.password");
            text.push_str(&format!(
                "password_file = {}\n",
                quoted(&file.to_string_lossy())
            ));
            secrets.push((file, password));
        }
    }
    for button in &answers.buttons {
        text.push_str(&render_button(button)?);
    }
    Ok((text, secrets))
}

/// `id=gpio:LINE`, `id=evdev:DEVICE:KEY` or `id=mqtt:TOPIC` as a `[[button]]` table.
fn render_button(spec: &str) -> Result<String, ProvisionError> {
    let bad = || {
        ProvisionError::flag(
            format!("--button {spec}"),
            "expected id=gpio:LINE, id=evdev:DEVICE:KEY or id=mqtt:TOPIC",
        )
    };
    let (id, rest) = spec.split_once('=').ok_or_else(bad)?;
    let (kind, rest) = rest.split_once(':').ok_or_else(bad)?;
    let mut table = format!(
        "\n[[button]]\nid = {}\nkind = {}\n",
        quoted(id),
        quoted(kind)
    );
    match kind {
        "gpio" => table.push_str(&format!("line = {}\n", quoted(rest))),
        "evdev" => {
            let (device, key) = rest.rsplit_once(':').ok_or_else(bad)?;
            table.push_str(&format!(
                "device = {}\nkey = {}\n",
                quoted(device),
                quoted(key)
            ));
        }
        "mqtt" => table.push_str(&format!("topic = {}\n", quoted(rest))),
        _ => return Err(bad()),
    }
    Ok(table)
}

/// Splits `rtsp://user:password@host/path` into the URL without the password and the login.
/// A password typed with `/`, `#` or `@` in it is split off whole (see [`config::SecretUrl`]).
fn split_credentials(url: &str) -> Result<(String, Option<Login>), String> {
    let url = config::SecretUrl::new(url)
        .map_err(|_| "expected rtsp://[user:password@]host/path".to_owned())?;
    Ok(match url.userinfo() {
        Some((user, password)) => (
            url.without_userinfo(),
            Some((user.to_owned(), password.to_owned())),
        ),
        None => (url.expose().to_owned(), None),
    })
}

/// Writes the configuration and its secrets: nothing is written if the text does not parse,
/// and an existing configuration is replaced only with `force` (and kept as a backup).
pub fn write(
    config_path: &Path,
    text: &str,
    secrets: &[(PathBuf, String)],
    force: bool,
) -> Result<Written, ProvisionError> {
    Config::parse(text, config_path).map_err(ProvisionError::Invalid)?;
    let dir = config_path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(ProvisionError::io(dir))?;
    let backup = if config_path.exists() {
        if !force {
            return Err(ProvisionError::Exists(config_path.to_owned()));
        }
        let stamp = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ");
        let backup = config_path.with_extension(format!("toml.{stamp}.bak"));
        std::fs::copy(config_path, &backup).map_err(ProvisionError::io(&backup))?;
        Some(backup)
    } else {
        None
    };
    let mut written = Vec::new();
    for (path, secret) in secrets {
        write_private(path, &format!("{secret}\n"), 0o600)?;
        written.push(path.clone());
    }
    write_private(config_path, text, 0o640)?;
    Ok(Written {
        config: config_path.to_owned(),
        backup,
        secrets: written,
    })
}

/// Writes `text` to `path` with `mode`, group `alertclip` when that group exists, through a
/// temporary file so a crash never leaves half a file.
fn write_private(path: &Path, text: &str, mode: u32) -> Result<(), ProvisionError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let error = |source: std::io::Error| ProvisionError::Io {
        path: path.to_owned(),
        source,
    };
    let temp = path.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temp)
        .map_err(error)?;
    file.write_all(text.as_bytes()).map_err(error)?;
    file.sync_all().map_err(error)?;
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode)).map_err(error)?;
    if let Some(gid) = service_group() {
        // Best effort: the file is written all the same, and check says if the service
        // cannot read it.
        let _ = std::os::unix::fs::chown(&temp, None, Some(gid));
    }
    std::fs::rename(&temp, path).map_err(error)
}

/// The `alertclip` group's id, when the service's group exists.
fn service_group() -> Option<u32> {
    crate::sys::group_id("alertclip")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_leave_the_url_for_a_file_of_their_own() {
        let answers = Answers {
            site_id: Some("corner-12".into()),
            site_name: Some("Corner \"Market\"".into()),
            cameras: vec!["front=rtsp://admin:s3cr=t@10.0.0.5:554/Streaming/101".into()],
            buttons: vec![
                "register=gpio:GPIO17".into(),
                "foot=evdev:/dev/input/by-id/usb-foot-event-kbd:KEY_F12".into(),
            ],
            ..Answers::default()
        };
        let (text, secrets) = render(&answers, Path::new("/etc/alertclip")).unwrap();
        assert!(!text.contains("s3cr=t"), "{text}");
        assert!(
            text.contains("url = \"rtsp://10.0.0.5:554/Streaming/101\""),
            "{text}"
        );
        assert!(text.contains("username = \"admin\""));
        assert_eq!(
            secrets,
            [(
                PathBuf::from("/etc/alertclip/front.password"),
                "s3cr=t".to_owned()
            )]
        );
        let config = Config::parse(&text, Path::new("x.toml")).unwrap();
        assert_eq!(config.site.name, "Corner \"Market\"");
        assert_eq!(config.buttons.len(), 2);
        assert_eq!(config.buttons[1].key.as_deref(), Some("KEY_F12"));
    }

    #[test]
    fn an_entered_camera_is_probed_as_it_will_be_configured() {
        let (camera, password) = camera_table("back = rtsp://admin:Sl/a#sh@10.0.0.7/live").unwrap();
        assert_eq!(camera.url.expose(), "rtsp://10.0.0.7/live");
        assert_eq!(password.as_deref(), Some("Sl/a#sh"));
        let (camera, password) = camera_table("door = rtsp://admin:pa@ss@10.0.0.6/live").unwrap();
        assert_eq!(camera.id, "door");
        assert_eq!(camera.username.as_deref(), Some("admin"));
        assert_eq!(password.as_deref(), Some("pa@ss"));
        assert!(!format!("{camera:?}").contains("pa@ss"));
        assert_eq!(
            camera.pre_roll,
            config::Camera::deserialize(toml::toml! { id = "x"
            url = "rtsp://h/p" })
            .unwrap()
            .pre_roll
        );
        let error = camera_table("rtsp://admin:pw@10.0.0.6/cam?channel=1")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("the camera's id first") && !error.contains("pw"),
            "{error}"
        );
        assert!(
            camera_table("rtsp://10.0.0.6/live")
                .unwrap_err()
                .to_string()
                .contains("expected id=rtsp://")
        );
    }

    #[test]
    fn missing_answers_name_their_flag() {
        let error = render(&Answers::default(), Path::new("/etc/alertclip"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("--site-id"), "{error}");
        let answers = Answers {
            site_id: Some("s".into()),
            site_name: Some("S".into()),
            ..Answers::default()
        };
        assert!(
            render(&answers, Path::new("/x"))
                .unwrap_err()
                .to_string()
                .contains("--camera")
        );
        let answers = Answers {
            buttons: vec!["x=usb".into()],
            cameras: vec!["a=rtsp://h/p".into()],
            ..answers
        };
        assert!(
            render(&answers, Path::new("/x"))
                .unwrap_err()
                .to_string()
                .contains("--button x=usb")
        );
    }
}
