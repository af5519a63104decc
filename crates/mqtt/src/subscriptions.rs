//! Who listens to what on a session: a registry the session's owner drains incoming messages
//! into, so that other parts of a program (a box's wireless buttons) hear the delivery broker
//! without holding, or knowing, the task that drives it.

use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::mpsc;

/// Where messages on a subscribed topic go: (topic, payload).
pub type Messages = mpsc::UnboundedReceiver<(String, Bytes)>;

/// One filter and its listener.
type Listener = (String, mpsc::UnboundedSender<(String, Bytes)>);

/// The topic filters listened to, and where each one's messages go.
#[derive(Debug, Default)]
pub struct Subscriptions {
    listeners: Mutex<Vec<Listener>>,
}

impl Subscriptions {
    /// Messages on `filter` (`+` and `#` wildcards), from the next connection on: subscribe
    /// before the session's owner connects, since it subscribes to [`Subscriptions::filters`]
    /// on every connection.
    pub fn subscribe(&self, filter: &str) -> Messages {
        let (tx, rx) = mpsc::unbounded_channel();
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((filter.to_owned(), tx));
        rx
    }

    /// Every filter listened to.
    pub fn filters(&self) -> Vec<String> {
        let listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        listeners.iter().map(|(filter, _)| filter.clone()).collect()
    }

    /// Hands a message to every listener whose filter matches its topic; listeners that went
    /// away are forgotten.
    pub fn dispatch(&self, topic: &str, payload: &Bytes) {
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        listeners.retain(|(filter, tx)| {
            !topic_matches(filter, topic) || tx.send((topic.to_owned(), payload.clone())).is_ok()
        });
    }
}

/// Whether `topic` matches the subscription `filter` (with `+` and `#` wildcards), as a
/// broker decides it.
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match (level, topic_levels.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (want, Some(got)) if want == got => {}
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_topics_like_a_broker() {
        assert!(topic_matches("zigbee2mqtt/button", "zigbee2mqtt/button"));
        assert!(!topic_matches(
            "zigbee2mqtt/button",
            "zigbee2mqtt/button/action"
        ));
        assert!(topic_matches(
            "zigbee2mqtt/+/action",
            "zigbee2mqtt/b1/action"
        ));
        assert!(topic_matches("a/#", "a/b/c"));
        assert!(topic_matches("a/#", "a"));
        assert!(!topic_matches("a/+", "a/b/c"));
        assert!(!topic_matches("a/b", "a"));
    }

    #[test]
    fn messages_reach_the_listeners_whose_filters_match() {
        let subscriptions = Subscriptions::default();
        let mut one = subscriptions.subscribe("z2m/button-1");
        let mut all = subscriptions.subscribe("z2m/+");
        let gone = subscriptions.subscribe("z2m/#");
        drop(gone);
        assert_eq!(subscriptions.filters(), ["z2m/button-1", "z2m/+", "z2m/#"]);
        subscriptions.dispatch("z2m/button-2", &Bytes::from_static(b"{}"));
        subscriptions.dispatch("z2m/button-1", &Bytes::from_static(b"press"));
        assert_eq!(one.try_recv().unwrap().1, Bytes::from_static(b"press"));
        assert!(one.try_recv().is_err());
        assert_eq!(all.try_recv().unwrap().0, "z2m/button-2");
        assert_eq!(all.try_recv().unwrap().0, "z2m/button-1");
        assert_eq!(
            subscriptions.filters(),
            ["z2m/button-1", "z2m/+"],
            "the dropped listener is forgotten"
        );
    }
}
