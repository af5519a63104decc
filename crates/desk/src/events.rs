//! Events as the console shows them: the alert, its updates, each camera's snapshot and
//! clip, what went wrong, and what an officer may conclude from the signatures.

use crate::db::{Conn, OptionalExtension};
use crate::params;
use alertclip_wire::payload::{Alert, EventUpdate, Manifest};
use uuid::Uuid;

/// One camera's part of an event.
#[derive(Debug, Clone)]
pub struct Camera {
    /// Its id.
    pub id: String,
    /// The snapshot, when it came.
    pub snapshot: bool,
    /// An H.264 viewing copy of an H.265 clip, when the desk made one.
    pub view: bool,
    /// The clip, when it came whole and matched its manifest.
    pub clip: Option<Clip>,
    /// Why a clip failed, when one did.
    pub problems: Vec<String>,
    /// How much of its clip is here, while it arrives.
    pub progress: Option<Progress>,
}

/// A clip on its way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Chunks stored so far.
    pub chunks: u32,
    /// Their bytes.
    pub bytes: u64,
    /// How many there are, once the manifest (which the box sends after them) is here.
    pub total: Option<u32>,
}

/// A reassembled clip.
#[derive(Debug, Clone)]
pub struct Clip {
    /// Its signed manifest.
    pub manifest: Option<Manifest>,
    /// The manifest's signature: `valid`, `untrusted`, `invalid` or `missing`.
    pub signature: String,
    /// The untrusted key's id, or why the signature is invalid.
    pub signature_detail: Option<String>,
}

/// An event and all that arrived for it.
#[derive(Debug, Clone)]
pub struct Event {
    /// The event id.
    pub id: Uuid,
    /// The site the topic named.
    pub site: String,
    /// When the desk received the alert (Unix seconds).
    pub received: i64,
    /// The alert as the box signed it.
    pub alert: Alert,
    /// The alert's signature verdict.
    pub signature: String,
    /// The untrusted key's id, or why the signature is invalid.
    pub signature_detail: Option<String>,
    /// A gap, replay or rewrite in the box's alert chain, if one was seen at this alert.
    pub chain_problem: Option<String>,
    /// Under an evidence hold: never deleted by retention.
    pub hold: bool,
    /// Triggers that joined it, each with its signature's verdict.
    pub updates: Vec<(EventUpdate, String)>,
    /// Each camera the alert named, then any other that sent something.
    pub cameras: Vec<Camera>,
    /// Messages about it refused or failed (forged, republished, chain).
    pub problems: Vec<String>,
    /// What officers responded, oldest first, each with how far it got to the store.
    pub responses: Vec<crate::respond::Sent<alertclip_wire::command::Response>>,
    /// Footage officers asked the store's box for from this event's page, oldest first.
    pub requests: Vec<crate::respond::Sent<alertclip_wire::command::FootageRequest>>,
}

/// What an officer may conclude from a clip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Signed by the store's enrolled key, its alert in an unbroken chain, the box's clock
    /// synchronised.
    Verified,
    /// Playable, but not to be relied on, for the reasons given.
    Unverified(Vec<String>),
    /// Not arrived yet: nothing, or the chunks so far.
    Arriving(Option<Progress>),
}

fn verdict_reason(what: &str, verdict: &str, detail: Option<&str>) -> Option<String> {
    match verdict {
        "valid" => None,
        "untrusted" => Some(format!(
            "the {what} is signed by key {}, which is not the key enrolled for this store (or the store is not enrolled)",
            detail.unwrap_or("?")
        )),
        "invalid" => Some(format!(
            "the {what}'s signature does not match it: {}",
            detail.unwrap_or("altered")
        )),
        _ => Some(format!("the {what} is not signed")),
    }
}

impl Event {
    /// Why the alert itself is not to be relied on, if it is not.
    pub fn alert_reasons(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        reasons.extend(verdict_reason(
            "alert",
            &self.signature,
            self.signature_detail.as_deref(),
        ));
        if let Some(problem) = &self.chain_problem {
            reasons.push(format!("the box's alert chain is broken here: {problem}"));
        }
        if self.alert.clock.synchronized != Some(true) {
            reasons.push("the box's clock was not synchronised: times may be off".into());
        }
        reasons
    }

    /// What an officer may conclude from `camera`'s clip.
    pub fn verification(&self, camera: &Camera) -> Verification {
        let Some(clip) = &camera.clip else {
            if camera.problems.is_empty() {
                return Verification::Arriving(camera.progress);
            }
            return Verification::Unverified(camera.problems.clone());
        };
        let mut reasons = self.alert_reasons();
        reasons.extend(verdict_reason(
            "clip's manifest",
            &clip.signature,
            clip.signature_detail.as_deref(),
        ));
        if reasons.is_empty() {
            Verification::Verified
        } else {
            Verification::Unverified(reasons)
        }
    }
}

/// Event ids newest first, at most `limit`.
pub fn recent(conn: &Conn, limit: u32) -> crate::db::Result<Vec<Uuid>> {
    let ids = conn.query_map(
        "SELECT id FROM events ORDER BY received DESC, id DESC LIMIT ?1",
        params![limit],
        |row| row.get::<String>(0),
    )?;
    Ok(ids
        .iter()
        .filter_map(|id| Uuid::parse_str(id).ok())
        .collect())
}

/// The event `id`, with all that arrived for it.
pub fn get(conn: &Conn, id: Uuid) -> crate::db::Result<Option<Event>> {
    let key = id.to_string();
    let Some(mut event) = conn
        .query_row(
            "SELECT site, received, alert, signature, signature_detail, chain_problem, hold
             FROM events WHERE id = ?1",
            params![&key],
            |row| {
                let alert: String = row.get(2)?;
                Ok((
                    row.get::<String>(0)?,
                    row.get::<i64>(1)?,
                    alert,
                    row.get::<String>(3)?,
                    row.get::<Option<String>>(4)?,
                    row.get::<Option<String>>(5)?,
                    row.get::<bool>(6)?,
                ))
            },
        )
        .optional()?
        .and_then(|(site, received, alert, signature, detail, chain, hold)| {
            let alert: Alert = serde_json::from_str(&alert).ok()?;
            Some(Event {
                id,
                site,
                received,
                alert,
                signature,
                signature_detail: detail,
                chain_problem: chain,
                hold,
                updates: Vec::new(),
                cameras: Vec::new(),
                problems: Vec::new(),
                responses: Vec::new(),
                requests: Vec::new(),
            })
        })
    else {
        return Ok(None);
    };
    // Everything below is the event's site's own: another site's box cannot add to it.
    let site = event.site.clone();
    event.updates = conn
        .query_map(
            "SELECT body, signature FROM updates WHERE site = ?2 AND event = ?1 ORDER BY number",
            params![&key, &site],
            |row| Ok((row.get::<String>(0)?, row.get::<String>(1)?)),
        )?
        .into_iter()
        .filter_map(|(body, signature)| Some((serde_json::from_str(&body).ok()?, signature)))
        .collect();
    event.cameras = event
        .alert
        .cameras
        .iter()
        .map(|plan| Camera {
            id: plan.id.clone(),
            snapshot: false,
            view: false,
            clip: None,
            problems: Vec::new(),
            progress: None,
        })
        .collect();
    let rows = conn.query_map(
        "SELECT camera, kind, manifest, signature, signature_detail FROM media
         WHERE site = ?2 AND event = ?1",
        params![&key, &site],
        |row| {
            Ok((
                row.get::<String>(0)?,
                row.get::<String>(1)?,
                row.get::<Option<String>>(2)?,
                row.get::<Option<String>>(3)?,
                row.get::<Option<String>>(4)?,
            ))
        },
    )?;
    for (camera, kind, manifest, signature, detail) in rows {
        let slot = camera_slot(&mut event.cameras, &camera);
        if kind == "snapshot" {
            slot.snapshot = true;
        } else if kind == "view" {
            slot.view = true;
        } else {
            slot.clip = Some(Clip {
                manifest: manifest.and_then(|m| serde_json::from_str(&m).ok()),
                signature: signature.unwrap_or_else(|| "missing".into()),
                signature_detail: detail,
            });
        }
    }
    let rows = conn.query_map(
        "SELECT camera, kind, reason FROM problems WHERE site = ?2 AND event = ?1 ORDER BY id",
        params![&key, &site],
        |row| {
            Ok((
                row.get::<Option<String>>(0)?,
                row.get::<String>(1)?,
                row.get::<String>(2)?,
            ))
        },
    )?;
    for (camera, kind, reason) in rows {
        match camera {
            Some(camera) => camera_slot(&mut event.cameras, &camera)
                .problems
                .push(reason),
            None => event.problems.push(format!("{kind}: {reason}")),
        }
    }
    let rows = conn.query_map(
        "SELECT camera, chunks, bytes, total FROM arriving WHERE site = ?2 AND event = ?1",
        params![&key, &site],
        |row| {
            Ok((
                row.get::<String>(0)?,
                Progress {
                    chunks: row.get(1)?,
                    bytes: row.get(2)?,
                    total: row.get(3)?,
                },
            ))
        },
    )?;
    for (camera, progress) in rows {
        if let Some(slot) = event.cameras.iter_mut().find(|c| c.id == camera) {
            slot.progress = Some(progress);
        }
    }
    event.responses = crate::respond::sent(conn, &site, id)?;
    event.requests = crate::respond::requested(conn, &site, id)?;
    Ok(Some(event))
}

fn camera_slot<'a>(cameras: &'a mut Vec<Camera>, id: &str) -> &'a mut Camera {
    let index = match cameras.iter().position(|c| c.id == id) {
        Some(index) => index,
        None => {
            cameras.push(Camera {
                id: id.to_owned(),
                snapshot: false,
                view: false,
                clip: None,
                problems: Vec::new(),
                progress: None,
            });
            cameras.len() - 1
        }
    };
    &mut cameras[index]
}

/// The stored file (relative to the media directory) of `event`'s `camera`'s `kind`.
pub fn media_path(
    conn: &Conn,
    event: Uuid,
    camera: &str,
    kind: &str,
) -> crate::db::Result<Option<String>> {
    conn.query_row(
        "SELECT media.path FROM media
         JOIN events ON events.id = media.event AND events.site = media.site
         WHERE media.event = ?1 AND media.camera = ?2 AND media.kind = ?3",
        params![event.to_string(), camera, kind],
        |row| row.get(0),
    )
    .optional()
}

/// The audit rows about `target`, oldest first: the event's history.
pub fn history(conn: &Conn, target: &str) -> crate::db::Result<Vec<(String, String, String)>> {
    conn.query_map(
        "SELECT at, COALESCE(\"user\", '-'), action FROM audit WHERE target = ?1 ORDER BY id",
        params![target],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(signature: &str, chain: Option<&str>, synchronized: Option<bool>) -> Event {
        let alert: Alert = serde_json::from_value(serde_json::json!({
            "schema": "alertclip.alert.v1",
            "event_id": "01a232a0-d65b-729f-b566-57797eb0126c",
            "site": {"id": "s", "name": "Shop"},
            "trigger": {"kind": "button", "source": "b1"},
            "triggered_at": "2026-12-01T17:22:11.163Z",
            "cameras": [{"id": "cam", "pre_roll_s": 2.0, "post_roll_s": 1.0}],
            "clock": {"synchronized": synchronized},
            "test": false,
            "device_version": "0.1.0",
            "sequence": 1,
            "previous_alert_sha256": null
        }))
        .unwrap();
        Event {
            id: alert.event_id,
            site: "s".into(),
            received: 0,
            alert,
            signature: signature.into(),
            signature_detail: Some("abcd".into()),
            chain_problem: chain.map(str::to_owned),
            hold: false,
            updates: Vec::new(),
            cameras: Vec::new(),
            problems: Vec::new(),
            responses: Vec::new(),
            requests: Vec::new(),
        }
    }

    fn camera(signature: Option<&str>, problems: &[&str]) -> Camera {
        Camera {
            id: "cam".into(),
            snapshot: false,
            view: false,
            clip: signature.map(|s| Clip {
                manifest: None,
                signature: s.into(),
                signature_detail: None,
            }),
            problems: problems.iter().map(|p| p.to_string()).collect(),
            progress: None,
        }
    }

    #[test]
    fn verified_needs_the_enrolled_key_an_unbroken_chain_and_a_synchronised_clock() {
        let good = event("valid", None, Some(true));
        assert_eq!(
            good.verification(&camera(Some("valid"), &[])),
            Verification::Verified
        );
        assert_eq!(
            good.verification(&camera(None, &[])),
            Verification::Arriving(None)
        );
        let Verification::Unverified(why) =
            good.verification(&camera(None, &["chunk 3 does not match"]))
        else {
            panic!("a failed clip is unverified");
        };
        assert_eq!(why, ["chunk 3 does not match"]);

        let cases = [
            (
                event("untrusted", None, Some(true)),
                "valid",
                "not the key enrolled",
            ),
            (
                event("valid", Some("sequence 4 missing"), Some(true)),
                "valid",
                "chain is broken",
            ),
            (
                event("valid", None, Some(false)),
                "valid",
                "clock was not synchronised",
            ),
            (
                event("valid", None, None),
                "valid",
                "clock was not synchronised",
            ),
            (
                event("valid", None, Some(true)),
                "invalid",
                "signature does not match",
            ),
            (event("valid", None, Some(true)), "missing", "not signed"),
        ];
        for (event, clip, reason) in cases {
            match event.verification(&camera(Some(clip), &[])) {
                Verification::Unverified(why) => {
                    assert_eq!(why.len(), 1, "{why:?}");
                    assert!(why[0].contains(reason), "{why:?} should say {reason}");
                }
                other => panic!("{other:?} for {reason}"),
            }
        }
    }
}
