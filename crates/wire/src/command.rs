//! What the officer side sends a box, and what the box answers.
//!
//! A desk publishes commands on `<prefix>/commands`, each signed by the desk's Ed25519 key
//! ([`crate::signature`], the same form as the box's own payloads). A command is a
//! [`Response`], an officer's answer to an alert (acknowledged, dispatched, on scene, closed)
//! which the store's staff see on the light beside the button, or a [`FootageRequest`], an
//! officer asking the box for a clip of some cameras over a time it still holds. The box verifies each against
//! the desk keys in its configuration and answers every one it heard on `<prefix>/answers`
//! with an [`Answer`] signed by its device key: applied, or refused and why.
//!
//! A command is hostile until its checks pass: it is bounded in size ([`MAX_COMMAND_BYTES`]),
//! its free text is bounded ([`MAX_NOTE_CHARS`]), it names the one site it is for, and it
//! carries an id and a time so that a replay is refused (docs/mqtt.md).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::signature::SignatureInfo;

/// `schema` of a response.
pub const RESPONSE_SCHEMA: &str = "alertclip.response.v1";
/// `schema` of a footage request.
pub const FOOTAGE_REQUEST_SCHEMA: &str = "alertclip.footage_request.v1";
/// `schema` of a box's answer to a command.
pub const ANSWER_SCHEMA: &str = "alertclip.answer.v1";

/// The largest command a box reads; anything larger is refused unread.
pub const MAX_COMMAND_BYTES: usize = 16 << 10;
/// The longest note or name a command carries, in characters.
pub const MAX_NOTE_CHARS: usize = 1000;
/// The longest officer or desk name a command carries, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// The longest span of video one request may ask for.
pub const MAX_REQUEST_SPAN: std::time::Duration = std::time::Duration::from_secs(600);
/// The most cameras one request may name.
pub const MAX_REQUEST_CAMERAS: usize = 32;

/// How far the officer side has got with an alert, as alarm-to-dispatch practice names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseState {
    /// A person at the desk has seen the alert.
    Acknowledged,
    /// Officers are on their way (with an ETA, when given).
    Dispatched,
    /// Officers are at the store.
    OnScene,
    /// The event is closed, with a disposition.
    Closed,
}

impl ResponseState {
    /// Every state, in the order an event goes through them.
    pub const ALL: [ResponseState; 4] = [
        ResponseState::Acknowledged,
        ResponseState::Dispatched,
        ResponseState::OnScene,
        ResponseState::Closed,
    ];

    /// Its name as serialized, such as `on_scene`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ResponseState::Acknowledged => "acknowledged",
            ResponseState::Dispatched => "dispatched",
            ResponseState::OnScene => "on_scene",
            ResponseState::Closed => "closed",
        }
    }

    /// The state named `name` (as serialized).
    pub fn parse(name: &str) -> Option<ResponseState> {
        ResponseState::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// For people: "acknowledged", "help on the way", "on scene", "closed".
    pub fn words(&self) -> &'static str {
        match self {
            ResponseState::Acknowledged => "acknowledged",
            ResponseState::Dispatched => "help on the way",
            ResponseState::OnScene => "on scene",
            ResponseState::Closed => "closed",
        }
    }
}

/// How a closed event ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// Someone was arrested.
    Arrest,
    /// Whoever it was had gone when officers arrived.
    GoneOnArrival,
    /// No emergency: a mistaken press or detection.
    FalseAlarm,
    /// A test of the path.
    Test,
    /// Anything else (the note says what).
    Other,
}

impl Disposition {
    /// Every disposition.
    pub const ALL: [Disposition; 5] = [
        Disposition::Arrest,
        Disposition::GoneOnArrival,
        Disposition::FalseAlarm,
        Disposition::Test,
        Disposition::Other,
    ];

    /// Its name as serialized, such as `gone_on_arrival`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Disposition::Arrest => "arrest",
            Disposition::GoneOnArrival => "gone_on_arrival",
            Disposition::FalseAlarm => "false_alarm",
            Disposition::Test => "test",
            Disposition::Other => "other",
        }
    }

    /// The disposition named `name` (as serialized).
    pub fn parse(name: &str) -> Option<Disposition> {
        Disposition::ALL.into_iter().find(|d| d.as_str() == name)
    }

    /// For people: "arrest", "gone on arrival" ...
    pub fn words(&self) -> &'static str {
        match self {
            Disposition::Arrest => "arrest",
            Disposition::GoneOnArrival => "gone on arrival",
            Disposition::FalseAlarm => "false alarm",
            Disposition::Test => "test",
            Disposition::Other => "other",
        }
    }
}

/// An officer's response to an alert, published QoS 1 on `<prefix>/commands`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// [`RESPONSE_SCHEMA`].
    pub schema: String,
    /// This command (UUIDv7): a box applies each id once.
    pub command_id: Uuid,
    /// The store it is for, as in its topic.
    pub site_id: String,
    /// The event it answers: one the box raised.
    pub event_id: Uuid,
    /// Where the response has got.
    pub state: ResponseState,
    /// For `dispatched`: minutes until officers arrive, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_minutes: Option<u32>,
    /// For `closed`: how it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disposition: Option<Disposition>,
    /// Free text from the officer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The officer's account on the desk.
    pub by: String,
    /// The desk that sent it.
    pub desk: String,
    /// When the officer gave it, RFC 3339 UTC with milliseconds.
    pub issued_at: String,
    /// The desk's signature over every byte before it. Always the last member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureInfo>,
}

impl Response {
    /// Checks what the signature cannot: the schema, that a disposition comes only with
    /// `closed` and an ETA only with `dispatched`, and the bounds on text. The reason says
    /// which member is wrong.
    pub fn check(&self) -> Result<(), String> {
        if self.schema != RESPONSE_SCHEMA {
            return Err(format!(
                "schema: expected \"{RESPONSE_SCHEMA}\", found \"{}\"",
                self.schema
            ));
        }
        crate::id::check(&self.site_id).map_err(|e| format!("site_id: {e}"))?;
        if self.disposition.is_some() && self.state != ResponseState::Closed {
            return Err("disposition: only a closed event has one".into());
        }
        if self.eta_minutes.is_some() && self.state != ResponseState::Dispatched {
            return Err("eta_minutes: only a dispatch has one".into());
        }
        bounded("note", self.note.as_deref().unwrap_or(""), MAX_NOTE_CHARS)?;
        bounded("by", &self.by, MAX_NAME_CHARS)?;
        bounded("desk", &self.desk, MAX_NAME_CHARS)?;
        Ok(())
    }

    /// One line for people: "help on the way (ETA 6 min), by lee".
    pub fn summary(&self) -> String {
        let mut line = self.state.words().to_owned();
        if let Some(eta) = self.eta_minutes {
            line.push_str(&format!(" (ETA {eta} min)"));
        }
        if let Some(disposition) = self.disposition {
            line.push_str(&format!(" ({})", disposition.words()));
        }
        line.push_str(&format!(", by {}", self.by));
        line
    }
}

/// An officer asking a store's box for a clip, published QoS 1 on `<prefix>/commands`. The
/// box cuts it as a trigger of kind `remote`, its source `<by>@<desk>` and its note the
/// reason, and delivers it as any event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FootageRequest {
    /// [`FOOTAGE_REQUEST_SCHEMA`].
    pub schema: String,
    /// This command (UUIDv7): a box takes each id once.
    pub command_id: Uuid,
    /// The store it is for, as in its topic.
    pub site_id: String,
    /// The cameras wanted (at least one).
    pub cameras: Vec<String>,
    /// The first moment wanted, RFC 3339 UTC.
    pub from: String,
    /// The last moment wanted, RFC 3339 UTC: at most [`MAX_REQUEST_SPAN`] after `from`.
    pub to: String,
    /// Why, for the record (required).
    pub reason: String,
    /// The officer's account on the desk.
    pub by: String,
    /// The desk that sent it.
    pub desk: String,
    /// When the officer asked, RFC 3339 UTC with milliseconds.
    pub issued_at: String,
    /// The desk's signature over every byte before it. Always the last member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureInfo>,
}

impl FootageRequest {
    /// Checks what the signature cannot: the schema, the cameras' names, a reason, a time
    /// range that runs forward and is at most [`MAX_REQUEST_SPAN`] long; returns the range.
    pub fn check(&self) -> Result<(std::time::SystemTime, std::time::SystemTime), String> {
        if self.schema != FOOTAGE_REQUEST_SCHEMA {
            return Err(format!(
                "schema: expected \"{FOOTAGE_REQUEST_SCHEMA}\", found \"{}\"",
                self.schema
            ));
        }
        crate::id::check(&self.site_id).map_err(|e| format!("site_id: {e}"))?;
        if self.cameras.is_empty() || self.cameras.len() > MAX_REQUEST_CAMERAS {
            return Err(format!(
                "cameras: expected 1 to {MAX_REQUEST_CAMERAS} cameras, found {}",
                self.cameras.len()
            ));
        }
        for camera in &self.cameras {
            crate::id::check(camera).map_err(|e| format!("cameras: {e}"))?;
        }
        if self.reason.trim().is_empty() {
            return Err("reason: a request says why".into());
        }
        bounded("reason", &self.reason, MAX_NOTE_CHARS)?;
        bounded("by", &self.by, MAX_NAME_CHARS)?;
        bounded("desk", &self.desk, MAX_NAME_CHARS)?;
        let time = |member: &str, text: &str| {
            humantime::parse_rfc3339(text)
                .map_err(|_| format!("{member}: expected RFC 3339 UTC time, found \"{text}\""))
        };
        let (from, to) = (time("from", &self.from)?, time("to", &self.to)?);
        match to.duration_since(from) {
            Ok(span) if span.is_zero() => Err("to: the same moment as from".into()),
            Ok(span) if span > MAX_REQUEST_SPAN => Err(format!(
                "to: {} s after from, more than the {} s one request may ask for",
                span.as_secs(),
                MAX_REQUEST_SPAN.as_secs()
            )),
            Ok(_) => Ok((from, to)),
            Err(_) => Err("to: before from".into()),
        }
    }
}

fn bounded(member: &str, text: &str, most: usize) -> Result<(), String> {
    if text.chars().count() > most {
        return Err(format!("{member}: longer than {most} characters"));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(format!("{member}: holds control characters"));
    }
    Ok(())
}

/// What became of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The box checked it and acted on it: the light and the status show it.
    Applied,
    /// Genuine, but older than what the box already shows for the event: kept out.
    Superseded,
    /// The box will not act on it (the reason says why).
    Refused,
}

impl Outcome {
    /// Its name as serialized.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Superseded => "superseded",
            Outcome::Refused => "refused",
        }
    }
}

/// A box's answer to a command it heard, published QoS 1 on `<prefix>/answers`, signed by the
/// device key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// [`ANSWER_SCHEMA`].
    pub schema: String,
    /// `site.id` of the box answering.
    pub site_id: String,
    /// The command answered, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<Uuid>,
    /// The event it named, when it could be read; for a footage request applied, the event
    /// the box opened for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Uuid>,
    /// What became of it.
    pub outcome: Outcome,
    /// Why, for `refused` and `superseded`; for a footage request applied, what of the range
    /// the box does not hold, if any (its clip is then partial).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The key whose intact signature the command carried: a desk takes an answer as its
    /// own only when this is its key. Absent when the command was unsigned or altered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// When the box decided, RFC 3339 UTC with milliseconds.
    pub at: String,
    /// The device's signature over every byte before it. Always the last member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureInfo>,
}

/// What the few members every command carries say, read before anything else: enough to
/// answer a command that is refused.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Envelope {
    /// The command's schema.
    #[serde(default)]
    pub schema: Option<String>,
    /// Its id.
    #[serde(default)]
    pub command_id: Option<Uuid>,
    /// The event it names.
    #[serde(default)]
    pub event_id: Option<Uuid>,
}

impl Envelope {
    /// What can be read of `payload`; nothing when it is not a JSON object.
    pub fn read(payload: &[u8]) -> Envelope {
        serde_json::from_slice(payload).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(state: ResponseState) -> Response {
        Response {
            schema: RESPONSE_SCHEMA.into(),
            command_id: Uuid::now_v7(),
            site_id: "corner-12".into(),
            event_id: Uuid::now_v7(),
            state,
            eta_minutes: None,
            disposition: None,
            note: None,
            by: "lee".into(),
            desk: "precinct-5".into(),
            issued_at: "2026-12-01T10:00:00.000Z".into(),
            signature: None,
        }
    }

    #[test]
    fn names_read_back_and_read_as_serialized() {
        for state in ResponseState::ALL {
            assert_eq!(ResponseState::parse(state.as_str()), Some(state));
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
        for disposition in Disposition::ALL {
            assert_eq!(Disposition::parse(disposition.as_str()), Some(disposition));
            assert_eq!(
                serde_json::to_value(disposition).unwrap(),
                disposition.as_str()
            );
        }
        assert_eq!(ResponseState::parse("en_route"), None);
    }

    #[test]
    fn a_response_holds_only_what_its_state_allows() {
        let mut closed = response(ResponseState::Closed);
        closed.disposition = Some(Disposition::GoneOnArrival);
        assert_eq!(closed.check(), Ok(()));
        assert_eq!(closed.summary(), "closed (gone on arrival), by lee");
        let mut early = response(ResponseState::Acknowledged);
        early.disposition = Some(Disposition::Arrest);
        assert!(early.check().unwrap_err().starts_with("disposition"));
        let mut eta = response(ResponseState::OnScene);
        eta.eta_minutes = Some(4);
        assert!(eta.check().unwrap_err().starts_with("eta_minutes"));
        let mut long = response(ResponseState::Acknowledged);
        long.note = Some("x".repeat(MAX_NOTE_CHARS + 1));
        assert!(long.check().unwrap_err().starts_with("note"));
        let mut escape = response(ResponseState::Acknowledged);
        escape.by = "lee\u{1b}[2J".into();
        assert!(escape.check().unwrap_err().starts_with("by"));
        let mut other = response(ResponseState::Acknowledged);
        other.schema = "alertclip.response.v9".into();
        assert!(other.check().unwrap_err().starts_with("schema"));
    }

    #[test]
    fn a_request_names_cameras_a_reason_and_a_short_forward_range() {
        let mut request = FootageRequest {
            schema: FOOTAGE_REQUEST_SCHEMA.into(),
            command_id: Uuid::now_v7(),
            site_id: "corner-12".into(),
            cameras: vec!["register".into()],
            from: "2026-12-01T10:00:00Z".into(),
            to: "2026-12-01T10:00:30.500Z".into(),
            reason: "the minute before the alert".into(),
            by: "lee".into(),
            desk: "precinct-5".into(),
            issued_at: "2026-12-01T10:01:00.000Z".into(),
            signature: None,
        };
        let (from, to) = request.check().unwrap();
        assert_eq!(to.duration_since(from).unwrap().as_millis(), 30_500);
        request.to = "2026-12-01T10:10:01Z".into();
        assert!(request.check().unwrap_err().contains("more than the 600 s"));
        request.to = "2026-12-01T09:59:00Z".into();
        assert_eq!(request.check().unwrap_err(), "to: before from");
        request.to = "2026-12-01T10:00:10Z".into();
        request.cameras = vec!["../etc".into()];
        assert!(request.check().unwrap_err().starts_with("cameras"));
        request.cameras = vec!["register".into()];
        request.reason = " ".into();
        assert!(request.check().unwrap_err().starts_with("reason"));
    }

    #[test]
    fn the_envelope_reads_what_it_can() {
        let r = response(ResponseState::Dispatched);
        let envelope = Envelope::read(&serde_json::to_vec(&r).unwrap());
        assert_eq!(envelope.command_id, Some(r.command_id));
        assert_eq!(envelope.event_id, Some(r.event_id));
        assert!(Envelope::read(b"not json").command_id.is_none());
    }
}
