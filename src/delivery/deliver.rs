//! The delivery task: owns the MQTT session and drains the outbox to the broker in the
//! outbox's order, at most [`WINDOW`] messages unacknowledged, removing each once the broker
//! acknowledges it; keeps the retained device status fresh; and hands messages on subscribed
//! topics to their listeners.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use alertclip_mqtt::{LinkEvent, Session, Tag};
use alertclip_wire::payload::{OutboxSummary, STATUS_SCHEMA, Status};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Publisher;
use super::outbox::Key;
use crate::clock::rfc3339_ms;

/// Publishes kept unacknowledged at once.
const WINDOW: usize = 16;
/// A disconnection this soon after a publish this large suggests the broker's size limit.
const LARGE_PUBLISH: usize = 32 << 10;
const SIZE_LIMIT_WINDOW: Duration = Duration::from_secs(5);

/// Publishes from the outbox until `cancel`: keeps up to [`WINDOW`] messages unacknowledged,
/// in outbox order, removes each once acknowledged, and republishes the retained status on
/// connecting, on change and every `status_interval`. The session subscribes to nothing:
/// what the box hears (the desk's commands, wireless buttons) comes on sessions of its own.
pub async fn deliver(
    publisher: Arc<Publisher>,
    session: Session<Key>,
    mut events: mpsc::UnboundedReceiver<LinkEvent<Key>>,
    status: impl Fn() -> Status + Send,
    status_interval: Duration,
    cancel: CancellationToken,
) {
    let outbox = publisher.outbox_handle();
    let mut in_flight: HashSet<Key> = HashSet::new();
    let mut connected = false;
    let mut failures = 0u32;
    let mut last_large: Option<(usize, tokio::time::Instant)> = None;
    let mut tick = tokio::time::interval(status_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let publish_status = |session: &Session<Key>| {
        if let Ok(payload) = serde_json::to_vec(&status()) {
            let _ = session.publish(Tag::Untracked, &publisher.topics().status(), payload, true);
        }
    };
    loop {
        let changed = outbox.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        while connected && in_flight.len() < WINDOW {
            match outbox.next(&in_flight) {
                Ok(Some(ready)) => {
                    let size = ready.payload.len();
                    let key = ready.key.clone();
                    if session
                        .publish(
                            Tag::Message(ready.key),
                            &ready.topic,
                            ready.payload,
                            ready.retain,
                        )
                        .is_err()
                    {
                        break;
                    }
                    in_flight.insert(key);
                    if size >= LARGE_PUBLISH {
                        last_large = Some((size, tokio::time::Instant::now()));
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::error!(%error, "cannot read the outbox");
                    break;
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            event = events.recv() => match event {
                None => break,
                Some(LinkEvent::Connected) => {
                    tracing::info!(after_failures = failures, "connected to the broker");
                    connected = true;
                    failures = 0;
                    in_flight.clear();
                    publisher.update_link(|l| l.connected = true);
                    publish_status(&session);
                }
                Some(LinkEvent::Acked(key)) => {
                    in_flight.remove(&key);
                    publisher.update_link(|l| l.last_ack = Some(rfc3339_ms(SystemTime::now())));
                    if let Some(event) = key.alert_event() {
                        publisher.alert_acknowledged(event);
                    }
                    if let Err(error) = outbox.ack(&key) {
                        tracing::error!(%error, "cannot remove a delivered message from the outbox");
                    }
                }
                Some(LinkEvent::Refused(_key, reason)) => {
                    // Kept in flight, so not retried before the next connection; kept on disk.
                    tracing::error!(%reason, "the broker refused a message; it stays in the outbox");
                    publisher.update_link(|l| l.last_error = Some(format!("the broker refused a message: {reason}")));
                }
                Some(LinkEvent::TooLarge(key, reason)) => {
                    in_flight.remove(&key);
                    match outbox.reject(&key) {
                        Ok(Some(path)) => publisher.health(
                            "message_too_large",
                            None,
                            None,
                            format!("a message could not be sent ({reason}); set aside as {}", path.display()),
                        ),
                        Ok(None) => {}
                        Err(error) => tracing::error!(%error, "cannot set an oversized message aside"),
                    }
                }
                Some(LinkEvent::Incoming { topic, .. }) => {
                    tracing::debug!(%topic, "a message on the delivery session, which subscribes to nothing: ignored");
                }
                Some(LinkEvent::Subscribed(_)) => {}
                Some(LinkEvent::IncomingTooLarge(error)) => {
                    tracing::warn!(%error, "the broker sent a message over the size limit: discarded");
                }
                Some(LinkEvent::Disconnected(error)) => {
                    let hint = match last_large {
                        Some((size, at)) if connected && at.elapsed() < SIZE_LIMIT_WINDOW => format!(
                            " (the broker closed the connection right after a {size}-byte publish: its maximum \
                             packet size is probably smaller; lower mqtt.chunk_size)"
                        ),
                        _ => String::new(),
                    };
                    failures += 1;
                    let error = format!("{error}{hint}");
                    if connected || failures == 1 || failures.is_power_of_two() {
                        tracing::warn!(%error, failures, "broker connection lost or refused; messages wait in the outbox");
                    }
                    publisher.update_link(|l| {
                        l.connected = false;
                        l.last_error = Some(error);
                    });
                    connected = false;
                    in_flight.clear();
                    last_large = None;
                }
            },
            _ = &mut changed => {}
            _ = tick.tick() => if connected { publish_status(&session) },
            _ = publisher.status_wanted() => if connected { publish_status(&session) },
        }
    }
    if connected {
        let offline = Status {
            schema: STATUS_SCHEMA.to_owned(),
            state: "offline".to_owned(),
            version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            started_at: None,
            cameras: BTreeMap::new(),
            buttons: BTreeMap::new(),
            outbox: Some(OutboxSummary {
                events: outbox.stats().events,
                bytes: outbox.stats().bytes,
            }),
            responses: BTreeMap::new(),
            lights: BTreeMap::new(),
        };
        if let Ok(payload) = serde_json::to_vec(&offline) {
            let _ = session.publish(Tag::Untracked, &publisher.topics().status(), payload, true);
        }
        session.disconnect().await;
        // Give the event loop a moment to send both before it is stopped.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(event) = events.recv().await {
                if matches!(event, LinkEvent::Disconnected(_)) {
                    break;
                }
            }
        })
        .await;
    }
}
