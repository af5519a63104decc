//! The desk's database: SQLite in WAL mode, owned by one thread of its own so that no query
//! ever blocks an async worker, with its schema brought up to date by numbered migrations.

use std::path::Path;
use std::sync::mpsc;

use rusqlite::Connection;
use tokio::sync::oneshot;

/// The schema, one migration per entry, applied in order and recorded in `user_version`. A
/// migration once released is never edited: a change is a new entry.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('officer', 'supervisor', 'admin')),
    password TEXT NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    locked_until INTEGER,
    created INTEGER NOT NULL
);
CREATE TABLE sessions (
    token_sha256 TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    created INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    client TEXT
);
CREATE TABLE sites (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    address TEXT,
    latitude REAL,
    longitude REAL,
    phone TEXT,
    public_key TEXT NOT NULL,
    key_id TEXT NOT NULL,
    enrolled INTEGER NOT NULL
);
CREATE TABLE site_status (
    site TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    since INTEGER NOT NULL
);
CREATE TABLE events (
    id TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    received INTEGER NOT NULL,
    alert TEXT NOT NULL,
    signature TEXT NOT NULL,
    signature_detail TEXT,
    chain_problem TEXT,
    hold INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX events_by_received ON events (received DESC);
CREATE TABLE updates (
    site TEXT NOT NULL,
    event TEXT NOT NULL,
    number INTEGER NOT NULL,
    body TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (site, event, number)
);
CREATE TABLE media (
    site TEXT NOT NULL,
    event TEXT NOT NULL,
    camera TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('snapshot', 'clip', 'view')),
    path TEXT NOT NULL,
    manifest TEXT,
    signature TEXT,
    signature_detail TEXT,
    received INTEGER NOT NULL,
    PRIMARY KEY (site, event, camera, kind)
);
CREATE TABLE problems (
    id INTEGER PRIMARY KEY,
    site TEXT NOT NULL,
    event TEXT,
    camera TEXT,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX problems_by_event ON problems (event);
CREATE TABLE health (
    id INTEGER PRIMARY KEY,
    site TEXT NOT NULL,
    body TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    user TEXT,
    action TEXT NOT NULL,
    target TEXT,
    client TEXT,
    previous TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_by_target ON audit (target);
"#,
    r#"
-- An account an admin disabled: it cannot sign in, and its sessions are gone.
ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
-- The whole retained status each box last published (cameras, outbox), and when.
ALTER TABLE site_status ADD COLUMN body TEXT;
ALTER TABLE site_status ADD COLUMN updated INTEGER;
-- What of it an officer would notice change (sites::summary), to announce only that.
ALTER TABLE site_status ADD COLUMN summary TEXT;
-- Clips on their way: chunks stored so far, of a total known once the manifest is here.
CREATE TABLE arriving (
    site TEXT NOT NULL,
    event TEXT NOT NULL,
    camera TEXT NOT NULL,
    chunks INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    total INTEGER,
    PRIMARY KEY (site, event, camera)
);
"#,
    r#"
-- What officers sent the stores' boxes (responses to alerts, requests for footage), each as
-- signed and published, with the broker's acknowledgement and the box's answer (for a
-- request, the event the box opened for it).
CREATE TABLE commands (
    id TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    event TEXT,
    kind TEXT NOT NULL CHECK (kind IN ('response', 'request')),
    state TEXT,
    topic TEXT NOT NULL,
    body TEXT NOT NULL,
    key_id TEXT NOT NULL,
    user TEXT NOT NULL,
    created INTEGER NOT NULL,
    published INTEGER,
    outcome TEXT,
    reason TEXT,
    answered INTEGER,
    answer_event TEXT
);
CREATE INDEX commands_by_event ON commands (event);
CREATE INDEX commands_to_publish ON commands (created) WHERE published IS NULL;
"#,
];

/// A database that cannot be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite refused, on the file named.
    #[error("{path}: {source}")]
    Open {
        /// The database file.
        path: String,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// A query failed.
    #[error("database: {0}")]
    Query(#[from] rusqlite::Error),
    /// The database thread is gone (the desk is stopping).
    #[error("database: closed")]
    Closed,
    /// The file was made by a newer desk.
    #[error(
        "{path}: schema version {found} is newer than this desk's {known}: upgrade alertclip-desk"
    )]
    Newer {
        /// The database file.
        path: String,
        /// Its version.
        found: i64,
        /// This build's.
        known: usize,
    },
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// A handle on the database thread; cloning it shares the thread. The thread ends when the
/// last handle is dropped.
#[derive(Clone)]
pub struct Db {
    jobs: mpsc::Sender<Job>,
}

impl Db {
    /// Opens (creating it if need be) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let open_error = |source| DbError::Open {
            path: path.display().to_string(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_error)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .and_then(|_| conn.pragma_update(None, "synchronous", "FULL"))
            .and_then(|_| conn.pragma_update(None, "foreign_keys", "ON"))
            .and_then(|_| conn.busy_timeout(std::time::Duration::from_secs(5)))
            .map_err(open_error)?;
        migrate(&mut conn, path)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("desk-db".into())
            .spawn(move || {
                while let Ok(job) = queue.recv() {
                    job(&mut conn);
                }
            })
            .map_err(|e| DbError::Open {
                path: path.display().to_string(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        Ok(Db { jobs })
    }

    /// Runs `work` on the database thread and waits for it without blocking the caller's
    /// worker.
    pub async fn call<T, F>(&self, work: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (done, result) = oneshot::channel();
        self.jobs
            .send(Box::new(move |conn| {
                let _ = done.send(work(conn));
            }))
            .map_err(|_| DbError::Closed)?;
        Ok(result.await.map_err(|_| DbError::Closed)??)
    }

    /// As [`Db::call`], for the command line, which has no runtime.
    pub fn call_blocking<T, F>(&self, work: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (done, result) = mpsc::channel();
        self.jobs
            .send(Box::new(move |conn| {
                let _ = done.send(work(conn));
            }))
            .map_err(|_| DbError::Closed)?;
        Ok(result.recv().map_err(|_| DbError::Closed)??)
    }
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), DbError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version as usize > MIGRATIONS.len() {
        return Err(DbError::Newer {
            path: path.display().to_string(),
            found: version,
            known: MIGRATIONS.len(),
        });
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(migration)?;
        tx.pragma_update(None, "user_version", (index + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = index + 1, "database migrated");
    }
    Ok(())
}

/// Seconds since the Unix epoch, as the database keeps times.
pub fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_database_is_migrated_once_and_reopened_as_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("desk.sqlite");
        let db = Db::open(&path).unwrap();
        let version: i64 = db
            .call(|c| c.pragma_query_value(None, "user_version", |r| r.get(0)))
            .await
            .unwrap();
        assert_eq!(version as usize, MIGRATIONS.len());
        let mode: String = db
            .call(|c| c.pragma_query_value(None, "journal_mode", |r| r.get(0)))
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        drop(db);
        Db::open(&path).unwrap();
    }

    #[test]
    fn a_database_from_a_newer_desk_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("desk.sqlite");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let error = Db::open(&path).err().unwrap().to_string();
        assert!(error.contains("schema version 99"), "{error}");
    }
}
