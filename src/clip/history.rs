//! The last few events, for `alertclip status`: what raised them, their clips, and whether
//! the alert channel has them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::clock;
use crate::trigger::{Trigger, TriggerKind};

/// How many events are kept.
pub const KEPT: usize = 10;

/// How far an event's delivery has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// No `[mqtt]`: kept on the box only.
    Local,
    /// In the outbox, not yet acknowledged by the broker.
    Queued,
    /// The alert could not be written to disk: it is kept in memory and tried again every
    /// second (a health alert says so).
    Retrying,
    /// The broker acknowledged the alert.
    AlertAcknowledged,
}

impl Delivery {
    /// Its name in status reports, as serialized.
    pub fn as_str(&self) -> &'static str {
        match self {
            Delivery::Local => "local",
            Delivery::Queued => "queued",
            Delivery::Retrying => "retrying",
            Delivery::AlertAcknowledged => "alert_acknowledged",
        }
    }
}

/// One recent event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventSummary {
    /// The event.
    pub event_id: Uuid,
    /// What raised it.
    pub kind: TriggerKind,
    /// Which input.
    pub source: String,
    /// When, RFC 3339 UTC.
    pub time: String,
    /// The cameras it clips.
    pub cameras: Vec<String>,
    /// Clips written so far.
    pub clips: u32,
    /// Its alert's delivery.
    pub delivery: Delivery,
}

/// The shared log; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct EventLog {
    events: Arc<Mutex<VecDeque<EventSummary>>>,
}

impl EventLog {
    fn update(&self, f: impl FnOnce(&mut VecDeque<EventSummary>)) {
        if let Ok(mut events) = self.events.lock() {
            f(&mut events);
        }
    }

    /// A new event for `trigger` on `cameras`; `delivering` when there is an alert channel.
    pub fn opened(&self, event: Uuid, trigger: &Trigger, cameras: Vec<String>, delivering: bool) {
        let summary = EventSummary {
            event_id: event,
            kind: trigger.kind,
            source: trigger.source.clone(),
            time: clock::rfc3339_ms(trigger.at.wall),
            cameras,
            clips: 0,
            delivery: if delivering {
                Delivery::Queued
            } else {
                Delivery::Local
            },
        };
        self.update(|events| {
            if events.len() == KEPT {
                events.pop_front();
            }
            events.push_back(summary);
        });
    }

    /// One of `event`'s clips is written.
    pub fn clip_written(&self, event: Uuid) {
        self.update(|events| {
            if let Some(e) = events.iter_mut().find(|e| e.event_id == event) {
                e.clips += 1;
            }
        });
    }

    /// The broker acknowledged `event`'s alert.
    pub fn alert_acknowledged(&self, event: Uuid) {
        self.set_delivery(event, Delivery::AlertAcknowledged);
    }

    /// Where `event`'s alert is now.
    pub fn set_delivery(&self, event: Uuid, delivery: Delivery) {
        self.update(|events| {
            if let Some(e) = events.iter_mut().find(|e| e.event_id == event) {
                e.delivery = delivery;
            }
        });
    }

    /// The kept events, newest first.
    pub fn recent(&self) -> Vec<EventSummary> {
        self.events
            .lock()
            .map(|events| events.iter().rev().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_ten_newest_first_with_their_progress() {
        let log = EventLog::default();
        let ids: Vec<Uuid> = (0..12).map(|_| Uuid::now_v7()).collect();
        for id in &ids {
            log.opened(
                *id,
                &Trigger::now(TriggerKind::Manual, "cli"),
                vec!["a".into()],
                true,
            );
        }
        log.clip_written(ids[11]);
        log.alert_acknowledged(ids[11]);
        log.clip_written(ids[0]);
        let recent = log.recent();
        assert_eq!(recent.len(), KEPT);
        assert_eq!(recent[0].event_id, ids[11]);
        assert_eq!(recent[0].clips, 1);
        assert_eq!(recent[0].delivery, Delivery::AlertAcknowledged);
        assert_eq!(recent[9].event_id, ids[2], "the two oldest are gone");
        assert_eq!(recent[1].delivery, Delivery::Queued);
    }
}
