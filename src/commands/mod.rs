//! Commands from the officer desk, on `<prefix>/commands` of the delivery session: today an
//! officer's response to an alert (acknowledged, dispatched, on scene, closed), which the
//! lights show staff and the status shows everyone.
//!
//! Everything that arrives there is hostile until [`Checks::decide`] has passed it: signed by
//! a key in `[desk] keys`, for this site, for an event this box raised, issued within
//! `[desk] max_age` and never taken before ([`seen`]). Every command heard is answered on
//! `<prefix>/answers`, signed by the device key (applied, superseded, or refused and why),
//! so that the desk shows whether the store got it; refusals are answered at most
//! [`REFUSALS_ANSWERED_PER_MINUTE`] times a minute, so a flood cannot fill the outbox.

pub mod seen;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use alertclip_mqtt::Messages;
use alertclip_wire::ResponseSummary;
use alertclip_wire::command::{
    ANSWER_SCHEMA, Answer, Envelope, MAX_COMMAND_BYTES, Outcome, RESPONSE_SCHEMA, Response,
};
use alertclip_wire::signature::{self, Verdict, VerifyingKey};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::clip::history::EventLog;
use crate::clock::rfc3339_ms;
use crate::config::{self, Config};
use crate::delivery::Publisher;
use crate::evidence::Evidence;
use seen::Seen;

/// How far ahead of this box's clock a command may be issued: clocks synchronised by NTP
/// agree far better; more is a clock that is wrong.
const FUTURE_SKEW: Duration = Duration::from_secs(120);
/// Refusals answered per minute at most; beyond, they are only logged.
pub const REFUSALS_ANSWERED_PER_MINUTE: u32 = 30;
/// The record of commands taken, beside the alert chain.
const SEEN_FILE: &str = "commands.json";

/// What the checks made of a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Genuine and new: apply it.
    Apply(Box<Response>),
    /// Genuine, but issued before the response already shown for its event.
    Superseded(Box<Response>, String),
    /// Not taken, and why; with what could be read of it, for the answer.
    Refused {
        /// The command's id, if it could be read.
        command: Option<Uuid>,
        /// The event it named, if it could be read.
        event: Option<Uuid>,
        /// Why, for the log and the desk.
        reason: String,
    },
}

/// The checks every command passes.
#[derive(Debug, Clone)]
pub struct Checks {
    site: String,
    keys: Vec<VerifyingKey>,
    max_age: Duration,
}

impl Checks {
    /// The checks for a box of `site` trusting `keys`, refusing what is older than `max_age`.
    pub fn new(site: &str, keys: Vec<VerifyingKey>, max_age: Duration) -> Checks {
        Checks {
            site: site.to_owned(),
            keys,
            max_age,
        }
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
        if payload.len() > MAX_COMMAND_BYTES {
            return Decision::Refused {
                command: None,
                event: None,
                reason: format!(
                    "{} bytes, more than the {MAX_COMMAND_BYTES} a command may have: not read",
                    payload.len()
                ),
            };
        }
        let envelope = Envelope::read(payload);
        let refuse = |reason: String| Decision::Refused {
            command: envelope.command_id,
            event: envelope.event_id,
            reason,
        };
        let trusted = |id: &str| {
            self.keys
                .iter()
                .find(|k| signature::key_id(k) == id)
                .copied()
        };
        match signature::verify(payload, &trusted) {
            Verdict::Valid => {}
            Verdict::Missing => {
                return refuse(
                    "not signed: only commands signed by a key in [desk] keys are taken".into(),
                );
            }
            Verdict::Untrusted(id) => {
                return refuse(format!(
                    "signed by key {id}, which is not one of this box's [desk] keys"
                ));
            }
            Verdict::Invalid(why) => return refuse(format!("bad signature: {why}")),
        }
        match envelope.schema.as_deref() {
            Some(RESPONSE_SCHEMA) => {}
            Some(other) => {
                return refuse(format!(
                    "a command of schema \"{other}\", which this box does not take (it takes {RESPONSE_SCHEMA})"
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
        if response.site_id != self.site {
            return refuse(format!(
                "for site {}, not this box's ({})",
                response.site_id, self.site
            ));
        }
        let Ok(issued) = humantime::parse_rfc3339(&response.issued_at) else {
            return refuse(format!(
                "issued_at: expected RFC 3339 UTC time, found \"{}\"",
                response.issued_at
            ));
        };
        if let Ok(ahead) = issued.duration_since(now)
            && ahead > FUTURE_SKEW
        {
            return refuse(format!(
                "issued {} s ahead of this box's clock: the desk's clock or this box's is wrong",
                ahead.as_secs()
            ));
        }
        if let Ok(age) = now.duration_since(issued)
            && age > self.max_age
        {
            return refuse(format!(
                "issued {} s ago, longer than [desk] max_age ({} s): a replay, or a clock that is wrong",
                age.as_secs(),
                self.max_age.as_secs()
            ));
        }
        if seen.contains(response.command_id) {
            return refuse("already taken: a replay".into());
        }
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
        Decision::Apply(Box::new(response))
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
    refusals: (Instant, u32),
}

impl Commands {
    /// The commands task for `config`'s `[desk]`. Its keys were checked with the config.
    pub fn new(
        config: &Config,
        desk: &config::Desk,
        log: EventLog,
        publisher: Arc<Publisher>,
        evidence: Arc<Evidence>,
    ) -> Result<Commands, (String, String)> {
        let keys = desk.verifying_keys()?;
        let seen = Seen::open(
            &config.evidence.dir.join(SEEN_FILE),
            desk.max_age.0 + FUTURE_SKEW,
        );
        Ok(Commands {
            checks: Checks::new(&config.site.id, keys, desk.max_age.0),
            seen,
            log,
            storage: config.storage.dir.clone(),
            publisher,
            evidence,
            refusals: (Instant::now(), 0),
        })
    }

    /// Decides on one command, applies it, and answers it. Blocks on the disk.
    fn handle(&mut self, payload: &[u8]) {
        let now = SystemTime::now();
        let (log, storage) = (&self.log, &self.storage);
        // An event raised before this start is not in the log, but its clips are on disk.
        let known = |event: Uuid| log.has(event) || storage.join(event.to_string()).is_dir();
        let shown = |event: Uuid| log.response(event);
        let decision = self.checks.decide(payload, now, &self.seen, &known, &shown);
        let answer = |command, event, outcome, reason| Answer {
            schema: ANSWER_SCHEMA.to_owned(),
            site_id: self.checks.site.clone(),
            command_id: command,
            event_id: event,
            outcome,
            reason,
            at: rfc3339_ms(now),
            signature: None,
        };
        let answer = match decision {
            Decision::Apply(response) => {
                // Taken for good before anything shows it: a crash now cannot let a replay in.
                if let Err(error) =
                    self.seen
                        .insert(response.command_id, parse_time(&response.issued_at), now)
                {
                    tracing::error!(%error, "cannot record a command as taken; it is not applied");
                    return;
                }
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
                answer(
                    Some(response.command_id),
                    Some(response.event_id),
                    Outcome::Applied,
                    None,
                )
            }
            Decision::Superseded(response, reason) => {
                let _ = self
                    .seen
                    .insert(response.command_id, parse_time(&response.issued_at), now);
                tracing::info!(event = %response.event_id, %reason, "officer response superseded");
                answer(
                    Some(response.command_id),
                    Some(response.event_id),
                    Outcome::Superseded,
                    Some(reason),
                )
            }
            Decision::Refused {
                command,
                event,
                reason,
            } => {
                tracing::warn!(
                    command = %command.map_or_else(|| "-".into(), |c| c.to_string()),
                    %reason,
                    "refused a command on the alert channel"
                );
                let (since, count) = &mut self.refusals;
                if since.elapsed() >= Duration::from_secs(60) {
                    (*since, *count) = (Instant::now(), 0);
                }
                *count += 1;
                if *count > REFUSALS_ANSWERED_PER_MINUTE {
                    return;
                }
                answer(command, event, Outcome::Refused, Some(reason))
            }
        };
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

fn parse_time(text: &str) -> SystemTime {
    humantime::parse_rfc3339(text).unwrap_or_else(|_| SystemTime::now())
}

/// Takes commands from `messages` until `cancel`, one at a time, each on a blocking thread
/// (it writes the record of commands taken, and the answer, durably).
pub async fn run(mut commands: Commands, mut messages: Messages, cancel: CancellationToken) {
    loop {
        let payload = tokio::select! {
            _ = cancel.cancelled() => break,
            message = messages.recv() => match message {
                Some((_topic, payload)) => payload,
                None => break,
            },
        };
        match tokio::task::spawn_blocking(move || {
            commands.handle(&payload);
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
            checks: Checks::new(SITE, vec![desk.verifying_key()], Duration::from_secs(600)),
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
            matches!(&applied, Decision::Apply(got) if got.command_id == r.command_id && got.signature.is_some()),
            "{applied:?}"
        );
        case.seen.insert(r.command_id, case.now, case.now).unwrap();
        assert_eq!(refusal(decide(&case, &payload)), "already taken: a replay");
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
        // Read only after the signature: what it says is the desk's.
        let refused = decide(&case, &signed(&stranger, &r));
        assert!(matches!(refused, Decision::Refused { command: Some(c), .. } if c == r.command_id));
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
