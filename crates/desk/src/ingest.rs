//! What the boxes send, into the database: the receiver of `alertclip receive` (its verified
//! reassembly, its chain checks, its files under `media/`), each of its reports recorded and
//! announced to the consoles' live feeds.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::db::OptionalExtension;
use crate::params;
use alertclip_officer::{Report, Sessions};
use alertclip_wire::payload::Alert;
use alertclip_wire::signature::Verdict;
use std::collections::BTreeSet;
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::Config;
use crate::db::{Db, now};

/// What changed, for the consoles: they fetch the event's card again, or the store's.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// `alert`, `update`, `snapshot`, `progress`, `clip`, `problem`, `response` (an officer responded, the broker took it, or the box answered) or `site`.
    pub kind: &'static str,
    /// The store.
    pub site: String,
    /// The event, for all kinds but `site`.
    pub event: Option<Uuid>,
}

impl Change {
    /// The kind of [`Change::missed`].
    pub const MISSED: &'static str = "missed";

    /// Changes this desk may not have heard (its connection to the other desks' announcements
    /// broke and came back): every console loads itself again. Never announced.
    pub fn missed() -> Change {
        Change {
            kind: Change::MISSED,
            site: String::new(),
            event: None,
        }
    }

    /// A change as [`serde_json`] wrote it (another desk of a cluster did); `None` for
    /// anything else.
    pub fn parse(text: &str) -> Option<Change> {
        #[derive(serde::Deserialize)]
        struct Written {
            kind: String,
            site: String,
            event: Option<Uuid>,
        }
        const KINDS: [&str; 9] = [
            "alert", "update", "snapshot", "progress", "clip", "problem", "response", "site",
            "registry",
        ];
        let written: Written = serde_json::from_str(text).ok()?;
        let kind = KINDS.into_iter().find(|kind| *kind == written.kind)?;
        Some(Change {
            kind,
            site: written.site,
            event: written.event,
        })
    }
}

/// The largest status kept whole: a box with dozens of cameras sends a few KiB.
const MAX_STATUS_BYTES: usize = 64 << 10;

/// How long a receiver that failed waits before it starts again.
const RETRY: Duration = Duration::from_secs(5);

/// How far the desk's receiving has come, for its owner to wait on.
#[derive(Clone)]
pub struct Progress {
    /// True once what was kept but not recorded before the desk last stopped is recorded.
    pub imported: watch::Sender<bool>,
    /// The broker sessions (`links`, `media`) whose topics the broker granted, and that
    /// have not stopped since.
    pub subscribed: watch::Sender<BTreeSet<String>>,
}

/// First records what was kept but not recorded before the desk last stopped (then says so
/// in `progress`), then receives until `cancel`, starting the receiver again whenever
/// `restart` is notified (a store was enrolled: its key is now trusted) or it failed. A desk
/// of a cluster receives media always and alerts while `lead` says it leads.
pub async fn run(
    config: Config,
    db: Db,
    feed: broadcast::Sender<Change>,
    restart: Arc<Notify>,
    progress: Progress,
    lead: Option<watch::Receiver<bool>>,
    cancel: CancellationToken,
) {
    let converter = crate::viewing::available();
    if !converter {
        tracing::warn!(
            "ffmpeg is not installed: H.265 clips get no H.264 viewing copy, and most browsers cannot play them"
        );
    }
    import(&config, &db, &feed, converter, &cancel).await;
    progress.imported.send_replace(true);
    let subscribed = progress.subscribed;
    let sharing = config.cluster.as_ref().map(|c| c.media);
    let (Some(lead), Some(crate::config::MediaSharing::Shared)) = (&lead, sharing) else {
        let both = Receiving {
            config,
            db,
            feed,
            restart,
            converter,
            sessions: Sessions::Both,
            subscribed,
        };
        match lead {
            None => both.run(&cancel).await,
            // The broker cannot share: the leader receives everything, under the cluster's
            // client ids, so that what the broker keeps for them passes with the lead.
            Some(lead) => {
                let both = Arc::new(both);
                crate::cluster::while_leading(lead, cancel, move |this_lead| {
                    let both = both.clone();
                    async move { both.lead(&this_lead).await }
                })
                .await;
            }
        }
        return;
    };
    let (lead, group) = (
        lead.clone(),
        config
            .cluster
            .as_ref()
            .map(|c| c.name.clone())
            .unwrap_or_default(),
    );
    // Each of the two receivers starts again on an enrolment.
    let (media_restart, links_restart) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let fan_out = (media_restart.clone(), links_restart.clone(), cancel.clone());
    tokio::spawn(async move {
        let (media, links, cancel) = fan_out;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = restart.notified() => {
                    media.notify_one();
                    links.notify_one();
                }
            }
        }
    });
    let media = Receiving {
        config: config.clone(),
        db: db.clone(),
        feed: feed.clone(),
        restart: media_restart,
        converter,
        sessions: Sessions::SharedMedia { group },
        subscribed: subscribed.clone(),
    };
    let links = Arc::new(Receiving {
        config,
        db,
        feed,
        restart: links_restart,
        converter,
        sessions: Sessions::Links,
        subscribed,
    });
    let leading = crate::cluster::while_leading(lead, cancel.clone(), move |this_lead| {
        let links = links.clone();
        async move { links.lead(&this_lead).await }
    });
    tokio::join!(media.run(&cancel), leading);
}

/// One receiver of the desk's, started again whenever it stops or `restart` is notified.
struct Receiving {
    config: Config,
    db: Db,
    feed: broadcast::Sender<Change>,
    restart: Arc<Notify>,
    converter: bool,
    sessions: Sessions,
    subscribed: watch::Sender<BTreeSet<String>>,
}

impl Receiving {
    /// Receives as the cluster's leader: first recording what the desk that led before kept
    /// in the shared media directory but had not recorded when it died (a desk acknowledges
    /// a message to the broker once the receiver stored it, before the database has it).
    async fn lead(&self, cancel: &CancellationToken) {
        import(&self.config, &self.db, &self.feed, self.converter, cancel).await;
        self.run(cancel).await;
    }

    async fn run(&self, cancel: &CancellationToken) {
        let Receiving {
            config,
            db,
            feed,
            restart,
            converter,
            sessions,
            subscribed,
        } = self;
        let (converter, media) = (*converter, config.media());
        // One session, or two, says it is connected before the desk says it receives.
        let names: &[&str] = match sessions {
            Sessions::Both => &["links", "media"],
            Sessions::Links => &["links"],
            Sessions::SharedMedia { .. } => &["media"],
        };
        while !cancel.is_cancelled() {
            // The keys of the stores enrolled, by this desk or another of its cluster.
            let keys = config.keys();
            match db
                .call(move |c| Ok(crate::sites::write_keys(c, &keys)))
                .await
            {
                Ok(Ok(0)) => {}
                Ok(Ok(written)) => tracing::info!(written, "enrolled stores' keys written"),
                Ok(Err(error)) => tracing::error!(%error, "cannot write the enrolled stores' keys"),
                Err(error) => tracing::error!(%error, "cannot read the enrolled stores"),
            }
            // Read again each time: a password file may have been fixed meanwhile.
            let checked = config.clone();
            let options = match tokio::task::spawn_blocking(move || checked.receive_options()).await
            {
                Ok(Ok(mut options)) => {
                    options.sessions = sessions.clone();
                    // The alerts' (and, for a leader receiving everything, the media's)
                    // session passes with the lead; a shared media session is each desk's.
                    if !matches!(sessions, Sessions::SharedMedia { .. }) {
                        options.settings.client_id = config.links_client_id();
                    }
                    options
                }
                Ok(Err(error)) => {
                    tracing::error!(%error, "the broker settings cannot be used; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(RETRY) => continue,
                    }
                }
                Err(_) => return,
            };
            let this_run = cancel.child_token();
            let (reports, mut reported) = mpsc::unbounded_channel::<Report>();
            let receiving = tokio::spawn(alertclip_officer::receive::run(
                options,
                this_run.clone(),
                move |report| {
                    reports
                        .send(report)
                        .map_err(|_| io::Error::other("the desk is stopping"))
                },
            ));
            let mut restarting = false;
            let mut connected = std::collections::HashSet::new();
            let broker = &config.mqtt.broker;
            loop {
                tokio::select! {
                    report = reported.recv() => match report {
                        Some(Report::Connected { session }) => {
                            subscribed.send_modify(|s| { s.insert(session.clone()); });
                            connected.insert(session);
                            if connected.len() == names.len() {
                                crate::service::status(&format!("receiving from {broker}"));
                            }
                        }
                        Some(report) => {
                            let recorded = match &report {
                                Report::Alert { site, alert, .. } => {
                                    Some(format!("alert for event {} from {site}", alert.event_id))
                                }
                                Report::Clip { site, event, camera, .. } => {
                                    Some(format!("clip for event {event} from {site}, camera {camera}"))
                                }
                                _ => None,
                            };
                            record_with_view_copy(db, &media, feed, report, converter, cancel)
                                .await;
                            if let Some(recorded) = recorded {
                                crate::service::status(&format!(
                                    "receiving from {broker}; last recorded: {recorded}"
                                ));
                            }
                        }
                        None => break,
                    },
                    _ = restart.notified(), if !restarting => {
                        tracing::info!("the registry changed: receiving again with its keys");
                        restarting = true;
                        this_run.cancel();
                    }
                }
            }
            let ended = receiving.await;
            subscribed.send_modify(|s| s.retain(|name| !names.contains(&name.as_str())));
            match ended {
                Ok(Ok(())) if restarting || cancel.is_cancelled() => continue,
                Ok(Ok(())) => tracing::warn!("the receiver stopped; starting it again"),
                Ok(Err(error)) => {
                    tracing::error!(error = %format!("{error:#}"), "receiving failed; retrying")
                }
                Err(error) => tracing::error!(%error, "the receiver failed; retrying"),
            }
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
    }
}

/// Records what the receiver kept on disk but the desk did not record (it was killed in
/// between, or its database refused until it stopped): the broker will not send it again.
/// Run at start, before receiving. Only events with a file the database lacks are read
/// again, so a start costs a listing of the media directory, not a pass over every clip; an
/// event retention deleted (its files may outlive its rows) is not brought back.
async fn import(
    config: &Config,
    db: &Db,
    feed: &broadcast::Sender<Change>,
    converter: bool,
    cancel: &CancellationToken,
) {
    let media = &config.media();
    let known = db
        .call(|c| {
            let set = |query: &str| -> crate::db::Result<std::collections::HashSet<String>> {
                let found = c.query_map(query, params![], |r| r.get(0))?;
                Ok(found.into_iter().collect())
            };
            Ok((
                set("SELECT id FROM events")?,
                set("SELECT target FROM audit WHERE action = 'retention_delete'")?,
                set(
                    "SELECT site || '/' || event || '/' || camera || '/' || kind FROM media
                     UNION ALL SELECT site || '/' || event || '/update-' || number FROM updates",
                )?,
            ))
        })
        .await;
    let Ok((recorded, deleted, kept)) = known else {
        return;
    };
    let (root, keys) = (media.to_owned(), config.keys());
    let found = tokio::task::spawn_blocking(move || -> io::Result<Vec<Report>> {
        // Only its checks of signatures are used: it reads no topics.
        let mut receiver = alertclip_officer::receive::Receiver::new(&root, Default::default());
        receiver.trust_keys(&keys)?;
        let mut reports = Vec::new();
        for (site_id, event_id, event) in receiver.kept_events()? {
            let id = event_id.to_string();
            let wanted = if recorded.contains(&id) {
                // Recorded: worth reading again only for an update, snapshot or clip
                // that is not.
                let prefix = format!("{site_id}/{id}/");
                std::fs::read_dir(&event)?.flatten().any(|entry| {
                    let name = entry
                        .file_name()
                        .to_string_lossy()
                        .replace(".unverified", "");
                    media_key(&name).is_some_and(|key| !kept.contains(&format!("{prefix}{key}")))
                })
            } else {
                // Not recorded: its alert, unless retention deleted the event (its files
                // can outlive its rows).
                !deleted.contains(&id)
                    && ["alert.json", "alert.unverified.json"]
                        .iter()
                        .any(|name| event.join(name).is_file())
            };
            if wanted {
                reports.extend(receiver.stored(&site_id, event_id)?);
            }
        }
        Ok(reports)
    })
    .await;
    let reports = match found {
        Ok(Ok(reports)) => reports,
        Ok(Err(error)) => {
            tracing::error!(%error, "cannot read what the receiver kept; not imported");
            return;
        }
        Err(_) => return,
    };
    if !reports.is_empty() {
        tracing::warn!(
            reports = reports.len(),
            "recording what was received but not recorded before the desk stopped"
        );
    }
    for report in reports {
        record_with_view_copy(db, media, feed, report, converter, cancel).await;
    }
}

/// Records `report`; an H.265 clip then gets its H.264 viewing copy (when ffmpeg is here).
async fn record_with_view_copy(
    db: &Db,
    media: &Path,
    feed: &broadcast::Sender<Change>,
    report: Report,
    converter: bool,
    cancel: &CancellationToken,
) {
    let h265 = match &report {
        Report::Clip {
            site,
            event,
            camera,
            path,
            manifest,
            ..
        } if manifest.codec == "h265" && converter => {
            Some(((site.clone(), *event, camera.clone()), path.clone()))
        }
        _ => None,
    };
    record_retrying(db, media, feed, report, cancel).await;
    if let Some((which, clip)) = h265 {
        tokio::spawn(crate::viewing::convert(
            db.clone(),
            media.to_owned(),
            feed.clone(),
            which,
            clip,
        ));
    }
}

/// The key of a kept file in the media rows (`<camera>/snapshot`, `<camera>/clip`) or the
/// updates (`update-<n>`), for a name with `.unverified` taken out.
fn media_key(name: &str) -> Option<String> {
    if let Some(camera) = name
        .strip_prefix("snapshot-")
        .and_then(|n| n.strip_suffix(".jpg"))
    {
        return Some(format!("{camera}/snapshot"));
    }
    if let Some(camera) = name.strip_suffix(".mp4").filter(|_| !name.starts_with('.')) {
        return Some(format!("{camera}/clip"));
    }
    name.strip_suffix(".json")
        .filter(|n| n.starts_with("update-"))
        .map(str::to_owned)
}

/// Records `report`, trying again while the database refuses (a full disk, a lock held by
/// a backup): the receiver has already kept the file and will not report it twice.
async fn record_retrying(
    db: &Db,
    media: &Path,
    feed: &broadcast::Sender<Change>,
    report: Report,
    cancel: &CancellationToken,
) {
    let mut wait = Duration::from_millis(100);
    loop {
        match record(db, media, feed, report.clone()).await {
            Ok(()) => return,
            Err(crate::db::DbError::Closed) => return,
            Err(error) => {
                tracing::error!(%error, retry_in = ?wait, "cannot record a received message");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(RETRY);
            }
        }
    }
}

fn verdict_detail(verdict: &Verdict) -> Option<String> {
    match verdict {
        Verdict::Untrusted(key) => Some(key.clone()),
        Verdict::Invalid(why) => Some(why.clone()),
        Verdict::Valid | Verdict::Missing => None,
    }
}

fn relative(media: &Path, path: &Path) -> Option<String> {
    path.strip_prefix(media)
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Records one report and announces it.
async fn record(
    db: &Db,
    media: &Path,
    feed: &broadcast::Sender<Change>,
    report: Report,
) -> Result<(), crate::db::DbError> {
    let at = now();
    let media: PathBuf = media.to_owned();
    let change = db
        .call(move |conn| {
            Ok(match report {
                Report::Alert {
                    site,
                    alert,
                    signature,
                } => {
                    let body = serde_json::to_string(&alert).unwrap_or_default();
                    let added = conn.execute(
                        "INSERT INTO events (id, site, received, alert, signature, signature_detail)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                        params![
                            alert.event_id.to_string(),
                            site,
                            at,
                            body,
                            signature.word(),
                            verdict_detail(&signature)
                        ],
                    )?;
                    // The receiver reports a break in the chain before the alert it was
                    // found at: the problem is kept, and marks the alert now.
                    if added > 0 {
                        conn.execute(
                            "UPDATE events SET chain_problem = (
                                 SELECT reason FROM problems WHERE site = ?1 AND event = ?2
                                 AND kind = 'chain' ORDER BY id DESC LIMIT 1)
                             WHERE id = ?2 AND site = ?1 AND chain_problem IS NULL",
                            params![site, alert.event_id.to_string()],
                        )?;
                    }
                    // A second alert under a known event id (a forgery among them) is not
                    // news: consoles do not chime for it.
                    (added > 0).then_some(("alert", site, Some(alert.event_id)))
                }
                Report::Update {
                    site,
                    update,
                    signature,
                } => {
                    let body = serde_json::to_string(&update).unwrap_or_default();
                    // A genuine update replaces one that was not, never the reverse.
                    conn.execute(
                        "INSERT INTO updates (site, event, number, body, signature)
                         VALUES (?5, ?1, ?2, ?3, ?4)
                         ON CONFLICT (site, event, number) DO UPDATE SET body = excluded.body, signature = excluded.signature
                         WHERE updates.signature != 'valid' AND excluded.signature = 'valid'",
                        params![
                            update.event_id.to_string(),
                            update.update,
                            body,
                            signature.word(),
                            site
                        ],
                    )?;
                    Some(("update", site, Some(update.event_id)))
                }
                Report::Snapshot {
                    site,
                    event,
                    camera,
                    path,
                } => {
                    let Some(path) = relative(&media, &path) else {
                        return Ok(None);
                    };
                    conn.execute(
                        "INSERT INTO media (site, event, camera, kind, path, received)
                         VALUES (?5, ?1, ?2, 'snapshot', ?3, ?4)
                         ON CONFLICT (site, event, camera, kind) DO UPDATE SET path = excluded.path",
                        params![event.to_string(), camera, path, at, site],
                    )?;
                    Some(("snapshot", site, Some(event)))
                }
                Report::Clip {
                    site,
                    event,
                    camera,
                    path,
                    manifest,
                    signature,
                } => {
                    let Some(path) = relative(&media, &path) else {
                        return Ok(None);
                    };
                    let body = serde_json::to_string(&manifest).unwrap_or_default();
                    conn.execute(
                        // The receiver keeps a verified clip and an unverified one apart; the
                        // console shows the verified one whichever came last.
                        "INSERT INTO media (site, event, camera, kind, path, manifest, signature,
                                            signature_detail, received)
                         VALUES (?8, ?1, ?2, 'clip', ?3, ?4, ?5, ?6, ?7)
                         ON CONFLICT (site, event, camera, kind) DO UPDATE SET path = excluded.path,
                             manifest = excluded.manifest, signature = excluded.signature,
                             signature_detail = excluded.signature_detail
                         WHERE media.signature IS DISTINCT FROM 'valid' OR excluded.signature = 'valid'",
                        params![
                            event.to_string(),
                            camera,
                            path,
                            body,
                            signature.word(),
                            verdict_detail(&signature),
                            at,
                            site
                        ],
                    )?;
                    conn.execute(
                        "DELETE FROM arriving WHERE site = ?1 AND event = ?2 AND camera = ?3",
                        params![site, event.to_string(), camera],
                    )?;
                    Some(("clip", site, Some(event)))
                }
                Report::Chain {
                    site,
                    event,
                    problem,
                } => {
                    conn.execute(
                        "UPDATE events SET chain_problem = ?2 WHERE id = ?1 AND site = ?3",
                        params![event.to_string(), problem, site],
                    )?;
                    problem_row(conn, &site, Some(event), None, "chain", &problem, at)?;
                    Some(("problem", site, Some(event)))
                }
                Report::Refused {
                    site,
                    event,
                    reason,
                } => {
                    problem_row(conn, &site, Some(event), None, "refused", &reason, at)?;
                    Some(("problem", site, Some(event)))
                }
                Report::Invalid {
                    site,
                    event,
                    camera,
                    reason,
                } => {
                    problem_row(
                        conn,
                        &site,
                        Some(event),
                        Some(&camera),
                        "invalid",
                        &reason,
                        at,
                    )?;
                    Some(("problem", site, Some(event)))
                }
                // Answers to the desk's own commands are recorded with those commands; one
                // not signed by the store's enrolled key is news of nothing.
                Report::Answer {
                    site,
                    answer,
                    signature,
                } => {
                    if signature != Verdict::Valid {
                        tracing::warn!(%site, signature = signature.word(), "ignoring an answer not signed by the store's enrolled key");
                        None
                    } else {
                        crate::respond::answered(conn, &site, &answer)?
                            .map(|event| ("response", site, Some(event)))
                    }
                }
                Report::Health { site, health } => {
                    let body = serde_json::to_string(&health).unwrap_or_default();
                    conn.execute(
                        "INSERT INTO health (site, body, at) VALUES (?1, ?2, ?3)",
                        params![site, body, at],
                    )?;
                    Some(("site", site, None))
                }
                Report::Progress {
                    site,
                    event,
                    camera,
                    chunks,
                    bytes,
                    total,
                } => {
                    // Only for a camera the event's alert names, and not once its clip is
                    // here: chunks under made-up events or cameras cost no rows. A receiver
                    // started again counts from nothing: the count never goes back.
                    let alert: Option<String> = conn
                        .query_row(
                            "SELECT alert FROM events WHERE id = ?1 AND site = ?2",
                            params![event.to_string(), site],
                            |row| row.get(0),
                        )
                        .optional()?;
                    let named = alert
                        .and_then(|a| serde_json::from_str::<Alert>(&a).ok())
                        .is_some_and(|a| a.cameras.iter().any(|c| c.id == camera));
                    if !named {
                        return Ok(None);
                    }
                    let added = conn.execute(
                        "INSERT INTO arriving (site, event, camera, chunks, bytes, total)
                         SELECT ?1, ?2, ?3, CAST(?4 AS BIGINT), CAST(?5 AS BIGINT),
                             CAST(?6 AS BIGINT)
                         WHERE NOT EXISTS (
                             SELECT 1 FROM media WHERE site = ?1 AND event = ?2
                             AND camera = ?3 AND kind = 'clip')
                         ON CONFLICT (site, event, camera) DO UPDATE SET
                             chunks = CASE WHEN excluded.chunks > arriving.chunks
                                      THEN excluded.chunks ELSE arriving.chunks END,
                             bytes = CASE WHEN excluded.bytes > arriving.bytes
                                     THEN excluded.bytes ELSE arriving.bytes END,
                             total = COALESCE(excluded.total, arriving.total)",
                        params![site, event.to_string(), camera, chunks, bytes, total],
                    )?;
                    (added > 0).then_some(("progress", site, Some(event)))
                }
                Report::Connected { .. } => None,
                Report::Status {
                    site,
                    status,
                    state_changed: _,
                } => {
                    // The whole status is kept for enrolled stores only, and only up to a
                    // size a box's own stays well within: anyone can invent site ids.
                    let enrolled: bool = conn.query_row(
                        "SELECT EXISTS (SELECT 1 FROM sites WHERE id = ?1)",
                        params![&site],
                        |row| row.get(0),
                    )?;
                    let body = serde_json::to_string(&status)
                        .ok()
                        .filter(|b| enrolled && b.len() <= MAX_STATUS_BYTES);
                    let summary = body.as_ref().and_then(|_| {
                        serde_json::to_string(&crate::sites::summary(&status)).ok()
                    });
                    let before: Option<(String, Option<String>)> = conn
                        .query_row(
                            "SELECT state, summary FROM site_status WHERE site = ?1",
                            params![&site],
                            |row| Ok((row.get(0)?, row.get(1)?)),
                        )
                        .optional()?;
                    conn.execute(
                        "INSERT INTO site_status (site, state, since, body, updated, summary)
                         VALUES (?1, ?2, ?3, ?4, ?3, ?5)
                         ON CONFLICT (site) DO UPDATE SET body = excluded.body, updated = excluded.updated,
                             summary = excluded.summary, state = excluded.state,
                             since = CASE WHEN site_status.state = excluded.state
                                     THEN site_status.since ELSE excluded.since END",
                        params![site, status.state, at, body, summary],
                    )?;
                    // Consoles hear of what an officer would notice (the box, a camera or the
                    // backlog changing state), not of every figure each status repeats.
                    let noticed = before.is_none_or(|(state, before)| {
                        state != status.state || before != summary
                    });
                    noticed.then_some(("site", site, None))
                }
            })
        })
        .await?;
    if let Some((kind, site, event)) = change {
        let _ = feed.send(Change { kind, site, event });
    }
    Ok(())
}

fn problem_row(
    conn: &crate::db::Conn,
    site: &str,
    event: Option<Uuid>,
    camera: Option<&str>,
    kind: &str,
    reason: &str,
    at: i64,
) -> crate::db::Result<()> {
    conn.execute(
        "INSERT INTO problems (site, event, camera, kind, reason, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![site, event.map(|e| e.to_string()), camera, kind, reason, at],
    )?;
    Ok(())
}
