//! The audit log: every login, view, download, export and enrolment, with who, when and
//! from where. Rows are only ever appended, and each carries the hash of the one before, so
//! a row edited or deleted in the database file breaks the chain where it was.

use crate::db::{Conn, OptionalExtension};
use crate::params;
use sha2::{Digest, Sha256};

/// The `previous` of the first row.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One thing done, to be recorded.
#[derive(Debug, Clone, Default)]
pub struct Entry<'a> {
    /// Who (`None` for the desk itself, or a login name that did not sign in).
    pub user: Option<&'a str>,
    /// What: `login`, `login_failed`, `view_event`, `view_clip`, `enrol`, ...
    pub action: &'a str,
    /// On what: an event id, a site id, an account.
    pub target: Option<&'a str>,
    /// The client's address.
    pub client: Option<&'a str>,
}

fn row_hash(id: i64, at: &str, entry: &Entry<'_>, previous: &str) -> String {
    // A JSON array: every field delimited, so no two rows hash the same bytes.
    let bytes = serde_json::json!([
        id,
        at,
        entry.user,
        entry.action,
        entry.target,
        entry.client,
        previous
    ])
    .to_string();
    hex::encode(Sha256::digest(bytes.as_bytes()))
}

/// Appends what `user` did from `client`: the common case of [`record`].
pub fn by(
    conn: &Conn,
    user: &str,
    action: &str,
    target: Option<&str>,
    client: &str,
) -> crate::db::Result<()> {
    record(
        conn,
        &Entry {
            user: Some(user),
            action,
            target,
            client: Some(client),
        },
    )
}

/// Appends `entry`, now. Runs in the caller's transaction if there is one, holding the
/// audit log's lock until it ends, so desks sharing a database append one at a time.
pub fn record(conn: &Conn, entry: &Entry<'_>) -> crate::db::Result<()> {
    conn.exclusive("alertclip-audit", |conn| {
        let last: Option<(i64, String)> = conn
            .query_row(
                "SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1",
                params![],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let (id, previous) = match last {
            Some((id, hash)) => (id + 1, hash),
            None => (1, GENESIS.to_owned()),
        };
        let at = jiff::Timestamp::now().to_string();
        let hash = row_hash(id, &at, entry, &previous);
        conn.execute(
            "INSERT INTO audit (id, at, \"user\", action, target, client, previous, hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                id,
                at,
                entry.user,
                entry.action,
                entry.target,
                entry.client,
                previous,
                hash
            ],
        )?;
        Ok(())
    })
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit row {id}: {reason}")]
pub struct Broken {
    /// The first row that does not follow.
    pub id: i64,
    /// How.
    pub reason: String,
}

/// Checks every row; returns how many there are, or the first that breaks the chain.
pub fn verify(conn: &Conn) -> crate::db::Result<Result<i64, Broken>> {
    let rows = conn.query(
        "SELECT id, at, \"user\", action, target, client, previous, hash FROM audit ORDER BY id",
        params![],
    )?;
    let (mut expected_id, mut previous) = (1i64, GENESIS.to_owned());
    for row in &rows {
        let id: i64 = row.get(0)?;
        let at: String = row.get(1)?;
        let user: Option<String> = row.get(2)?;
        let action: String = row.get(3)?;
        let target: Option<String> = row.get(4)?;
        let client: Option<String> = row.get(5)?;
        let stated_previous: String = row.get(6)?;
        let hash: String = row.get(7)?;
        let broken = |reason: String| Ok(Err(Broken { id, reason }));
        if id != expected_id {
            return broken(format!("expected row {expected_id}: rows were deleted"));
        }
        if stated_previous != previous {
            return broken("does not follow the row before it".into());
        }
        let entry = Entry {
            user: user.as_deref(),
            action: &action,
            target: target.as_deref(),
            client: client.as_deref(),
        };
        if row_hash(id, &at, &entry, &previous) != hash {
            return broken("its contents were changed after it was written".into());
        }
        previous = hash;
        expected_id += 1;
    }
    Ok(Ok(expected_id - 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;

    fn logged(db: &Db, n: usize) {
        db.call_blocking(move |c| {
            for i in 0..n {
                let target = format!("event-{i}");
                record(
                    c,
                    &Entry {
                        user: Some("ana"),
                        action: "view_event",
                        target: Some(&target),
                        client: Some("10.0.0.7"),
                    },
                )?;
            }
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn an_intact_log_verifies_and_an_edit_or_a_deletion_is_found_where_it_is() {
        let both = crate::db::testing::both();
        for db in &both.dbs {
            logged(db, 5);
            let check = |db: &Db| db.call_blocking(|c| verify(c)).unwrap();
            assert_eq!(check(db), Ok(5));

            db.call_blocking(|c| {
                c.execute("UPDATE audit SET \"user\" = 'bob' WHERE id = 3", params![])
            })
            .unwrap();
            let broken = check(db).unwrap_err();
            assert_eq!(broken.id, 3);
            assert!(broken.reason.contains("changed"), "{broken}");

            db.call_blocking(|c| c.execute("DELETE FROM audit", params![]))
                .unwrap();
            logged(db, 5);
            db.call_blocking(|c| c.execute("DELETE FROM audit WHERE id = 2", params![]))
                .unwrap();
            assert_eq!(check(db).unwrap_err().id, 3, "{}", db.kind());
        }
    }

    #[test]
    fn desks_sharing_a_database_append_to_one_unbroken_log() {
        let server = crate::db::scratch::Scratch::start().unwrap();
        let url = server.database().unwrap();
        let open = || {
            Db::open(crate::db::Location::Postgres {
                url: url.clone(),
                password_file: None,
            })
            .unwrap()
        };
        let desks = [open(), open()];
        std::thread::scope(|scope| {
            for desk in &desks {
                scope.spawn(|| {
                    for _ in 0..40 {
                        // One entry per transaction, as a desk records what officers do.
                        logged(desk, 1);
                    }
                });
            }
        });
        let check = desks[0].call_blocking(|c| verify(c)).unwrap();
        assert_eq!(check, Ok(80));
    }
}
