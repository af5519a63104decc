//! The shared database: PostgreSQL, for several desks at once (`[storage] database =
//! "postgres://…"`).
//!
//! The desk's SQL is written once, in the dialect both databases read: `?N` placeholders
//! become `$N` here, and the migrations' column types are spelled out for PostgreSQL
//! (`INTEGER` is 32-bit there; the desk's integers are times in seconds and sizes in bytes).
//! Parameters are sent as the type the server infers for them, and columns read whatever
//! type they are, so that a query reads the same on both.

use std::collections::HashMap;
use std::error::Error as StdError;

use bytes::BytesMut;
use postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, NoTls, Statement};

use super::value::{Row, Value};
use super::{DbError, MIGRATIONS, SqlError};

/// The key of the advisory lock desks take while migrating, so that two starting at once do
/// not both apply a migration: "alertclp" in ASCII.
const MIGRATION_LOCK: i64 = 0x616c_6572_7463_6c70;

/// One connection, with the statements it has prepared.
pub(super) struct Postgres {
    client: Client,
    statements: HashMap<String, Statement>,
}

/// `url` without its password, for messages.
pub(super) fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "the postgres:// URL in [storage] database".to_owned(),
    }
}

/// A connection of its own to the database at `url`, for what the desk's one connection
/// cannot do between its queries (hold a lock for as long as it lives, wait for
/// notifications).
pub(super) fn client(url: &str, password: Option<&str>) -> Result<Client, DbError> {
    let open = |e: postgres::Error| DbError::Open {
        at: redacted(url),
        source: e.into(),
    };
    let mut config: postgres::Config = url.parse().map_err(open)?;
    if let Some(password) = password {
        config.password(password);
    }
    config.application_name("alertclip-desk");
    // A desk whose machine vanished is found out, and the lead it held released, within a
    // minute rather than the system's two hours.
    config.keepalives_idle(std::time::Duration::from_secs(30));
    config.connect(NoTls).map_err(open)
}

impl Postgres {
    pub(super) fn connect(url: &str, password: Option<&str>) -> Result<Postgres, DbError> {
        let at = redacted(url);
        let client = client(url, password)?;
        let mut db = Postgres {
            client,
            statements: HashMap::new(),
        };
        db.migrate(&at)?;
        Ok(db)
    }

    /// Applies the migrations the database has not had, recorded in `desk_schema`, under an
    /// advisory lock and in one transaction (PostgreSQL's DDL is transactional).
    fn migrate(&mut self, at: &str) -> Result<(), DbError> {
        let query = |e: postgres::Error| DbError::Query(e.into());
        let mut tx = self.client.transaction().map_err(query)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(query)?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS desk_schema (version BIGINT NOT NULL)")
            .map_err(query)?;
        let version: i64 = match tx
            .query_opt("SELECT version FROM desk_schema", &[])
            .map_err(query)?
        {
            Some(row) => row.try_get(0).map_err(query)?,
            None => {
                tx.execute("INSERT INTO desk_schema (version) VALUES (0)", &[])
                    .map_err(query)?;
                0
            }
        };
        if version as usize > MIGRATIONS.len() {
            return Err(DbError::Newer {
                at: at.to_owned(),
                found: version,
                known: MIGRATIONS.len(),
            });
        }
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.batch_execute(&dialect(migration)).map_err(query)?;
            tx.execute(
                "UPDATE desk_schema SET version = $1",
                &[&((index + 1) as i64)],
            )
            .map_err(query)?;
            tracing::info!(version = index + 1, "database migrated");
        }
        tx.commit().map_err(query)
    }

    fn statement(&mut self, sql: &str) -> Result<Statement, SqlError> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(&placeholders(sql))?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    pub(super) fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, SqlError> {
        let statement = self.statement(sql)?;
        let bound: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        Ok(self.client.execute(&statement, &bound)?)
    }

    pub(super) fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, SqlError> {
        let statement = self.statement(sql)?;
        let bound: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        let rows = self.client.query(&statement, &bound)?;
        rows.iter()
            .map(|row| -> Result<Row, SqlError> {
                let values = (0..row.len())
                    .map(|index| row.try_get::<_, Cell>(index).map(|cell| cell.0))
                    .collect::<Result<Vec<Value>, postgres::Error>>()?;
                Ok(Row { values })
            })
            .collect()
    }

    pub(super) fn batch(&mut self, sql: &str) -> Result<(), SqlError> {
        Ok(self.client.batch_execute(sql)?)
    }
}

/// A migration as PostgreSQL reads it: 64-bit integers, identity keys, double precision.
fn dialect(migration: &str) -> String {
    migration
        .replace(
            "INTEGER PRIMARY KEY",
            "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        )
        .replace(" INTEGER", " BIGINT")
        .replace(" REAL", " DOUBLE PRECISION")
}

/// `?N` and `?` placeholders as `$N`, outside quoted text and names.
fn placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut quote = None;
    let mut next = 1;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '?') => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                let number = digits.parse().unwrap_or(next);
                next = number + 1;
                out.push('$');
                out.push_str(&number.to_string());
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

type BoxError = Box<dyn StdError + Sync + Send>;

impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::FLOAT4 => (*i as f32).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR | Type::UNKNOWN => i.to_string().to_sql(ty, out),
                _ => Err(format!("an integer where the query takes {ty}").into()),
            },
            Value::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                _ => Err(format!("a real number where the query takes {ty}").into()),
            },
            Value::Text(text) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    text.as_str().to_sql(ty, out)
                }
                _ => Err(format!("text where the query takes {ty}").into()),
            },
            Value::Blob(bytes) => match *ty {
                Type::BYTEA => bytes.as_slice().to_sql(ty, out),
                _ => Err(format!("bytes where the query takes {ty}").into()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A column of any type the desk's schema and queries produce, read as a [`Value`].
struct Cell(Value);

impl<'a> FromSql<'a> for Cell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Cell, BoxError> {
        Ok(Cell(match *ty {
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => Value::Int(i16::from_sql(ty, raw)?.into()),
            Type::BOOL => Value::Int(bool::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Value::Real(f32::from_sql(ty, raw)?.into()),
            Type::NUMERIC => numeric(raw)?,
            Type::BYTEA => Value::Blob(raw.to_vec()),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                Value::Text(String::from_sql(ty, raw)?)
            }
            _ => return Err(format!("a column of type {ty}, which the desk does not read").into()),
        }))
    }

    fn from_sql_null(_: &Type) -> Result<Cell, BoxError> {
        Ok(Cell(Value::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A NUMERIC (what `SUM` of a BIGINT column gives) as an integer when it is whole, else as a
/// real number. Its binary form: digit count, weight, sign and scale (16 bits each), then
/// base-10000 digits, the first of them times 10000^weight.
fn numeric(raw: &[u8]) -> Result<Value, BoxError> {
    let word = |at: usize| -> Result<i16, BoxError> {
        raw.get(at..at + 2)
            .map(|b| i16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "a NUMERIC cut short".into())
    };
    let (count, weight, sign) = (word(0)?, word(2)?, word(4)? as u16);
    if sign == 0xC000 {
        return Ok(Value::Real(f64::NAN));
    }
    let mut whole: i128 = 0;
    let mut real = 0f64;
    let mut exact = true;
    for index in 0..count.max(0) as usize {
        let digit = i128::from(word(8 + 2 * index)?);
        let power = i32::from(weight) - index as i32;
        real += digit as f64 * 10000f64.powi(power);
        if power >= 0 {
            whole = 10000i128
                .checked_pow(power as u32)
                .and_then(|place| digit.checked_mul(place))
                .and_then(|d| whole.checked_add(d))
                .ok_or("a NUMERIC too large")?;
        } else if digit != 0 {
            exact = false;
        }
    }
    let negative = sign == 0x4000;
    if exact && let Ok(whole) = i64::try_from(if negative { -whole } else { whole }) {
        return Ok(Value::Int(whole));
    }
    Ok(Value::Real(if negative { -real } else { real }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_outside_quotes() {
        assert_eq!(
            placeholders("SELECT '?', \"a?\" FROM t WHERE a = ?1 AND b = ?2 OR c = ?"),
            "SELECT '?', \"a?\" FROM t WHERE a = $1 AND b = $2 OR c = $3"
        );
        assert_eq!(placeholders("a = ? AND b = ?"), "a = $1 AND b = $2");
    }

    #[test]
    fn migrations_use_wide_integers_and_identity_keys() {
        let sql = dialect(
            "CREATE TABLE t (\n    id INTEGER PRIMARY KEY,\n    at INTEGER NOT NULL,\n    x REAL\n);",
        );
        assert_eq!(
            sql,
            "CREATE TABLE t (\n    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,\n    at BIGINT NOT NULL,\n    x DOUBLE PRECISION\n);"
        );
    }

    #[test]
    fn numerics_read_as_integers_when_whole() {
        // 123456789 = 1 2345 6789: three digits, weight 2.
        let raw = [0, 3, 0, 2, 0, 0, 0, 0, 0, 1, 0x09, 0x29, 0x1a, 0x85];
        assert_eq!(numeric(&raw).unwrap(), Value::Int(123_456_789));
        // -2.5 = 2 . 5000: two digits, weight 0, scale 1.
        let raw = [0, 2, 0, 0, 0x40, 0, 0, 1, 0, 2, 0x13, 0x88];
        assert_eq!(numeric(&raw).unwrap(), Value::Real(-2.5));
        // Zero has no digits.
        assert_eq!(numeric(&[0, 0, 0, 0, 0, 0, 0, 0]).unwrap(), Value::Int(0));
    }
}
