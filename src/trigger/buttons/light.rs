//! Feedback for staff: a light (or buzzer) that says whether help was called, and, with a
//! desk, whether help is coming.
//!
//! After a press, the light blinks slowly while the alert waits for the broker, stays on once
//! the broker has acknowledged it (for `confirm_for`, or with `[desk]` until an officer
//! responds, at most `show_for`), and blinks fast while delivery is failing (the broker
//! cannot be reached, or the alert could not be written to disk and is being retried from
//! memory). An officer's response then shows as a double flash (acknowledged: a person saw
//! it) or long on, short off (help on the way: dispatched or on scene), for `show_for`; a
//! closed event turns it off. Without delivery configured, a press is confirmed as soon as
//! the box has taken it. [`FeedbackLogic`] is the pure state machine; [`run`] drives a
//! [`Light`] from presses and delivery's [`Confirmations`], and says what it shows on a watch
//! channel, for the status.

use std::collections::VecDeque;
use std::time::Duration;

use alertclip_mqtt::LinkStatus;
use alertclip_wire::command::ResponseState;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::trigger::buttons::button::InputError;

/// Slow blink, waiting for the broker: on and off, in milliseconds.
const SLOW_BLINK: &[(bool, u64)] = &[(true, 500), (false, 500)];
/// Fast blink: delivery failing.
const FAST_BLINK: &[(bool, u64)] = &[(true, 125), (false, 125)];
/// Two short flashes every two seconds: an officer acknowledged the alert.
const DOUBLE_FLASH: &[(bool, u64)] = &[(true, 150), (false, 150), (true, 150), (false, 1550)];
/// Long on, short off: help is on the way.
const LONG_ON: &[(bool, u64)] = &[(true, 1500), (false, 500)];
/// Acknowledged alerts remembered, for a press whose acknowledgement came first.
const REMEMBERED: usize = 64;

/// Something that can be switched on and off.
pub trait Light: Send {
    /// Switches it.
    fn set(&mut self, on: bool) -> Result<(), InputError>;
}

/// What the light shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Pattern {
    /// Nothing to show.
    #[default]
    Off,
    /// The alert waits for the broker.
    SlowBlink,
    /// The broker has the alert.
    On,
    /// Delivery is failing: the alert waits on disk for the broker, or is not on disk yet.
    FastBlink,
    /// An officer acknowledged the alert.
    DoubleFlash,
    /// Officers are on their way, or on scene.
    LongOn,
}

impl Pattern {
    /// What it means, as the status names it: `off`, `sending`, `delivered`, `failing`,
    /// `acknowledged` or `help_on_the_way`.
    pub fn meaning(&self) -> &'static str {
        match self {
            Pattern::Off => "off",
            Pattern::SlowBlink => "sending",
            Pattern::On => "delivered",
            Pattern::FastBlink => "failing",
            Pattern::DoubleFlash => "acknowledged",
            Pattern::LongOn => "help_on_the_way",
        }
    }
}

/// A press as a light learns of it: the event it raised, and whether its alert is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Press {
    /// The event the press opened or joined.
    pub event: Uuid,
    /// False when the alert could not be written to disk and is being retried from memory.
    pub alert_on_disk: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Waiting {
        event: Uuid,
        since: Instant,
    },
    /// The alert is not on disk: failing whatever the broker link says.
    Failing {
        event: Uuid,
        since: Instant,
    },
    Confirmed {
        event: Uuid,
        until: Instant,
    },
    /// An officer responded; shown until `until`.
    Responded {
        event: Uuid,
        state: ResponseState,
        since: Instant,
        until: Instant,
    },
}

impl State {
    /// The event the light is showing, if any.
    fn event(&self) -> Option<Uuid> {
        match *self {
            State::Idle => None,
            State::Waiting { event, .. }
            | State::Failing { event, .. }
            | State::Confirmed { event, .. }
            | State::Responded { event, .. } => Some(event),
        }
    }
}

/// How long a light shows what it shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long it stays on once the broker has the alert, without a desk.
    pub confirm_for: Duration,
    /// With `[desk]`: how long it shows a response, and waits (on) for one.
    pub show_for: Option<Duration>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct FeedbackLogic {
    timing: Timing,
    state: State,
    acked: VecDeque<Uuid>,
}

impl FeedbackLogic {
    /// Logic that keeps the light on for `timing` once an alert is acknowledged.
    pub fn new(timing: Timing) -> FeedbackLogic {
        FeedbackLogic {
            timing,
            state: State::Idle,
            acked: VecDeque::new(),
        }
    }

    /// How long the light stays on once the broker has the alert.
    fn delivered_for(&self) -> Duration {
        self.timing.show_for.unwrap_or(self.timing.confirm_for)
    }

    /// A press opened (or joined) `event`. A press joining the event already shown keeps
    /// what an officer's response says, while it is shown.
    pub fn pressed(&mut self, event: Uuid, now: Instant) {
        if matches!(self.state, State::Responded { event: shown, until, .. } if shown == event && now < until)
        {
            return;
        }
        self.state = if self.acked.contains(&event) {
            State::Confirmed {
                event,
                until: now + self.delivered_for(),
            }
        } else {
            State::Waiting { event, since: now }
        };
    }

    /// A press whose alert could not be written to disk: it is retried from memory.
    pub fn not_on_disk(&mut self, event: Uuid, now: Instant) {
        if !self.acked.contains(&event) {
            self.state = State::Failing { event, since: now };
        }
    }

    /// A press confirmed without delivery: the box has taken it.
    pub fn taken(&mut self, event: Uuid, now: Instant) {
        self.state = State::Confirmed {
            event,
            until: now + self.timing.confirm_for,
        };
    }

    /// An officer responded to `event`: shown if it is the event the light shows. Closed
    /// turns the light off.
    pub fn responded(&mut self, event: Uuid, state: ResponseState, now: Instant) {
        if self.state.event() != Some(event) {
            return;
        }
        self.state = match state {
            ResponseState::Closed => State::Idle,
            _ => State::Responded {
                event,
                state,
                since: now,
                until: now + self.delivered_for(),
            },
        };
    }

    /// The broker acknowledged the alert of `event`.
    pub fn acked(&mut self, event: Uuid, now: Instant) {
        if self.acked.len() == REMEMBERED {
            self.acked.pop_front();
        }
        self.acked.push_back(event);
        if let State::Waiting { event: waiting, .. } | State::Failing { event: waiting, .. } =
            self.state
            && waiting == event
        {
            self.state = State::Confirmed {
                event,
                until: now + self.delivered_for(),
            };
        }
    }

    /// The pattern now, given whether the broker is reachable.
    pub fn pattern(&self, now: Instant, connected: bool) -> Pattern {
        match self.state {
            State::Idle => Pattern::Off,
            State::Waiting { .. } if connected => Pattern::SlowBlink,
            State::Waiting { .. } | State::Failing { .. } => Pattern::FastBlink,
            State::Confirmed { until, .. } if now < until => Pattern::On,
            State::Responded { state, until, .. } if now < until => match state {
                ResponseState::Acknowledged => Pattern::DoubleFlash,
                _ => Pattern::LongOn,
            },
            State::Confirmed { .. } | State::Responded { .. } => Pattern::Off,
        }
    }

    /// Whether the light is on at `now`, and when that next changes (absent further input).
    pub fn level(&self, now: Instant, connected: bool) -> (bool, Option<Instant>) {
        match (self.pattern(now, connected), self.state) {
            (Pattern::SlowBlink, State::Waiting { since, .. }) => cycle(SLOW_BLINK, since, now),
            (Pattern::FastBlink, State::Waiting { since, .. } | State::Failing { since, .. }) => {
                cycle(FAST_BLINK, since, now)
            }
            (Pattern::On, State::Confirmed { until, .. }) => (true, Some(until)),
            (
                pattern @ (Pattern::DoubleFlash | Pattern::LongOn),
                State::Responded { since, until, .. },
            ) => {
                let steps = if pattern == Pattern::DoubleFlash {
                    DOUBLE_FLASH
                } else {
                    LONG_ON
                };
                let (on, next) = cycle(steps, since, now);
                (on, next.map(|n| n.min(until)))
            }
            _ => (false, None),
        }
    }
}

/// Where a repeating pattern of `steps` (on or off, for so many milliseconds) begun at
/// `since` is at `now`: on or off, and when that next changes.
fn cycle(steps: &[(bool, u64)], since: Instant, now: Instant) -> (bool, Option<Instant>) {
    let period: u64 = steps.iter().map(|(_, ms)| ms).sum();
    let elapsed = (now - since).as_millis() as u64;
    let start = elapsed - elapsed % period.max(1);
    let mut end = start;
    for &(on, ms) in steps {
        end += ms;
        if elapsed < end {
            return (on, Some(since + Duration::from_millis(end)));
        }
    }
    (false, Some(since + Duration::from_millis(end)))
}

/// What a light learns from delivery: each alert the broker acknowledges, whether the
/// broker is reachable, and each officer's response the box applied. Delivery sends them;
/// the light only listens.
#[derive(Debug)]
pub struct Confirmations {
    /// Every alert the broker acknowledges, by event.
    pub acked: broadcast::Receiver<Uuid>,
    /// The broker link.
    pub link: watch::Receiver<LinkStatus>,
    /// Every response applied: the event and its state.
    pub responses: broadcast::Receiver<(Uuid, ResponseState)>,
}

impl Clone for Confirmations {
    fn clone(&self) -> Confirmations {
        Confirmations {
            acked: self.acked.resubscribe(),
            link: self.link.clone(),
            responses: self.responses.resubscribe(),
        }
    }
}

/// Drives a light until `cancel`: from presses, and from delivery's
/// `confirmations` when delivery is configured; says what it shows on `shows`. A light that
/// cannot be opened is retried; presses meanwhile are not lost, only not shown (and `shows`
/// still says what it would show).
pub async fn run<L: Light>(
    name: String,
    open: impl Fn() -> Result<L, InputError> + Send,
    timing: Timing,
    mut presses: mpsc::UnboundedReceiver<Press>,
    confirmations: Option<Confirmations>,
    shows: watch::Sender<Pattern>,
    cancel: CancellationToken,
) {
    let mut logic = FeedbackLogic::new(timing);
    let delivering = confirmations.is_some();
    let (mut acks, mut link, mut responses) = match confirmations {
        Some(c) => (Some(c.acked), Some(c.link), Some(c.responses)),
        None => (None, None, None),
    };
    let mut light: Option<L> = None;
    let mut retry_at = Instant::now();
    let mut shown: Option<bool> = None;
    loop {
        let now = Instant::now();
        if light.is_none() && now >= retry_at {
            match open() {
                Ok(opened) => {
                    light = Some(opened);
                    shown = None;
                }
                Err(error) => {
                    tracing::warn!(light = %name, %error, "feedback light unavailable; retrying in 30 s");
                    retry_at = now + Duration::from_secs(30);
                }
            }
        }
        let connected = link
            .as_mut()
            .is_none_or(|l| l.borrow_and_update().connected);
        let (on, next) = logic.level(now, connected);
        let pattern = logic.pattern(now, connected);
        shows.send_if_modified(|shown| std::mem::replace(shown, pattern) != pattern);
        if let Some(device) = light.as_mut()
            && shown != Some(on)
        {
            match device.set(on) {
                Ok(()) => shown = Some(on),
                Err(error) => {
                    tracing::warn!(light = %name, %error, "feedback light lost; retrying in 30 s");
                    light = None;
                    retry_at = now + Duration::from_secs(30);
                }
            }
        }
        let wake = next
            .into_iter()
            .chain((light.is_none()).then_some(retry_at))
            .min();
        tokio::select! {
            _ = cancel.cancelled() => break,
            press = presses.recv() => match press {
                Some(Press { event, alert_on_disk: true }) if delivering => logic.pressed(event, Instant::now()),
                Some(Press { event, alert_on_disk: false }) if delivering => logic.not_on_disk(event, Instant::now()),
                Some(Press { event, .. }) => logic.taken(event, Instant::now()),
                None => break,
            },
            ack = recv_news(&mut acks) => {
                if let Some(event) = ack {
                    logic.acked(event, Instant::now());
                }
            }
            response = recv_news(&mut responses) => {
                if let Some((event, state)) = response {
                    logic.responded(event, state, Instant::now());
                }
            }
            _ = link_changed(&mut link) => {}
            _ = sleep_until(wake) => {}
        }
    }
    if let Some(device) = light.as_mut() {
        let _ = device.set(false);
    }
    shows.send_replace(Pattern::Off);
}

/// Resolves when the broker link changes; never without delivery, or once delivery is gone.
async fn link_changed(link: &mut Option<watch::Receiver<LinkStatus>>) {
    let open = match link {
        Some(receiver) => receiver.changed().await.is_ok(),
        None => false,
    };
    if !open {
        std::future::pending::<()>().await;
    }
}

/// The next piece of news from delivery; never without delivery, or once it is gone.
pub(crate) async fn recv_news<T: Clone>(news: &mut Option<broadcast::Receiver<T>>) -> Option<T> {
    match news {
        Some(receiver) => match receiver.recv().await {
            Ok(event) => Some(event),
            // Missed some: none of them can be ours for long; carry on.
            Err(broadcast::error::RecvError::Lagged(_)) => None,
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn plain() -> Timing {
        Timing {
            confirm_for: ms(10_000),
            show_for: None,
        }
    }

    fn with_desk() -> Timing {
        Timing {
            confirm_for: ms(10_000),
            show_for: Some(ms(1_800_000)),
        }
    }

    #[test]
    fn with_a_desk_the_light_shows_each_response_to_the_pressed_event() {
        let t0 = Instant::now();
        let mut logic = FeedbackLogic::new(with_desk());
        let event = Uuid::now_v7();
        logic.pressed(event, t0);
        logic.acked(event, t0 + ms(100));
        // Delivered: on until someone responds, not just ten seconds.
        assert_eq!(logic.pattern(t0 + ms(60_000), true), Pattern::On);
        // Another event's response is not this light's news.
        logic.responded(Uuid::now_v7(), ResponseState::Acknowledged, t0 + ms(61_000));
        assert_eq!(logic.pattern(t0 + ms(61_000), true), Pattern::On);
        logic.responded(event, ResponseState::Acknowledged, t0 + ms(62_000));
        assert_eq!(logic.pattern(t0 + ms(62_000), true), Pattern::DoubleFlash);
        // A second press of the same event keeps what the officer said.
        logic.pressed(event, t0 + ms(63_000));
        assert_eq!(logic.pattern(t0 + ms(63_000), true), Pattern::DoubleFlash);
        logic.responded(event, ResponseState::Dispatched, t0 + ms(64_000));
        assert_eq!(logic.pattern(t0 + ms(64_000), false), Pattern::LongOn);
        logic.responded(event, ResponseState::OnScene, t0 + ms(65_000));
        assert_eq!(logic.pattern(t0 + ms(65_000), true), Pattern::LongOn);
        // Shown for show_for, then off, with nothing more to change.
        assert_eq!(
            logic.pattern(t0 + ms(65_000 + 1_800_000), true),
            Pattern::Off
        );
        assert_eq!(
            logic.level(t0 + ms(65_001 + 1_800_000), true),
            (false, None)
        );
        // A press of the same event after that shows its delivery again, not the dark.
        logic.pressed(event, t0 + ms(65_002 + 1_800_000));
        assert_eq!(
            logic.pattern(t0 + ms(65_003 + 1_800_000), true),
            Pattern::On
        );
        logic.responded(event, ResponseState::Closed, t0 + ms(66_000));
        assert_eq!(logic.pattern(t0 + ms(66_000), true), Pattern::Off);
        assert_eq!(Pattern::LongOn.meaning(), "help_on_the_way");
    }

    #[test]
    fn response_patterns_flash_at_their_rhythm() {
        let t0 = Instant::now();
        let mut logic = FeedbackLogic::new(with_desk());
        let event = Uuid::now_v7();
        logic.pressed(event, t0);
        logic.responded(event, ResponseState::Acknowledged, t0);
        let levels: Vec<(bool, Option<Instant>)> = [0, 149, 150, 300, 450, 1999, 2000]
            .iter()
            .map(|&t| logic.level(t0 + ms(t), true))
            .collect();
        assert_eq!(
            levels,
            [
                (true, Some(t0 + ms(150))),
                (true, Some(t0 + ms(150))),
                (false, Some(t0 + ms(300))),
                (true, Some(t0 + ms(450))),
                (false, Some(t0 + ms(2000))),
                (false, Some(t0 + ms(2000))),
                (true, Some(t0 + ms(2150))),
            ]
        );
        logic.responded(event, ResponseState::Dispatched, t0);
        assert_eq!(
            logic.level(t0 + ms(1_499), true),
            (true, Some(t0 + ms(1_500)))
        );
        assert_eq!(
            logic.level(t0 + ms(1_500), true),
            (false, Some(t0 + ms(2_000)))
        );
    }

    #[test]
    fn the_light_follows_the_delivery_of_the_pressed_alert() {
        let t0 = Instant::now();
        let mut logic = FeedbackLogic::new(plain());
        assert_eq!(logic.pattern(t0, true), Pattern::Off);
        let event = Uuid::now_v7();
        logic.pressed(event, t0);
        assert_eq!(logic.pattern(t0 + ms(100), true), Pattern::SlowBlink);
        // The broker goes away: fast blink; it comes back: slow again.
        assert_eq!(logic.pattern(t0 + ms(200), false), Pattern::FastBlink);
        // Another event's acknowledgement changes nothing.
        logic.acked(Uuid::now_v7(), t0 + ms(300));
        assert_eq!(logic.pattern(t0 + ms(300), true), Pattern::SlowBlink);
        logic.acked(event, t0 + ms(400));
        assert_eq!(logic.pattern(t0 + ms(400), true), Pattern::On);
        assert_eq!(logic.pattern(t0 + ms(10_399), false), Pattern::On);
        assert_eq!(logic.pattern(t0 + ms(10_400), true), Pattern::Off);
    }

    #[test]
    fn an_alert_not_on_disk_blinks_fast_until_it_is_acknowledged() {
        let t0 = Instant::now();
        let mut logic = FeedbackLogic::new(plain());
        let event = Uuid::now_v7();
        logic.not_on_disk(event, t0);
        // Failing even though the broker is reachable: the alert is not on its way yet.
        assert_eq!(logic.pattern(t0 + ms(100), true), Pattern::FastBlink);
        logic.acked(event, t0 + ms(3_000));
        assert_eq!(logic.pattern(t0 + ms(3_000), true), Pattern::On);
    }

    #[test]
    fn an_acknowledgement_before_the_press_is_noticed() {
        let t0 = Instant::now();
        let mut logic = FeedbackLogic::new(plain());
        let event = Uuid::now_v7();
        logic.acked(event, t0);
        logic.pressed(event, t0 + ms(1));
        assert_eq!(logic.pattern(t0 + ms(2), true), Pattern::On);
    }

    #[test]
    fn blinking_alternates_at_its_rate() {
        let t0 = Instant::now();
        let mut logic = FeedbackLogic::new(plain());
        logic.pressed(Uuid::now_v7(), t0);
        assert_eq!(logic.level(t0, true), (true, Some(t0 + ms(500))));
        assert_eq!(
            logic.level(t0 + ms(600), true),
            (false, Some(t0 + ms(1_000)))
        );
        assert_eq!(
            logic.level(t0 + ms(130), false),
            (false, Some(t0 + ms(250)))
        );
    }

    /// A light that records what it was set to, and when.
    struct Recorder(
        std::sync::Arc<std::sync::Mutex<Vec<(Duration, bool)>>>,
        Instant,
    );

    impl Light for Recorder {
        fn set(&mut self, on: bool) -> Result<(), InputError> {
            self.0.lock().unwrap().push((Instant::now() - self.1, on));
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn without_delivery_a_press_lights_it_steady() {
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (log2, t0) = (log.clone(), Instant::now());
        let (presses_tx, presses) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let (shows, _) = watch::channel(Pattern::Off);
        let task = tokio::spawn(run(
            "box".into(),
            move || Ok(Recorder(log2.clone(), t0)),
            plain(),
            presses,
            None,
            shows,
            cancel.clone(),
        ));
        tokio::time::sleep(ms(1_000)).await;
        presses_tx
            .send(Press {
                event: Uuid::now_v7(),
                alert_on_disk: true,
            })
            .unwrap();
        tokio::time::sleep(ms(20_000)).await;
        cancel.cancel();
        task.await.unwrap();
        let log = log.lock().unwrap().clone();
        // Off at start, on at the press, off 10 s later; off again as it stops.
        assert_eq!(
            &log[..3],
            &[(ms(0), false), (ms(1_000), true), (ms(11_000), false)]
        );
    }
}
