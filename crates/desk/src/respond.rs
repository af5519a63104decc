//! Officers' responses to alerts and requests for footage, to the store's box: each one
//! signed by the desk's key, stored with the audit row in one transaction ([`record`],
//! [`record_request`]), published on the store's
//! `<prefix>/commands` by a broker session of the desk's own ([`run`]), and answered by the
//! box on `<prefix>/answers` ([`answered`], from ingest). A response given while the broker
//! is away waits in the database and is published when it is back.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::db::{Conn, OptionalExtension};
use crate::params;
use alertclip_mqtt::{LinkEvent, Session, Tag};
use alertclip_wire::command::{
    Answer, Disposition, FOOTAGE_REQUEST_SCHEMA, FootageRequest, MAX_NAME_CHARS, RESPONSE_SCHEMA,
    Response, ResponseState,
};
use alertclip_wire::signature::{self, SigningKey};
use alertclip_wire::topics::{Topics, prefix_of};
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::Config;
use crate::db::{Db, now};
use crate::ingest::Change;

/// Commands published at once before the broker acknowledges any.
const WINDOW: usize = 32;
/// How long a publisher that cannot use the broker settings waits before it tries again.
const RETRY: Duration = Duration::from_secs(5);

/// What signs and addresses the desk's commands: its key, the name it gives itself, and the
/// boxes' topic prefix template.
#[derive(Debug)]
pub struct Signer {
    key: SigningKey,
    /// The desk's name in every command it signs.
    pub desk: String,
    /// The boxes' topic prefix template, `{site}` standing for the site id.
    pub template: String,
}

impl Signer {
    /// The key in `path` (PKCS#8 PEM, readable by its owner only), created on first use,
    /// signing as `desk`, for boxes under `template`.
    pub fn load_or_create(path: &Path, desk: &str, template: &str) -> anyhow::Result<Signer> {
        let name = |e: &dyn std::fmt::Display| anyhow::anyhow!("{}: {e}", path.display());
        let key = match std::fs::read_to_string(path) {
            Ok(pem) => {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(path)
                    .map_err(|e| name(&e))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    anyhow::bail!(
                        "{}: the desk's signing key is readable by others (mode {:o}): chmod 600 it",
                        path.display(),
                        mode & 0o777
                    );
                }
                SigningKey::from_pkcs8_pem(&pem).map_err(|e| {
                    anyhow::anyhow!(
                        "{}: expected the desk's Ed25519 key in PKCS#8 PEM: {e}",
                        path.display()
                    )
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut secret = [0u8; 32];
                getrandom::fill(&mut secret).map_err(|e| name(&e))?;
                let key = SigningKey::from_bytes(&secret);
                let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| name(&e))?;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| name(&e))?;
                file.write_all(pem.as_bytes())
                    .and_then(|_| file.sync_all())
                    .map_err(|e| name(&e))?;
                tracing::info!(file = %path.display(), "created the desk's signing key");
                key
            }
            Err(e) => return Err(name(&e)),
        };
        Ok(Signer {
            key,
            desk: desk.chars().take(MAX_NAME_CHARS).collect(),
            template: template.to_owned(),
        })
    }

    /// The public key as the boxes' `[desk] keys` take it (PEM).
    pub fn public_pem(&self) -> String {
        signature::public_pem(&self.key.verifying_key())
    }

    /// The public key's fingerprint, to read out over the phone.
    pub fn fingerprint(&self) -> String {
        signature::fingerprint(&self.key.verifying_key())
    }
}

/// A response as an officer gives it in the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Given {
    /// The new state.
    pub state: ResponseState,
    /// For `dispatched`: minutes until officers arrive.
    pub eta_minutes: Option<u32>,
    /// For `closed`: how it ended.
    pub disposition: Option<Disposition>,
    /// A note for the record.
    pub note: Option<String>,
}

/// Signs `given` as `user`'s response to `event` of `site`, stores it to be published and
/// audits it, in one transaction; returns the command's id, or why the response cannot be
/// sent.
pub fn record(
    conn: &mut Conn,
    signer: &Signer,
    site: &str,
    event: Uuid,
    user: &str,
    client: &str,
    given: &Given,
) -> crate::db::Result<Result<Uuid, String>> {
    let response = Response {
        schema: RESPONSE_SCHEMA.to_owned(),
        command_id: Uuid::now_v7(),
        site_id: site.to_owned(),
        event_id: event,
        state: given.state,
        eta_minutes: given.eta_minutes,
        disposition: given.disposition,
        note: given.note.clone(),
        by: user.to_owned(),
        desk: signer.desk.clone(),
        issued_at: format!("{:.3}", jiff::Timestamp::now()),
        signature: None,
    };
    if let Err(problem) = response.check() {
        return Ok(Err(problem));
    }
    let row = Row {
        id: response.command_id,
        site,
        event,
        kind: "response",
        state: Some(given.state.as_str()),
        action: format!("respond:{}", given.state.as_str()),
    };
    keep(conn, signer, &row, &response, user, client)
}

/// What an officer asks a box for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    /// The cameras.
    pub cameras: Vec<String>,
    /// How far back the range starts.
    pub back: Duration,
    /// How long it runs.
    pub length: Duration,
    /// Why.
    pub reason: String,
}

/// Signs `user`'s request for footage from `site`'s box (asked from the page of `event`),
/// stores it to be published and audits it (`request_footage`), in one transaction;
/// returns the command's id, or why it cannot be sent.
pub fn record_request(
    conn: &mut Conn,
    signer: &Signer,
    site: &str,
    event: Uuid,
    user: &str,
    client: &str,
    asked: &Asked,
) -> crate::db::Result<Result<Uuid, String>> {
    // From so long ago, for so long: a range running past now is the box's to cut short
    // (it sends what its post-roll allows, and says so).
    let now = jiff::Timestamp::now();
    let span = |d: Duration| jiff::SignedDuration::try_from(d).ok();
    let range = span(asked.back)
        .and_then(|back| now.checked_sub(back).ok())
        .and_then(|from| Some((from, from.checked_add(span(asked.length)?).ok()?)));
    let Some((from, to)) = range.map(|(from, to)| (format!("{from:.3}"), format!("{to:.3}")))
    else {
        return Ok(Err("that time is out of range".into()));
    };
    let request = FootageRequest {
        schema: FOOTAGE_REQUEST_SCHEMA.to_owned(),
        command_id: Uuid::now_v7(),
        site_id: site.to_owned(),
        cameras: asked.cameras.clone(),
        from,
        to,
        reason: asked.reason.clone(),
        by: user.to_owned(),
        desk: signer.desk.clone(),
        issued_at: format!("{now:.3}"),
        signature: None,
    };
    if let Err(problem) = request.check() {
        return Ok(Err(problem));
    }
    let row = Row {
        id: request.command_id,
        site,
        event,
        kind: "request",
        state: None,
        action: "request_footage".into(),
    };
    keep(conn, signer, &row, &request, user, client)
}

/// A command's row, as [`keep`] stores it.
struct Row<'a> {
    id: Uuid,
    site: &'a str,
    event: Uuid,
    kind: &'static str,
    state: Option<&'static str>,
    action: String,
}

/// Signs `command`, stores it to be published on the site's commands topic and audits it,
/// in one transaction; returns its id.
fn keep(
    conn: &mut Conn,
    signer: &Signer,
    row: &Row,
    command: &impl serde::Serialize,
    user: &str,
    client: &str,
) -> crate::db::Result<Result<Uuid, String>> {
    let Ok(unsigned) = serde_json::to_vec(command) else {
        return Ok(Err(format!("the {} cannot be written", row.kind)));
    };
    let body = signature::sign(&signer.key, &unsigned);
    let topic = Topics::new(prefix_of(&signer.template, row.site)).commands();
    conn.transaction(|tx| {
        tx.execute(
        "INSERT INTO commands (id, site, event, kind, state, topic, body, key_id, \"user\", created)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            row.id.to_string(),
            row.site,
            row.event.to_string(),
            row.kind,
            row.state,
            topic,
            String::from_utf8_lossy(&body),
            signature::key_id(&signer.key.verifying_key()),
            user,
            now()
        ],
    )?;
        crate::audit::by(tx, user, &row.action, Some(&row.event.to_string()), client)?;
        Ok(Ok(row.id))
    })
}

/// One command (a [`Response`] or a [`FootageRequest`]) as the console shows it.
#[derive(Debug, Clone)]
pub struct Sent<C> {
    /// The command as signed.
    pub command: C,
    /// When an officer gave it (Unix seconds).
    pub created: i64,
    /// When the broker took it, if it has.
    pub published: Option<i64>,
    /// What the store's box answered (`applied`, `superseded`, `refused`), if it has.
    pub outcome: Option<String>,
    /// Why, for a refusal; for a request applied, what of the range the box does not hold.
    pub reason: Option<String>,
    /// For a request applied, the event the box opened for it.
    pub opened: Option<Uuid>,
}

impl<C> Sent<C> {
    /// Where it has got, for people, given what `applied` means for this kind of command.
    fn progress(&self, applied: impl FnOnce() -> String) -> String {
        match (self.published, self.outcome.as_deref()) {
            (_, Some("applied")) => applied(),
            (_, Some("superseded")) => "the store's box already showed a later one".into(),
            (_, Some(_)) => format!(
                "refused by the store's box: {}",
                self.reason.as_deref().unwrap_or("no reason given")
            ),
            (Some(_), None) => "sent: waiting for the store's box".into(),
            (None, None) => "waiting for the broker".into(),
        }
    }
}

impl Sent<Response> {
    /// Where it has got, for people: "waiting for the broker", "sent", "the store's box
    /// shows it", "refused by the store's box: ...".
    pub fn delivery(&self) -> String {
        self.progress(|| "the store's box shows it".into())
    }
}

impl Sent<FootageRequest> {
    /// Where it has got, for people: as a response's, or "the store's box is sending it".
    pub fn delivery(&self) -> String {
        self.progress(|| match &self.reason {
            Some(short) => format!("the store's box is sending it ({short})"),
            None => "the store's box is sending it".into(),
        })
    }
}

/// The responses to `event` of `site`, oldest first.
pub fn sent(conn: &Conn, site: &str, event: Uuid) -> crate::db::Result<Vec<Sent<Response>>> {
    commands_of(conn, site, event, "response")
}

/// The footage requests asked from the page of `event` of `site`, oldest first.
pub fn requested(
    conn: &Conn,
    site: &str,
    event: Uuid,
) -> crate::db::Result<Vec<Sent<FootageRequest>>> {
    commands_of(conn, site, event, "request")
}

/// The commands of `kind` given from the page of `event` of `site`, oldest first.
fn commands_of<C: serde::de::DeserializeOwned>(
    conn: &Conn,
    site: &str,
    event: Uuid,
    kind: &str,
) -> crate::db::Result<Vec<Sent<C>>> {
    let rows = conn.query_map(
        "SELECT body, created, published, outcome, reason, answer_event FROM commands
         WHERE site = ?1 AND event = ?2 AND kind = ?3 ORDER BY created, id",
        params![site, event.to_string(), kind],
        |row| {
            Ok((
                row.get::<String>(0)?,
                row.get::<i64>(1)?,
                row.get::<Option<i64>>(2)?,
                row.get::<Option<String>>(3)?,
                row.get::<Option<String>>(4)?,
                row.get::<Option<String>>(5)?,
            ))
        },
    )?;
    let mut found = Vec::new();
    for (body, created, published, outcome, reason, opened) in rows {
        if let Ok(command) = serde_json::from_str(&body) {
            found.push(Sent {
                command,
                created,
                published,
                outcome,
                reason,
                opened: opened.and_then(|e| Uuid::parse_str(&e).ok()),
            });
        }
    }
    Ok(found)
}

/// Records a box's answer to one of the desk's commands: only an answer naming the key the
/// command was signed with (a refusal of a forger's copy names the forger's), and only the
/// first (a replayed command is answered again, refused). Returns the event it concerned, if
/// the command is the desk's and was not answered yet.
pub fn answered(conn: &Conn, site: &str, answer: &Answer) -> crate::db::Result<Option<Uuid>> {
    let Some(command) = answer.command_id else {
        return Ok(None);
    };
    let event: Option<Option<String>> = conn
        .query_row(
            "UPDATE commands SET outcome = ?3, reason = ?4, answered = ?5,
                 answer_event = CASE WHEN kind = 'request' THEN ?6 END
             WHERE id = ?1 AND site = ?2 AND outcome IS NULL AND key_id = ?7 RETURNING event",
            params![
                command.to_string(),
                site,
                answer.outcome.as_str(),
                answer.reason,
                now(),
                answer.event_id.map(|e| e.to_string()),
                answer.key_id.as_deref().unwrap_or("")
            ],
            |row| row.get(0),
        )
        .optional()?;
    Ok(event.flatten().and_then(|e| Uuid::parse_str(&e).ok()))
}

/// Publishes what officers sent until `cancel`: everything not yet taken by the broker, in
/// the order given, whenever `wake` is notified and on every connection; marks each taken
/// once the broker acknowledges it, and tells the consoles.
pub async fn run(
    config: Config,
    db: Db,
    wake: Arc<Notify>,
    feed: broadcast::Sender<Change>,
    cancel: CancellationToken,
) {
    while !cancel.is_cancelled() {
        let checked = config.clone();
        let settings = match tokio::task::spawn_blocking(move || checked.receive_options()).await {
            Ok(Ok(options)) => {
                let mut settings = options.settings;
                settings.client_id = format!("{}-commands", config.links_client_id());
                settings
            }
            Ok(Err(error)) => {
                tracing::error!(%error, "the broker settings cannot be used to send responses; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(RETRY) => continue,
                }
            }
            Err(_) => return,
        };
        let tracker = tokio_util::task::TaskTracker::new();
        let link_cancel = cancel.child_token();
        let (session, events) = match Session::<String>::start(
            &settings,
            &tracker,
            link_cancel.clone(),
        ) {
            Ok(started) => started,
            Err(error) => {
                tracing::error!(%error, "cannot start the session that sends responses; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(RETRY) => continue,
                }
            }
        };
        publish(&db, &session, events, &wake, &feed, &cancel).await;
        link_cancel.cancel();
        tracker.close();
        tracker.wait().await;
    }
}

async fn publish(
    db: &Db,
    session: &Session<String>,
    mut events: tokio::sync::mpsc::UnboundedReceiver<LinkEvent<String>>,
    wake: &Notify,
    feed: &broadcast::Sender<Change>,
    cancel: &CancellationToken,
) {
    let mut in_flight: HashSet<String> = HashSet::new();
    let mut connected = false;
    loop {
        if connected && in_flight.len() < WINDOW {
            let waiting = db
                .call(|c| {
                    c.query_map(
                        "SELECT id, topic, body FROM commands WHERE published IS NULL
                         ORDER BY created, id LIMIT ?1",
                        params![WINDOW as i64],
                        |r| {
                            Ok((
                                r.get::<String>(0)?,
                                r.get::<String>(1)?,
                                r.get::<String>(2)?,
                            ))
                        },
                    )
                })
                .await
                .unwrap_or_default();
            for (id, topic, body) in waiting {
                if in_flight.len() >= WINDOW || in_flight.contains(&id) {
                    continue;
                }
                if session
                    .publish(Tag::Message(id.clone()), &topic, body.into_bytes(), false)
                    .is_err()
                {
                    break;
                }
                in_flight.insert(id);
            }
        }
        let wakened = wake.notified();
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = wakened => {}
            event = events.recv() => match event {
                None => return,
                Some(LinkEvent::Connected) => {
                    tracing::info!("connected to the broker to send responses");
                    connected = true;
                    in_flight.clear();
                }
                Some(LinkEvent::Acked(id)) => {
                    in_flight.remove(&id);
                    let taken = id.clone();
                    let row = db
                        .call(move |c| {
                            c.query_row(
                                "UPDATE commands SET published = ?2 WHERE id = ?1 RETURNING site, event",
                                params![taken, now()],
                                |r| Ok((r.get::<String>(0)?, r.get::<Option<String>>(1)?)),
                            )
                            .optional()
                        })
                        .await;
                    match row {
                        Ok(Some((site, event))) => {
                            let _ = feed.send(Change {
                                kind: "response",
                                site,
                                event: event.and_then(|e| Uuid::parse_str(&e).ok()),
                            });
                        }
                        Ok(None) => {}
                        Err(error) => tracing::error!(%error, "cannot record a response as sent"),
                    }
                }
                // A command the broker will not take (its ACL, its size limit) leaves the
                // queue, marked so, rather than hold back every later one.
                Some(LinkEvent::Refused(id, reason) | LinkEvent::TooLarge(id, reason)) => {
                    tracing::error!(command = %id, %reason, "the broker did not take a command");
                    in_flight.remove(&id);
                    let why = format!("the broker did not take it: {reason}");
                    let row = db
                        .call(move |c| {
                            c.query_row(
                                "UPDATE commands SET published = ?2, outcome = 'refused', reason = ?3, answered = ?2
                                 WHERE id = ?1 AND outcome IS NULL RETURNING site, event",
                                params![id, now(), why],
                                |r| Ok((r.get::<String>(0)?, r.get::<Option<String>>(1)?)),
                            )
                            .optional()
                        })
                        .await;
                    if let Ok(Some((site, event))) = row {
                        let _ = feed.send(Change {
                            kind: "response",
                            site,
                            event: event.and_then(|e| Uuid::parse_str(&e).ok()),
                        });
                    }
                }
                Some(LinkEvent::Disconnected(error)) => {
                    if connected {
                        tracing::warn!(%error, "lost the broker; responses wait in the database");
                    }
                    connected = false;
                    in_flight.clear();
                }
                Some(_) => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("desk.key");
        let made = Signer::load_or_create(&path, "precinct-5", "alertclip/v1/{site}").unwrap();
        let read = Signer::load_or_create(&path, "precinct-5", "alertclip/v1/{site}").unwrap();
        assert_eq!(made.public_pem(), read.public_pem());
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = Signer::load_or_create(&path, "x", "alertclip/v1/{site}")
            .unwrap_err()
            .to_string();
        assert!(error.contains("chmod 600"), "{error}");
    }
}
