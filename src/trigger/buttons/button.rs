//! Physical panic buttons: the logic that turns a contact's level changes into presses, and the
//! task that keeps one button's input open.
//!
//! A press must never be missed and never fire by accident. [`ButtonLogic`] is a pure state
//! machine over timed level changes: the level is debounced (a change counts once it has held
//! for `debounce`), a press fires once the button has been held for `hold` (at once when `hold`
//! is 0), fires once per press, and a button held for `stuck_after` is reported as stuck rather
//! than fired again. A button already held when its input opens is not fired: it may be a
//! wiring fault, and is reported if it stays so.
//!
//! Inputs are behind the narrowest trait, [`EdgeSource`]: the GPIO and evdev adapters
//! implement it for real hardware, and tests script it.

use std::future::Future;
use std::time::Duration;

use alertclip_mqtt::Backoff;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::trigger::buttons::light::Press;
use crate::trigger::{Trigger, TriggerKind, Triggers};

/// What a button's input reported.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The input could not be opened.
    #[error("{0}")]
    Open(String),
    /// The input failed or disappeared (a USB button unplugged).
    #[error("{0}")]
    Lost(String),
}

/// One input's level changes: a GPIO line, an input device's key.
pub trait EdgeSource: Send {
    /// The level now: `true` when the button is pressed.
    fn level(&self) -> Result<bool, InputError>;
    /// Waits for the next level change and returns the new level.
    fn next_edge(&mut self) -> impl Future<Output = Result<bool, InputError>> + Send;
}

/// What the logic concludes from the levels it saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ButtonEvent {
    /// A press: fire a trigger.
    Press,
    /// Held for `stuck_after`: report, do not fire.
    Stuck,
    /// Released.
    Released {
        /// It had been reported stuck.
        after_stuck: bool,
    },
}

/// Timing of a button's logic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// A level change counts once it has held this long.
    pub debounce: Duration,
    /// A press counts once held this long (0: at once).
    pub hold: Duration,
    /// Held this long, the button is reported stuck.
    pub stuck_after: Duration,
}

/// See the module documentation.
#[derive(Debug)]
pub struct ButtonLogic {
    timing: Timing,
    /// The raw level and when it last changed.
    raw: bool,
    raw_since: Instant,
    /// The debounced level.
    stable: bool,
    /// When the current press began (its first raw edge).
    active_since: Instant,
    /// Whether the current press may fire: not when the button was already held at start.
    armed: bool,
    fired: bool,
    stuck: bool,
}

impl ButtonLogic {
    /// Logic starting from the input's level `now`.
    pub fn new(timing: Timing, level: bool, now: Instant) -> ButtonLogic {
        ButtonLogic {
            timing,
            raw: level,
            raw_since: now,
            stable: level,
            active_since: now,
            armed: !level,
            fired: false,
            stuck: false,
        }
    }

    /// The raw level changed at `now`.
    pub fn edge(&mut self, level: bool, now: Instant) -> Vec<ButtonEvent> {
        if level != self.raw {
            self.raw = level;
            self.raw_since = now;
        }
        self.tick(now)
    }

    /// When something happens next without a further edge: a debounced change, a press
    /// completing its hold, or the stuck limit.
    pub fn deadline(&self) -> Option<Instant> {
        if self.raw != self.stable {
            return Some(self.raw_since + self.timing.debounce);
        }
        if !self.stable {
            return None;
        }
        let press = (self.armed && !self.fired).then_some(self.active_since + self.timing.hold);
        let stuck = (!self.stuck).then_some(self.active_since + self.timing.stuck_after);
        press.into_iter().chain(stuck).min()
    }

    /// Advances to `now`.
    pub fn tick(&mut self, now: Instant) -> Vec<ButtonEvent> {
        let mut events = Vec::new();
        if self.raw != self.stable && now >= self.raw_since + self.timing.debounce {
            self.stable = self.raw;
            if self.stable {
                self.active_since = self.raw_since;
            } else {
                events.push(ButtonEvent::Released {
                    after_stuck: self.stuck,
                });
                self.armed = true;
                self.fired = false;
                self.stuck = false;
            }
        }
        if self.stable && self.armed && !self.fired && now >= self.active_since + self.timing.hold {
            self.fired = true;
            events.push(ButtonEvent::Press);
        }
        if self.stable && !self.stuck && now >= self.active_since + self.timing.stuck_after {
            self.stuck = true;
            events.push(ButtonEvent::Stuck);
        }
        events
    }
}

/// A button's state, for status and health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ButtonState {
    /// Being opened.
    Opening,
    /// Watching for presses.
    Ready,
    /// Held for longer than `stuck_after`; presses are not fired until it is released.
    Stuck,
    /// The input could not be opened or was lost; retried.
    Unavailable,
    /// Stopped on shutdown.
    Stopped,
}

impl ButtonState {
    /// Its name in status reports, as serialized.
    pub fn as_str(&self) -> &'static str {
        match self {
            ButtonState::Opening => "opening",
            ButtonState::Ready => "ready",
            ButtonState::Stuck => "stuck",
            ButtonState::Unavailable => "unavailable",
            ButtonState::Stopped => "stopped",
        }
    }
}

/// A button's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ButtonStatus {
    /// What it is doing.
    pub state: ButtonState,
    /// Why it is unavailable, when it is.
    pub last_error: Option<String>,
    /// Presses fired since start.
    pub presses: u64,
}

impl Default for ButtonStatus {
    fn default() -> Self {
        ButtonStatus {
            state: ButtonState::Opening,
            last_error: None,
            presses: 0,
        }
    }
}

/// What a button fires, and where its presses are announced (for feedback lights).
#[derive(Debug, Clone)]
pub struct Wiring {
    /// The button's id: the trigger's source.
    pub id: String,
    /// Where it is, for officers: the trigger's note.
    pub location: Option<String>,
    /// Cameras to clip; empty for all.
    pub cameras: Vec<String>,
    /// Where triggers go.
    pub triggers: Triggers,
    /// Each press's event id goes here (feedback lights listen).
    pub presses: Vec<mpsc::UnboundedSender<Press>>,
    /// The button's status.
    pub status: watch::Sender<ButtonStatus>,
}

impl Wiring {
    /// Fires a press as a `button` trigger; never rate-limited.
    pub async fn press(&self) {
        self.press_noted(None).await;
    }

    /// Fires a press whose note says more than where the button is (`said`, after the
    /// location): a wireless press that may be late, say.
    pub async fn press_noted(&self, said: Option<&str>) {
        let mut trigger = Trigger::now(TriggerKind::Button, &self.id);
        trigger.note = match (self.location.as_deref(), said) {
            (Some(location), Some(said)) => Some(format!("{location} ({said})")),
            (None, Some(said)) => Some(said.to_owned()),
            (location, None) => location.map(str::to_owned),
        };
        trigger.cameras = self.cameras.clone();
        tracing::info!(button = %self.id, location = self.location.as_deref().unwrap_or("-"), "button pressed");
        match self.triggers.fire(trigger).await {
            Ok(event) => self.taken(event, true),
            Err(error) => {
                tracing::error!(button = %self.id, %error, "button press not taken");
                // Its event was raised but its alert is not on disk yet: the light says so.
                if let Some(event) = error.event() {
                    self.taken(event, false);
                }
            }
        }
    }
}

impl Wiring {
    fn taken(&self, event: Uuid, alert_on_disk: bool) {
        self.status.send_modify(|s| s.presses += 1);
        for press in &self.presses {
            let _ = press.send(Press {
                event,
                alert_on_disk,
            });
        }
    }
}

/// Reconnect delays for an input that could not be opened or was lost.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Keeps a physical button's input open until `cancel`, retrying when it cannot be opened or is
/// lost, and fires its presses.
pub async fn run<S: EdgeSource>(
    wiring: Wiring,
    timing: Timing,
    open: impl Fn() -> Result<S, InputError> + Send,
    cancel: CancellationToken,
) {
    let mut retry = Backoff::new(RETRY_FIRST, RETRY_MAX);
    loop {
        let error = match open() {
            Ok(source) => {
                wiring.status.send_modify(|s| {
                    s.state = ButtonState::Ready;
                    s.last_error = None;
                });
                tracing::info!(button = %wiring.id, "button ready");
                retry.reset();
                match watch_presses(&wiring, timing, source, &cancel).await {
                    Ok(()) => break,
                    Err(error) => error,
                }
            }
            Err(error) => error,
        };
        let message = error.to_string();
        if wiring.status.borrow().last_error.as_deref() != Some(message.as_str()) {
            tracing::warn!(button = %wiring.id, error = %message, "button unavailable; retrying");
        }
        wiring.status.send_modify(|s| {
            s.state = ButtonState::Unavailable;
            s.last_error = Some(message);
        });
        if !retry.wait(&cancel).await {
            break;
        }
    }
    wiring
        .status
        .send_modify(|s| s.state = ButtonState::Stopped);
}

/// Feeds an open input's edges through the logic until `cancel` (`Ok`) or the input fails.
async fn watch_presses<S: EdgeSource>(
    wiring: &Wiring,
    timing: Timing,
    mut source: S,
    cancel: &CancellationToken,
) -> Result<(), InputError> {
    let level = source.level()?;
    if level {
        tracing::warn!(button = %wiring.id, "button held as its input opened: not fired (a stuck button or a wiring fault?)");
    }
    let mut logic = ButtonLogic::new(timing, level, Instant::now());
    loop {
        let deadline = logic.deadline();
        let events = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            edge = source.next_edge() => logic.edge(edge?, Instant::now()),
            _ = sleep_until(deadline), if deadline.is_some() => logic.tick(Instant::now()),
        };
        for event in events {
            match event {
                ButtonEvent::Press => wiring.press().await,
                ButtonEvent::Stuck => {
                    tracing::warn!(button = %wiring.id, after = ?timing.stuck_after, "button stuck: further presses are not fired until it is released");
                    wiring.status.send_modify(|s| s.state = ButtonState::Stuck);
                }
                ButtonEvent::Released { after_stuck: true } => {
                    tracing::info!(button = %wiring.id, "stuck button released");
                    wiring.status.send_modify(|s| s.state = ButtonState::Ready);
                }
                ButtonEvent::Released { after_stuck: false } => {}
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn timing(hold_ms: u64) -> Timing {
        Timing {
            debounce: ms(30),
            hold: ms(hold_ms),
            stuck_after: ms(60_000),
        }
    }

    /// Runs the logic over `(ms, level)` edges and ticks at every deadline until `end_ms`;
    /// returns `(ms, event)`.
    fn script(
        timing: Timing,
        start_level: bool,
        edges: &[(u64, bool)],
        end_ms: u64,
    ) -> Vec<(u64, ButtonEvent)> {
        let t0 = Instant::now();
        let at = |n: u64| t0 + ms(n);
        let mut logic = ButtonLogic::new(timing, start_level, t0);
        let mut out = Vec::new();
        let mut edges = edges.iter().peekable();
        loop {
            let next_edge = edges.peek().map(|(ms, _)| at(*ms));
            let deadline = logic.deadline();
            let now = match (next_edge, deadline) {
                (Some(e), Some(d)) if d < e => d,
                (Some(e), _) => e,
                (None, Some(d)) => d,
                (None, None) => break,
            };
            if now > at(end_ms) {
                break;
            }
            let events = if Some(now) == next_edge {
                let (_, level) = edges.next().unwrap();
                logic.edge(*level, now)
            } else {
                logic.tick(now)
            };
            out.extend(
                events
                    .into_iter()
                    .map(|e| ((now - t0).as_millis() as u64, e)),
            );
        }
        out
    }

    #[test]
    fn a_bouncing_press_fires_once_after_it_settles() {
        // Contact bounce: five transitions within 4 ms, then held 500 ms, bouncing on release.
        let edges = [
            (100, true),
            (101, false),
            (102, true),
            (103, false),
            (104, true),
            (604, false),
            (605, true),
            (606, false),
        ];
        let events = script(timing(0), false, &edges, 2_000);
        assert_eq!(
            events,
            vec![
                (134, ButtonEvent::Press),
                (636, ButtonEvent::Released { after_stuck: false })
            ]
        );
    }

    #[test]
    fn glitches_shorter_than_the_debounce_never_fire() {
        let edges: Vec<(u64, bool)> = (0..50)
            .flat_map(|i| [(i * 100, true), (i * 100 + 20, false)])
            .collect();
        assert!(script(timing(0), false, &edges, 10_000).is_empty());
    }

    #[test]
    fn hold_ignores_taps_and_fires_long_presses_once() {
        // A 300 ms tap, then a 3 s press, with hold = 1 s.
        let edges = [(0, true), (300, false), (1_000, true), (4_000, false)];
        let events = script(timing(1_000), false, &edges, 6_000);
        assert_eq!(
            events,
            vec![
                (330, ButtonEvent::Released { after_stuck: false }),
                (2_000, ButtonEvent::Press),
                (4_030, ButtonEvent::Released { after_stuck: false }),
            ]
        );
        // A bounce during the hold does not restart it.
        let events = script(
            timing(1_000),
            false,
            &[(0, true), (500, false), (510, true)],
            3_000,
        );
        assert_eq!(events, vec![(1_000, ButtonEvent::Press)]);
    }

    #[test]
    fn a_stuck_button_is_reported_once_and_fires_again_only_after_release() {
        let t = Timing {
            stuck_after: ms(5_000),
            ..timing(0)
        };
        let edges = [(0, true), (20_000, false), (21_000, true)];
        let events = script(t, false, &edges, 22_000);
        assert_eq!(
            events,
            vec![
                (30, ButtonEvent::Press),
                (5_000, ButtonEvent::Stuck),
                (20_030, ButtonEvent::Released { after_stuck: true }),
                (21_030, ButtonEvent::Press),
            ]
        );
    }

    #[test]
    fn a_button_held_at_start_is_not_fired() {
        let t = Timing {
            stuck_after: ms(5_000),
            ..timing(0)
        };
        let events = script(t, true, &[(8_000, false), (9_000, true)], 10_000);
        assert_eq!(
            events,
            vec![
                (5_000, ButtonEvent::Stuck),
                (8_030, ButtonEvent::Released { after_stuck: true }),
                (9_030, ButtonEvent::Press)
            ]
        );
    }

    /// A scripted input: each edge after its delay, then the input is lost (or waits forever).
    struct Scripted {
        start: bool,
        edges: std::collections::VecDeque<(Duration, bool)>,
        lose_at_end: bool,
    }

    impl EdgeSource for Scripted {
        fn level(&self) -> Result<bool, InputError> {
            Ok(self.start)
        }
        async fn next_edge(&mut self) -> Result<bool, InputError> {
            match self.edges.pop_front() {
                Some((delay, level)) => {
                    tokio::time::sleep(delay).await;
                    Ok(level)
                }
                None if self.lose_at_end => Err(InputError::Lost("unplugged".into())),
                None => std::future::pending().await,
            }
        }
    }

    fn wiring(
        presses: mpsc::UnboundedSender<Press>,
    ) -> (
        Wiring,
        mpsc::Receiver<crate::trigger::Request>,
        watch::Receiver<ButtonStatus>,
    ) {
        let (triggers, requests) = Triggers::channel(16);
        let (status_tx, status) = watch::channel(ButtonStatus::default());
        let wiring = Wiring {
            id: "register-2".into(),
            location: Some("register 2".into()),
            cameras: vec!["front".into()],
            triggers,
            presses: vec![presses],
            status: status_tx,
        };
        (wiring, requests, status)
    }

    #[tokio::test(start_paused = true)]
    async fn the_driver_fires_button_triggers_and_retries_a_lost_input() {
        gstreamer::init().unwrap();
        let (presses_tx, mut presses) = mpsc::unbounded_channel();
        let (wiring, mut requests, mut status) = wiring(presses_tx);
        let cancel = CancellationToken::new();
        let opens = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counter = opens.clone();
        let open = move || {
            match counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) {
                // First open: a press with bounce, then the USB button is unplugged.
                0 => Ok(Scripted {
                    start: false,
                    edges: [(100, true), (2, false), (2, true), (300, false)]
                        .into_iter()
                        .map(|(n, l)| (ms(n), l))
                        .collect(),
                    lose_at_end: true,
                }),
                1 => Err(InputError::Open(
                    "/dev/input/by-id/x: no such device".into(),
                )),
                // Plugged back in: another press.
                _ => Ok(Scripted {
                    start: false,
                    edges: [(ms(50), true)].into_iter().collect(),
                    lose_at_end: false,
                }),
            }
        };
        let task = tokio::spawn(run(wiring, timing(0), open, cancel.clone()));
        let started = Instant::now();
        // The clipper's side of the channel: answer with event ids.
        let mut events = Vec::new();
        for _ in 0..2 {
            let request = requests.recv().await.unwrap();
            let trigger = request.trigger;
            assert_eq!(trigger.kind, TriggerKind::Button);
            assert_eq!(
                (trigger.source.as_str(), trigger.note.as_deref()),
                ("register-2", Some("register 2"))
            );
            assert_eq!(trigger.cameras, vec!["front".to_owned()]);
            events.push((Instant::now() - started).as_millis());
            let event = Uuid::now_v7();
            request.reply.send(Ok(event)).unwrap();
            assert_eq!(
                presses.recv().await,
                Some(Press {
                    event,
                    alert_on_disk: true
                })
            );
        }
        // Pressed 104 ms in (settled 30 ms later); lost, failed to reopen after 1 s, reopened
        // after 2 s more, pressed 50 ms later.
        assert_eq!(events[0], 134);
        assert!(events[1] > 3_000, "{events:?}");
        status
            .wait_for(|s| s.presses == 2 && s.state == ButtonState::Ready)
            .await
            .unwrap();
        assert_eq!(opens.load(std::sync::atomic::Ordering::Relaxed), 3);
        cancel.cancel();
        task.await.unwrap();
        assert_eq!(status.borrow().state, ButtonState::Stopped);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unavailable_input_is_reported_with_its_error() {
        let (presses_tx, _presses) = mpsc::unbounded_channel();
        let (wiring, _requests, mut status) = wiring(presses_tx);
        let cancel = CancellationToken::new();
        let open = || {
            Err::<Scripted, _>(InputError::Open(
                "gpio chip gpiochip9: no such file or directory".into(),
            ))
        };
        let task = tokio::spawn(run(wiring, timing(0), open, cancel.clone()));
        let reported = status
            .wait_for(|s| s.state == ButtonState::Unavailable)
            .await
            .unwrap()
            .clone();
        assert_eq!(
            reported.last_error.as_deref(),
            Some("gpio chip gpiochip9: no such file or directory")
        );
        cancel.cancel();
        task.await.unwrap();
    }
}
