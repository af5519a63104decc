//! The embedded database: one SQLite file in WAL mode, for a desk that runs alone.

use std::path::Path;

use rusqlite::types::{Value as Stored, ValueRef};

use super::value::{Row, Value};
use super::{DbError, MIGRATIONS, SqlError};

pub(super) fn open(path: &Path) -> Result<rusqlite::Connection, DbError> {
    let open_error = |source: rusqlite::Error| DbError::Open {
        at: path.display().to_string(),
        source: source.into(),
    };
    let mut conn = rusqlite::Connection::open(path).map_err(open_error)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .and_then(|_| conn.pragma_update(None, "synchronous", "FULL"))
        .and_then(|_| conn.pragma_update(None, "foreign_keys", "ON"))
        .and_then(|_| conn.busy_timeout(std::time::Duration::from_secs(5)))
        .map_err(open_error)?;
    migrate(&mut conn, path)?;
    Ok(conn)
}

/// Applies the migrations this file has not had, recorded in `user_version`.
fn migrate(conn: &mut rusqlite::Connection, path: &Path) -> Result<(), DbError> {
    let query = |e: rusqlite::Error| DbError::Query(e.into());
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(query)?;
    if version as usize > MIGRATIONS.len() {
        return Err(DbError::Newer {
            at: path.display().to_string(),
            found: version,
            known: MIGRATIONS.len(),
        });
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction().map_err(query)?;
        tx.execute_batch(migration).map_err(query)?;
        tx.pragma_update(None, "user_version", (index + 1) as i64)
            .map_err(query)?;
        tx.commit().map_err(query)?;
        tracing::info!(version = index + 1, "database migrated");
    }
    Ok(())
}

fn bind(params: &[Value]) -> Vec<Stored> {
    params
        .iter()
        .map(|p| match p {
            Value::Null => Stored::Null,
            Value::Int(i) => Stored::Integer(*i),
            Value::Real(f) => Stored::Real(*f),
            Value::Text(t) => Stored::Text(t.clone()),
            Value::Blob(b) => Stored::Blob(b.clone()),
        })
        .collect()
}

fn read(row: &rusqlite::Row<'_>, columns: usize) -> rusqlite::Result<Row> {
    let mut values = Vec::with_capacity(columns);
    for index in 0..columns {
        values.push(match row.get_ref(index)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Int(i),
            ValueRef::Real(f) => Value::Real(f),
            ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        });
    }
    Ok(Row { values })
}

pub(super) fn execute(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[Value],
) -> Result<u64, SqlError> {
    let mut statement = conn.prepare_cached(sql)?;
    Ok(statement.execute(rusqlite::params_from_iter(bind(params)))? as u64)
}

pub(super) fn query(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[Value],
) -> Result<Vec<Row>, SqlError> {
    let mut statement = conn.prepare_cached(sql)?;
    let columns = statement.column_count();
    let rows = statement
        .query_map(rusqlite::params_from_iter(bind(params)), |row| {
            read(row, columns)
        })?
        .collect::<rusqlite::Result<Vec<Row>>>()?;
    Ok(rows)
}

pub(super) fn batch(conn: &rusqlite::Connection, sql: &str) -> Result<(), SqlError> {
    Ok(conn.execute_batch(sql)?)
}
