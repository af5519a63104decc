//! Wireless panic buttons bridged to MQTT: Zigbee2MQTT and similar bridges publish a JSON
//! message per button action, such as `{"action":"single","battery":97}`. A message on the
//! button's topic with every field of `match` equal is a press; other messages (battery
//! reports, other actions) are not. Retained messages, which a broker replays on subscribing,
//! are never presses.
//!
//! A press may arrive late: a broker keeps QoS 1 messages for the box's persistent session
//! while the box is down (stopped, rebooting, off the network) and sends them as it
//! reconnects. A press is an alarm whenever it was made, so it is delivered; but one that
//! arrives within [`QUEUED_WINDOW`] of a connection may be such a queued press, and its alert
//! says so (MQTT 3.1.1 carries no time of publishing to tell).

use bytes::Bytes;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::button::{ButtonState, Wiring};
use alertclip_mqtt::{LinkEvent, Session, Settings};

/// Whether a message is a press: a JSON object with every `fields` equal (any message when
/// there are no fields).
pub fn is_press(fields: &Map<String, Value>, payload: &[u8]) -> bool {
    if fields.is_empty() {
        return true;
    }
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(message)) => fields
            .iter()
            .all(|(key, want)| message.get(key) == Some(want)),
        _ => false,
    }
}

/// A press arriving this soon after the button's session connected may have been queued by
/// the broker while the box was away.
pub const QUEUED_WINDOW: std::time::Duration = std::time::Duration::from_secs(2);

/// What an alert says of a press that may have been queued.
pub const MAYBE_QUEUED: &str = "delivered as the box reconnected to the button's broker: it may have been pressed while the box was offline";

/// A message on the button's topic.
#[derive(Debug)]
pub struct Message {
    /// Its topic.
    pub topic: String,
    /// Its payload: untrusted.
    pub payload: Bytes,
    /// It arrived within [`QUEUED_WINDOW`] of a connection.
    pub maybe_queued: bool,
}

/// Fires a press for each matching message until `cancel`.
pub async fn run(
    wiring: Wiring,
    fields: Map<String, Value>,
    mut messages: mpsc::UnboundedReceiver<Message>,
    cancel: CancellationToken,
) {
    wiring.status.send_modify(|s| s.state = ButtonState::Ready);
    loop {
        let message = tokio::select! {
            _ = cancel.cancelled() => break,
            message = messages.recv() => message,
        };
        let Some(Message {
            topic,
            payload,
            maybe_queued,
        }) = message
        else {
            break;
        };
        if is_press(&fields, &payload) {
            wiring
                .press_noted(maybe_queued.then_some(MAYBE_QUEUED))
                .await;
        } else {
            tracing::debug!(button = %wiring.id, %topic, "message is not a press");
        }
    }
    wiring
        .status
        .send_modify(|s| s.state = ButtonState::Stopped);
}

/// Messages on `topic` from a broker of the button's own (not the delivery broker), with the
/// button's status following the connection.
pub fn own_broker(
    settings: &Settings,
    topic: String,
    wiring: &Wiring,
    tracker: &tokio_util::task::TaskTracker,
    cancel: CancellationToken,
) -> Result<mpsc::UnboundedReceiver<Message>, alertclip_mqtt::SettingsError> {
    let (session, mut events) = Session::<()>::start(settings, tracker, cancel.clone())?;
    let (tx, rx) = mpsc::unbounded_channel();
    let status = wiring.status.clone();
    let id = wiring.id.clone();
    tracker.spawn(async move {
        let mut connected_at = tokio::time::Instant::now();
        loop {
            let event = tokio::select! {
                _ = cancel.cancelled() => break,
                event = events.recv() => event,
            };
            match event {
                None => break,
                Some(LinkEvent::Connected) => {
                    connected_at = tokio::time::Instant::now();
                    session.subscribe(&topic);
                    status.send_modify(|s| {
                        s.state = ButtonState::Ready;
                        s.last_error = None;
                    });
                }
                Some(LinkEvent::Disconnected(error)) => {
                    if status.borrow().state != ButtonState::Unavailable {
                        tracing::warn!(button = %id, %error, "the button's broker is unreachable; retrying");
                    }
                    status.send_modify(|s| {
                        s.state = ButtonState::Unavailable;
                        s.last_error = Some(format!("broker: {error}"));
                    });
                }
                Some(LinkEvent::Incoming { topic, payload, retained: false, .. }) => {
                    let maybe_queued = connected_at.elapsed() < QUEUED_WINDOW;
                    let _ = tx.send(Message { topic, payload, maybe_queued });
                }
                // Never a press: discarded, and the session with it so that it is not sent
                // again; the button goes on with the next connection.
                Some(LinkEvent::IncomingTooLarge(error)) => {
                    tracing::warn!(button = %id, %error, "a message over the size limit on the button's broker was discarded");
                }
                Some(_) => {}
            }
        }
        session.disconnect().await;
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_messages_with_every_field_are_presses() {
        let fields: Map<String, Value> = serde_json::from_str(r#"{"action":"single"}"#).unwrap();
        assert!(is_press(
            &fields,
            br#"{"action":"single","battery":97,"linkquality":120}"#
        ));
        assert!(!is_press(&fields, br#"{"action":"double"}"#));
        assert!(!is_press(&fields, br#"{"battery":97}"#));
        assert!(!is_press(&fields, b"single"));
        assert!(is_press(&Map::new(), b"anything"));
        let both: Map<String, Value> =
            serde_json::from_str(r#"{"action":"on","click":1}"#).unwrap();
        assert!(is_press(&both, br#"{"click":1,"action":"on"}"#));
        assert!(!is_press(&both, br#"{"click":"1","action":"on"}"#));
    }
}
