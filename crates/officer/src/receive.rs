//! Receiving: the officer side of the alert channel. Subscribes to the alert channel, prints each alert as
//! it arrives, and reassembles clips from their chunks, verifying every chunk and the whole
//! file against the manifest before presenting it.
//!
//! Everything received is kept on disk under `<out>/<site>/<event_id>/`, so the receiver
//! resumes across its own restarts (its broker session is persistent, so the broker keeps
//! what arrives meanwhile), and tolerates duplicates and any order of arrival. A clip that
//! fails verification is never written under its final name.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use alertclip_wire::chain::{self, ChainState, Link};
use alertclip_wire::command::Answer;
use alertclip_wire::signature::{self, SignatureInfo, Verdict, VerifyingKey};
use alertclip_wire::{Alert, EventUpdate, Health, Manifest, Status, TopicKind, TopicLayout, id};

use alertclip_mqtt::{LinkEvent, Session, Settings};

use crate::store::write_durably;

/// A clip being reassembled: site, event, camera, and whether it is the verified one.
type ClipKey = (String, Uuid, String, bool);

/// A manifest as stored beside its clip: its bytes (to check the signature of) and what they
/// say.
#[derive(Debug)]
struct StoredManifest {
    bytes: Vec<u8>,
    manifest: Manifest,
}

/// Clips whose reassembly state is kept in memory at once: beyond it, the state is dropped
/// and read again from disk, so a sender of endless clips costs disk reads, not memory.
const MAX_TRACKED: usize = 4096;

/// Bytes of chunks a site may have waiting for their clip to be reassembled, by default. A
/// box sends one clip's chunks and then its manifest, camera after camera, so this is many
/// clips' worth; chunks beyond it (someone publishing chunks that never become a clip) push
/// out those that waited longest.
pub const MAX_WAITING_CHUNKS: u64 = 1 << 30;

/// How often a site over its limit of waiting chunks is measured again.
const MEASURE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Manifests kept parsed at once: a clip in reassembly per camera of many boxes.
const MAX_CACHED_MANIFESTS: usize = 64;
/// The largest manifest kept parsed: that of a clip of about 15,000 chunks. A larger one (a
/// message may hold up to the receiver's packet limit) is read from disk each time, so the
/// cache holds at most 64 MiB of what senders chose.
const MAX_CACHED_MANIFEST: usize = 1 << 20;

/// A device's chain as a receiver follows it: its last link, and the numbers it skipped that
/// may still arrive.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Followed {
    #[serde(flatten)]
    head: ChainState,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    missing: Vec<u64>,
}

/// Skipped sequence numbers remembered per device, the most recent.
const MAX_MISSING: usize = 256;

/// What places a payload in its device's chain.
#[derive(Debug, Clone, Copy)]
struct ChainLink<'a> {
    sequence: u64,
    previous: Option<&'a str>,
    signature: Option<&'a SignatureInfo>,
}

/// Largest chunk index accepted: a guard against a hostile or broken sender.
const MAX_CHUNKS: u32 = 1_000_000;
/// Different chunks kept under one index: the genuine one among a few forged.
const MAX_CANDIDATES: usize = 16;

/// What the receiver does.
#[derive(Debug, Clone)]
pub struct ReceiveOptions {
    /// The broker and how to log in.
    pub settings: Settings,
    /// Where the devices publish, and which sites to listen to.
    pub layout: TopicLayout,
    /// Where alerts, snapshots and clips are kept.
    pub out: PathBuf,
    /// One JSON object per line instead of readable lines.
    pub json: bool,
    /// Directory of trusted device public keys (PEM, as `alertclip key show` prints them).
    pub keys: Option<PathBuf>,
    /// Trust the first key each site signs with, and only that key afterwards.
    pub trust_on_first_use: bool,
    /// Which broker sessions to run.
    pub sessions: Sessions,
}

/// Which of its two broker sessions a receiver runs: both on its own, or one part of a desk
/// of several sharing a database and a media directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Sessions {
    /// Alerts and media: a receiver on its own.
    #[default]
    Both,
    /// Alerts, updates, health, status and answers: the one desk of several leading, as a
    /// device's chain is followed in the order it was published.
    Links,
    /// Snapshots and clips, through the broker's shared subscription `group`: every desk of
    /// several, each message reaching one of them; chunks of a clip reaching different desks
    /// meet in the shared directory, where whichever has the last piece reassembles it.
    SharedMedia {
        /// The shared subscription's group (`$share/<group>/...`).
        group: String,
    },
}

/// Something the receiver reports, as a line of output. `site`, `event` and `camera` are
/// the ids the topic named, checked to be safe names.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum Report {
    /// A new alert, with what its signature check found.
    Alert {
        site: String,
        alert: Box<Alert>,
        signature: Verdict,
    },
    /// News of an event in progress (a trigger that joined it), with what its signature
    /// check found.
    Update {
        site: String,
        update: Box<EventUpdate>,
        signature: Verdict,
    },
    /// An alert or update that names another site or event than the topic it came on (a
    /// genuine one republished elsewhere, or a forgery): neither kept nor presented.
    Refused {
        site: String,
        event: Uuid,
        reason: String,
    },
    /// A snapshot was saved at `path`.
    Snapshot {
        site: String,
        event: Uuid,
        camera: String,
        path: PathBuf,
    },
    /// A clip was reassembled at `path` and verified against its manifest, with what the
    /// manifest's signature check found.
    Clip {
        site: String,
        event: Uuid,
        camera: String,
        path: PathBuf,
        manifest: Box<Manifest>,
        signature: Verdict,
    },
    /// A device's alerts do not follow each other: missing, replayed or rewritten.
    Chain {
        site: String,
        event: Uuid,
        problem: String,
    },
    /// A clip or chunk failed verification, for `reason`.
    Invalid {
        site: String,
        event: Uuid,
        camera: String,
        reason: String,
    },
    /// Another chunk of a clip arrived (before the clip is whole): `chunks` and `bytes` so
    /// far, of `total` chunks once the manifest, which the box sends after them, is here.
    Progress {
        site: String,
        event: Uuid,
        camera: String,
        chunks: u32,
        bytes: u64,
        total: Option<u32>,
    },
    /// One of the receiver's two broker sessions (`links` for alerts, updates, health and
    /// status; `media` for snapshots and clips) connected, and the broker granted its topics.
    Connected { session: String },
    /// A health alert from a device.
    Health { site: String, health: Health },
    /// A device's answer to a command it heard (a response from the desk), with what its
    /// signature check found.
    Answer {
        site: String,
        answer: Box<Answer>,
        signature: Verdict,
    },
    /// A device's retained status, each time it is published; `state_changed` when it went
    /// `online` or `offline` since the last one.
    Status {
        site: String,
        status: Box<Status>,
        state_changed: bool,
    },
}

/// Runs until `cancel`, handing every report to `report` (the command prints them).
///
/// Two broker sessions: one for alerts, updates, health and status, one for media (client id
/// `<client_id>-media`). Each has its own worker thread, so an alert is handled the moment it
/// arrives, never after a backlog of chunks on the same connection.
pub async fn run(
    options: ReceiveOptions,
    cancel: CancellationToken,
    mut report: impl FnMut(Report) -> io::Result<()>,
) -> anyhow::Result<()> {
    fs::create_dir_all(&options.out)?;
    let pinning = Arc::new(Mutex::new(()));
    let receiver = || -> io::Result<Receiver> {
        let mut receiver = Receiver::new(&options.out, options.layout.clone());
        if let Some(keys) = &options.keys {
            receiver.trust_keys(keys)?;
        }
        receiver.trust_on_first_use = options.trust_on_first_use;
        receiver.pinning = pinning.clone();
        Ok(receiver)
    };
    let (links, mut media) = (receiver()?, receiver()?);
    if let Some(keys) = &options.keys {
        tracing::info!(keys = links.trusted.len(), dir = %keys.display(), "trusted device keys loaded");
    }
    let (run_links, media_group) = match &options.sessions {
        Sessions::Both => (true, None),
        Sessions::Links => (true, None),
        Sessions::SharedMedia { group } => (false, Some(group.as_str())),
    };
    let run_media = options.sessions != Sessions::Links;
    if run_media {
        for resumed in media.resume()? {
            report(resumed)?;
        }
    }
    let tracker = tokio_util::task::TaskTracker::new();
    let (reports, mut reported) = mpsc::unbounded_channel();
    let mut media_settings = options.settings.clone();
    media_settings.client_id = format!("{}-media", options.settings.client_id);
    let layout = &options.layout;
    let media_filters = layout.media_filters().map(|filter| match media_group {
        Some(group) => format!("$share/{group}/{filter}"),
        None => filter,
    });
    let channels = [
        (
            "links",
            &options.settings,
            links,
            layout.link_filters().to_vec(),
            Some(layout.legacy_event_filter()),
        ),
        (
            "media",
            &media_settings,
            media,
            media_filters.to_vec(),
            None,
        ),
    ];
    let (mut sessions, mut workers) = (Vec::new(), Vec::new());
    let wanted = channels.into_iter().filter(|(name, ..)| {
        if *name == "links" {
            run_links
        } else {
            run_media
        }
    });
    // A shared media session outlives `cancel` until it has left its group (below).
    let sessions_end = match media_group {
        Some(_) => CancellationToken::new(),
        None => cancel.clone(),
    };
    for (name, settings, receiver, filters, unwanted) in wanted {
        let (session, events) = Session::<()>::start(settings, &tracker, sessions_end.clone())?;
        let session = Arc::new(session);
        let serving = Serving {
            name,
            url: settings.url.to_string(),
            session: session.clone(),
            filters,
            unwanted,
            reports: reports.clone(),
        };
        workers.push(
            std::thread::Builder::new()
                .name(format!("receive-{name}"))
                .spawn(move || serving.serve(receiver, events))?,
        );
        sessions.push(session);
    }
    drop(reports);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            one = reported.recv() => match one {
                Some(one) => report(one)?,
                None => break,
            },
        }
    }
    if media_group.is_some() {
        leave_group(&sessions, &media_filters, &tracker).await;
        sessions_end.cancel();
    }
    for session in &sessions {
        session.disconnect().await;
    }
    // What was stored is reported: the workers end once their sessions have (the broker
    // would not send a stored alert again, as it was acknowledged).
    while let Some(one) = reported.recv().await {
        report(one)?;
    }
    for worker in workers {
        let name = worker.thread().name().unwrap_or("a worker").to_owned();
        let joined = tokio::task::spawn_blocking(move || worker.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            anyhow::bail!("the receiver's {name} thread failed");
        }
    }
    Ok(())
}

/// How long a desk of a cluster that stops waits to tell the broker it leaves the group.
const LEAVING: std::time::Duration = std::time::Duration::from_secs(5);

/// Leaves the shared subscriptions `filters` of a desk of a cluster that stops: a broker
/// keeps a persistent session's share of a group while it is away (mosquitto does), so
/// unless the desk says it is gone, every other snapshot and chunk would wait for its
/// return. The unsubscriptions go out before the disconnection, on one connection, and the
/// broker takes them in that order.
async fn leave_group(
    sessions: &[Arc<Session<()>>],
    filters: &[String],
    tracker: &tokio_util::task::TaskTracker,
) {
    for session in sessions {
        if !session.is_connected() {
            tracing::warn!(
                "leaving the cluster's media group: not connected, so the broker keeps this desk's share until it returns"
            );
            continue;
        }
        for filter in filters {
            session.unsubscribe(filter);
        }
        session.disconnect().await;
    }
    tracker.close();
    if tokio::time::timeout(LEAVING, tracker.wait()).await.is_err() {
        tracing::warn!(
            "leaving the cluster's media group: the broker did not take the word in time"
        );
    }
}

/// One broker session's worker: a thread of its own that stores what arrives, since storing
/// blocks on the disk.
struct Serving {
    name: &'static str,
    url: String,
    session: Arc<Session<()>>,
    filters: Vec<String>,
    /// A filter an older receiver subscribed this session to, dropped on connecting.
    unwanted: Option<String>,
    reports: mpsc::UnboundedSender<Report>,
}

impl Serving {
    fn serve(self, mut receiver: Receiver, mut events: mpsc::UnboundedReceiver<LinkEvent<()>>) {
        let (mut failures, mut unanswered) = (0u32, 0usize);
        while let Some(event) = events.blocking_recv() {
            match event {
                LinkEvent::Connected => {
                    failures = 0;
                    tracing::info!(broker = %self.url, session = self.name, "connected; subscribing");
                    if let Some(unwanted) = &self.unwanted {
                        self.session.unsubscribe(unwanted);
                    }
                    for filter in &self.filters {
                        self.session.subscribe(filter);
                    }
                    unanswered = self.filters.len();
                }
                // Receiving once the broker granted every topic: before, a message would
                // find no subscription.
                LinkEvent::Subscribed(None) => {
                    unanswered = unanswered.saturating_sub(1);
                    if unanswered == 0 {
                        let _ = self.reports.send(Report::Connected {
                            session: self.name.to_owned(),
                        });
                    }
                }
                LinkEvent::Subscribed(Some(refused)) => tracing::error!(
                    %refused,
                    session = self.name,
                    filters = ?self.filters,
                    "the broker refused a subscription: check its ACL for this client (and, for a desk of a cluster, that it has shared subscriptions)"
                ),
                LinkEvent::Disconnected(error) => {
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        tracing::warn!(%error, failures, session = self.name, "broker connection lost or refused; retrying");
                    }
                }
                LinkEvent::Incoming {
                    topic,
                    payload,
                    receipt,
                    ..
                } => {
                    tracing::trace!(session = self.name, %topic, bytes = payload.len(), ?receipt, "received");
                    match receiver.handle(&topic, &payload) {
                        Ok(reports) => {
                            for one in reports {
                                if self.reports.send(one).is_err() {
                                    return;
                                }
                            }
                        }
                        Err(error) => {
                            tracing::error!(%topic, %error, "cannot store a received message")
                        }
                    }
                    // Kept (on disk, where the desk finds it if it stops before recording
                    // it): the broker may forget it now, and not before. One that could not
                    // be kept is acknowledged all the same: unacknowledged, it would stay in
                    // flight until the next connection, and enough of them stop deliveries.
                    self.session.ack(receipt);
                }
                LinkEvent::IncomingTooLarge(error) => tracing::error!(
                    %error,
                    session = self.name,
                    "the broker sent a message over the size limit: it is discarded, with what the broker held for this receiver (MQTT 5, --protocol 5, keeps such messages from being sent at all)"
                ),
                LinkEvent::Acked(()) | LinkEvent::Refused((), _) | LinkEvent::TooLarge((), _) => {}
            }
        }
    }
}

/// How old a temporary file must be for [`Receiver::resume`] to take it for one that a
/// killed receiver left: writing one takes a clip's assembly at most.
pub const STALE_TEMPORARY: std::time::Duration = std::time::Duration::from_secs(3600);

/// The receiver's state: everything lives on disk (pinned keys and each device's last chain
/// link included); this only remembers device states to print changes once, and the keys.
pub struct Receiver {
    out: PathBuf,
    layout: TopicLayout,
    states: HashMap<String, String>,
    /// Registered keys by key id, each with the one site it speaks for.
    trusted: HashMap<String, (VerifyingKey, String)>,
    /// Pin the first key each site signs with.
    pub trust_on_first_use: bool,
    /// Bytes of chunks each site may have waiting for their clip ([`MAX_WAITING_CHUNKS`]).
    pub max_waiting_chunks: u64,
    /// Bytes of chunks each site has waiting, as last measured plus what came since.
    waiting: HashMap<String, u64>,
    /// When each site over its limit was last measured.
    measured: HashMap<String, std::time::Instant>,
    /// The clips whose chunks were refused, each reported once.
    refused: std::collections::HashSet<PathBuf>,
    /// For each clip being reassembled, how many of its first chunks are known to be here.
    present: HashMap<ClipKey, u32>,
    /// The stored manifests of clips being reassembled, read once rather than per chunk.
    manifests: HashMap<ClipKey, Arc<StoredManifest>>,
    /// Different chunks received under each index of a clip not yet reassembled.
    candidates: HashMap<(String, Uuid, String, u32), usize>,
    /// Chunks (and their bytes) stored so far of each clip not yet reassembled, counted for
    /// [`Report::Progress`].
    arriving: HashMap<(String, Uuid, String), (u32, u64)>,
    /// Held while a site's key may be pinned, so that receivers sharing a directory pin one
    /// key per site.
    pinning: Arc<Mutex<()>>,
}

impl Receiver {
    /// A receiver keeping its files under `out`, reading topics of `layout`.
    pub fn new(out: &Path, layout: TopicLayout) -> Receiver {
        Receiver {
            out: out.to_owned(),
            layout,
            states: HashMap::new(),
            trusted: HashMap::new(),
            trust_on_first_use: false,
            max_waiting_chunks: MAX_WAITING_CHUNKS,
            waiting: HashMap::new(),
            measured: HashMap::new(),
            refused: Default::default(),
            present: HashMap::new(),
            manifests: HashMap::new(),
            candidates: HashMap::new(),
            arriving: HashMap::new(),
            pinning: Arc::default(),
        }
    }

    /// Trusts the public keys in `dir`, each for the one site its file is named after
    /// (`<site-id>.pub` or `<site-id>.pem`, holding a PEM or base64 key): a box's key never
    /// vouches for another store's clips. Returns how many.
    pub fn trust_keys(&mut self, dir: &Path) -> io::Result<usize> {
        let entries = fs::read_dir(dir)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let site = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .filter(|s| id::is_valid(s));
            let Some(site) = site else {
                tracing::warn!(file = %path.display(), "not named <site-id>.pub; ignored");
                continue;
            };
            // A regular file of a key's size, never a device or a pipe.
            let readable = fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() < 16 << 10);
            let Some(text) = readable.then(|| fs::read_to_string(&path).ok()).flatten() else {
                continue;
            };
            match signature::parse_public_key(&text) {
                Some(key) => {
                    self.trusted.insert(signature::key_id(&key), (key, site));
                }
                None => tracing::warn!(file = %path.display(), "not a public key; ignored"),
            }
        }
        Ok(self.trusted.len())
    }

    /// Checks a signed payload from `site`: against the trusted keys, or the key pinned for the
    /// site, pinning the signer's key first when trusting on first use.
    fn check(&self, site: &str, payload: &[u8]) -> io::Result<Verdict> {
        let _pinning = self.pinning.lock().unwrap_or_else(|p| p.into_inner());
        let pin_path = self.out.join(".pinned").join(format!("{site}.pub"));
        let pinned = fs::read_to_string(&pin_path)
            .ok()
            .and_then(|t| signature::parse_public_key(&t));
        let lookup = |id: &str| {
            self.trusted
                .get(id)
                .filter(|(_, registered)| registered == site)
                .map(|(key, _)| *key)
                .or_else(|| pinned.filter(|k| signature::key_id(k) == id))
        };
        let verdict = signature::verify(payload, &lookup);
        if let Verdict::Untrusted(_) = &verdict
            && self.trust_on_first_use
            && pinned.is_none()
            && let Some(signed) = signature::split(payload)
        {
            fs::create_dir_all(pin_path.parent().unwrap_or(&self.out))?;
            write_durably(&pin_path, signed.info.public_key.as_bytes())?;
            tracing::info!(%site, key_id = %signed.info.key_id, "pinned the site's key on first use");
            return Ok(Verdict::Valid);
        }
        Ok(verdict)
    }

    /// Places a link (an alert or an update) in its device's chain; returns the problem, if
    /// any, and whether the link is a replay (to be reported, not presented).
    fn follow_chain(
        &self,
        site: &str,
        link: ChainLink<'_>,
        payload: &[u8],
    ) -> io::Result<(Option<String>, bool)> {
        // Each key signs its own chain: a device given a new key starts a new one.
        let key = link.signature.map_or("unsigned", |s| s.key_id.as_str());
        let key = if id::is_valid(key) { key } else { "unknown" };
        let path = self.out.join(".chain").join(format!("{site}-{key}.json"));
        // Held until the chain is written: receivers sharing the directory (a desk taking
        // over from another) follow a chain one at a time.
        fs::create_dir_all(path.parent().unwrap_or(&self.out))?;
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.with_extension("lock"))?;
        lock.lock()?;
        let mut followed: Followed = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let last = (followed.head.sequence > 0).then_some(&followed.head);
        let (verdict, head) = chain::follow(last, link.sequence, link.previous, payload);
        let mut changed = head.is_some();
        if let Some(head) = head {
            followed.head = head;
        }
        match verdict {
            Link::Gap { last, got, .. } => {
                // The most recent numbers skipped, which may yet arrive late.
                let from = last
                    .saturating_add(1)
                    .max(got.saturating_sub(MAX_MISSING as u64));
                followed.missing.extend(from..got);
                let excess = followed.missing.len().saturating_sub(MAX_MISSING);
                followed.missing.drain(..excess);
            }
            Link::Replay { sequence, .. } if followed.missing.contains(&sequence) => {
                followed.missing.retain(|n| *n != sequence);
                changed = true;
            }
            _ => {}
        }
        if changed {
            write_durably(
                &path,
                &serde_json::to_vec(&followed).map_err(io::Error::other)?,
            )?;
        }
        Ok(match verdict {
            Link::First | Link::Continues | Link::Again => (None, false),
            Link::Gap { last, got, missing } => (
                Some(format!(
                    "alert {got} follows alert {last}: {missing} alert(s) or update(s) from this device missing or suppressed"
                )),
                false,
            ),
            // A number reported missing that turns up: late (an alert retried from a full
            // disk, a redelivery out of order), not a replay.
            Link::Replay { sequence, last } if changed => (
                Some(format!(
                    "alert {sequence} arrived late, after alert {last}: it is no longer missing"
                )),
                false,
            ),
            Link::Replay { sequence, last } => (
                Some(format!(
                    "alert {sequence} was already received (last was {last}): a replay"
                )),
                true,
            ),
            Link::Broken { sequence } => (
                Some(format!(
                    "alert {sequence} does not link to the previous alert: the device's history was altered"
                )),
                false,
            ),
        })
    }

    /// Checks and keeps a link of a device's chain (an alert, or an update) as `<name>.json`
    /// in its event's directory, or `<name>.unverified.json` unless signed by the site's key:
    /// the first verified one stays. Returns the chain's reports, and the signature's verdict
    /// when the link is to be presented: not for a copy already kept, a bad site id or a
    /// replay.
    fn keep_link(
        &self,
        site: &str,
        event: Uuid,
        name: &str,
        link: ChainLink<'_>,
        payload: &[u8],
    ) -> io::Result<(Vec<Report>, Option<Verdict>)> {
        let Some(dir) = self.event_dir(site, event)? else {
            return Ok((Vec::new(), None));
        };
        let verified = dir.join(format!("{name}.json"));
        let unverified = dir.join(format!("{name}.unverified.json"));
        if [&verified, &unverified]
            .iter()
            .any(|path| fs::read(path).is_ok_and(|known| known == payload))
        {
            return Ok((Vec::new(), None));
        }
        let signature = self.check(site, payload)?;
        let mut reports = Vec::new();
        // A forged link does not move the chain.
        if !matches!(signature, Verdict::Invalid(_)) {
            let (problem, replay) = self.follow_chain(site, link, payload)?;
            if let Some(problem) = problem {
                reports.push(Report::Chain {
                    site: site.to_owned(),
                    event,
                    problem,
                });
            }
            if replay {
                return Ok((reports, None));
            }
        }
        let path = if signature == Verdict::Valid {
            if verified.exists() {
                return Ok((reports, None));
            }
            verified
        } else {
            unverified
        };
        write_durably(&path, payload)?;
        Ok((reports, Some(signature)))
    }

    /// Finishes what a previous run left: clips whose chunks and manifest all arrived. The
    /// temporaries of a receiver killed while writing are removed once [`STALE_TEMPORARY`]
    /// old (younger ones may be another receiver's, sharing the directory, writing now).
    pub fn resume(&mut self) -> io::Result<Vec<Report>> {
        let mut reports = Vec::new();
        for (site_id, event, event_dir) in self.kept_events()? {
            for entry in fs::read_dir(&event_dir)?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && name.ends_with(".partial") {
                    let stale = entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|at| at.elapsed().ok())
                        .is_some_and(|age| age >= STALE_TEMPORARY);
                    if stale && fs::remove_file(entry.path()).is_ok() {
                        tracing::info!(file = %entry.path().display(), "removed what a receiver that stopped while writing left");
                    }
                } else if let Some(camera) = name.strip_suffix(".unverified.manifest.json") {
                    reports.extend(self.assemble(&site_id, event, camera, false)?);
                } else if let Some(camera) = name.strip_suffix(".manifest.json") {
                    reports.extend(self.assemble(&site_id, event, camera, true)?);
                }
            }
        }
        Ok(reports)
    }

    /// Every event kept under the output directory: its site, its id and its directory.
    pub fn kept_events(&self) -> io::Result<Vec<(String, Uuid, PathBuf)>> {
        let mut events = Vec::new();
        for site in read_dirs(&self.out)? {
            let Some(site_id) = site
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .filter(|id| id::is_valid(id))
            else {
                continue;
            };
            for event_dir in read_dirs(&site)? {
                if let Some(event) = event_dir
                    .file_name()
                    .and_then(|n| Uuid::parse_str(&n.to_string_lossy()).ok())
                {
                    events.push((site_id.clone(), event, event_dir));
                }
            }
        }
        Ok(events)
    }

    /// What is kept of `site`'s `event` on disk, reported again as when it arrived (the
    /// signatures checked again, the chain not followed again): for a consumer of reports
    /// that may have missed some, as one killed between a file being kept and the report
    /// being recorded. The alert and each update come first (the one signed by the site's
    /// key before one kept apart), then snapshots, then clips.
    pub fn stored(&self, site: &str, event: Uuid) -> io::Result<Vec<Report>> {
        if !id::is_valid(site) {
            return Ok(Vec::new());
        }
        let dir = self.out.join(site).join(event.to_string());
        let mut names: Vec<String> = match fs::read_dir(&dir) {
            Ok(entries) => entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(error),
        };
        // Verified before unverified, updates in number order.
        names.sort_by_key(|n| (n.contains(".unverified."), n.len(), n.clone()));
        let (mut links, mut snapshots, mut clips) = (Vec::new(), Vec::new(), Vec::new());
        for name in &names {
            let path = dir.join(name);
            let unverified = name.contains(".unverified.");
            let stem = name.replace(".unverified", "");
            if stem == "alert.json" {
                let payload = fs::read(&path)?;
                if let Ok(alert) = serde_json::from_slice::<Alert>(&payload)
                    && alert.event_id == event
                    && alert.site.id == site
                {
                    links.push(Report::Alert {
                        site: site.to_owned(),
                        alert: Box::new(alert),
                        signature: self.check(site, &payload)?,
                    });
                }
            } else if let Some(number) = stem
                .strip_prefix("update-")
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<u32>().ok())
            {
                let payload = fs::read(&path)?;
                if let Ok(update) = serde_json::from_slice::<EventUpdate>(&payload)
                    && update.event_id == event
                    && update.update == number
                {
                    links.push(Report::Update {
                        site: site.to_owned(),
                        update: Box::new(update),
                        signature: self.check(site, &payload)?,
                    });
                }
            } else if let Some(camera) = name
                .strip_prefix("snapshot-")
                .and_then(|n| n.strip_suffix(".jpg"))
                .filter(|c| id::is_valid(c))
            {
                snapshots.push(Report::Snapshot {
                    site: site.to_owned(),
                    event,
                    camera: camera.to_owned(),
                    path,
                });
            } else if let Some(camera) = stem
                .strip_suffix(".mp4")
                .filter(|c| id::is_valid(c) && !name.starts_with('.'))
            {
                let Ok(payload) = fs::read(dir.join(manifest_name(camera, !unverified))) else {
                    continue;
                };
                let Ok(manifest) = serde_json::from_slice::<Manifest>(&payload) else {
                    continue;
                };
                clips.push(Report::Clip {
                    site: site.to_owned(),
                    event,
                    camera: camera.to_owned(),
                    path,
                    manifest: Box::new(manifest),
                    signature: self.check(site, &payload)?,
                });
            }
        }
        links.extend(snapshots);
        links.extend(clips);
        Ok(links)
    }

    /// Stores one received message; returns what is worth reporting.
    pub fn handle(&mut self, topic: &str, payload: &[u8]) -> io::Result<Vec<Report>> {
        let Some(kind) = self.layout.parse(topic) else {
            tracing::debug!(%topic, "ignoring an unknown topic");
            return Ok(Vec::new());
        };
        match kind {
            TopicKind::Alert { site, event } => {
                let Ok(alert) = serde_json::from_slice::<Alert>(payload) else {
                    tracing::warn!(%topic, "ignoring an alert that is not valid");
                    return Ok(Vec::new());
                };
                if alert.event_id != event || alert.site.id != site {
                    return Ok(vec![Report::Refused {
                        reason: format!(
                            "the alert describes site {} event {}, not where it was published: ignored",
                            alert.site.id, alert.event_id
                        ),
                        site,
                        event,
                    }]);
                }
                let link = ChainLink {
                    sequence: alert.sequence,
                    previous: alert.previous_alert_sha256.as_deref(),
                    signature: alert.signature.as_ref(),
                };
                let (mut reports, signature) =
                    self.keep_link(&site, event, "alert", link, payload)?;
                let Some(signature) = signature else {
                    return Ok(reports);
                };
                reports.push(Report::Alert {
                    site,
                    alert: Box::new(alert),
                    signature,
                });
                Ok(reports)
            }
            TopicKind::Update {
                site,
                event,
                number,
            } => {
                let Ok(update) = serde_json::from_slice::<EventUpdate>(payload) else {
                    tracing::warn!(%topic, "ignoring an event update that is not valid");
                    return Ok(Vec::new());
                };
                if update.event_id != event || update.site_id != site || update.update != number {
                    return Ok(vec![Report::Refused {
                        reason: format!(
                            "update {number} describes site {} event {} update {}, not where it was published: ignored",
                            update.site_id, update.event_id, update.update
                        ),
                        site,
                        event,
                    }]);
                }
                let link = ChainLink {
                    sequence: update.sequence,
                    previous: update.previous_alert_sha256.as_deref(),
                    signature: update.signature.as_ref(),
                };
                let name = format!("update-{number}");
                let (mut reports, signature) =
                    self.keep_link(&site, event, &name, link, payload)?;
                let Some(signature) = signature else {
                    return Ok(reports);
                };
                reports.push(Report::Update {
                    site,
                    update: Box::new(update),
                    signature,
                });
                Ok(reports)
            }
            TopicKind::Snapshot {
                site,
                event,
                camera,
            } => {
                let Some(dir) = self.event_dir(&site, event)? else {
                    return Ok(Vec::new());
                };
                if !id::is_valid(&camera) {
                    return Ok(Vec::new());
                }
                let path = dir.join(format!("snapshot-{camera}.jpg"));
                if path.exists() {
                    return Ok(Vec::new());
                }
                write_durably(&path, payload)?;
                Ok(vec![Report::Snapshot {
                    site,
                    event,
                    camera,
                    path,
                }])
            }
            TopicKind::Chunk {
                site,
                event,
                camera,
                index,
            } => {
                let Some(dir) = self.event_dir(&site, event)? else {
                    return Ok(Vec::new());
                };
                if !id::is_valid(&camera)
                    || index >= MAX_CHUNKS
                    || dir.join(format!("{camera}.mp4")).exists()
                {
                    return Ok(Vec::new());
                }
                // Kept under its index and hash: a chunk sent again under the same index by
                // someone else sits beside the genuine one instead of replacing it, and the
                // manifest picks the one it names.
                let chunks = dir.join(format!(".chunks-{camera}"));
                fs::create_dir_all(&chunks)?;
                let name = chunk_name(index, &hex::encode(Sha256::digest(payload)));
                let path = chunks.join(&name);
                if path.exists() {
                    return Ok(Vec::new());
                }
                let stored = self.stored_manifest(&site, event, &camera, true);
                let total = stored.as_ref().map(|stored| stored.manifest.chunks);
                let named = stored.map(|stored| {
                    stored
                        .manifest
                        .chunk_sha256
                        .get(index as usize)
                        .map(|h| chunk_name(index, h))
                });
                let genuine = named
                    .as_ref()
                    .is_some_and(|n| n.as_deref() == Some(name.as_str()));
                if self.candidates.len() >= MAX_TRACKED * 64 {
                    self.candidates.clear();
                }
                let candidates = self
                    .candidates
                    .entry((site.clone(), event, camera.clone(), index))
                    .or_default();
                // The one the verified manifest names is always taken.
                if *candidates >= MAX_CANDIDATES && !genuine {
                    return Ok(Vec::new());
                }
                *candidates += 1;
                let (mut reports, room) =
                    self.make_room_for_chunks(&site, &chunks, payload.len() as u64)?;
                if !room {
                    return Ok(reports);
                }
                write_durably(&path, payload)?;
                if self.arriving.len() >= MAX_TRACKED {
                    self.arriving.clear();
                }
                let so_far = self
                    .arriving
                    .entry((site.clone(), event, camera.clone()))
                    .or_default();
                so_far.0 += 1;
                so_far.1 += payload.len() as u64;
                reports.push(Report::Progress {
                    site: site.clone(),
                    event,
                    camera: camera.clone(),
                    chunks: so_far.0,
                    bytes: so_far.1,
                    total,
                });
                // Against the verified manifest, a chunk it does not name is news: a
                // corruption, or someone else publishing on the box's topics.
                if let Some(named) = named
                    && named.as_deref() != Some(name.as_str())
                {
                    reports.push(Report::Invalid {
                        site: site.clone(),
                        event,
                        camera: camera.clone(),
                        reason: format!(
                            "chunk {index} does not match its hash in the manifest; waiting for the genuine one"
                        ),
                    });
                }
                for verified in [true, false] {
                    reports.extend(self.assemble(&site, event, &camera, verified)?);
                }
                Ok(reports)
            }
            TopicKind::Manifest {
                site,
                event,
                camera,
            } => {
                let Some(dir) = self.event_dir(&site, event)? else {
                    return Ok(Vec::new());
                };
                if !id::is_valid(&camera) {
                    return Ok(Vec::new());
                }
                let Ok(manifest) = serde_json::from_slice::<Manifest>(payload) else {
                    tracing::warn!(%topic, "ignoring a manifest that is not valid");
                    return Ok(Vec::new());
                };
                let invalid = |reason: String| {
                    Ok(vec![Report::Invalid {
                        site: site.clone(),
                        event,
                        camera: camera.clone(),
                        reason,
                    }])
                };
                if !is_sha256(&manifest.sha256)
                    || !manifest.chunk_sha256.iter().all(|h| is_sha256(h))
                {
                    return invalid(
                        "the manifest's hashes are not SHA-256 digests: ignored".into(),
                    );
                }
                // A genuine manifest republished elsewhere must not vouch for another event.
                if manifest.event_id != event
                    || manifest.camera != camera
                    || manifest.site_id != site
                {
                    return invalid(format!(
                        "the manifest describes site {} event {} camera {}, not where it was published: ignored",
                        manifest.site_id, manifest.event_id, manifest.camera
                    ));
                }
                let verified = match self.check(&site, payload)? {
                    Verdict::Valid => true,
                    Verdict::Invalid(reason) => {
                        return invalid(format!("manifest signature: {reason}"));
                    }
                    Verdict::Untrusted(_) | Verdict::Missing => false,
                };
                // The first verified manifest stays; anything else is kept apart.
                let path = dir.join(manifest_name(&camera, verified));
                if verified && path.exists() {
                    return Ok(Vec::new());
                }
                write_durably(&path, payload)?;
                self.manifests
                    .remove(&(site.clone(), event, camera.clone(), verified));
                self.assemble(&site, event, &camera, verified)
            }
            TopicKind::Health { site } => match serde_json::from_slice::<Health>(payload) {
                Ok(health) => Ok(vec![Report::Health { site, health }]),
                Err(_) => Ok(Vec::new()),
            },
            TopicKind::Answer { site } => match serde_json::from_slice::<Answer>(payload) {
                Ok(answer) if answer.site_id == site && id::is_valid(&site) => {
                    Ok(vec![Report::Answer {
                        signature: self.check(&site, payload)?,
                        site,
                        answer: Box::new(answer),
                    }])
                }
                _ => {
                    tracing::warn!(%topic, "ignoring an answer that is not valid or names another site");
                    Ok(Vec::new())
                }
            },
            TopicKind::Status { site } => match serde_json::from_slice::<Status>(payload) {
                Ok(status) if id::is_valid(&site) => {
                    let state_changed = self.states.get(&site) != Some(&status.state);
                    if state_changed {
                        if self.states.len() >= MAX_TRACKED {
                            self.states.clear();
                        }
                        self.states.insert(site.clone(), status.state.clone());
                    }
                    Ok(vec![Report::Status {
                        site,
                        status: Box::new(status),
                        state_changed,
                    }])
                }
                _ => Ok(Vec::new()),
            },
        }
    }

    /// The directory of an event, created; `None` for a site id that is not a safe name.
    fn event_dir(&self, site: &str, event: Uuid) -> io::Result<Option<PathBuf>> {
        if !id::is_valid(site) {
            tracing::warn!(%site, "ignoring a site id that is not a safe file name");
            return Ok(None);
        }
        let dir = self.out.join(site).join(event.to_string());
        fs::create_dir_all(&dir)?;
        Ok(Some(dir))
    }

    /// Makes room among `site`'s waiting chunks for `bytes` more, in `current`'s directory:
    /// past the limit, the clips whose chunks waited longest (not `current`'s) are given up,
    /// each reported. Says whether the chunk may be stored: not when `current`'s clip alone
    /// is over the limit. Blocks on the disk.
    fn make_room_for_chunks(
        &mut self,
        site: &str,
        current: &Path,
        bytes: u64,
    ) -> io::Result<(Vec<Report>, bool)> {
        if self.waiting.len() >= MAX_TRACKED {
            self.waiting.clear();
            self.measured.clear();
        }
        let waiting = match self.waiting.get(site) {
            Some(waiting) => *waiting,
            None => self.waiting_chunks(site)?.iter().map(|w| w.2).sum(),
        } + bytes;
        let limit = self.max_waiting_chunks;
        if waiting <= limit {
            self.waiting.insert(site.to_owned(), waiting);
            return Ok((Vec::new(), true));
        }
        // Measured again: reassembled clips took their chunks along, and the oldest are given
        // up down to three quarters of the limit, so this comes once per quarter of it. When
        // nothing could be given up, not again for a second: in between, chunks are refused.
        let now = std::time::Instant::now();
        if self
            .measured
            .get(site)
            .is_some_and(|at| now.duration_since(*at) < MEASURE_EVERY)
        {
            return Ok((self.refused(site, current), false));
        }
        let mut dirs = self.waiting_chunks(site)?;
        dirs.sort();
        let mut total = dirs.iter().map(|w| w.2).sum::<u64>() + bytes;
        let mut reports = Vec::new();
        for (_, dir, size) in dirs {
            if total <= limit / 4 * 3 {
                break;
            }
            if dir == current {
                continue;
            }
            fs::remove_dir_all(&dir)?;
            total = total.saturating_sub(size);
            let (event, camera) = clip_of(&dir);
            tracing::warn!(%site, dir = %dir.display(), bytes = size, "gave up chunks that waited longest for their clip");
            if let (Some(event), Some(camera)) = (event, camera) {
                reports.push(Report::Invalid {
                    site: site.to_owned(),
                    event,
                    camera,
                    reason: format!(
                        "gave up {size} bytes of chunks that waited longest for their clip: the site had over {limit} bytes of chunks waiting"
                    ),
                });
            }
        }
        // What was known of the clips given up is gone with them.
        if !reports.is_empty() {
            self.present.clear();
            self.candidates.clear();
        }
        let room = total <= limit;
        if room {
            self.waiting.insert(site.to_owned(), total);
            self.measured.remove(site);
        } else {
            self.waiting.insert(site.to_owned(), total - bytes);
            self.measured.insert(site.to_owned(), now);
            reports.extend(self.refused(site, current));
        }
        Ok((reports, room))
    }

    /// The report of chunks refused for `current`'s clip: once per clip.
    fn refused(&mut self, site: &str, current: &Path) -> Vec<Report> {
        if self.refused.len() >= MAX_TRACKED {
            self.refused.clear();
        }
        if !self.refused.insert(current.to_owned()) {
            return Vec::new();
        }
        let (Some(event), Some(camera)) = clip_of(current) else {
            return Vec::new();
        };
        vec![Report::Invalid {
            site: site.to_owned(),
            event,
            camera,
            reason: format!(
                "refused chunks: the site has over {} bytes of chunks waiting for their clips, and none older to give up",
                self.max_waiting_chunks
            ),
        }]
    }

    /// Every directory of chunks waiting for their clip at `site`: when it last changed, where
    /// it is, and how many bytes it holds.
    fn waiting_chunks(&self, site: &str) -> io::Result<Vec<(std::time::SystemTime, PathBuf, u64)>> {
        let mut found = Vec::new();
        for event in read_dirs(&self.out.join(site))? {
            let Ok(entries) = fs::read_dir(&event) else {
                continue;
            };
            for entry in entries.flatten() {
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                if !is_dir || !entry.file_name().to_string_lossy().starts_with(".chunks-") {
                    continue;
                }
                let dir = entry.path();
                let changed = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                let Ok(chunks) = fs::read_dir(&dir) else {
                    continue;
                };
                let bytes = chunks
                    .flatten()
                    .filter_map(|chunk| chunk.metadata().ok())
                    .map(|m| m.len())
                    .sum();
                found.push((changed, dir, bytes));
            }
        }
        Ok(found)
    }

    /// The stored manifest of a clip, read from disk the first time it is asked for.
    fn stored_manifest(
        &mut self,
        site: &str,
        event: Uuid,
        camera: &str,
        verified: bool,
    ) -> Option<Arc<StoredManifest>> {
        let key = (site.to_owned(), event, camera.to_owned(), verified);
        if let Some(stored) = self.manifests.get(&key) {
            return Some(stored.clone());
        }
        let path = self
            .out
            .join(site)
            .join(event.to_string())
            .join(manifest_name(camera, verified));
        let bytes = fs::read(path).ok()?;
        let manifest = serde_json::from_slice(&bytes).ok()?;
        let size = bytes.len();
        let stored = Arc::new(StoredManifest { bytes, manifest });
        if size <= MAX_CACHED_MANIFEST {
            if self.manifests.len() >= MAX_CACHED_MANIFESTS {
                self.manifests.clear();
            }
            self.manifests.insert(key, stored.clone());
        }
        Some(stored)
    }

    /// Reassembles a camera's clip once its manifest and every chunk it names are here,
    /// verifying each chunk and the whole file as it is written (never held in memory). The
    /// clip of a verified manifest (signed by the site's key) takes the final name
    /// `<camera>.mp4`; one whose manifest is unsigned or signed by another key is kept apart as
    /// `<camera>.unverified.mp4`, and reported unverified with the reason.
    fn assemble(
        &mut self,
        site: &str,
        event: Uuid,
        camera: &str,
        verified: bool,
    ) -> io::Result<Vec<Report>> {
        let dir = self.out.join(site).join(event.to_string());
        let final_path = dir.join(clip_name(camera, verified));
        let chunks = dir.join(format!(".chunks-{camera}"));
        if final_path.exists() {
            if verified {
                let _ = fs::remove_dir_all(&chunks);
            }
            return Ok(Vec::new());
        }
        let Some(stored) = self.stored_manifest(site, event, camera, verified) else {
            return Ok(Vec::new());
        };
        let manifest = &stored.manifest;
        let invalid = |reason: String| Report::Invalid {
            site: site.to_owned(),
            event,
            camera: camera.to_owned(),
            reason,
        };
        if manifest.chunks as usize != manifest.chunk_sha256.len()
            || manifest.chunks > MAX_CHUNKS
            || !manifest.chunk_sha256.iter().all(|h| is_sha256(h))
        {
            return Ok(vec![invalid("the manifest is inconsistent".into())]);
        }
        // Where the last look stopped: each arriving chunk costs a look from there on, so a
        // clip of n chunks is checked in O(n), not O(n^2), whatever the order of arrival.
        let key = (site.to_owned(), event, camera.to_owned(), verified);
        if self.present.len() >= MAX_TRACKED {
            self.present.clear();
        }
        let from = self.present.get(&key).copied().unwrap_or(0);
        let mut present = from;
        while (present as usize) < manifest.chunk_sha256.len()
            && chunks
                .join(chunk_name(
                    present,
                    &manifest.chunk_sha256[present as usize],
                ))
                .exists()
        {
            present += 1;
        }
        if (present as usize) < manifest.chunk_sha256.len() {
            self.present.insert(key, present);
            return Ok(Vec::new());
        }
        self.present.remove(&key);
        self.manifests.remove(&key);
        let temp = crate::store::temporary(&final_path);
        let mut file = fs::File::create(&temp)?;
        let mut whole = Sha256::new();
        let mut bytes = 0u64;
        for (n, expected) in manifest.chunk_sha256.iter().enumerate() {
            let path = chunks.join(chunk_name(n as u32, expected));
            let chunk = match fs::read(&path) {
                Ok(chunk) => chunk,
                // Another receiver sharing the directory (a desk of several) finished the
                // clip first and took its chunks away.
                Err(e) if e.kind() == io::ErrorKind::NotFound && final_path.exists() => {
                    let _ = fs::remove_file(&temp);
                    return Ok(Vec::new());
                }
                Err(e) => return Err(e),
            };
            if &hex::encode(Sha256::digest(&chunk)) != expected {
                let _ = fs::remove_file(&path);
                let _ = fs::remove_file(&temp);
                return Ok(vec![invalid(format!(
                    "chunk {n} does not match its hash; waiting for it again"
                ))]);
            }
            whole.update(&chunk);
            bytes += chunk.len() as u64;
            file.write_all(&chunk)?;
        }
        let sha256 = hex::encode(whole.finalize());
        if bytes != manifest.bytes || sha256 != manifest.sha256 {
            let _ = fs::remove_file(&temp);
            return Ok(vec![invalid(format!(
                "the reassembled file ({bytes} bytes, sha256 {sha256}) does not match the manifest ({} bytes, sha256 {})",
                manifest.bytes, manifest.sha256
            ))]);
        }
        file.sync_all()?;
        drop(file);
        crate::store::rename_durably(&temp, &final_path)?;
        if verified {
            let _ = fs::remove_dir_all(&chunks);
            self.candidates
                .retain(|(s, e, c, _), _| !(s == site && *e == event && c == camera));
            self.arriving
                .remove(&(site.to_owned(), event, camera.to_owned()));
        }
        let signature = self.check(site, &stored.bytes)?;
        Ok(vec![Report::Clip {
            site: site.to_owned(),
            event,
            camera: camera.to_owned(),
            path: final_path,
            manifest: Box::new(manifest.clone()),
            signature,
        }])
    }
}

/// The event and camera of a clip's directory of waiting chunks.
fn clip_of(chunks: &Path) -> (Option<Uuid>, Option<String>) {
    let event = chunks
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| Uuid::parse_str(&n.to_string_lossy()).ok());
    let camera = chunks.file_name().and_then(|n| {
        n.to_string_lossy()
            .strip_prefix(".chunks-")
            .map(str::to_owned)
    });
    (event, camera)
}

/// A chunk's file: its index and the start of its hash.
fn chunk_name(index: u32, sha256: &str) -> String {
    format!("{index}-{}", sha256.get(..16).unwrap_or(sha256))
}

/// Whether a hash from the network is one: 64 lowercase hex digits.
fn is_sha256(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A clip's file: verified under the camera's name, anything else kept apart.
fn clip_name(camera: &str, verified: bool) -> String {
    if verified {
        format!("{camera}.mp4")
    } else {
        format!("{camera}.unverified.mp4")
    }
}

fn manifest_name(camera: &str, verified: bool) -> String {
    if verified {
        format!("{camera}.manifest.json")
    } else {
        format!("{camera}.unverified.manifest.json")
    }
}

fn read_dirs(dir: &Path) -> io::Result<Vec<PathBuf>> {
    match fs::read_dir(dir) {
        Ok(entries) => Ok(entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(error) => Err(error),
    }
}

/// How a readable line flags a signature that is not simply valid.
fn signature_note(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Valid => String::new(),
        Verdict::Untrusted(id) => format!(" (signed by untrusted key {id})"),
        Verdict::Invalid(reason) => format!(" (SIGNATURE INVALID: {reason})"),
        Verdict::Missing => " (UNSIGNED)".to_owned(),
    }
}

/// Prints a report as a readable line or a JSON object. A clip's progress, a status that
/// repeats the device's state, and a session's connection (logged anyway) are printed only
/// as JSON: a line each would bury the alerts.
pub fn print(out: &mut impl Write, report: &Report, json: bool) -> io::Result<()> {
    let quiet = match report {
        Report::Progress { .. } | Report::Connected { .. } => true,
        Report::Status { state_changed, .. } => !state_changed,
        _ => false,
    };
    if quiet && !json {
        return Ok(());
    }
    let line = if json {
        match report {
            Report::Alert { site, alert, signature } => {
                json!({"type": "alert", "site": site, "alert": alert, "signature": signature.word(), "signature_detail": signature})
            }
            Report::Update { site, update, signature } => {
                json!({"type": "update", "site": site, "update": update, "signature": signature.word(), "signature_detail": signature})
            }
            Report::Refused { site, event, reason } => {
                json!({"type": "refused", "site": site, "event_id": event, "reason": reason})
            }
            Report::Chain { site, event, problem } => {
                json!({"type": "chain", "site": site, "event_id": event, "problem": problem})
            }
            Report::Snapshot { site, event, camera, path } => {
                json!({"type": "snapshot", "site": site, "event_id": event, "camera": camera, "path": path})
            }
            Report::Clip { site, event, camera, path, manifest, signature } => json!({
                "type": "clip", "site": site, "event_id": event, "camera": camera, "path": path,
                "verified": *signature == Verdict::Valid, "signature": signature.word(),
                "signature_detail": signature, "manifest": manifest
            }),
            Report::Invalid { site, event, camera, reason } => json!({
                "type": "invalid", "site": site, "event_id": event, "camera": camera, "reason": reason
            }),
            Report::Health { site, health } => json!({"type": "health", "site": site, "health": health}),
            Report::Answer { site, answer, signature } => json!({
                "type": "answer", "site": site, "answer": answer, "signature": signature.word(),
                "signature_detail": signature
            }),
            Report::Progress { site, event, camera, chunks, bytes, total } => json!({
                "type": "progress", "site": site, "event_id": event, "camera": camera,
                "chunks": chunks, "bytes": bytes, "total": total
            }),
            Report::Connected { session } => json!({"type": "connected", "session": session}),
            Report::Status { site, status, state_changed } => json!({
                "type": "status", "site": site, "state": status.state,
                "state_changed": state_changed, "status": status
            }),
        }
        .to_string()
    } else {
        match report {
            Report::Alert {
                site,
                alert,
                signature,
            } => {
                let address = alert
                    .site
                    .address
                    .as_deref()
                    .map(|a| format!(", {a}"))
                    .unwrap_or_default();
                let note = alert
                    .trigger
                    .note
                    .as_deref()
                    .map(|n| format!(" \"{n}\""))
                    .unwrap_or_default();
                let cameras: Vec<&str> = alert.cameras.iter().map(|c| c.id.as_str()).collect();
                format!(
                    "{} ALERT{}{} {} ({}{address}): {} from {}{note}; cameras {}; event {}",
                    alert.triggered_at,
                    if alert.test { " (TEST)" } else { "" },
                    signature_note(signature),
                    site,
                    alert.site.name,
                    alert.trigger.kind.as_str(),
                    alert.trigger.source,
                    cameras.join(", "),
                    alert.event_id
                )
            }
            Report::Update {
                site,
                update,
                signature,
            } => {
                let note = update
                    .trigger
                    .note
                    .as_deref()
                    .map(|n| format!(" \"{n}\""))
                    .unwrap_or_default();
                format!(
                    "{} UPDATE {}{}{} {site} event {}: {} from {}{note}; cameras {}",
                    update.triggered_at,
                    update.update,
                    if update.test { " (TEST)" } else { "" },
                    signature_note(signature),
                    update.event_id,
                    update.trigger.kind.as_str(),
                    update.trigger.source,
                    update.cameras.join(", "),
                )
            }
            Report::Refused {
                site,
                event,
                reason,
            } => format!("REFUSED {site} event {event}: {reason}"),
            Report::Snapshot {
                site,
                event,
                camera,
                path,
            } => {
                format!(
                    "SNAPSHOT {site} event {event} camera {camera}: {}",
                    path.display()
                )
            }
            Report::Clip {
                site,
                event,
                camera,
                path,
                manifest,
                signature,
            } => format!(
                "{}{} {site} event {event} camera {camera}: {}, {:.1} s, {} bytes{}: {}",
                if *signature == Verdict::Valid {
                    "CLIP"
                } else {
                    "UNVERIFIED CLIP"
                },
                signature_note(signature),
                if *signature == Verdict::Valid {
                    "verified"
                } else {
                    "whole, but not signed by the site's key"
                },
                manifest.duration_ms as f64 / 1000.0,
                manifest.bytes,
                if manifest.partial { " (partial)" } else { "" },
                path.display()
            ),
            Report::Chain {
                site,
                event,
                problem,
            } => format!("CHAIN {site} event {event}: {problem}"),
            Report::Invalid {
                site,
                event,
                camera,
                reason,
            } => {
                format!("INVALID {site} event {event} camera {camera}: {reason}")
            }
            Report::Health { site, health } => {
                format!("HEALTH {site} {}: {}", health.kind, health.message)
            }
            Report::Answer {
                site,
                answer,
                signature,
            } => format!(
                "ANSWER {site} command {}: {}{} (signature {})",
                answer
                    .command_id
                    .map_or_else(|| "?".to_owned(), |id| id.to_string()),
                answer.outcome.as_str(),
                answer
                    .reason
                    .as_deref()
                    .map_or_else(String::new, |r| format!(": {r}")),
                signature.word()
            ),
            Report::Progress { .. } | Report::Connected { .. } => String::new(),
            Report::Status { site, status, .. } => format!("STATUS {site} {}", status.state),
        }
    };
    // Everything in a readable line came from the network: a control character (an ANSI
    // escape that recolours or clears the officer's terminal, a newline that forges a line)
    // is shown escaped, never sent to the terminal. JSON escapes them itself.
    writeln!(out, "{}", escape_controls(&line))?;
    out.flush()
}

/// `text` with every control character written as a Rust escape (`\u{1b}`, `\n`).
fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().collect::<String>()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_from_the_network_never_reach_the_terminal() {
        let forged = "Store\u{1b}[2J\u{1b}]0;pwned\u{7}\nFAKE ALERT";
        let escaped = escape_controls(forged);
        assert!(!escaped.chars().any(char::is_control), "{escaped}");
        assert_eq!(escaped, "Store\\u{1b}[2J\\u{1b}]0;pwned\\u{7}\\nFAKE ALERT");
        assert_eq!(
            escape_controls("Corner Market, 12 Main St"),
            "Corner Market, 12 Main St"
        );
    }
    use alertclip_wire::signature::SigningKey;

    fn manifest(event: Uuid, data: &[u8], chunk: usize) -> Manifest {
        Manifest {
            schema: alertclip_wire::payload::MANIFEST_SCHEMA.into(),
            event_id: event,
            site_id: "s".into(),
            camera: "cam".into(),
            bytes: data.len() as u64,
            sha256: hex::encode(Sha256::digest(data)),
            chunk_size: chunk as u64,
            chunks: data.chunks(chunk).count() as u32,
            chunk_sha256: data
                .chunks(chunk)
                .map(|c| hex::encode(Sha256::digest(c)))
                .collect(),
            duration_ms: 1000,
            start: "x".into(),
            end: "y".into(),
            codec: "h264".into(),
            width: None,
            height: None,
            frames: 15,
            partial: false,
            partial_reason: None,
            triggers: Vec::new(),
            clock_map: alertclip_wire::MapRecord {
                monotonic_ns: 1,
                wall: "2026-01-01T00:00:00.000000Z".into(),
            },
            signature: None,
        }
    }

    fn alert(event: Uuid, sequence: u64, previous: Option<String>, note: &str) -> Alert {
        Alert {
            schema: alertclip_wire::payload::ALERT_SCHEMA.into(),
            event_id: event,
            site: alertclip_wire::SiteInfo {
                id: "s".into(),
                name: "Store".into(),
                address: None,
            },
            trigger: alertclip_wire::TriggerInfo {
                kind: alertclip_wire::TriggerKind::Button,
                source: "b1".into(),
                note: Some(note.into()),
                detections: Vec::new(),
            },
            triggered_at: "2026-01-01T00:00:00.000Z".into(),
            cameras: Vec::new(),
            clock: alertclip_wire::Provenance {
                synchronized: Some(true),
                source: None,
                estimated_error_us: None,
            },
            test: false,
            device_version: "0".into(),
            sequence,
            previous_alert_sha256: previous,
            signature: None,
        }
    }

    /// A device: its key (trusted by the receiver through a keys directory) and the head of
    /// its chain.
    struct Device {
        key: SigningKey,
        head: std::cell::RefCell<ChainState>,
    }

    impl Device {
        fn new() -> Device {
            let mut seed = [0u8; 32];
            seed[..16].copy_from_slice(Uuid::now_v7().as_bytes());
            seed[16..].copy_from_slice(Uuid::now_v7().as_bytes());
            Device {
                key: SigningKey::from_bytes(&seed),
                head: Default::default(),
            }
        }

        fn sign(&self, unsigned: &[u8]) -> Vec<u8> {
            signature::sign(&self.key, unsigned)
        }

        /// The next alert, signed and chained, as published.
        fn alert(&self, event: Uuid, note: &str) -> Vec<u8> {
            let mut head = self.head.borrow_mut();
            let sequence = head.sequence + 1;
            let unsigned = alert(event, sequence, head.last_alert_sha256.clone(), note);
            let payload = self.sign(&serde_json::to_vec(&unsigned).unwrap());
            *head = ChainState::after(sequence, &payload);
            payload
        }

        /// The next link of the chain as update `number` of `event`, signed, as published.
        fn update(&self, event: Uuid, number: u32, site: &str) -> Vec<u8> {
            let mut head = self.head.borrow_mut();
            let sequence = head.sequence + 1;
            let unsigned = EventUpdate {
                schema: alertclip_wire::payload::EVENT_UPDATE_SCHEMA.into(),
                event_id: event,
                update: number,
                site_id: site.into(),
                trigger: alert(event, 0, None, "again").trigger,
                triggered_at: "2026-01-01T00:00:05.000Z".into(),
                cameras: vec!["cam".into()],
                clock: alert(event, 0, None, "").clock,
                test: false,
                device_version: "0".into(),
                sequence,
                previous_alert_sha256: head.last_alert_sha256.clone(),
                signature: None,
            };
            let payload = self.sign(&serde_json::to_vec(&unsigned).unwrap());
            *head = ChainState::after(sequence, &payload);
            payload
        }

        /// A receiver in `out` with this device's key registered.
        fn trusted_by(&self, out: &Path) -> Receiver {
            let keys = out.join("registered-keys");
            fs::create_dir_all(&keys).unwrap();
            fs::write(
                keys.join("s.pub"),
                signature::public_pem(&self.key.verifying_key()),
            )
            .unwrap();
            let mut receiver = Receiver::new(out, TopicLayout::default());
            receiver.trust_keys(&keys).unwrap();
            receiver
        }
    }

    trait News {
        /// [`Receiver::handle`], its reports but progress.
        fn news(&mut self, topic: &str, payload: &[u8]) -> io::Result<Vec<Report>>;
    }

    impl News for Receiver {
        fn news(&mut self, topic: &str, payload: &[u8]) -> io::Result<Vec<Report>> {
            self.handle(topic, payload).map(news)
        }
    }

    /// The reports but progress, which tests of other things leave aside.
    fn news(reports: Vec<Report>) -> Vec<Report> {
        reports
            .into_iter()
            .filter(|r| !matches!(r, Report::Progress { .. }))
            .collect()
    }

    fn words(reports: &[Report]) -> Vec<String> {
        reports
            .iter()
            .filter(|r| !matches!(r, Report::Progress { .. }))
            .map(|r| match r {
                Report::Alert { signature, .. } => format!("alert:{}", signature.word()),
                Report::Update {
                    signature, update, ..
                } => format!("update {}:{}", update.update, signature.word()),
                Report::Refused { .. } => "refused".into(),
                Report::Chain { problem, .. } => {
                    format!("chain:{}", problem.split(':').next().unwrap_or_default())
                }
                Report::Clip { signature, .. } => format!("clip:{}", signature.word()),
                Report::Invalid { .. } => "invalid".into(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn signed_alerts_are_checked_and_gaps_and_replays_flagged() {
        let (out, device) = (tempfile::tempdir().unwrap(), Device::new());
        let mut receiver = device.trusted_by(out.path());
        let events: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
        let alerts: Vec<Vec<u8>> = events
            .iter()
            .map(|e| device.alert(*e, "register 2"))
            .collect();
        let topic = |e: Uuid| format!("alertclip/v1/s/events/{e}");

        assert_eq!(
            words(&receiver.handle(&topic(events[0]), &alerts[0]).unwrap()),
            vec!["alert:valid"]
        );
        assert_eq!(
            words(&receiver.handle(&topic(events[1]), &alerts[1]).unwrap()),
            vec!["alert:valid"]
        );
        // A duplicate delivery is not news.
        assert!(
            receiver
                .handle(&topic(events[1]), &alerts[1])
                .unwrap()
                .is_empty()
        );
        // Alert 3 is suppressed: alert 4 shows the gap.
        let reports = receiver.handle(&topic(events[3]), &alerts[3]).unwrap();
        assert_eq!(
            words(&reports),
            vec!["chain:alert 4 follows alert 2", "alert:valid"]
        );
        // Alert 3 was only late (retried from a full disk): presented, and no longer missing.
        let reports = receiver.handle(&topic(events[2]), &alerts[2]).unwrap();
        assert_eq!(
            words(&reports),
            vec!["chain:alert 3 arrived late, after alert 4", "alert:valid"]
        );
        assert!(
            receiver
                .handle(&topic(events[2]), &alerts[2])
                .unwrap()
                .is_empty()
        );
        // An old alert replayed to a desk that no longer has it: reported, not presented.
        fs::remove_dir_all(out.path().join("s").join(events[0].to_string())).unwrap();
        let reports = receiver.handle(&topic(events[0]), &alerts[0]).unwrap();
        assert_eq!(
            words(&reports),
            vec!["chain:alert 1 was already received (last was 4)"]
        );
        assert!(
            !out.path()
                .join("s")
                .join(events[0].to_string())
                .join("alert.json")
                .exists()
        );
    }

    #[test]
    fn the_last_alert_delivered_again_after_a_receiver_died_before_keeping_it_is_presented() {
        let (out, device) = (tempfile::tempdir().unwrap(), Device::new());
        let mut receiver = device.trusted_by(out.path());
        let events: Vec<Uuid> = (0..2).map(|_| Uuid::now_v7()).collect();
        let alerts: Vec<Vec<u8>> = events.iter().map(|e| device.alert(*e, "till")).collect();
        let topic = |e: Uuid| format!("alertclip/v1/s/events/{e}");
        for (event, alert) in events.iter().zip(&alerts) {
            receiver.handle(&topic(*event), alert).unwrap();
        }
        // The receiver died between following the chain and keeping the alert; the broker,
        // never acknowledged, sends it again: the chain's head, the same bytes.
        let kept = |e: Uuid| out.path().join("s").join(e.to_string());
        fs::remove_dir_all(kept(events[1])).unwrap();
        let mut again = device.trusted_by(out.path());
        assert_eq!(
            words(&again.handle(&topic(events[1]), &alerts[1]).unwrap()),
            vec!["alert:valid"]
        );
        assert!(kept(events[1]).join("alert.json").exists());
        // The alert before it is no redelivery of the head: a replay still.
        fs::remove_dir_all(kept(events[0])).unwrap();
        assert_eq!(
            words(&again.handle(&topic(events[0]), &alerts[0]).unwrap()),
            vec!["chain:alert 1 was already received (last was 2)"]
        );
    }

    #[test]
    fn updates_are_links_of_the_same_chain_and_must_be_where_they_say() {
        let (out, device) = (tempfile::tempdir().unwrap(), Device::new());
        let mut receiver = device.trusted_by(out.path());
        let (event, other) = (Uuid::now_v7(), Uuid::now_v7());
        let first = device.alert(event, "register 2");
        let update = device.update(event, 1, "s");
        let next = device.alert(other, "door");
        let at = |e: Uuid, rest: &str| format!("alertclip/v1/s/events/{e}{rest}");
        assert_eq!(
            words(&receiver.handle(&at(event, ""), &first).unwrap()),
            vec!["alert:valid"]
        );
        // Republished as another event's, or under another number: refused, chain untouched.
        for topic in [at(other, "/update/1"), at(event, "/update/2")] {
            assert_eq!(
                words(&receiver.handle(&topic, &update).unwrap()),
                vec!["refused"],
                "{topic}"
            );
        }
        assert_eq!(
            words(&receiver.handle(&at(event, "/update/1"), &update).unwrap()),
            vec!["update 1:valid"]
        );
        assert!(
            receiver
                .handle(&at(event, "/update/1"), &update)
                .unwrap()
                .is_empty(),
            "a duplicate is not news"
        );
        // The next alert follows the update in the chain: no gap.
        assert_eq!(
            words(&receiver.handle(&at(other, ""), &next).unwrap()),
            vec!["alert:valid"]
        );
        let dir = out.path().join("s").join(event.to_string());
        assert_eq!(fs::read(dir.join("update-1.json")).unwrap(), update);
        // A suppressed update shows as a gap before the next link.
        let _suppressed = device.update(other, 1, "s");
        let after = device.update(other, 2, "s");
        assert_eq!(
            words(&receiver.handle(&at(other, "/update/2"), &after).unwrap()),
            vec!["chain:alert 5 follows alert 3", "update 2:valid"]
        );
        // A forgery is kept apart, presented as such, and never replaces the genuine one.
        let forged = String::from_utf8(update.clone())
            .unwrap()
            .replace("again", "forged");
        assert_eq!(
            words(
                &receiver
                    .handle(&at(event, "/update/1"), forged.as_bytes())
                    .unwrap()
            ),
            vec!["update 1:invalid"]
        );
        assert_eq!(fs::read(dir.join("update-1.json")).unwrap(), update);
        assert!(dir.join("update-1.unverified.json").exists());
        let mut line = Vec::new();
        print(
            &mut line,
            &receiver
                .handle(&at(event, "/update/3"), &device.update(event, 3, "s"))
                .unwrap()[0],
            false,
        )
        .unwrap();
        let line = String::from_utf8(line).unwrap();
        assert!(line.contains(" UPDATE 3 s event "), "{line}");
        assert!(
            line.contains("button from b1 \"again\"; cameras cam"),
            "{line}"
        );
    }

    #[test]
    fn a_tampered_alert_is_flagged_and_does_not_move_the_chain() {
        let (out, device) = (tempfile::tempdir().unwrap(), Device::new());
        let mut receiver = device.trusted_by(out.path());
        let event = Uuid::now_v7();
        let tampered = String::from_utf8(device.alert(event, "register 2"))
            .unwrap()
            .replace("register 2", "register 9");
        let reports = receiver
            .handle(
                &format!("alertclip/v1/s/events/{event}"),
                tampered.as_bytes(),
            )
            .unwrap();
        assert_eq!(words(&reports), vec!["alert:invalid"]);
        assert!(!out.path().join(".chain").exists());
        let mut line = Vec::new();
        print(&mut line, &reports[0], false).unwrap();
        assert!(
            String::from_utf8(line)
                .unwrap()
                .contains("SIGNATURE INVALID")
        );
    }

    #[test]
    fn a_signed_manifest_verifies_the_clip_and_a_tampered_one_is_refused() {
        let (out, device) = (tempfile::tempdir().unwrap(), Device::new());
        let mut receiver = device.trusted_by(out.path());
        let event = Uuid::now_v7();
        let data = vec![5u8; 300];
        let base = format!("alertclip/v1/s/events/{event}/clip/cam");
        let signed = device.sign(&serde_json::to_vec(&manifest(event, &data, 100)).unwrap());
        let tampered = String::from_utf8(signed.clone())
            .unwrap()
            .replace("\"frames\":15", "\"frames\":16");
        assert_eq!(
            words(&receiver.handle(&base, tampered.as_bytes()).unwrap()),
            vec!["invalid"]
        );
        for (n, chunk) in data.chunks(100).enumerate() {
            receiver.handle(&format!("{base}/{n}"), chunk).unwrap();
        }
        assert!(
            !out.path()
                .join("s")
                .join(event.to_string())
                .join("cam.mp4")
                .exists()
        );
        assert_eq!(
            words(&receiver.handle(&base, &signed).unwrap()),
            vec!["clip:valid"]
        );
    }

    #[test]
    fn trust_on_first_use_pins_the_first_key_of_a_site() {
        let out = tempfile::tempdir().unwrap();
        let (first, second) = (Device::new(), Device::new());
        let mut receiver = Receiver::new(out.path(), TopicLayout::default());
        let e1 = Uuid::now_v7();
        assert_eq!(
            words(
                &receiver
                    .handle(
                        &format!("alertclip/v1/s/events/{e1}"),
                        &first.alert(e1, "a")
                    )
                    .unwrap()
            ),
            vec!["alert:untrusted"]
        );
        receiver.trust_on_first_use = true;
        let e2 = Uuid::now_v7();
        let reports = receiver
            .handle(
                &format!("alertclip/v1/s/events/{e2}"),
                &second.alert(e2, "b"),
            )
            .unwrap();
        assert_eq!(words(&reports), vec!["alert:valid"], "pinned on first use");
        let e3 = Uuid::now_v7();
        let reports = receiver
            .handle(
                &format!("alertclip/v1/s/events/{e3}"),
                &first.alert(e3, "c"),
            )
            .unwrap();
        assert!(
            words(&reports).contains(&"alert:untrusted".to_owned()),
            "{reports:?}"
        );
    }

    #[test]
    fn chunks_that_never_become_a_clip_give_way_to_those_that_do() {
        let (out, device) = (tempfile::tempdir().unwrap(), Device::new());
        let mut receiver = device.trusted_by(out.path());
        receiver.max_waiting_chunks = 2_000;
        let junk: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let chunk = |e: Uuid, n: u32| format!("alertclip/v1/s/events/{e}/clip/cam/{n}");
        for event in &junk {
            for n in 0..2 {
                assert!(
                    receiver
                        .news(&chunk(*event, n), &[n as u8; 300])
                        .unwrap()
                        .is_empty()
                );
            }
        }
        // The genuine clip's chunks push out the junk that waited longest, which is reported.
        let event = Uuid::now_v7();
        let data: Vec<u8> = (0..1200u32).map(|i| (i * 7 % 256) as u8).collect();
        let mut reports = Vec::new();
        for n in 0..4 {
            let part = &data[n * 300..(n + 1) * 300];
            reports.extend(receiver.news(&chunk(event, n as u32), part).unwrap());
        }
        assert!(
            reports.iter().all(|r| matches!(r, Report::Invalid { reason, .. } if reason.starts_with("gave up 600 bytes"))),
            "{reports:?}"
        );
        assert!(!reports.is_empty());
        let waiting = |e: Uuid| {
            out.path()
                .join("s")
                .join(e.to_string())
                .join(".chunks-cam")
                .exists()
        };
        assert!(!waiting(junk[0]), "the oldest junk is given up");
        assert!(waiting(junk[2]), "only as much as needed");
        let manifest = device.sign(&serde_json::to_vec(&manifest(event, &data, 300)).unwrap());
        let reports = receiver
            .news(
                &format!("alertclip/v1/s/events/{event}/clip/cam"),
                &manifest,
            )
            .unwrap();
        let [Report::Clip { path, .. }] = reports.as_slice() else {
            panic!("{reports:?}")
        };
        assert_eq!(fs::read(path).unwrap(), data);
        // A clip that alone is over the limit has its chunks refused, and says so.
        let huge = Uuid::now_v7();
        let reports: Vec<Report> = (0..8)
            .flat_map(|n| receiver.news(&chunk(huge, n), &[7u8; 300]).unwrap())
            .collect();
        assert!(
            reports.iter().any(|r| matches!(r, Report::Invalid { reason, .. } if reason.starts_with("refused chunks"))),
            "{reports:?}"
        );
        let kept = fs::read_dir(
            out.path()
                .join("s")
                .join(huge.to_string())
                .join(".chunks-cam"),
        )
        .unwrap()
        .count();
        assert!(kept < 8, "{kept} chunks kept");
    }

    #[test]
    fn chunks_in_any_order_with_duplicates_reassemble_once() {
        let (out, device) = (tempfile::tempdir().unwrap(), Device::new());
        let mut receiver = device.trusted_by(out.path());
        let event = Uuid::now_v7();
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 256) as u8).collect();
        let base = format!("alertclip/v1/s/events/{event}/clip/cam");
        let manifest_json = device.sign(&serde_json::to_vec(&manifest(event, &data, 300)).unwrap());
        // Each new chunk is progress: so many so far, of a total once the manifest is here.
        let progress = |reports: &[Report]| match reports {
            [
                Report::Progress {
                    chunks,
                    bytes,
                    total,
                    ..
                },
                ..,
            ] => Some((*chunks, *bytes, *total)),
            _ => None,
        };
        let reports = receiver.handle(&format!("{base}/3"), &data[900..]).unwrap();
        assert_eq!(progress(&reports), Some((1, 100, None)), "{reports:?}");
        assert!(receiver.handle(&base, &manifest_json).unwrap().is_empty());
        let reports = receiver
            .handle(&format!("{base}/1"), &data[300..600])
            .unwrap();
        assert_eq!(progress(&reports), Some((2, 400, Some(4))), "{reports:?}");
        assert!(
            receiver
                .handle(&format!("{base}/1"), &data[300..600])
                .unwrap()
                .is_empty(),
            "a duplicate is no progress"
        );
        let reports = receiver.handle(&format!("{base}/0"), &data[..300]).unwrap();
        assert_eq!(progress(&reports), Some((3, 700, Some(4))), "{reports:?}");
        let reports = receiver
            .handle(&format!("{base}/2"), &data[600..900])
            .unwrap();
        let [
            Report::Progress { chunks: 4, .. },
            Report::Clip { path, .. },
        ] = reports.as_slice()
        else {
            panic!("{reports:?}")
        };
        assert_eq!(fs::read(path).unwrap(), data);
        // Duplicates after the fact change nothing.
        assert!(
            receiver
                .handle(&format!("{base}/2"), &data[600..900])
                .unwrap()
                .is_empty()
        );
        assert!(receiver.handle(&base, &manifest_json).unwrap().is_empty());
    }

    #[test]
    fn a_corrupt_chunk_is_refused_and_replaced_by_the_retransmission() {
        let (out, device) = (tempfile::tempdir().unwrap(), Device::new());
        let mut receiver = device.trusted_by(out.path());
        let event = Uuid::now_v7();
        let data = vec![7u8; 500];
        let base = format!("alertclip/v1/s/events/{event}/clip/cam");
        receiver
            .news(
                &base,
                &device.sign(&serde_json::to_vec(&manifest(event, &data, 250)).unwrap()),
            )
            .unwrap();
        receiver.news(&format!("{base}/0"), &data[..250]).unwrap();
        let mut bad = data[250..].to_vec();
        bad[10] ^= 1;
        let reports = receiver.news(&format!("{base}/1"), &bad).unwrap();
        assert!(
            matches!(reports.as_slice(), [Report::Invalid { reason, .. }] if reason.contains("chunk 1"))
        );
        let clip = out.path().join("s").join(event.to_string()).join("cam.mp4");
        assert!(
            !clip.exists(),
            "a clip that fails verification is never presented"
        );
        let reports = receiver.news(&format!("{base}/1"), &data[250..]).unwrap();
        assert!(matches!(reports.as_slice(), [Report::Clip { .. }]));
        assert_eq!(fs::read(clip).unwrap(), data);
    }

    #[test]
    fn a_manifest_that_disagrees_with_verified_chunks_is_reported() {
        let (out, device) = (tempfile::tempdir().unwrap(), Device::new());
        let mut receiver = device.trusted_by(out.path());
        let event = Uuid::now_v7();
        let data = vec![1u8; 100];
        let mut wrong = manifest(event, &data, 100);
        wrong.sha256 = "00".repeat(32);
        let base = format!("alertclip/v1/s/events/{event}/clip/cam");
        receiver
            .news(&base, &device.sign(&serde_json::to_vec(&wrong).unwrap()))
            .unwrap();
        let reports = receiver.news(&format!("{base}/0"), &data).unwrap();
        assert!(
            matches!(reports.as_slice(), [Report::Invalid { reason, .. }] if reason.contains("does not match the manifest"))
        );
        assert!(
            !out.path()
                .join("s")
                .join(event.to_string())
                .join("cam.mp4")
                .exists()
        );
    }

    /// What a forger can publish on a box's topics: a clip under a manifest of no signature
    /// or another key (before or after the genuine one), a genuine manifest republished
    /// under another event, a chunk sent again under a genuine index. None is shown as
    /// verified, and none keeps the genuine clip from being.
    #[test]
    fn forged_clips_are_kept_apart_and_never_displace_the_genuine_one() {
        let (out, device, forger) = (tempfile::tempdir().unwrap(), Device::new(), Device::new());
        let mut receiver = device.trusted_by(out.path());
        let event = Uuid::now_v7();
        let dir = out.path().join("s").join(event.to_string());
        let base = format!("alertclip/v1/s/events/{event}/clip/cam");
        let genuine = vec![9u8; 200];
        let fake = vec![6u8; 200];

        // The forgery first: chunks and a manifest signed by another key, then one unsigned.
        for (n, chunk) in fake.chunks(100).enumerate() {
            receiver.handle(&format!("{base}/{n}"), chunk).unwrap();
        }
        let forged = forger.sign(&serde_json::to_vec(&manifest(event, &fake, 100)).unwrap());
        let reports = receiver.handle(&base, &forged).unwrap();
        assert_eq!(words(&reports), vec!["clip:untrusted"]);
        let mut line = Vec::new();
        print(&mut line, &reports[0], true).unwrap();
        assert!(String::from_utf8_lossy(&line).contains(r#""verified":false"#));
        assert_eq!(fs::read(dir.join("cam.unverified.mp4")).unwrap(), fake);
        assert!(!dir.join("cam.mp4").exists());

        // The genuine clip, its first chunk overwritten by a forger after it arrived.
        receiver
            .handle(&format!("{base}/0"), &genuine[..100])
            .unwrap();
        let reports = receiver.handle(&format!("{base}/0"), &fake[..100]).unwrap();
        assert!(reports.is_empty(), "{reports:?}");
        receiver
            .handle(&format!("{base}/1"), &genuine[100..])
            .unwrap();
        let signed = device.sign(&serde_json::to_vec(&manifest(event, &genuine, 100)).unwrap());
        assert_eq!(
            words(&receiver.handle(&base, &signed).unwrap()),
            vec!["clip:valid"]
        );
        assert_eq!(fs::read(dir.join("cam.mp4")).unwrap(), genuine);
        // A forged manifest after the genuine one changes nothing verified.
        let reports = receiver.handle(&base, &forged).unwrap();
        assert!(!words(&reports).contains(&"clip:valid".to_owned()));
        assert_eq!(fs::read(dir.join("cam.mp4")).unwrap(), genuine);

        // The genuine manifest republished under another event vouches for nothing.
        let elsewhere = Uuid::now_v7();
        let reports = receiver
            .handle(
                &format!("alertclip/v1/s/events/{elsewhere}/clip/cam"),
                &signed,
            )
            .unwrap();
        assert!(
            matches!(reports.as_slice(), [Report::Invalid { reason, .. }] if reason.contains("not where it was published")),
            "{reports:?}"
        );
    }

    #[test]
    fn a_manifest_whose_hashes_are_not_hashes_is_refused_and_never_crashes_a_restart() {
        let (out, device) = (tempfile::tempdir().unwrap(), Device::new());
        let mut receiver = device.trusted_by(out.path());
        let event = Uuid::now_v7();
        let base = format!("alertclip/v1/s/events/{event}/clip/cam");
        let mut odd = manifest(event, &[1u8; 10], 10);
        odd.chunk_sha256 = vec![format!("{}€", "a".repeat(15))];
        for signed in [false, true] {
            let json = serde_json::to_vec(&odd).unwrap();
            let payload = if signed { device.sign(&json) } else { json };
            let reports = receiver.handle(&base, &payload).unwrap();
            assert!(
                matches!(reports.as_slice(), [Report::Invalid { reason, .. }] if reason.contains("not SHA-256")),
                "{reports:?}"
            );
        }
        receiver.handle(&format!("{base}/0"), &[1u8; 10]).unwrap();
        Receiver::new(out.path(), TopicLayout::default())
            .resume()
            .unwrap();
    }

    #[test]
    fn a_key_registered_for_one_site_vouches_for_no_other() {
        let (out, device) = (tempfile::tempdir().unwrap(), Device::new());
        let mut receiver = device.trusted_by(out.path());
        let event = Uuid::now_v7();
        let data = vec![4u8; 100];
        let mut elsewhere = manifest(event, &data, 100);
        elsewhere.site_id = "other".into();
        let base = format!("alertclip/v1/other/events/{event}/clip/cam");
        receiver.handle(&format!("{base}/0"), &data).unwrap();
        let reports = receiver
            .handle(
                &base,
                &device.sign(&serde_json::to_vec(&elsewhere).unwrap()),
            )
            .unwrap();
        assert_eq!(words(&reports), vec!["clip:untrusted"]);
    }

    #[test]
    fn a_restart_removes_the_temporaries_a_killed_receiver_left_and_not_the_ones_being_written() {
        let (out, device) = (tempfile::tempdir().unwrap(), Device::new());
        let mut receiver = device.trusted_by(out.path());
        let event = Uuid::now_v7();
        receiver
            .handle(
                &format!("alertclip/v1/s/events/{event}"),
                &device.alert(event, "till"),
            )
            .unwrap();
        let dir = out.path().join("s").join(event.to_string());
        let left = crate::store::temporary(&dir.join("cam.mp4"));
        let writing = crate::store::temporary(&dir.join("cam.mp4"));
        for path in [&left, &writing] {
            fs::write(path, b"half a clip").unwrap();
        }
        fs::File::options()
            .write(true)
            .open(&left)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - STALE_TEMPORARY)
            .unwrap();
        Receiver::new(out.path(), TopicLayout::default())
            .resume()
            .unwrap();
        assert!(!left.exists(), "a killed receiver's temporary stays");
        assert!(writing.exists(), "a temporary being written is removed");
        assert!(dir.join("alert.json").exists());
    }

    #[test]
    fn reassembly_resumes_after_a_restart() {
        let out = tempfile::tempdir().unwrap();
        let event = Uuid::now_v7();
        let data = vec![3u8; 200];
        let base = format!("alertclip/v1/s/events/{event}/clip/cam");
        {
            let mut receiver = Receiver::new(out.path(), TopicLayout::default());
            receiver.handle(&format!("{base}/0"), &data[..100]).unwrap();
            receiver.handle(&format!("{base}/1"), &data[100..]).unwrap();
            // The manifest is written, then the process dies before reassembling.
            fs::write(
                out.path()
                    .join("s")
                    .join(event.to_string())
                    .join("cam.manifest.json"),
                serde_json::to_vec(&manifest(event, &data, 100)).unwrap(),
            )
            .unwrap();
        }
        let reports = Receiver::new(out.path(), TopicLayout::default())
            .resume()
            .unwrap();
        assert!(matches!(reports.as_slice(), [Report::Clip { .. }]));
    }

    #[test]
    fn hostile_names_are_ignored() {
        let out = tempfile::tempdir().unwrap();
        let mut receiver = Receiver::new(out.path(), TopicLayout::default());
        let event = Uuid::now_v7();
        assert!(
            receiver
                .handle(
                    &format!("alertclip/v1/../events/{event}/snapshot/cam"),
                    b"x"
                )
                .unwrap()
                .is_empty()
        );
        assert!(
            receiver
                .handle(&format!("alertclip/v1/s/events/{event}/snapshot/..."), b"x")
                .unwrap()
                .is_empty()
        );
        assert!(
            receiver
                .handle(
                    &format!("alertclip/v1/s/events/{event}/clip/cam/99999999"),
                    b"x"
                )
                .unwrap()
                .is_empty()
        );
        assert!(
            !out.path()
                .join("s")
                .join(event.to_string())
                .join("snapshot-....jpg")
                .exists()
        );
    }
}
