//! Who may use the desk: accounts with a role, argon2-hashed passwords, lockout after
//! repeated failures, and sessions whose tokens the database only keeps hashed.

use crate::db::{Conn, OptionalExtension};
use crate::params;
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use sha2::{Digest, Sha256};

/// Failed logins in a row that lock an account.
pub const MAX_FAILURES: i64 = 5;
/// How long a locked account stays locked, in seconds.
pub const LOCKOUT_S: i64 = 15 * 60;
/// The shortest password accepted.
pub const MIN_PASSWORD: usize = 12;

/// What an account may do; each role may do what the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Sees alerts, plays clips, exports.
    Officer,
    /// Also places evidence holds.
    Supervisor,
    /// Also enrols stores and manages accounts.
    Admin,
}

impl Role {
    /// The word stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Officer => "officer",
            Role::Supervisor => "supervisor",
            Role::Admin => "admin",
        }
    }

    /// The role a word names.
    pub fn parse(word: &str) -> Result<Role, String> {
        match word {
            "officer" => Ok(Role::Officer),
            "supervisor" => Ok(Role::Supervisor),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "expected officer, supervisor or admin, found \"{other}\""
            )),
        }
    }
}

/// A signed-in user, as a request sees them.
#[derive(Debug, Clone)]
pub struct User {
    /// The account's row.
    pub id: i64,
    /// The login name.
    pub name: String,
    /// What they may do.
    pub role: Role,
}

/// A random token of 32 bytes, as hex.
pub fn token() -> String {
    let mut bytes = [0u8; 32];
    // The kernel's generator does not fail on Linux once booted; an all-zero token would
    // be refused as a session anyway, since none is ever stored under its hash.
    let _ = getrandom::fill(&mut bytes);
    hex::encode(bytes)
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The password's argon2id hash in PHC form (slow on purpose: run it off async workers).
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("no randomness for a salt: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` matches `hash` (slow on purpose).
pub fn password_matches(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A password good enough to accept, or why not.
pub fn check_password(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(format!(
            "a password needs at least {MIN_PASSWORD} characters"
        ));
    }
    Ok(())
}

/// Adds an account whose password is already hashed.
pub fn add_user(conn: &Conn, name: &str, role: Role, hash: &str) -> crate::db::Result<i64> {
    conn.insert(
        "INSERT INTO users (name, role, password, created) VALUES (?1, ?2, ?3, ?4)",
        params![name, role.as_str(), hash, crate::db::now()],
    )
}

/// What the database holds for a login attempt on `name`.
#[derive(Debug)]
pub struct Candidate {
    /// The account.
    pub user: User,
    /// Its password hash.
    pub hash: String,
    /// Until when (Unix seconds) it is locked, if it is.
    pub locked_until: Option<i64>,
}

/// The account `name`, for checking a password against.
pub fn candidate(conn: &Conn, name: &str) -> crate::db::Result<Option<Candidate>> {
    conn.query_row(
        "SELECT id, name, role, password, locked_until FROM users
         WHERE name = ?1 AND disabled = 0",
        params![name],
        |row| {
            let role: String = row.get(2)?;
            Ok(Candidate {
                user: User {
                    id: row.get(0)?,
                    name: row.get(1)?,
                    role: Role::parse(&role).unwrap_or(Role::Officer),
                },
                hash: row.get(3)?,
                locked_until: row.get(4)?,
            })
        },
    )
    .optional()
}

/// Records a failed password; returns when the account is locked from, if this failure
/// locked it.
pub fn record_failure(conn: &Conn, user: i64, now: i64) -> crate::db::Result<Option<i64>> {
    let failures: i64 = conn.query_row(
        "UPDATE users SET failures = failures + 1 WHERE id = ?1 RETURNING failures",
        params![user],
        |row| row.get(0),
    )?;
    if failures >= MAX_FAILURES {
        let until = now + LOCKOUT_S;
        conn.execute(
            "UPDATE users SET locked_until = ?2, failures = 0 WHERE id = ?1",
            params![user, until],
        )?;
        return Ok(Some(until));
    }
    Ok(None)
}

/// Records a good password: the count of failures starts again.
pub fn record_success(conn: &Conn, user: i64) -> crate::db::Result<()> {
    conn.execute(
        "UPDATE users SET failures = 0, locked_until = NULL WHERE id = ?1",
        params![user],
    )?;
    Ok(())
}

/// A new session for `user`: its token (for the cookie) and its CSRF token.
pub fn open_session(
    conn: &Conn,
    user: i64,
    client: &str,
    now: i64,
) -> crate::db::Result<(String, String)> {
    let (session, csrf) = (token(), token());
    conn.execute(
        "INSERT INTO sessions (token_sha256, user_id, csrf, created, last_seen, client)
         VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
        params![sha256_hex(&session), user, csrf, now, client],
    )?;
    Ok((session, csrf))
}

/// The user and CSRF token of a live session, which this use keeps alive; a session idle
/// longer than `idle_s` is ended instead.
pub fn session(
    conn: &Conn,
    token: &str,
    now: i64,
    idle_s: i64,
) -> crate::db::Result<Option<(User, String)>> {
    let key = sha256_hex(token);
    let found = conn
        .query_row(
            "SELECT users.id, users.name, users.role, sessions.csrf, sessions.last_seen
             FROM sessions JOIN users ON users.id = sessions.user_id
             WHERE sessions.token_sha256 = ?1 AND users.disabled = 0",
            params![&key],
            |row| {
                let role: String = row.get(2)?;
                Ok((
                    User {
                        id: row.get(0)?,
                        name: row.get(1)?,
                        role: Role::parse(&role).unwrap_or(Role::Officer),
                    },
                    row.get::<String>(3)?,
                    row.get::<i64>(4)?,
                ))
            },
        )
        .optional()?;
    match found {
        Some((_, _, last_seen)) if now - last_seen > idle_s => {
            conn.execute(
                "DELETE FROM sessions WHERE token_sha256 = ?1",
                params![&key],
            )?;
            Ok(None)
        }
        Some((user, csrf, last_seen)) => {
            // Written at most once a minute: a page's many requests do not each write.
            if now - last_seen >= 60 {
                conn.execute(
                    "UPDATE sessions SET last_seen = ?2 WHERE token_sha256 = ?1",
                    params![key, now],
                )?;
            }
            Ok(Some((user, csrf)))
        }
        None => Ok(None),
    }
}

/// An account as the admins' page lists it.
#[derive(Debug, Clone)]
pub struct Account {
    /// Login name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// When it was made (Unix seconds).
    pub created: i64,
    /// Until when it is locked after failed passwords, if it is now.
    pub locked_until: Option<i64>,
    /// Disabled by an admin.
    pub disabled: bool,
    /// Sessions open.
    pub sessions: i64,
}

/// Every account, by name.
pub fn all(conn: &Conn, now: i64) -> crate::db::Result<Vec<Account>> {
    conn.query_map(
        "SELECT name, role, created, locked_until, disabled,
                (SELECT COUNT(*) FROM sessions WHERE sessions.user_id = users.id)
         FROM users ORDER BY name",
        params![],
        |row| {
            let role: String = row.get(1)?;
            let locked_until: Option<i64> = row.get(3)?;
            Ok(Account {
                name: row.get(0)?,
                role: Role::parse(&role).unwrap_or(Role::Officer),
                created: row.get(2)?,
                locked_until: locked_until.filter(|&until| until > now),
                disabled: row.get(4)?,
                sessions: row.get(5)?,
            })
        },
    )
}

/// A change an admin makes to an account.
#[derive(Debug, Clone)]
pub enum Change {
    /// Another role, in force from its next request.
    Role(Role),
    /// A new password (hashed): the lockout is lifted and every session of it ended.
    Password(String),
    /// The lockout after failed passwords lifted.
    Unlock,
    /// Disabled (`true`: it cannot sign in, its sessions are ended) or enabled again.
    Disabled(bool),
}

/// Makes `change` to the account `name`; false when there is no such account.
pub fn change(conn: &Conn, name: &str, change: &Change) -> crate::db::Result<bool> {
    let changed = match change {
        Change::Role(role) => conn.execute(
            "UPDATE users SET role = ?2 WHERE name = ?1",
            params![name, role.as_str()],
        )?,
        Change::Password(hash) => conn.execute(
            "UPDATE users SET password = ?2, failures = 0, locked_until = NULL WHERE name = ?1",
            params![name, hash],
        )?,
        Change::Unlock => conn.execute(
            "UPDATE users SET failures = 0, locked_until = NULL WHERE name = ?1",
            params![name],
        )?,
        Change::Disabled(disabled) => conn.execute(
            "UPDATE users SET disabled = ?2 WHERE name = ?1",
            params![name, disabled],
        )?,
    };
    if matches!(change, Change::Password(_) | Change::Disabled(true)) {
        conn.execute(
            "DELETE FROM sessions WHERE user_id = (SELECT id FROM users WHERE name = ?1)",
            params![name],
        )?;
    }
    Ok(changed > 0)
}

/// Checks a new login name: what people type, and what an audit row can show plainly.
pub fn check_name(name: &str) -> Result<(), String> {
    // All of them safe in a URL's path; a letter or digit keeps out "." and "..".
    let plain = |c: char| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
    if name.chars().count() > 64
        || !name.chars().all(plain)
        || !name.chars().any(char::is_alphanumeric)
    {
        return Err(format!(
            "\"{name}\": expected 1 to 64 letters, digits, '.', '_', '-' or '@', with at least one letter or digit"
        ));
    }
    Ok(())
}

/// Ends a session.
pub fn close_session(conn: &Conn, token: &str) -> crate::db::Result<()> {
    conn.execute(
        "DELETE FROM sessions WHERE token_sha256 = ?1",
        params![sha256_hex(token)],
    )?;
    Ok(())
}

/// Compares secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_matches_its_hash_and_nothing_else() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(password_matches(&hash, "correct horse battery"));
        assert!(!password_matches(&hash, "correct horse batterY"));
        assert!(!password_matches("not a hash", "correct horse battery"));
    }

    #[test]
    fn five_failures_lock_and_a_success_resets() {
        let both = crate::db::testing::both();
        for db in &both.dbs {
            db.call_blocking(|c| {
                let id = add_user(c, "ana", Role::Officer, "x")?;
                for _ in 0..MAX_FAILURES - 1 {
                    assert_eq!(record_failure(c, id, 100)?, None);
                }
                record_success(c, id)?;
                for _ in 0..MAX_FAILURES - 1 {
                    assert_eq!(record_failure(c, id, 100)?, None);
                }
                assert_eq!(record_failure(c, id, 100)?, Some(100 + LOCKOUT_S));
                let locked = candidate(c, "ana")?.unwrap();
                assert_eq!(locked.locked_until, Some(100 + LOCKOUT_S));
                Ok(())
            })
            .unwrap();
        }
    }

    #[test]
    fn an_idle_session_ends_and_a_token_is_kept_only_hashed() {
        let both = crate::db::testing::both();
        for db in &both.dbs {
            db.call_blocking(|c| {
                let id = add_user(c, "ana", Role::Admin, "x")?;
                let (token, csrf) = open_session(c, id, "127.0.0.1", 1000)?;
                let stored: String =
                    c.query_row("SELECT token_sha256 FROM sessions", params![], |r| r.get(0))?;
                assert_ne!(stored, token);
                let (user, found_csrf) = session(c, &token, 1000 + 1799, 1800)?.unwrap();
                assert_eq!((user.name.as_str(), user.role), ("ana", Role::Admin));
                assert_eq!(found_csrf, csrf);
                assert!(session(c, &token, 1000 + 1799 + 1801, 1800)?.is_none());
                assert!(session(c, &token, 1000, 1800)?.is_none(), "ended for good");
                Ok(())
            })
            .unwrap();
        }
    }
}
