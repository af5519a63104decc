//! Several desks on one PostgreSQL database and one media directory (`[cluster]`): which of
//! them leads, and the live feed they share.
//!
//! The broker hands each snapshot and clip chunk to one desk (a shared subscription), and
//! the chunks meet in the media directory. Alerts are different: a box's alerts form a
//! chain that is followed in the order they were published, so one desk at a time receives
//! them, under the cluster's one broker session (which the broker keeps, and fills, while
//! the lead passes), and sends the officers' responses. The lead is a PostgreSQL advisory
//! lock held by a connection of its own: a desk that stops, crashes or loses its database
//! drops it, and another desk takes it within a second.
//!
//! Each desk announces what it recorded with `NOTIFY`, and every desk's consoles hear every
//! desk's changes through `LISTEN`, their own included, once each.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ::postgres::fallible_iterator::FallibleIterator;
use tokio::sync::{Notify, broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::db::{Conn, Db, Location, Value};
use crate::ingest::Change;

/// The channel desks announce changes on.
const CHANNEL: &str = "alertclip_changes";
/// How often a desk tries to take the lead, the leader checks it still holds it, and a lost
/// connection is tried again.
const BEAT: Duration = Duration::from_secs(1);
/// What a change names when a store was enrolled: every desk receives again with its key.
const REGISTRY: &str = "registry";

/// True while this desk leads `cluster`, followed on a thread of its own until `cancel`.
pub fn lead(location: Location, cluster: &str, cancel: CancellationToken) -> watch::Receiver<bool> {
    let (leading, follow) = watch::channel(false);
    let key = format!("alertclip-lead:{cluster}");
    let spawned = std::thread::Builder::new()
        .name("desk-lead".into())
        .spawn(move || {
            while !cancel.is_cancelled() {
                if let Err(error) = hold(&location, &key, &leading, &cancel) {
                    tracing::warn!(%error, "the cluster's lead: the database connection failed; trying again");
                }
                leading.send_replace(false);
                std::thread::sleep(BEAT);
            }
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot follow the cluster's lead: this desk never leads");
    }
    follow
}

/// Tries for the lead until it is taken, then holds it while the connection lives.
fn hold(
    location: &Location,
    key: &str,
    leading: &watch::Sender<bool>,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let Some(mut client) = crate::db::session(location)? else {
        anyhow::bail!("a cluster needs a PostgreSQL database");
    };
    while !cancel.is_cancelled() {
        if !*leading.borrow() {
            let row = client.query_one("SELECT pg_try_advisory_lock(hashtext($1))", &[&key])?;
            if row.try_get::<_, bool>(0)? {
                tracing::info!("this desk leads the cluster: it receives the alerts");
                leading.send_replace(true);
            }
        } else {
            client.is_valid(BEAT)?;
        }
        std::thread::sleep(BEAT);
    }
    Ok(())
}

/// Runs `task` whenever this desk leads, cancelling it when the lead is lost, until `cancel`.
pub async fn while_leading<F, T>(
    mut leading: watch::Receiver<bool>,
    cancel: CancellationToken,
    task: T,
) where
    T: Fn(CancellationToken) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            held = leading.wait_for(|leads| *leads) => if held.is_err() { return },
        }
        let this_lead = cancel.child_token();
        let running = tokio::spawn(task(this_lead.clone()));
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = leading.wait_for(|leads| !*leads) => {}
        }
        this_lead.cancel();
        let _ = running.await;
    }
}

/// Shares the live feed between the desks: what this desk announces on `announced` goes to
/// the database's channel, and what any desk announced there goes to this desk's consoles
/// on `shown`. Responses wake `respond` (the leader sends them), and enrolments `restart`
/// (every desk receives with the new key).
pub struct Relay {
    /// Where this desk's changes are announced.
    pub announced: broadcast::Sender<Change>,
    /// Ends once `drain` is cancelled and everything announced before has gone out.
    pub announcing: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Starts relaying: hearing the others until `cancel`, announcing until `drain` (after
    /// `cancel`, once what the desk still records as it stops is recorded: the other desks'
    /// consoles hear of that too).
    pub fn start(
        db: Db,
        location: Location,
        shown: broadcast::Sender<Change>,
        respond: Arc<Notify>,
        restart: Arc<Notify>,
        cancel: CancellationToken,
        drain: CancellationToken,
    ) -> Relay {
        let (announced, mut to_announce) = broadcast::channel::<Change>(1024);
        let announcing = tokio::spawn(async move {
            loop {
                // What is queued goes out before draining ends.
                let change = tokio::select! {
                    biased;
                    change = to_announce.recv() => change,
                    _ = drain.cancelled() => return,
                };
                let change = match change {
                    Ok(change) => change,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "changes not announced to the other desks");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let sent = db.call(move |c| announce(c, &change)).await;
                if let Err(error) = sent {
                    tracing::warn!(%error, "cannot announce a change to the other desks");
                }
            }
        });
        let spawned = std::thread::Builder::new()
            .name("desk-listen".into())
            .spawn(move || {
                let mut again = false;
                while !cancel.is_cancelled() {
                    let listened = listen(&location, &shown, &respond, &restart, &cancel, again);
                    again = true;
                    if let Err(error) = listened {
                        tracing::warn!(%error, "the other desks' changes: the database connection failed; trying again");
                    }
                    std::thread::sleep(BEAT);
                }
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot hear the other desks' changes");
        }
        Relay {
            announced,
            announcing,
        }
    }
}

fn listen(
    location: &Location,
    shown: &broadcast::Sender<Change>,
    respond: &Notify,
    restart: &Notify,
    cancel: &CancellationToken,
    again: bool,
) -> anyhow::Result<()> {
    let Some(mut client) = crate::db::session(location)? else {
        anyhow::bail!("a cluster needs a PostgreSQL database");
    };
    client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
    if again {
        // What the other desks announced while this one was not listening is not sent
        // again: the consoles load what the database holds.
        tracing::info!("hearing the other desks' changes again; the consoles reload");
        let _ = shown.send(Change::missed());
    }
    while !cancel.is_cancelled() {
        let mut notifications = client.notifications();
        let mut heard = notifications.timeout_iter(BEAT);
        while let Some(notification) = heard.next()? {
            // Another desk's word, but still checked: a change names what to fetch again.
            let Some(change) = Change::parse(notification.payload()) else {
                tracing::warn!(payload = %notification.payload(), "ignoring a change that is not one");
                continue;
            };
            match change.kind {
                REGISTRY => restart.notify_one(),
                kind => {
                    if kind == "response" {
                        respond.notify_one();
                    }
                    let _ = shown.send(change);
                }
            }
        }
        drop(heard);
        drop(notifications);
        if client.is_closed() {
            anyhow::bail!("the connection closed");
        }
    }
    Ok(())
}

/// Announces `change` to every desk of the cluster (at the commit of a transaction `conn` is
/// in, if any).
pub fn announce(conn: &Conn, change: &Change) -> crate::db::Result<()> {
    let payload = serde_json::to_string(change).unwrap_or_default();
    conn.execute(
        "SELECT pg_notify(?1, ?2)",
        &[Value::Text(CHANNEL.into()), Value::Text(payload)],
    )
    .map(drop)
}

/// The change announcing that the registry of stores changed.
pub fn registry_changed() -> Change {
    Change {
        kind: REGISTRY,
        site: String::new(),
        event: None,
    }
}
