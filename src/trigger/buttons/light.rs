//! Feedback for staff: a light (or buzzer) that says whether help was called.
//!
//! After a press, the light blinks slowly while the alert waits for the broker, stays on for
//! `confirm_for` once the broker has acknowledged it, and blinks fast while delivery is failing
//! (the broker cannot be reached, or the alert could not be written to disk and is being
//! retried from memory). Without delivery configured,
//! a press is confirmed as soon as the box has taken it. [`FeedbackLogic`] is the pure state
//! machine; [`run`] drives a [`Light`] from presses and delivery's [`Confirmations`].

use std::collections::VecDeque;
use std::time::Duration;

use alertclip_mqtt::LinkStatus;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::trigger::buttons::button::InputError;

/// Slow blink: waiting for the broker.
const SLOW_HALF_PERIOD: Duration = Duration::from_millis(500);
/// Fast blink: delivery failing.
const FAST_HALF_PERIOD: Duration = Duration::from_millis(125);
/// Acknowledged alerts remembered, for a press whose acknowledgement came first.
const REMEMBERED: usize = 64;

/// Something that can be switched on and off.
pub trait Light: Send {
    /// Switches it.
    fn set(&mut self, on: bool) -> Result<(), InputError>;
}

/// What the light shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Nothing to show.
    Off,
    /// The alert waits for the broker.
    SlowBlink,
    /// The broker has the alert.
    On,
    /// Delivery is failing: the alert waits on disk for the broker, or is not on disk yet.
    FastBlink,
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
        until: Instant,
    },
}

/// See the module documentation.
#[derive(Debug)]
pub struct FeedbackLogic {
    confirm_for: Duration,
    state: State,
    acked: VecDeque<Uuid>,
}

impl FeedbackLogic {
    /// Logic that keeps the light on for `confirm_for` once an alert is acknowledged.
    pub fn new(confirm_for: Duration) -> FeedbackLogic {
        FeedbackLogic {
            confirm_for,
            state: State::Idle,
            acked: VecDeque::new(),
        }
    }

    /// A press opened (or joined) `event`.
    pub fn pressed(&mut self, event: Uuid, now: Instant) {
        self.state = if self.acked.contains(&event) {
            State::Confirmed {
                until: now + self.confirm_for,
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
    pub fn taken(&mut self, now: Instant) {
        self.state = State::Confirmed {
            until: now + self.confirm_for,
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
                until: now + self.confirm_for,
            };
        }
    }

    /// The pattern now, given whether the broker is reachable.
    pub fn pattern(&self, now: Instant, connected: bool) -> Pattern {
        match self.state {
            State::Idle => Pattern::Off,
            State::Waiting { .. } if connected => Pattern::SlowBlink,
            State::Waiting { .. } | State::Failing { .. } => Pattern::FastBlink,
            State::Confirmed { until } if now < until => Pattern::On,
            State::Confirmed { .. } => Pattern::Off,
        }
    }

    /// Whether the light is on at `now`, and when that next changes (absent further input).
    pub fn level(&self, now: Instant, connected: bool) -> (bool, Option<Instant>) {
        let blink = |half: Duration, since: Instant| {
            let phase = (now - since).as_nanos() / half.as_nanos();
            let next = since + half * (phase as u32 + 1);
            (phase.is_multiple_of(2), Some(next))
        };
        match (self.pattern(now, connected), self.state) {
            (Pattern::SlowBlink, State::Waiting { since, .. }) => blink(SLOW_HALF_PERIOD, since),
            (Pattern::FastBlink, State::Waiting { since, .. } | State::Failing { since, .. }) => {
                blink(FAST_HALF_PERIOD, since)
            }
            (Pattern::On, State::Confirmed { until }) => (true, Some(until)),
            _ => (false, None),
        }
    }
}

/// What a light learns from delivery: each alert the broker acknowledges, and whether the
/// broker is reachable. Delivery sends them; the light only listens.
#[derive(Debug)]
pub struct Confirmations {
    /// Every alert the broker acknowledges, by event.
    pub acked: broadcast::Receiver<Uuid>,
    /// The broker link.
    pub link: watch::Receiver<LinkStatus>,
}

impl Clone for Confirmations {
    fn clone(&self) -> Confirmations {
        Confirmations {
            acked: self.acked.resubscribe(),
            link: self.link.clone(),
        }
    }
}

/// Drives a light until `cancel`: from presses, and from delivery's
/// `confirmations` when delivery is configured. A light that cannot be opened is retried;
/// presses meanwhile are not lost, only not shown.
pub async fn run<L: Light>(
    name: String,
    open: impl Fn() -> Result<L, InputError> + Send,
    confirm_for: Duration,
    mut presses: mpsc::UnboundedReceiver<Press>,
    confirmations: Option<Confirmations>,
    cancel: CancellationToken,
) {
    let mut logic = FeedbackLogic::new(confirm_for);
    let delivering = confirmations.is_some();
    let (mut acks, mut link) = match confirmations {
        Some(c) => (Some(c.acked), Some(c.link)),
        None => (None, None),
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
                Some(_) => logic.taken(Instant::now()),
                None => break,
            },
            ack = recv_ack(&mut acks) => {
                if let Some(event) = ack {
                    logic.acked(event, Instant::now());
                }
            }
            _ = link_changed(&mut link) => {}
            _ = sleep_until(wake) => {}
        }
    }
    if let Some(device) = light.as_mut() {
        let _ = device.set(false);
    }
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

async fn recv_ack(acks: &mut Option<broadcast::Receiver<Uuid>>) -> Option<Uuid> {
    match acks {
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

    #[test]
    fn the_light_follows_the_delivery_of_the_pressed_alert() {
        let t0 = Instant::now();
        let mut logic = FeedbackLogic::new(ms(10_000));
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
        let mut logic = FeedbackLogic::new(ms(10_000));
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
        let mut logic = FeedbackLogic::new(ms(10_000));
        let event = Uuid::now_v7();
        logic.acked(event, t0);
        logic.pressed(event, t0 + ms(1));
        assert_eq!(logic.pattern(t0 + ms(2), true), Pattern::On);
    }

    #[test]
    fn blinking_alternates_at_its_rate() {
        let t0 = Instant::now();
        let mut logic = FeedbackLogic::new(ms(10_000));
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
        let task = tokio::spawn(run(
            "box".into(),
            move || Ok(Recorder(log2.clone(), t0)),
            ms(10_000),
            presses,
            None,
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
