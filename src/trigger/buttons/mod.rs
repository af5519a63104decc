//! Panic buttons and the lights beside them.
//!
//! [`button`] is the debounce, hold and stuck-detection logic every input shares; its inputs
//! are [`gpio`] lines, [`keyboard`] (evdev) keys and [`wireless`] buttons bridged to MQTT;
//! [`light`] shows staff whether help was called and whether help is coming, and [`buzzer`]
//! chirps when an officer acknowledges. This module starts every configured button, light and
//! buzzer, and hands back each button's status and what each light shows, for status reports
//! and health alerts.

pub mod button;
pub mod buzzer;
pub mod gpio;
pub mod keyboard;
pub mod light;
pub mod wireless;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::button::{ButtonStatus, InputError, Timing, Wiring};
use self::gpio::{GpioInput, GpioOutput};
use self::keyboard::KeyInput;
use super::Triggers;
use crate::config::{self, ButtonKind, Config};
use alertclip_mqtt::Settings;
use light::{Confirmations, Pattern, Press};

/// A running light: what it shows now.
#[derive(Debug, Clone)]
pub struct LightShown {
    /// `box`, or the id of the button it is beside.
    pub name: String,
    /// What it shows.
    pub pattern: watch::Receiver<Pattern>,
}

/// What [`start`] started.
#[derive(Debug, Clone, Default)]
pub struct Started {
    /// The buttons.
    pub buttons: Vec<Button>,
    /// The lights.
    pub lights: Vec<LightShown>,
}

/// A running button.
#[derive(Debug, Clone)]
pub struct Button {
    /// Its id.
    pub id: String,
    /// Its status.
    pub status: watch::Receiver<ButtonStatus>,
}

/// Why buttons could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("button[{index}] ({id}): {message}")]
pub struct ButtonSetupError {
    index: usize,
    id: String,
    message: String,
}

/// What buttons and lights hear of delivery, when it is configured.
#[derive(Debug, Clone)]
pub struct DeliveryLink {
    /// What the lights show.
    pub confirmations: Confirmations,
    /// The delivery broker, which wireless buttons without a broker of their own connect to,
    /// each with a session of its own.
    pub broker: Settings,
}

/// Starts the buttons of `config` and their lights, and the box's light, on `tracker` until
/// the tokens are cancelled: `buttons_cancel` stops taking presses, `lights_cancel` turns the
/// lights off.
pub fn start(
    config: &Config,
    triggers: &Triggers,
    delivery: Option<&DeliveryLink>,
    tracker: &TaskTracker,
    buttons_cancel: &CancellationToken,
    lights_cancel: &CancellationToken,
) -> Result<Started, ButtonSetupError> {
    let confirmations = delivery.map(|d| &d.confirmations);
    let show_for = config.desk.as_ref().map(|d| d.show_for.0);
    let mut lights = Vec::new();
    let box_light = config.feedback.as_ref().map(|light| {
        let (tx, rx) = mpsc::unbounded_channel();
        lights.push(spawn_light(
            "box".into(),
            light.clone(),
            show_for,
            rx,
            confirmations,
            tracker,
            lights_cancel,
        ));
        tx
    });
    if let (Some(spec), Some(confirmations)) = (&config.buzzer, confirmations) {
        let spec = spec.clone();
        let open =
            move || GpioOutput::open("buzzer", spec.chip.as_deref(), &spec.line, spec.active_low);
        tracker.spawn(buzzer::run(
            open,
            confirmations.responses.resubscribe(),
            lights_cancel.clone(),
        ));
    }
    let mut buttons = Vec::new();
    for (index, spec) in config.buttons.iter().enumerate() {
        let setup_error = |message: String| ButtonSetupError {
            index,
            id: spec.id.clone(),
            message,
        };
        let mut presses: Vec<mpsc::UnboundedSender<Press>> = box_light.iter().cloned().collect();
        if let Some(light) = &spec.feedback {
            let (tx, rx) = mpsc::unbounded_channel();
            lights.push(spawn_light(
                spec.id.clone(),
                light.clone(),
                show_for,
                rx,
                confirmations,
                tracker,
                lights_cancel,
            ));
            presses.push(tx);
        }
        let (status_tx, status) = watch::channel(ButtonStatus::default());
        let wiring = Wiring {
            id: spec.id.clone(),
            location: spec.location.clone(),
            cameras: spec.cameras.clone(),
            triggers: triggers.clone(),
            presses,
            status: status_tx,
        };
        let timing = Timing {
            debounce: spec.debounce.0,
            hold: spec.hold.0,
            stuck_after: spec.stuck_after.0,
        };
        let cancel = buttons_cancel.child_token();
        match spec.kind {
            ButtonKind::Gpio => {
                let spec = spec.clone();
                let Some(line) = spec.line.clone() else {
                    return Err(setup_error("no line".into()));
                };
                let open = move || {
                    GpioInput::open(
                        &spec.id,
                        spec.chip.as_deref(),
                        &line,
                        spec.bias,
                        spec.active_low,
                        spec.debounce.0,
                    )
                };
                tracker.spawn(button::run(wiring, timing, open, cancel));
            }
            ButtonKind::Evdev => {
                let spec = spec.clone();
                let (Some(device), Some(key)) = (spec.device.clone(), spec.key.clone()) else {
                    return Err(setup_error("no device or key".into()));
                };
                let open = move || KeyInput::open(&device, &key, spec.grab);
                tracker.spawn(button::run(wiring, timing, open, cancel));
            }
            ButtonKind::Mqtt => {
                let Some(topic) = spec.topic.clone() else {
                    return Err(setup_error("no topic".into()));
                };
                let messages = match (&spec.broker, delivery) {
                    (Some(url), _) => {
                        let settings = button_broker(config, spec, url).map_err(setup_error)?;
                        wireless::own_broker(&settings, topic, &wiring, tracker, cancel.clone())
                            .map_err(|e| setup_error(e.to_string()))?
                    }
                    (None, Some(delivery)) => {
                        let settings = on_delivery_broker(&delivery.broker, &spec.id);
                        wireless::own_broker(&settings, topic, &wiring, tracker, cancel.clone())
                            .map_err(|e| setup_error(e.to_string()))?
                    }
                    (None, None) => return Err(setup_error("needs [mqtt] or a broker".into())),
                };
                tracker.spawn(wireless::run(
                    wiring,
                    spec.match_fields.clone(),
                    messages,
                    cancel,
                ));
            }
        }
        tracing::info!(button = %spec.id, kind = ?spec.kind, location = spec.location.as_deref().unwrap_or("-"), "button configured");
        buttons.push(Button {
            id: spec.id.clone(),
            status,
        });
    }
    Ok(Started { buttons, lights })
}

/// Settings for a wireless button's own broker: its URL and credentials, the system's CAs.
fn button_broker(
    config: &Config,
    spec: &config::Button,
    url: &config::BrokerUrl,
) -> Result<Settings, String> {
    let client_id = format!("alertclip-{}-button-{}", config.site.id, spec.id);
    let settings = Settings::new(url.clone(), client_id)
        .login(spec.username.as_deref(), spec.password_file.as_deref())
        .map_err(|e| format!("password_file {e}"))?;
    Ok(Settings {
        max_incoming: BUTTON_MAX_INCOMING,
        ..settings
    })
}

/// Settings for a wireless button on the delivery broker: the same broker and login, a client
/// id of its own, no last will, and the small packet limit of a button.
fn on_delivery_broker(delivery: &Settings, button: &str) -> Settings {
    Settings {
        client_id: format!("{}-button-{button}", delivery.client_id),
        will: None,
        max_incoming: BUTTON_MAX_INCOMING,
        ..delivery.clone()
    }
}

/// A button's broker sends presses, never video: anything larger is discarded.
const BUTTON_MAX_INCOMING: usize = 64 << 10;

fn spawn_light(
    name: String,
    light: config::Light,
    show_for: Option<std::time::Duration>,
    presses: mpsc::UnboundedReceiver<Press>,
    confirmations: Option<&Confirmations>,
    tracker: &TaskTracker,
    cancel: &CancellationToken,
) -> LightShown {
    let timing = light::Timing {
        confirm_for: light.confirm_for.0,
        show_for,
    };
    let id = format!("{name}-light");
    let open = move || -> Result<GpioOutput, InputError> {
        GpioOutput::open(&id, light.chip.as_deref(), &light.line, light.active_low)
    };
    let (shows, pattern) = watch::channel(Pattern::Off);
    tracker.spawn(light::run(
        name.clone(),
        open,
        timing,
        presses,
        confirmations.cloned(),
        shows,
        cancel.clone(),
    ));
    LightShown { name, pattern }
}
