//! The registry of enrolled stores: who they are, where, whom to call, and the one public
//! key whose signature makes what they send verified. The receiver trusts exactly the keys
//! written here, each for its own site.

use std::collections::HashMap;
use std::path::Path;

use crate::db::{Conn, OptionalExtension};
use crate::params;
use alertclip_wire::payload::{OutboxSummary, Status};
use alertclip_wire::signature::{fingerprint, key_id, parse_public_key, public_pem};

/// A store as enrolled.
#[derive(Debug, Clone, Default)]
pub struct Site {
    /// The box's `site.id`.
    pub id: String,
    /// The store's name.
    pub name: String,
    /// Street address.
    pub address: Option<String>,
    /// Latitude, degrees.
    pub latitude: Option<f64>,
    /// Longitude, degrees.
    pub longitude: Option<f64>,
    /// Whom to call.
    pub phone: Option<String>,
    /// The box's public key, PEM (as `alertclip key show` prints it).
    pub public_key: String,
}

/// A store that cannot be enrolled, and why.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    /// A field is not acceptable.
    #[error("{field}: {reason}")]
    Field {
        /// Which.
        field: &'static str,
        /// What was expected.
        reason: String,
    },
    /// The key file could not be written.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The database refused.
    #[error("{0}")]
    Db(#[from] crate::db::SqlError),
}

impl Site {
    /// The key's fingerprint, as `alertclip key show` prints it, to compare by voice.
    pub fn fingerprint(&self) -> Option<String> {
        parse_public_key(&self.public_key).map(|k| fingerprint(&k))
    }
}

/// Checks `site`, writes its key where the receiver reads keys (`keys/<id>.pub`, durably),
/// then records it, replacing an enrolment under the same id.
pub fn enrol(conn: &Conn, keys: &Path, site: &Site) -> Result<(), EnrolError> {
    let field = |field, reason: &str| EnrolError::Field {
        field,
        reason: reason.to_owned(),
    };
    alertclip_wire::id::check(&site.id).map_err(|e| field("id", &e.to_string()))?;
    if site.name.trim().is_empty() {
        return Err(field("name", "expected the store's name"));
    }
    let key = parse_public_key(&site.public_key).ok_or_else(|| {
        field(
            "public key",
            "expected the PEM public key `alertclip key show` prints on the box",
        )
    })?;
    if site.latitude.is_some_and(|l| !(-90.0..=90.0).contains(&l)) {
        return Err(field("latitude", "expected degrees between -90 and 90"));
    }
    if site
        .longitude
        .is_some_and(|l| !(-180.0..=180.0).contains(&l))
    {
        return Err(field("longitude", "expected degrees between -180 and 180"));
    }
    std::fs::create_dir_all(keys)?;
    alertclip_officer::store::write_durably(
        &keys.join(format!("{}.pub", site.id)),
        public_pem(&key).as_bytes(),
    )?;
    conn.execute(
        "INSERT INTO sites (id, name, address, latitude, longitude, phone, public_key, key_id, enrolled)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, address = excluded.address,
             latitude = excluded.latitude, longitude = excluded.longitude, phone = excluded.phone,
             public_key = excluded.public_key, key_id = excluded.key_id, enrolled = excluded.enrolled",
        params![
            site.id,
            site.name.trim(),
            site.address,
            site.latitude,
            site.longitude,
            site.phone,
            public_pem(&key),
            key_id(&key),
            crate::db::now()
        ],
    )?;
    Ok(())
}

/// Writes the key of every enrolled store where the receiver reads keys, for a desk of a
/// cluster whose stores another desk enrolled; returns how many were written anew.
pub fn write_keys(conn: &Conn, keys: &Path) -> Result<usize, EnrolError> {
    std::fs::create_dir_all(keys)?;
    let mut written = 0;
    for site in all(conn)? {
        let path = keys.join(format!("{}.pub", site.id));
        let Some(key) = parse_public_key(&site.public_key) else {
            continue;
        };
        let pem = public_pem(&key);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(pem.as_str()) {
            alertclip_officer::store::write_durably(&path, pem.as_bytes())?;
            written += 1;
        }
    }
    Ok(written)
}

fn from_row(row: &crate::db::Row) -> crate::db::Result<Site> {
    Ok(Site {
        id: row.get(0)?,
        name: row.get(1)?,
        address: row.get(2)?,
        latitude: row.get(3)?,
        longitude: row.get(4)?,
        phone: row.get(5)?,
        public_key: row.get(6)?,
    })
}

const COLUMNS: &str = "id, name, address, latitude, longitude, phone, public_key";

/// The store enrolled as `id`.
pub fn get(conn: &Conn, id: &str) -> crate::db::Result<Option<Site>> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM sites WHERE id = ?1"),
        params![id],
        from_row,
    )
    .optional()
}

/// Every enrolled store, by name.
pub fn all(conn: &Conn) -> crate::db::Result<Vec<Site>> {
    conn.query_map(
        &format!("SELECT {COLUMNS} FROM sites ORDER BY name"),
        params![],
        from_row,
    )
}

/// What a store's box last said of itself, from its retained status on the broker.
#[derive(Debug, Clone)]
pub struct BoxState {
    /// `online`, or `offline` (the box said goodbye, or the broker its last will).
    pub state: String,
    /// Since when (Unix seconds): when the desk first saw this state.
    pub since: i64,
    /// When the last status came (Unix seconds).
    pub updated: Option<i64>,
    /// That status, when it was one the desk could read.
    pub status: Option<Status>,
}

/// How many of a box's cameras the console lists by name: a status is the box's own word,
/// and a hostile one naming thousands of cameras gets a count, not a page of them.
const LISTED_CAMERAS: usize = 32;

impl BoxState {
    /// The box's cameras that are not streaming, with their state (the first 32), how many
    /// are not, and how many cameras it has.
    pub fn cameras_down(&self) -> (Vec<(&str, &str)>, usize, usize) {
        let Some(status) = &self.status else {
            return (Vec::new(), 0, 0);
        };
        let mut down = status
            .cameras
            .iter()
            .filter(|(_, c)| c.state != "streaming");
        let listed = down
            .by_ref()
            .take(LISTED_CAMERAS)
            .map(|(id, c)| (id.as_str(), c.state.as_str()))
            .collect::<Vec<_>>();
        let count = listed.len() + down.count();
        (listed, count, status.cameras.len())
    }

    /// What waits in the box's outbox.
    pub fn backlog(&self) -> Option<&OutboxSummary> {
        self.status.as_ref().and_then(|s| s.outbox.as_ref())
    }
}

/// What of a status an officer would notice change: the box's state, which cameras are not
/// streaming, and whether anything waits in its outbox (not every figure it repeats).
pub fn summary(status: &Status) -> (&str, Vec<(&str, &str)>, bool) {
    let down = status
        .cameras
        .iter()
        .filter(|(_, c)| c.state != "streaming")
        .map(|(id, c)| (id.as_str(), c.state.as_str()))
        .collect();
    let waiting = status.outbox.as_ref().is_some_and(|o| o.events > 0);
    (status.state.as_str(), down, waiting)
}

/// Every box's last state, by site id.
pub fn box_states(conn: &Conn) -> crate::db::Result<HashMap<String, BoxState>> {
    let states = conn.query_map(
        "SELECT site, state, since, updated, body FROM site_status",
        params![],
        |row| {
            let body: Option<String> = row.get(4)?;
            Ok((
                row.get::<String>(0)?,
                BoxState {
                    state: row.get(1)?,
                    since: row.get(2)?,
                    updated: row.get(3)?,
                    status: body.and_then(|b| serde_json::from_str(&b).ok()),
                },
            ))
        },
    )?;
    Ok(states.into_iter().collect())
}
