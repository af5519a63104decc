//! The JSON Schemas of the payloads, as published for people and tools (`schemas/` beside
//! this crate, installed with the package). The tests check real payloads against them.

/// `<prefix>/events/<event_id>`: [`crate::Alert`].
pub const ALERT: &str = include_str!("../schemas/alert.v1.json");
/// `<prefix>/events/<event_id>/clip/<camera>`: [`crate::Manifest`].
pub const MANIFEST: &str = include_str!("../schemas/manifest.v1.json");
/// `<prefix>/events/<event_id>/update/<n>`: [`crate::EventUpdate`].
pub const EVENT_UPDATE: &str = include_str!("../schemas/event_update.v1.json");
/// `<prefix>/status`: [`crate::Status`].
pub const STATUS: &str = include_str!("../schemas/status.v1.json");
/// `<prefix>/alerts`: [`crate::Health`].
pub const HEALTH: &str = include_str!("../schemas/health.v1.json");
/// `<prefix>/commands`: [`crate::command::Response`].
pub const RESPONSE: &str = include_str!("../schemas/response.v1.json");
/// `<prefix>/commands`: [`crate::command::FootageRequest`].
pub const FOOTAGE_REQUEST: &str = include_str!("../schemas/footage_request.v1.json");
/// `<prefix>/answers`: [`crate::command::Answer`].
pub const ANSWER: &str = include_str!("../schemas/answer.v1.json");

/// The schema of a payload by its short name (`alert`, `event_update`, `manifest`, `status`,
/// `health`, `response`, `footage_request`, `answer`).
pub fn by_name(name: &str) -> Option<&'static str> {
    match name {
        "alert" => Some(ALERT),
        "event_update" => Some(EVENT_UPDATE),
        "manifest" => Some(MANIFEST),
        "status" => Some(STATUS),
        "health" => Some(HEALTH),
        "response" => Some(RESPONSE),
        "footage_request" => Some(FOOTAGE_REQUEST),
        "answer" => Some(ANSWER),
        _ => None,
    }
}
