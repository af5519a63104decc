//! The last few events, for `alertclip status`: what raised them, their clips, whether the
//! alert channel has them, and the officer side's latest response to each.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use alertclip_wire::ResponseSummary;
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
    /// The officer side's latest response, once one came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<ResponseSummary>,
}

/// The shared log; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct EventLog {
    events: Arc<Mutex<VecDeque<EventSummary>>>,
    /// The latest response to each of the last events that had one, oldest first: kept apart
    /// from the events, since a response may come for an event raised before this start.
    responses: Arc<Mutex<VecDeque<(Uuid, ResponseSummary)>>>,
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
            response: None,
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

    /// Whether `event` is one of the kept events.
    pub fn has(&self, event: Uuid) -> bool {
        self.events
            .lock()
            .map(|events| events.iter().any(|e| e.event_id == event))
            .unwrap_or(false)
    }

    /// The response now shown for `event`, if any.
    pub fn response(&self, event: Uuid) -> Option<ResponseSummary> {
        let responses = self.responses.lock().ok()?;
        responses
            .iter()
            .find(|(e, _)| *e == event)
            .map(|(_, r)| r.clone())
    }

    /// Records `response` as `event`'s latest. An event from before the daemon started is
    /// not among the kept events; its response is kept all the same, for the status.
    pub fn responded(&self, event: Uuid, response: ResponseSummary) {
        self.update(|events| {
            if let Some(e) = events.iter_mut().find(|e| e.event_id == event) {
                e.response = Some(response.clone());
            }
        });
        if let Ok(mut responses) = self.responses.lock() {
            responses.retain(|(e, _)| *e != event);
            if responses.len() == KEPT {
                responses.pop_front();
            }
            responses.push_back((event, response));
        }
    }

    /// The latest response to each of the last events that had one.
    pub fn responses(&self) -> std::collections::BTreeMap<Uuid, ResponseSummary> {
        self.responses
            .lock()
            .map(|responses| responses.iter().cloned().collect())
            .unwrap_or_default()
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
        // A trigger reads GStreamer's clock.
        gstreamer::init().unwrap();
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

    #[test]
    fn a_response_is_kept_for_its_event_even_one_from_before_this_start() {
        gstreamer::init().unwrap();
        let log = EventLog::default();
        let (ours, earlier) = (Uuid::now_v7(), Uuid::now_v7());
        log.opened(
            ours,
            &Trigger::now(TriggerKind::Button, "office"),
            vec!["a".into()],
            true,
        );
        let response = |state| ResponseSummary {
            command_id: Uuid::now_v7(),
            state,
            by: "lee".into(),
            desk: "precinct-5".into(),
            issued_at: "2026-12-01T10:00:00.000Z".into(),
            received_at: "2026-12-01T10:00:00.100Z".into(),
            summary: "acknowledged, by lee".into(),
        };
        use alertclip_wire::command::ResponseState;
        log.responded(ours, response(ResponseState::Acknowledged));
        log.responded(ours, response(ResponseState::Dispatched));
        log.responded(earlier, response(ResponseState::Closed));
        assert_eq!(
            log.recent()[0].response.as_ref().map(|r| r.state),
            Some(ResponseState::Dispatched)
        );
        let all = log.responses();
        assert_eq!(all.len(), 2, "one, the latest, per event");
        assert_eq!(all[&earlier].state, ResponseState::Closed);
        assert!(log.has(ours) && !log.has(earlier));
    }
}
