//! Retention: events older than the configured age are deleted with their media, hourly,
//! unless under an evidence hold. What is deleted is recorded in the audit log.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::db::Conn;
use crate::params;
use tokio_util::sync::CancellationToken;

use crate::audit::{self, Entry};
use crate::db::{Db, now};

/// How often old events are looked for.
const EVERY: Duration = Duration::from_secs(3600);

/// Sweeps every hour until `cancel`.
pub async fn run(db: Db, media: PathBuf, keep: Duration, cancel: CancellationToken) {
    loop {
        let cutoff = now() - keep.as_secs() as i64;
        match db.call(move |c| sweep(c, cutoff)).await {
            Ok(gone) => {
                let media = media.clone();
                let _ = tokio::task::spawn_blocking(move || remove_dirs(&media, &gone)).await;
            }
            Err(error) => tracing::error!(%error, "retention: cannot sweep"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

/// Deletes the rows of events received before `cutoff` and not held; returns their
/// (site, event) to remove from disk.
pub fn sweep(conn: &mut Conn, cutoff: i64) -> crate::db::Result<Vec<(String, String)>> {
    conn.transaction(|tx| {
        let gone: Vec<(String, String)> = tx.query_map(
            "SELECT site, id FROM events WHERE received < ?1 AND hold = 0",
            params![cutoff],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        for (site, id) in &gone {
            for table in [
                "DELETE FROM media WHERE site = ?2 AND event = ?1",
                "DELETE FROM updates WHERE site = ?2 AND event = ?1",
                "DELETE FROM problems WHERE site = ?2 AND event = ?1",
                "DELETE FROM arriving WHERE site = ?2 AND event = ?1",
                "DELETE FROM commands WHERE site = ?2 AND event = ?1",
                "DELETE FROM events WHERE id = ?1 AND site = ?2",
            ] {
                tx.execute(table, params![id, site])?;
            }
            audit::record(
                tx,
                &Entry {
                    user: None,
                    action: "retention_delete",
                    target: Some(id),
                    client: None,
                },
            )?;
        }
        Ok(gone)
    })
}

fn remove_dirs(media: &Path, gone: &[(String, String)]) {
    for (site, event) in gone {
        // Both were checked as safe names by the receiver before they became a directory.
        if alertclip_wire::id::check(site).is_err() || uuid::Uuid::parse_str(event).is_err() {
            continue;
        }
        let dir = media.join(site).join(event);
        if let Err(error) = std::fs::remove_dir_all(&dir)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), %error, "retention: cannot remove");
        }
    }
}
