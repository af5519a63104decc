//! The desk's database: SQLite in WAL mode (one desk), or PostgreSQL (several desks sharing
//! it), owned by one thread of its own so that no query ever blocks an async worker, with its
//! schema brought up to date by numbered migrations.
//!
//! Both are reached through [`Conn`], whose SQL is the dialect both read: `?N` placeholders,
//! `ON CONFLICT`, `RETURNING`, `"user"` quoted (a reserved word in PostgreSQL), integers
//! compared rather than used as booleans.

mod postgres;
pub mod scratch;
mod sqlite;
mod value;

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use tokio::sync::oneshot;

pub use value::{FromValue, Row, ToValue, Value};

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
    "user" TEXT,
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
    "user" TEXT NOT NULL,
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

/// A query that failed.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// SQLite refused.
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL refused.
    #[error("{0}")]
    Postgres(#[from] ::postgres::Error),
    /// A query that must find a row found none.
    #[error("no row found")]
    NoRow,
    /// A column held something else than the desk reads there.
    #[error("column {index} holds {found}, not {expected}")]
    Column {
        /// The column, from 0.
        index: usize,
        /// What it held.
        found: &'static str,
        /// The Rust type it was read as.
        expected: &'static str,
    },
    /// A transaction was begun inside another.
    #[error("a transaction inside a transaction")]
    Nested,
    /// The database's password file could not be read.
    #[error("{0}")]
    Secret(String),
}

impl SqlError {
    /// Whether a row was refused for a key or unique column another row has.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            SqlError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.code == rusqlite::ErrorCode::ConstraintViolation
            }
            SqlError::Postgres(e) => {
                e.code() == Some(&::postgres::error::SqlState::UNIQUE_VIOLATION)
            }
            _ => false,
        }
    }
}

/// What a query returns: its value, or why it failed.
pub type Result<T, E = SqlError> = std::result::Result<T, E>;

/// [`Conn::query_row`]'s "no row" as `None`.
pub trait OptionalExtension<T> {
    /// `Ok(None)` where the query found no row.
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(value) => Ok(Some(value)),
            Err(SqlError::NoRow) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Where the database is: `[storage] database`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres {
        /// `postgres://user[:password]@host[:port]/name[?options]`.
        url: String,
        /// A file holding the password, if the URL has none.
        password_file: Option<PathBuf>,
    },
}

impl Location {
    /// The location as messages show it: the file, or the URL without its password.
    pub fn display(&self) -> String {
        match self {
            Location::Sqlite(path) => path.display().to_string(),
            Location::Postgres { url, .. } => postgres::redacted(url),
        }
    }
}

impl From<&Path> for Location {
    fn from(path: &Path) -> Location {
        Location::Sqlite(path.to_owned())
    }
}

impl From<&PathBuf> for Location {
    fn from(path: &PathBuf) -> Location {
        Location::Sqlite(path.clone())
    }
}

impl From<PathBuf> for Location {
    fn from(path: PathBuf) -> Location {
        Location::Sqlite(path)
    }
}

impl From<&Location> for Location {
    fn from(location: &Location) -> Location {
        location.clone()
    }
}

/// A database that cannot be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database refused to open, at the file or server named.
    #[error("{at}: {source}")]
    Open {
        /// The database file, or the server's URL without its password.
        at: String,
        /// What the database said.
        #[source]
        source: SqlError,
    },
    /// A query failed.
    #[error("database: {0}")]
    Query(#[from] SqlError),
    /// The database thread is gone (the desk is stopping).
    #[error("database: closed")]
    Closed,
    /// The database was made by a newer desk.
    #[error(
        "{at}: schema version {found} is newer than this desk's {known}: upgrade alertclip-desk"
    )]
    Newer {
        /// The database file or server.
        at: String,
        /// Its version.
        found: i64,
        /// This build's.
        known: usize,
    },
}

enum Backend {
    Sqlite(rusqlite::Connection),
    /// Boxed: the client and its statement cache are several times SQLite's handle.
    Postgres(Box<RefCell<postgres::Postgres>>),
}

/// A connection to either database, on the database thread.
pub struct Conn {
    backend: Backend,
    in_transaction: Cell<bool>,
}

/// The password `password_file` holds, if there is one.
fn password(password_file: &Option<PathBuf>) -> Result<Option<String>, DbError> {
    password_file
        .as_ref()
        .map(|file| {
            alertclip_mqtt::read_secret(file).map_err(|e| DbError::Open {
                at: format!("storage.database_password_file {}", file.display()),
                source: SqlError::Secret(e.to_string()),
            })
        })
        .transpose()
}

/// A PostgreSQL connection of its own, beside the desk's, for what must hold a session
/// (the cluster's lead, its notifications); `None` for SQLite.
pub(crate) fn session(location: &Location) -> Result<Option<::postgres::Client>, DbError> {
    match location {
        Location::Sqlite(_) => Ok(None),
        Location::Postgres { url, password_file } => Ok(Some(postgres::client(
            url,
            password(password_file)?.as_deref(),
        )?)),
    }
}

impl Conn {
    fn open(location: &Location) -> Result<Conn, DbError> {
        let backend = match location {
            Location::Sqlite(path) => Backend::Sqlite(sqlite::open(path)?),
            Location::Postgres { url, password_file } => Backend::Postgres(Box::new(RefCell::new(
                postgres::Postgres::connect(url, password(password_file)?.as_deref())?,
            ))),
        };
        Ok(Conn {
            backend,
            in_transaction: Cell::new(false),
        })
    }

    /// Which database this is: `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Runs a statement; the number of rows it changed.
    pub fn execute(&self, sql: &str, params: &[Value]) -> Result<u64> {
        match &self.backend {
            Backend::Sqlite(conn) => sqlite::execute(conn, sql, params),
            Backend::Postgres(pg) => pg.borrow_mut().execute(sql, params),
        }
    }

    /// Every row a query returns.
    pub fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        match &self.backend {
            Backend::Sqlite(conn) => sqlite::query(conn, sql, params),
            Backend::Postgres(pg) => pg.borrow_mut().query(sql, params),
        }
    }

    /// Every row a query returns, each read by `read`.
    pub fn query_map<T>(
        &self,
        sql: &str,
        params: &[Value],
        read: impl FnMut(&Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        self.query(sql, params)?.iter().map(read).collect()
    }

    /// The first row a query returns, read by `read`; [`SqlError::NoRow`] if none (see
    /// [`OptionalExtension::optional`]).
    pub fn query_row<T>(
        &self,
        sql: &str,
        params: &[Value],
        read: impl FnOnce(&Row) -> Result<T>,
    ) -> Result<T> {
        self.query(sql, params)?
            .first()
            .map_or(Err(SqlError::NoRow), read)
    }

    /// Inserts a row and returns its `id` (the table's integer key).
    pub fn insert(&self, sql: &str, params: &[Value]) -> Result<i64> {
        self.query_row(&format!("{sql} RETURNING id"), params, |row| row.get(0))
    }

    /// Runs `work` in a transaction: committed when it returns `Ok`, rolled back when it
    /// returns an error (or panics).
    pub fn transaction<T, E: From<SqlError>>(
        &self,
        work: impl FnOnce(&Conn) -> Result<T, E>,
    ) -> Result<T, E> {
        if self.in_transaction.replace(true) {
            return Err(SqlError::Nested.into());
        }
        struct Open<'a>(&'a Conn);
        impl Drop for Open<'_> {
            fn drop(&mut self) {
                if self.0.in_transaction.replace(false) {
                    let _ = self.0.batch("ROLLBACK");
                }
            }
        }
        let open = Open(self);
        self.batch("BEGIN")?;
        let done = work(self)?;
        self.batch("COMMIT")?;
        self.in_transaction.set(false);
        drop(open);
        Ok(done)
    }

    /// Runs `work` in a transaction (the caller's, if one is open) holding the lock called
    /// `name` until the transaction ends: on PostgreSQL an advisory lock, so that desks
    /// sharing the database take turns at what must not interleave (appending to a hash
    /// chain); SQLite has one writer at a time already.
    pub fn exclusive<T, E: From<SqlError>>(
        &self,
        name: &str,
        work: impl FnOnce(&Conn) -> Result<T, E>,
    ) -> Result<T, E> {
        let locked = |tx: &Conn| -> Result<T, E> {
            if let Backend::Postgres(_) = tx.backend {
                tx.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(?1))",
                    &[Value::Text(name.to_owned())],
                )?;
            }
            work(tx)
        };
        if self.in_transaction.get() {
            locked(self)
        } else {
            self.transaction(locked)
        }
    }

    fn batch(&self, sql: &str) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(conn) => sqlite::batch(conn, sql),
            Backend::Postgres(pg) => pg.borrow_mut().batch(sql),
        }
    }
}

type Job = Box<dyn FnOnce(&mut Conn) + Send>;

/// A handle on the database thread; cloning it shares the thread. The thread ends when the
/// last handle is dropped.
#[derive(Clone)]
pub struct Db {
    jobs: mpsc::Sender<Job>,
    kind: &'static str,
}

impl Db {
    /// Opens (creating it if need be) and migrates the database: an SQLite file, or a
    /// PostgreSQL server's database. The connection is made on the database thread, where
    /// PostgreSQL's client may block.
    pub fn open(location: impl Into<Location>) -> Result<Db, DbError> {
        let location = location.into();
        let (jobs, queue) = mpsc::channel::<Job>();
        let (opened_tx, opened) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("desk-db".into())
            .spawn(move || {
                let mut conn = match Conn::open(&location) {
                    Ok(conn) => {
                        let _ = opened_tx.send(Ok(conn.kind()));
                        conn
                    }
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                        return;
                    }
                };
                while let Ok(job) = queue.recv() {
                    job(&mut conn);
                }
            });
        if let Err(e) = spawned {
            return Err(DbError::Open {
                at: "the database thread".into(),
                source: SqlError::Sqlite(rusqlite::Error::ToSqlConversionFailure(Box::new(e))),
            });
        }
        let kind = opened.recv().map_err(|_| DbError::Closed)??;
        Ok(Db { jobs, kind })
    }

    /// Which database this is: `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Runs `work` on the database thread and waits for it without blocking the caller's
    /// worker.
    pub async fn call<T, F>(&self, work: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Conn) -> Result<T> + Send + 'static,
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
        F: FnOnce(&mut Conn) -> Result<T> + Send + 'static,
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

/// Seconds since the Unix epoch, as the database keeps times.
pub fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// The desk's tests, run against each database.
#[cfg(test)]
pub(crate) mod testing {
    use super::{Db, Location, scratch::Scratch};

    /// An empty database of each kind: SQLite in a temporary directory, and a database of a
    /// scratch PostgreSQL server's. Both last as long as this does.
    pub(crate) struct Both {
        pub(crate) dbs: Vec<Db>,
        _dir: tempfile::TempDir,
        _server: Scratch,
    }

    pub(crate) fn both() -> Both {
        let dir = tempfile::tempdir().unwrap();
        let server = Scratch::start().unwrap();
        let postgres = Location::Postgres {
            url: server.database().unwrap(),
            password_file: None,
        };
        let dbs = vec![
            Db::open(dir.path().join("desk.sqlite")).unwrap(),
            Db::open(postgres).unwrap_or_else(|e| panic!("{e}: {}", server.log())),
        ];
        Both {
            dbs,
            _dir: dir,
            _server: server,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params;

    #[tokio::test]
    async fn a_new_database_is_migrated_once_and_reopened_as_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("desk.sqlite");
        let db = Db::open(&path).unwrap();
        assert_eq!(db.kind(), "sqlite");
        let version: i64 = db
            .call(|c| c.query_row("PRAGMA user_version", params![], |r| r.get(0)))
            .await
            .unwrap();
        assert_eq!(version as usize, MIGRATIONS.len());
        let mode: String = db
            .call(|c| c.query_row("PRAGMA journal_mode", params![], |r| r.get(0)))
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        drop(db);
        Db::open(&path).unwrap();

        // PostgreSQL, by two desks starting at once: one migrates, the other finds it done.
        let server = scratch::Scratch::start().unwrap();
        let url = server.database().unwrap();
        let location = Location::Postgres {
            url: url.clone(),
            password_file: None,
        };
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| Db::open(&location));
            let b = s.spawn(|| Db::open(&location));
            (a.join().unwrap(), b.join().unwrap())
        });
        let (a, _b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.kind(), "postgres");
        let versions: Vec<i64> = a
            .call(|c| c.query_map("SELECT version FROM desk_schema", params![], |r| r.get(0)))
            .await
            .unwrap();
        assert_eq!(versions, vec![MIGRATIONS.len() as i64]);
    }

    #[tokio::test]
    async fn a_database_from_a_newer_desk_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("desk.sqlite");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let error = Db::open(&path).err().unwrap().to_string();
        assert!(error.contains("schema version 99"), "{error}");

        let server = scratch::Scratch::start().unwrap();
        let url = server.database().unwrap();
        let location = Location::Postgres {
            url: url.replace("alertclip@", "alertclip:secret@"),
            password_file: None,
        };
        let db = Db::open(&location).unwrap();
        db.call(|c| c.execute("UPDATE desk_schema SET version = 99", params![]))
            .await
            .unwrap();
        drop(db);
        let error = Db::open(&location).err().unwrap().to_string();
        assert!(error.contains("schema version 99"), "{error}");
        assert!(
            !error.contains("secret") && error.contains("***"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_failed_transaction_leaves_nothing_and_the_next_one_commits() {
        let both = testing::both();
        for db in &both.dbs {
            let failed = db
                .call(|c| {
                    c.transaction(|tx| {
                        tx.execute(
                            "INSERT INTO health (site, body, at) VALUES ('s', '{}', 1)",
                            params![],
                        )?;
                        tx.execute("INSERT INTO no_such_table VALUES (1)", params![])
                    })
                })
                .await;
            assert!(failed.is_err(), "{}", db.kind());
            let id = db
                .call(|c| {
                    c.transaction(|tx| {
                        tx.insert(
                            "INSERT INTO health (site, body, at) VALUES (?1, ?2, ?3)",
                            params!["s", "{}", 2],
                        )
                    })
                })
                .await
                .unwrap();
            let rows: Vec<(i64, i64)> = db
                .call(|c| {
                    c.query_map("SELECT id, at FROM health", params![], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                })
                .await
                .unwrap();
            assert_eq!(rows, vec![(id, 2)], "{}", db.kind());
        }
    }

    #[tokio::test]
    async fn values_read_back_as_written_on_both() {
        let both = testing::both();
        for db in &both.dbs {
            let row = db
                .call(|c| {
                    c.execute(
                        "INSERT INTO sites (id, name, address, latitude, longitude, phone, public_key, key_id, enrolled)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                        params!["s1", "Corner \"Shop\" ?1 'x'", None::<String>, 40.5, -73.25, Some("555"), "k", "id", i64::MAX],
                    )?;
                    let duplicate = c
                        .execute("INSERT INTO sites (id, name, public_key, key_id, enrolled) VALUES ('s1', 'n', 'k', 'i', 0)", params![])
                        .unwrap_err();
                    assert!(duplicate.is_unique_violation(), "{duplicate}");
                    c.query_row(
                        "SELECT name, address, latitude, longitude, phone, enrolled,
                                (SELECT COUNT(*) FROM sites), (SELECT SUM(enrolled / 2) FROM sites),
                                EXISTS (SELECT 1 FROM sites WHERE id = ?1)
                         FROM sites WHERE id = ?1",
                        params!["s1"],
                        |r| {
                            Ok((
                                r.get::<String>(0)?,
                                r.get::<Option<String>>(1)?,
                                r.get::<f64>(2)?,
                                r.get::<f64>(3)?,
                                r.get::<Option<String>>(4)?,
                                r.get::<i64>(5)?,
                                r.get::<i64>(6)?,
                                r.get::<i64>(7)?,
                                r.get::<bool>(8)?,
                            ))
                        },
                    )
                })
                .await
                .unwrap();
            assert_eq!(
                row,
                (
                    "Corner \"Shop\" ?1 'x'".to_owned(),
                    None,
                    40.5,
                    -73.25,
                    Some("555".to_owned()),
                    i64::MAX,
                    1,
                    i64::MAX / 2,
                    true
                ),
                "{}",
                db.kind()
            );
        }
    }
}
