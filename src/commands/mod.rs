//! Commands from the officer desk, on `<prefix>/commands` of the delivery session: an
//! officer's response to an alert (acknowledged, dispatched, on scene, closed), which the
//! lights show staff and the status shows everyone, and an officer's request for footage,
//! which becomes a trigger of kind `remote` and is delivered as any event.
//!
//! Everything that arrives there is hostile until [`Checks::decide`] has passed it: signed by
//! a key in `[desk] keys`, for this site, issued within `[desk] max_age` and never taken
//! before ([`seen`]); a response for an event this box raised, a request for cameras it has,
//! within `[desk] requests_per_hour`. Every command heard is answered on
//! `<prefix>/answers`, signed by the device key (applied, superseded, or refused and why),
//! so that the desk shows whether the store got it; refusals are answered at most
//! [`REFUSALS_ANSWERED_PER_MINUTE`] times a minute, so a flood cannot fill the outbox.

pub mod seen;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use alertclip_wire::ResponseSummary;
use alertclip_wire::command::{
    ANSWER_SCHEMA, Answer, Envelope, FOOTAGE_REQUEST_SCHEMA, FootageRequest, MAX_COMMAND_BYTES,
    Outcome, RESPONSE_SCHEMA, Response,
};
use alertclip_wire::signature::{self, Verdict, VerifyingKey};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::clip::history::EventLog;
use crate::clock::{ClockMap, MonoNs, rfc3339_ms};
use crate::config::{self, Config};
use crate::delivery::Publisher;
use crate::evidence::Evidence;
use crate::ingest::camera::Camera;
use crate::trigger::{Trigger, TriggerKind, Triggers, Window};
use seen::Seen;

/// The messages heard on the commands topic: (topic, payload), untrusted.
pub type Messages = tokio::sync::mpsc::UnboundedReceiver<(String, bytes::Bytes)>;

/// How far ahead of this box's clock a command may be issued: clocks synchronised by NTP
/// agree far better; more is a clock that is wrong.
const FUTURE_SKEW: Duration = Duration::from_secs(120);
/// Refusals answered per minute at most; beyond, they are only logged.
pub const REFUSALS_ANSWERED_PER_MINUTE: u32 = 30;
/// The record of commands taken, beside the alert chain.
const SEEN_FILE: &str = "commands.json";

/// A command that passed the checks.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// An officer's response to an alert.
    Response(Response),
    /// An officer's request for footage, with the range it asks for.
    Request(FootageRequest, SystemTime, SystemTime),
}

impl Command {
    fn id(&self) -> Uuid {
        match self {
            Command::Response(r) => r.command_id,
            Command::Request(r, ..) => r.command_id,
        }
    }

    fn issued_at(&self) -> &str {
        match self {
            Command::Response(r) => &r.issued_at,
            Command::Request(r, ..) => &r.issued_at,
        }
    }
}

/// What the checks made of a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Genuine and new: apply it.
    Apply(Box<Command>),
    /// Genuine, but issued before the response already shown for its event.
    Superseded(Box<Response>, String),
    /// Not taken, and why; with what could be read of it, for the answer.
    Refused {
        /// The command's id, if it is signed (by any key: an answer names that key, so that
        /// a desk believes only refusals of what its own key signed).
        command: Option<Uuid>,
        /// The event it named, likewise.
        event: Option<Uuid>,
        /// Why, for the log and the desk.
        reason: String,
        /// The key whose intact signature it carries, if any.
        signer: Option<String>,
        /// Whether the refusal is always answered: a desk's own command refused for what it
        /// asks (an unknown event or camera, the rate limit). Refusals of anything else (a
        /// forgery, a copy of a genuine command replayed, stale or for another site) are
        /// answered only so often.
        trusted: bool,
    },
}

/// The checks every command passes.
#[derive(Debug, Clone)]
pub struct Checks {
    site: String,
    keys: Vec<VerifyingKey>,
    max_age: Duration,
    cameras: Vec<String>,
}

impl Checks {
    /// The checks for a box of `site` with `cameras`, trusting `keys`, refusing what is older
    /// than `max_age`.
    pub fn new(
        site: &str,
        cameras: Vec<String>,
        keys: Vec<VerifyingKey>,
        max_age: Duration,
    ) -> Checks {
        Checks {
            site: site.to_owned(),
            keys,
            max_age,
            cameras,
        }
    }

    /// Refuses a command for another site, issued outside the window, or taken before.
    fn fresh(
        &self,
        site: &str,
        id: Uuid,
        issued_at: &str,
        now: SystemTime,
        seen: &Seen,
    ) -> Result<SystemTime, String> {
        if site != self.site {
            return Err(format!("for site {site}, not this box's ({})", self.site));
        }
        let Ok(issued) = humantime::parse_rfc3339(issued_at) else {
            return Err(format!(
                "issued_at: expected RFC 3339 UTC time, found \"{issued_at}\""
            ));
        };
        if let Ok(ahead) = issued.duration_since(now)
            && ahead > FUTURE_SKEW
        {
            return Err(format!(
                "issued {} s ahead of this box's clock: the desk's clock or this box's is wrong",
                ahead.as_secs()
            ));
        }
        if let Ok(age) = now.duration_since(issued)
            && age > self.max_age
        {
            return Err(format!(
                "issued {} s ago, longer than [desk] max_age ({} s): a replay, or a clock that is wrong",
                age.as_secs(),
                self.max_age.as_secs()
            ));
        }
        if seen.contains(id) {
            return Err("already taken: a replay".into());
        }
        Ok(issued)
    }

    /// Decides on `payload` at `now`: `seen` holds the commands already taken, `known` says
    /// whether this box raised an event, `shown` gives the response shown for it now.
    pub fn decide(
        &self,
        payload: &[u8],
        now: SystemTime,
        seen: &Seen,
        known: &dyn Fn(Uuid) -> bool,
        shown: &dyn Fn(Uuid) -> Option<ResponseSummary>,
    ) -> Decision {
        let unsigned = |reason: String| Decision::Refused {
            command: None,
            event: None,
            reason,
            signer: None,
            trusted: false,
        };
        if payload.len() > MAX_COMMAND_BYTES {
            return unsigned(format!(
                "{} bytes, more than the {MAX_COMMAND_BYTES} a command may have: not read",
                payload.len()
            ));
        }
        let trusted = |id: &str| {
            self.keys
                .iter()
                .find(|k| signature::key_id(k) == id)
                .copied()
        };
        // What a command says is read only once its signature holds: an answer never repeats
        // what a forger wrote.
        let (signer, is_trusted) = match signature::verify(payload, &trusted) {
            Verdict::Valid => (signature::split(payload).map(|s| s.info.key_id), true),
            Verdict::Untrusted(id) => (Some(id), false),
            Verdict::Missing => {
                return unsigned(
                    "not signed: only commands signed by a key in [desk] keys are taken".into(),
                );
            }
            // Why it is invalid is logged, not answered: it may quote what the forger wrote.
            Verdict::Invalid(why) => {
                tracing::debug!(%why, "a command's signature is invalid");
                return unsigned(
                    "bad signature: it does not verify with the key it names, or is malformed"
                        .into(),
                );
            }
        };
        // For a key this box does not hold only the ids are repeated (typed, so nothing a
        // forger wrote is quoted): a desk whose key the box lacks learns why it is refused.
        let envelope = Envelope::read(payload);
        let refuse = |reason: String| Decision::Refused {
            command: envelope.command_id,
            event: envelope.event_id,
            reason,
            signer: signer.clone(),
            trusted: is_trusted,
        };
        // A genuine command that is stale, for another site or a replay is what anyone who
        // saw it on the broker can send again, as often as they like: answered only within
        // the limit on refusals, as a forgery is.
        let refuse_copy = |reason: String| Decision::Refused {
            command: envelope.command_id,
            event: envelope.event_id,
            reason,
            signer: signer.clone(),
            trusted: false,
        };
        if !is_trusted {
            return refuse(format!(
                "signed by key {}, which is not one of this box's [desk] keys",
                signer.as_deref().unwrap_or("?")
            ));
        }
        match envelope.schema.as_deref() {
            Some(RESPONSE_SCHEMA) => {}
            Some(FOOTAGE_REQUEST_SCHEMA) => {
                return self.decide_request(payload, now, seen, refuse, refuse_copy);
            }
            Some(other) => {
                return refuse(format!(
                    "a command of schema \"{other}\", which this box does not take (it takes {RESPONSE_SCHEMA} and {FOOTAGE_REQUEST_SCHEMA})"
                ));
            }
            None => return refuse("not a command: it has no schema".into()),
        }
        let response: Response = match serde_json::from_slice(payload) {
            Ok(response) => response,
            Err(e) => return refuse(format!("not a valid response: {e}")),
        };
        if let Err(e) = response.check() {
            return refuse(e);
        }
        let issued = match self.fresh(
            &response.site_id,
            response.command_id,
            &response.issued_at,
            now,
            seen,
        ) {
            Ok(issued) => issued,
            Err(reason) => return refuse_copy(reason),
        };
        if !known(response.event_id) {
            return refuse(format!(
                "event {} was not raised by this box",
                response.event_id
            ));
        }
        if let Some(current) = shown(response.event_id)
            && humantime::parse_rfc3339(&current.issued_at).is_ok_and(|t| t > issued)
        {
            let reason = format!(
                "issued before the response already shown ({}, issued {})",
                current.summary, current.issued_at
            );
            return Decision::Superseded(Box::new(response), reason);
        }
        Decision::Apply(Box::new(Command::Response(response)))
    }

    fn decide_request(
        &self,
        payload: &[u8],
        now: SystemTime,
        seen: &Seen,
        refuse: impl Fn(String) -> Decision,
        refuse_copy: impl Fn(String) -> Decision,
    ) -> Decision {
        let request: FootageRequest = match serde_json::from_slice(payload) {
            Ok(request) => request,
            Err(e) => return refuse(format!("not a valid footage request: {e}")),
        };
        let (from, to) = match request.check() {
            Ok(range) => range,
            Err(e) => return refuse(e),
        };
        if let Err(reason) = self.fresh(
            &request.site_id,
            request.command_id,
            &request.issued_at,
            now,
            seen,
        ) {
            return refuse_copy(reason);
        }
        if let Some(unknown) = request.cameras.iter().find(|c| !self.cameras.contains(c)) {
            return refuse(format!(
                "unknown camera \"{unknown}\" (this box has: {})",
                self.cameras.join(", ")
            ));
        }
        Decision::Apply(Box::new(Command::Request(request, from, to)))
    }
}

/// The commands task's state: the checks, what was taken, and where answers go.
pub struct Commands {
    checks: Checks,
    seen: Seen,
    log: EventLog,
    storage: PathBuf,
    publisher: Arc<Publisher>,
    evidence: Arc<Evidence>,
    cameras: Vec<Camera>,
    requests_per_hour: u32,
    /// When each footage request of the last hour was taken.
    requests: VecDeque<Instant>,
    refusals: (Instant, u32),
}

/// What is left to do once a footage request is taken: its trigger to fire, then answer.
struct Fire {
    trigger: Trigger,
    command: Uuid,
    /// What of the range the box does not hold, for the answer.
    short: Option<String>,
    /// The desk key that signed it.
    signer: Option<String>,
}

impl Commands {
    /// The commands task for `config`'s `[desk]`, on the box's `cameras`. Its keys were
    /// checked with the config.
    pub fn new(
        config: &Config,
        desk: &config::Desk,
        log: EventLog,
        publisher: Arc<Publisher>,
        evidence: Arc<Evidence>,
        cameras: Vec<Camera>,
    ) -> Result<Commands, (String, String)> {
        let keys = desk.verifying_keys()?;
        let seen = Seen::open(
            &config.evidence.dir.join(SEEN_FILE),
            desk.max_age.0 + FUTURE_SKEW,
        );
        let ids = cameras.iter().map(|c| c.config.id.clone()).collect();
        Ok(Commands {
            checks: Checks::new(&config.site.id, ids, keys, desk.max_age.0),
            seen,
            log,
            storage: config.storage.dir.clone(),
            publisher,
            evidence,
            cameras,
            requests_per_hour: desk.requests_per_hour,
            requests: VecDeque::new(),
            refusals: (Instant::now(), 0),
        })
    }

    /// Decides on one command and applies it; answers it unless a trigger is to be fired
    /// first. Blocks on the disk.
    fn handle(&mut self, payload: &[u8]) -> Option<Fire> {
        let now = SystemTime::now();
        let (log, storage) = (&self.log, &self.storage);
        // An event raised before this start is not in the log, but its clips are on disk.
        let known = |event: Uuid| log.has(event) || storage.join(event.to_string()).is_dir();
        let shown = |event: Uuid| log.response(event);
        let mut decision = self.checks.decide(payload, now, &self.seen, &known, &shown);
        // The desk key that signed what is taken, named in the answer.
        let signer = signature::split(payload).map(|s| s.info.key_id);
        if let Decision::Apply(command) = &decision
            && let Command::Request(request, ..) = command.as_ref()
            && let Err(reason) = self.within_rate()
        {
            decision = Decision::Refused {
                command: Some(request.command_id),
                event: None,
                reason,
                signer: signer.clone(),
                trusted: true,
            };
        }
        match decision {
            Decision::Apply(command) => {
                // Taken for good before it is acted on: a crash now cannot let a replay in.
                if let Err(error) =
                    self.seen
                        .insert(command.id(), parse_time(command.issued_at()), now)
                {
                    tracing::error!(%error, "cannot record a command as taken; it is not applied");
                    self.answer(Answer {
                        reason: Some(format!(
                            "the box cannot record it as taken ({error}): send it again once the box's disk is fixed"
                        )),
                        key_id: signer,
                        ..answer(&self.checks.site, command.id(), Outcome::Refused, now)
                    });
                    return None;
                }
                match *command {
                    Command::Response(response) => {
                        self.apply(&response, now);
                        self.answer(Answer {
                            event_id: Some(response.event_id),
                            key_id: signer,
                            ..answer(
                                &self.checks.site,
                                response.command_id,
                                Outcome::Applied,
                                now,
                            )
                        });
                        None
                    }
                    Command::Request(request, from, to) => {
                        let (trigger, short) = match self.trigger(&request, from, to, now) {
                            Ok(cut) => cut,
                            Err(reason) => {
                                tracing::warn!(by = %request.by, %reason, "footage request refused");
                                self.answer(Answer {
                                    reason: Some(reason),
                                    key_id: signer,
                                    ..answer(
                                        &self.checks.site,
                                        request.command_id,
                                        Outcome::Refused,
                                        now,
                                    )
                                });
                                return None;
                            }
                        };
                        self.requests.push_back(Instant::now());
                        tracing::info!(
                            cameras = ?request.cameras,
                            by = %request.by,
                            desk = %request.desk,
                            reason = %request.reason,
                            "footage requested"
                        );
                        Some(Fire {
                            trigger,
                            command: request.command_id,
                            short,
                            signer,
                        })
                    }
                }
            }
            Decision::Superseded(response, reason) => {
                // Kept out either way: not recording it only lets a copy be answered again.
                if let Err(error) =
                    self.seen
                        .insert(response.command_id, parse_time(&response.issued_at), now)
                {
                    tracing::warn!(%error, "cannot record a superseded response as taken");
                }
                tracing::info!(event = %response.event_id, %reason, "officer response superseded");
                self.answer(Answer {
                    event_id: Some(response.event_id),
                    reason: Some(reason),
                    key_id: signer,
                    ..answer(
                        &self.checks.site,
                        response.command_id,
                        Outcome::Superseded,
                        now,
                    )
                });
                None
            }
            Decision::Refused {
                command,
                event,
                reason,
                signer,
                trusted,
            } => {
                tracing::warn!(
                    command = %command.map_or_else(|| "-".into(), |c| c.to_string()),
                    key = signer.as_deref().unwrap_or("-"),
                    %reason,
                    "refused a command on the alert channel"
                );
                // A desk's own command refused for what it asks is always answered; forgeries
                // and copies only so often.
                let (since, count) = &mut self.refusals;
                if since.elapsed() >= Duration::from_secs(60) {
                    (*since, *count) = (Instant::now(), 0);
                }
                if !trusted {
                    *count += 1;
                }
                if trusted || *count <= REFUSALS_ANSWERED_PER_MINUTE {
                    self.answer(Answer {
                        command_id: command,
                        event_id: event,
                        reason: Some(reason),
                        key_id: signer,
                        ..answer(&self.checks.site, Uuid::nil(), Outcome::Refused, now)
                    });
                }
                None
            }
        }
    }

    /// Shows an officer's response: the event history (and so the status) and the lights.
    fn apply(&self, response: &Response, now: SystemTime) {
        tracing::info!(
            event = %response.event_id,
            state = response.state.as_str(),
            by = %response.by,
            desk = %response.desk,
            "officer response applied"
        );
        self.log.responded(
            response.event_id,
            ResponseSummary {
                command_id: response.command_id,
                state: response.state,
                by: response.by.clone(),
                desk: response.desk.clone(),
                issued_at: response.issued_at.clone(),
                received_at: rfc3339_ms(now),
                summary: response.summary(),
            },
        );
        self.publisher.responded(response.event_id, response.state);
    }

    /// Refuses a footage request beyond `[desk] requests_per_hour`.
    fn within_rate(&mut self) -> Result<(), String> {
        let hour = Duration::from_secs(3600);
        while self.requests.front().is_some_and(|t| t.elapsed() >= hour) {
            self.requests.pop_front();
        }
        if self.requests.len() >= self.requests_per_hour as usize {
            let next = self
                .requests
                .front()
                .map_or(hour, |oldest| hour.saturating_sub(oldest.elapsed()));
            return Err(format!(
                "rate limit: {} footage requests in the last hour, the most [desk] requests_per_hour allows; the next is taken in {} min",
                self.requests.len(),
                next.as_secs().div_ceil(60)
            ));
        }
        Ok(())
    }

    /// The trigger that cuts what `request` asks for, `from` to `to`: its moment the end of
    /// the range (or now, for a range running into the future), no later than the longest
    /// post-roll of its cameras after now; and what of the range the box does not hold.
    /// Refused when no camera holds any of it.
    fn trigger(
        &self,
        request: &FootageRequest,
        from: SystemTime,
        to: SystemTime,
        now: SystemTime,
    ) -> Result<(Trigger, Option<String>), String> {
        let map = ClockMap::now();
        let chosen: Vec<&Camera> = self
            .cameras
            .iter()
            .filter(|c| request.cameras.contains(&c.config.id))
            .collect();
        let most_after = chosen
            .iter()
            .map(|c| c.config.post_roll.0)
            .max()
            .unwrap_or_default();
        let mut short = Vec::new();
        let moment = to.min(now);
        let ago = now.duration_since(moment).unwrap_or_default();
        let mut after = to.duration_since(now).unwrap_or_default();
        if after > most_after {
            short.push(format!(
                "it ends {} s after the request arrived, the longest post-roll of these cameras",
                most_after.as_secs()
            ));
            after = most_after;
        }
        let before = moment.duration_since(from).unwrap_or_default();
        let wanted = now.duration_since(from).unwrap_or_default().as_secs_f64();
        let mut held_any = false;
        for camera in &chosen {
            let held = camera.status.borrow().buffered_s;
            held_any |= after > Duration::ZERO || held >= ago.as_secs_f64();
            if held + 0.5 < wanted {
                short.push(format!(
                    "camera {} holds only the last {held:.0} s",
                    camera.config.id
                ));
            }
        }
        let trigger = Trigger {
            kind: TriggerKind::Remote,
            source: format!("{}@{}", request.by, request.desk),
            note: Some(request.reason.clone()),
            cameras: request.cameras.clone(),
            at: ClockMap {
                mono: map.mono.saturating_sub(ago.as_nanos() as MonoNs),
                wall: moment,
            },
            detections: Vec::new(),
            window: Some(Window { before, after }),
        };
        if !held_any {
            return Err(format!(
                "the box no longer holds any of it: its cameras keep only their last seconds, and the range ended {} s ago",
                ago.as_secs()
            ));
        }
        let short = (!short.is_empty()).then(|| format!("partial: {}", short.join("; ")));
        Ok((trigger, short))
    }

    /// Signs and spools `answer`. Blocks on the disk.
    fn answer(&self, answer: Answer) {
        match serde_json::to_vec(&answer) {
            Ok(unsigned) => {
                if let Err(error) = self
                    .publisher
                    .spool_answer(self.evidence.key().sign(&unsigned))
                {
                    tracing::error!(%error, "cannot spool the answer to a command");
                }
            }
            Err(error) => tracing::error!(%error, "cannot serialise an answer"),
        }
    }
}

/// An answer of `outcome` to `command`, decided `at`.
fn answer(site: &str, command: Uuid, outcome: Outcome, at: SystemTime) -> Answer {
    Answer {
        schema: ANSWER_SCHEMA.to_owned(),
        site_id: site.to_owned(),
        command_id: Some(command),
        event_id: None,
        outcome,
        reason: None,
        key_id: None,
        at: rfc3339_ms(at),
        signature: None,
    }
}

fn parse_time(text: &str) -> SystemTime {
    humantime::parse_rfc3339(text).unwrap_or_else(|_| SystemTime::now())
}

/// The commands on `topic`, from a broker session of their own on the delivery broker
/// (`settings`, as `<client_id>-commands`): what arrives there, an oversized or retained
/// message included, can never take the alert channel down. The session persists, so
/// commands published while the box is away are delivered when it is back.
pub fn listen(
    settings: &alertclip_mqtt::Settings,
    topic: String,
    tracker: &tokio_util::task::TaskTracker,
    cancel: CancellationToken,
) -> Result<Messages, alertclip_mqtt::SettingsError> {
    let mut settings = settings.clone();
    settings.client_id = format!("{}-commands", settings.client_id);
    // The box's offline status is the delivery session's to leave.
    settings.will = None;
    // A command is at most MAX_COMMAND_BYTES; what is larger is refused by the client.
    settings.max_incoming = 2 * MAX_COMMAND_BYTES;
    let (session, mut events) =
        alertclip_mqtt::Session::<()>::start(&settings, tracker, cancel.clone())?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tracker.spawn(async move {
        loop {
            let event = tokio::select! {
                _ = cancel.cancelled() => break,
                event = events.recv() => event,
            };
            match event {
                None => break,
                Some(alertclip_mqtt::LinkEvent::Connected) => {
                    tracing::info!("connected to the broker for the desk's commands");
                    session.subscribe(&topic);
                }
                Some(alertclip_mqtt::LinkEvent::Disconnected(error)) => {
                    tracing::debug!(%error, "the commands session lost the broker; retrying");
                }
                // A desk never retains a command: one retained is old, or not a desk's.
                Some(alertclip_mqtt::LinkEvent::Incoming {
                    topic,
                    payload,
                    retained: false,
                    ..
                }) => {
                    let _ = tx.send((topic, payload));
                }
                Some(alertclip_mqtt::LinkEvent::IncomingTooLarge(error)) => {
                    tracing::warn!(%error, "a message over the size of any command was discarded from the commands topic");
                }
                Some(_) => {}
            }
        }
        session.disconnect().await;
    });
    Ok(rx)
}

/// Takes commands from `messages` until `cancel`, one at a time, each decided on a blocking
/// thread (it writes the record of commands taken, and the answer, durably); a footage
/// request's trigger is fired to the clipper, and answered with the event it opened.
pub async fn run(
    mut commands: Commands,
    mut messages: Messages,
    triggers: Triggers,
    cancel: CancellationToken,
) {
    loop {
        let payload = tokio::select! {
            _ = cancel.cancelled() => break,
            message = messages.recv() => match message {
                Some((_topic, payload)) => payload,
                None => break,
            },
        };
        let next = match tokio::task::spawn_blocking(move || {
            let next = commands.handle(&payload);
            (commands, next)
        })
        .await
        {
            Ok((back, next)) => {
                commands = back;
                next
            }
            Err(error) => {
                tracing::error!(%error, "the commands task failed");
                break;
            }
        };
        let Some(Fire {
            trigger,
            command,
            short,
            signer,
        }) = next
        else {
            continue;
        };
        let at = SystemTime::now();
        let reply = match triggers.fire(trigger).await {
            Ok(event) => Answer {
                event_id: Some(event),
                reason: short,
                key_id: signer,
                ..answer(&commands.checks.site, command, Outcome::Applied, at)
            },
            // The alert of the event opened is retried from memory: the request stands.
            Err(error) if error.event().is_some() => Answer {
                event_id: error.event(),
                reason: Some(error.to_string()),
                key_id: signer,
                ..answer(&commands.checks.site, command, Outcome::Applied, at)
            },
            Err(error) => Answer {
                reason: Some(error.to_string()),
                key_id: signer,
                ..answer(&commands.checks.site, command, Outcome::Refused, at)
            },
        };
        match tokio::task::spawn_blocking(move || {
            commands.answer(reply);
            commands
        })
        .await
        {
            Ok(back) => commands = back,
            Err(error) => {
                tracing::error!(%error, "the commands task failed");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alertclip_wire::command::{RESPONSE_SCHEMA, ResponseState};
    use alertclip_wire::signature::SigningKey;

    const SITE: &str = "corner-12";

    struct Case {
        desk: SigningKey,
        checks: Checks,
        seen: Seen,
        event: Uuid,
        now: SystemTime,
        _dir: tempfile::TempDir,
    }

    fn case() -> Case {
        let desk = SigningKey::from_bytes(&[7; 32]);
        let dir = tempfile::tempdir().unwrap();
        let seen = Seen::open(&dir.path().join("seen.json"), Duration::from_secs(720));
        Case {
            checks: Checks::new(
                SITE,
                vec!["register".into()],
                vec![desk.verifying_key()],
                Duration::from_secs(600),
            ),
            desk,
            seen,
            event: Uuid::now_v7(),
            now: SystemTime::now(),
            _dir: dir,
        }
    }

    fn response(case: &Case, state: ResponseState, issued: SystemTime) -> Response {
        Response {
            schema: RESPONSE_SCHEMA.into(),
            command_id: Uuid::now_v7(),
            site_id: SITE.into(),
            event_id: case.event,
            state,
            eta_minutes: None,
            disposition: None,
            note: None,
            by: "lee".into(),
            desk: "precinct-5".into(),
            issued_at: rfc3339_ms(issued),
            signature: None,
        }
    }

    fn signed(key: &SigningKey, response: &Response) -> Vec<u8> {
        signature::sign(key, &serde_json::to_vec(response).unwrap())
    }

    fn decide(case: &Case, payload: &[u8]) -> Decision {
        let event = case.event;
        case.checks
            .decide(payload, case.now, &case.seen, &|e| e == event, &|_| None)
    }

    fn refusal(decision: Decision) -> String {
        match decision {
            Decision::Refused { reason, .. } => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_genuine_response_is_applied_once() {
        let mut case = case();
        let r = response(&case, ResponseState::Acknowledged, case.now);
        let payload = signed(&case.desk, &r);
        let applied = decide(&case, &payload);
        assert!(
            matches!(&applied, Decision::Apply(got) if matches!(got.as_ref(), Command::Response(g) if g.command_id == r.command_id && g.signature.is_some())),
            "{applied:?}"
        );
        case.seen.insert(r.command_id, case.now, case.now).unwrap();
        let replayed = decide(&case, &payload);
        // A copy anyone may send again: its refusal is answered only within the limit.
        assert!(
            matches!(&replayed, Decision::Refused { trusted: false, .. }),
            "{replayed:?}"
        );
        assert_eq!(refusal(replayed), "already taken: a replay");
    }

    #[test]
    fn forgeries_are_refused_each_with_its_reason() {
        let case = case();
        let r = response(&case, ResponseState::Dispatched, case.now);
        let stranger = SigningKey::from_bytes(&[9; 32]);
        assert!(
            refusal(decide(&case, &signed(&stranger, &r)))
                .contains("not one of this box's [desk] keys")
        );
        assert!(refusal(decide(&case, &serde_json::to_vec(&r).unwrap())).starts_with("not signed"));
        let mut altered = signed(&case.desk, &r);
        let at = altered.windows(4).position(|w| w == b"lee\"").unwrap();
        altered[at] = b'L';
        assert!(refusal(decide(&case, &altered)).starts_with("bad signature"));
        let mut elsewhere = r.clone();
        elsewhere.site_id = "another-shop".into();
        assert_eq!(
            refusal(decide(&case, &signed(&case.desk, &elsewhere))),
            "for site another-shop, not this box's (corner-12)"
        );
        let mut unknown = r.clone();
        unknown.event_id = Uuid::now_v7();
        assert!(
            refusal(decide(&case, &signed(&case.desk, &unknown)))
                .ends_with("was not raised by this box")
        );
        let old = response(
            &case,
            ResponseState::Closed,
            case.now - Duration::from_secs(601),
        );
        assert!(
            refusal(decide(&case, &signed(&case.desk, &old)))
                .contains("longer than [desk] max_age")
        );
        let ahead = response(
            &case,
            ResponseState::Closed,
            case.now + Duration::from_secs(180),
        );
        assert!(
            refusal(decide(&case, &signed(&case.desk, &ahead)))
                .contains("ahead of this box's clock")
        );
        let huge = vec![b' '; MAX_COMMAND_BYTES + 1];
        assert!(refusal(decide(&case, &huge)).contains("not read"));
        // A stranger's command is named with the stranger's key, so that no desk takes the
        // refusal for its own; an unsigned or altered one is not named at all.
        let refused = decide(&case, &signed(&stranger, &r));
        let stranger_id = signature::key_id(&stranger.verifying_key());
        assert!(
            matches!(&refused, Decision::Refused { command: Some(c), signer: Some(k), trusted: false, .. } if *c == r.command_id && *k == stranger_id),
            "{refused:?}"
        );
        assert!(matches!(
            decide(&case, &altered),
            Decision::Refused {
                command: None,
                signer: None,
                ..
            }
        ));
    }

    #[test]
    fn an_older_response_does_not_replace_a_newer_one() {
        let case = case();
        let newer = response(&case, ResponseState::OnScene, case.now);
        let older = response(
            &case,
            ResponseState::Dispatched,
            case.now - Duration::from_secs(30),
        );
        let shown = ResponseSummary {
            command_id: newer.command_id,
            state: newer.state,
            by: newer.by.clone(),
            desk: newer.desk.clone(),
            issued_at: newer.issued_at.clone(),
            received_at: newer.issued_at.clone(),
            summary: newer.summary(),
        };
        let event = case.event;
        let decision = case.checks.decide(
            &signed(&case.desk, &older),
            case.now,
            &case.seen,
            &|e| e == event,
            &|_| Some(shown.clone()),
        );
        assert!(matches!(decision, Decision::Superseded(r, _) if r.command_id == older.command_id));
    }
}
