//! The outbox: a durable spool of everything waiting for the broker.
//!
//! Every message is on disk (written under a temporary name, synced, renamed, directory
//! synced) before it is handed to the MQTT client, and leaves the disk only once the broker
//! has acknowledged it. After a broker outage, a restart, SIGKILL or a power cut, delivery
//! resumes from what is on disk. Delivery is at least once: a message acknowledged just before
//! a crash may go again, so receivers deduplicate.
//!
//! Clips are not copied into chunk files: the finished MP4 is pinned into the outbox (a hard
//! link where the file system allows, a copy otherwise) and chunks are read from it as they are
//! sent. Their acknowledgements advance a watermark saved beside it every few chunks, so an SD
//! card is written once per clip, not twice.
//!
//! File names give the delivery order: `<class>-<event id>-<rank>`. Alerts (class 0) go before
//! health alerts (class 1), and both before any event's media (class 2): the officer hears of
//! the newest incident at once, not after a backlog of video. Event ids are UUIDv7, so within
//! a class events go oldest first; within an event the rank orders snapshots, then each
//! camera's chunks, then its manifest. An event update is in the alerts' class under a fresh
//! UUIDv7 of its own, not its event's: alerts and updates then go in the order they were
//! chained, which is the order a receiver follows the chain in.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::sys::{Reserve, annotate, hidden_temp, write_durably};

/// Acknowledged chunks are saved after this many, and at the end.
const SAVE_PROGRESS_EVERY: u32 = 16;
/// Marks the start of a message file.
const MAGIC: &[u8; 4] = b"ACM1";
/// Space held in the outbox's file system for alerts, which clips cannot take: room for a
/// dozen alerts of the largest size an alert can have.
pub const ALERT_RESERVE: u64 = 1 << 20;
/// The reserve's file: a name without an extension, which loading passes over.
const RESERVE_FILE: &str = "alert-reserve";

/// How urgent a message is; lower goes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// An event's alert.
    Alert = 0,
    /// A health alert.
    Health = 1,
    /// An event's snapshots, clips and manifests.
    Media = 2,
}

/// Where a message sorts in the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Order {
    /// Urgency.
    pub class: Class,
    /// The event (or, for a health alert, a fresh UUIDv7): orders by time within a class.
    pub event: Uuid,
    /// Position within the event.
    pub rank: u16,
}

impl Order {
    fn stem(&self) -> String {
        format!("{}-{}-{:05}", self.class as u8, self.event, self.rank)
    }
}

/// A message to spool.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Where it sorts.
    pub order: Order,
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Whether the broker should retain it.
    pub retain: bool,
}

/// A clip to spool: its chunks go to `<topic>/<n>`, then `manifest` to `<topic>`.
#[derive(Debug, Clone)]
pub struct NewClip {
    /// Where the chunks sort; the manifest sorts right after.
    pub order: Order,
    /// The camera, for reports.
    pub camera: String,
    /// The manifest's topic.
    pub topic: String,
    /// The finished MP4 to pin.
    pub file: PathBuf,
    /// Chunk size.
    pub chunk_size: u64,
    /// The manifest payload.
    pub manifest: Vec<u8>,
    /// Whether the event came from the detector: such clips are dropped first when full.
    pub detection: bool,
}

/// Identifies one message in flight: a spooled message, or one chunk of a clip.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    stem: String,
    chunk: Option<u32>,
}

impl Key {
    /// The event whose alert this is, if it is an alert (not an event update, which sorts in
    /// the same class under a key of its own).
    pub fn alert_event(&self) -> Option<Uuid> {
        if self.chunk.is_none() && self.stem.starts_with("0-") && self.stem.ends_with("-00000") {
            event_of(&self.stem)
        } else {
            None
        }
    }
}

/// A message ready to publish.
#[derive(Debug, Clone)]
pub struct Ready {
    /// Hand this back to [`Outbox::ack`] once the broker acknowledged it.
    pub key: Key,
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Whether the broker should retain it.
    pub retain: bool,
}

/// Something the outbox gave up to stay within its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The event.
    pub event: Uuid,
    /// The camera.
    pub camera: String,
    /// Bytes freed.
    pub bytes: u64,
    /// Whether it was a detection clip.
    pub detection: bool,
}

/// What the outbox holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events with something still to deliver.
    pub events: u64,
    /// Bytes held.
    pub bytes: u64,
    /// Messages (or unacknowledged chunks) held.
    pub messages: u64,
    /// The oldest event with something still to deliver (event ids are time-ordered).
    pub oldest: Option<Uuid>,
}

/// The on-disk description of a pinned clip.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClipDescriptor {
    topic: String,
    camera: String,
    chunk_size: u64,
    bytes: u64,
    detection: bool,
}

#[derive(Debug)]
enum Entry {
    Message { path: PathBuf, bytes: u64 },
    Clip(ClipEntry),
}

#[derive(Debug)]
struct ClipEntry {
    mp4: PathBuf,
    descriptor: PathBuf,
    progress: PathBuf,
    info: ClipDescriptor,
    chunks: u32,
    /// Chunks below this are acknowledged.
    watermark: u32,
    /// Acknowledged chunks at or above the watermark.
    above: BTreeSet<u32>,
    /// Acknowledgements since the watermark was last saved.
    unsaved: u32,
}

#[derive(Debug, Default)]
struct Index {
    entries: BTreeMap<String, Entry>,
    bytes: u64,
    /// Stems of clips being spooled, not yet in `entries`.
    reserved: HashSet<String>,
}

impl Index {
    /// Adds an entry, counting its bytes (and no longer those of one it replaces).
    fn insert(&mut self, stem: String, entry: Entry) {
        self.bytes += entry.bytes();
        if let Some(old) = self.entries.insert(stem, entry) {
            self.bytes -= old.bytes();
        }
    }
}

impl Entry {
    fn bytes(&self) -> u64 {
        match self {
            Entry::Message { bytes, .. } => *bytes,
            Entry::Clip(clip) => clip.info.bytes,
        }
    }
}

/// The spool. Cheap to share behind an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    max_bytes: u64,
    index: Mutex<Index>,
    changed: Notify,
    reserve: Reserve,
}

impl Outbox {
    /// Opens (creating) the spool in `dir`, holding at most `max_bytes`, and loads what a
    /// previous run left: unfinished writes are discarded, the rest is delivered.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Outbox> {
        fs::create_dir_all(dir).map_err(|e| annotate(e, dir))?;
        let mut index = Index::default();
        let mut names: Vec<String> = fs::read_dir(dir)
            .map_err(|e| annotate(e, dir))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in &names {
            let path = dir.join(name);
            if name.starts_with('.') {
                let _ = fs::remove_file(&path);
                continue;
            }
            let Some((stem, extension)) = name.rsplit_once('.') else {
                continue;
            };
            match extension {
                "msg" => {
                    let bytes = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    index.bytes += bytes;
                    index
                        .entries
                        .insert(stem.to_owned(), Entry::Message { path, bytes });
                }
                "clip" => match load_clip(dir, stem) {
                    Ok(clip) => {
                        index.bytes += clip.info.bytes;
                        index.entries.insert(stem.to_owned(), Entry::Clip(clip));
                    }
                    Err(error) => {
                        tracing::warn!(file = %path.display(), %error, "discarding an unreadable clip in the outbox");
                        for extension in ["clip", "mp4", "acked"] {
                            let _ = fs::remove_file(dir.join(format!("{stem}.{extension}")));
                        }
                    }
                },
                "mp4" | "acked" if !names.contains(&format!("{stem}.clip")) => {
                    // Pinned, or its progress saved, but the descriptor never made it to disk
                    // (or the clip was dropped).
                    let _ = fs::remove_file(&path);
                }
                // The progress temporary of earlier versions, not hidden.
                "tmp" if stem.ends_with(".acked") => {
                    let _ = fs::remove_file(&path);
                }
                _ => {}
            }
        }
        Ok(Outbox {
            dir: dir.to_owned(),
            max_bytes,
            index: Mutex::new(index),
            changed: Notify::new(),
            reserve: Reserve::hold(&dir.join(RESERVE_FILE), ALERT_RESERVE),
        })
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        self.index
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Resolves when something is added. Create it before looking for work, so an addition
    /// in between is not missed.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// Spools a message durably. Returns what had to be dropped to make room. An alert that
    /// finds the disk full is written into the space held in reserve for alerts
    /// ([`Outbox::push_reserved`]).
    pub fn push(&self, message: NewMessage) -> io::Result<Vec<Dropped>> {
        if message.order.class == Class::Alert {
            return self.push_reserved(message);
        }
        let written = self.write_message(&message)?;
        Ok(self.enter(written))
    }

    /// Spools a message that may take the space held in reserve for alerts when the disk is
    /// full: alerts, and health alerts about the alert path itself.
    pub fn push_reserved(&self, message: NewMessage) -> io::Result<Vec<Dropped>> {
        let written = self.reserve.write(|| self.write_message(&message));
        self.reserve.replenish();
        Ok(self.enter(written?))
    }

    /// Adds a written message to the index.
    fn enter(&self, (stem, entry): (String, Entry)) -> Vec<Dropped> {
        let mut index = self.index();
        index.insert(stem, entry);
        let dropped = self.make_room(&mut index);
        drop(index);
        self.changed.notify_waiters();
        dropped
    }

    /// Writes a message's file, synced. Called outside the lock, since delivery reads the index
    /// meanwhile; stems are unique to one message, so no other writer has this file.
    fn write_message(&self, message: &NewMessage) -> io::Result<(String, Entry)> {
        let stem = message.order.stem();
        let path = self.dir.join(format!("{stem}.msg"));
        let mut bytes = Vec::with_capacity(message.payload.len() + message.topic.len() + 8);
        bytes.extend_from_slice(MAGIC);
        bytes.push(message.retain as u8);
        let topic_len = u16::try_from(message.topic.len()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "topic longer than 65535 bytes")
        })?;
        bytes.extend_from_slice(&topic_len.to_be_bytes());
        bytes.extend_from_slice(message.topic.as_bytes());
        bytes.extend_from_slice(&message.payload);
        if let Err(error) = write_durably(&path, &bytes) {
            // Renamed into place before a later step failed: it must not be delivered after
            // a restart as well as by whoever retries it (an alert's chain would see a replay).
            let _ = fs::remove_file(&path);
            return Err(error);
        }
        let entry = Entry::Message {
            path,
            bytes: bytes.len() as u64,
        };
        Ok((stem, entry))
    }

    /// Pins a finished clip and spools its chunks and manifest. Returns what had to be dropped
    /// to make room, which may be this clip. A clip already spooled (or being spooled) under
    /// the same event and camera is never replaced: the second is refused (`AlreadyExists`),
    /// the first kept whole. Chunks and manifest enter the index together, so delivery never
    /// sees the manifest before the chunks it describes.
    pub fn push_clip(&self, clip: NewClip) -> io::Result<Vec<Dropped>> {
        let stem = clip.order.stem();
        let manifest_order = Order {
            rank: clip.order.rank + 1,
            ..clip.order
        };
        let manifest_stem = manifest_order.stem();
        {
            let mut index = self.index();
            let taken = [&stem, &manifest_stem]
                .iter()
                .any(|s| index.entries.contains_key(*s) || index.reserved.contains(*s));
            if taken {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "the outbox already holds a clip of camera {} for this event ({stem}); the new one is not spooled",
                        clip.camera
                    ),
                ));
            }
            index.reserved.insert(stem.clone());
            index.reserved.insert(manifest_stem.clone());
        }
        let written = self.write_clip(&stem, manifest_order, clip);
        let mut index = self.index();
        index.reserved.remove(&stem);
        index.reserved.remove(&manifest_stem);
        let (manifest, entry) = written?;
        index.insert(manifest_stem, manifest);
        index.insert(stem, Entry::Clip(entry));
        let dropped = self.make_room(&mut index);
        drop(index);
        self.changed.notify_waiters();
        Ok(dropped)
    }

    /// Pins the clip and writes its manifest and descriptor, synced, outside the lock; on
    /// failure removes what it wrote.
    fn write_clip(
        &self,
        stem: &str,
        manifest_order: Order,
        clip: NewClip,
    ) -> io::Result<(Entry, ClipEntry)> {
        let mp4 = self.dir.join(format!("{stem}.mp4"));
        let descriptor = self.dir.join(format!("{stem}.clip"));
        let manifest_path = self.dir.join(format!("{}.msg", manifest_order.stem()));
        let result = (|| {
            let bytes = fs::metadata(&clip.file)
                .map_err(|e| annotate(e, &clip.file))?
                .len();
            pin(&clip.file, &mp4)?;
            let info = ClipDescriptor {
                topic: clip.topic.clone(),
                camera: clip.camera.clone(),
                chunk_size: clip.chunk_size.max(1),
                bytes,
                detection: clip.detection,
            };
            let json = serde_json::to_vec(&info).map_err(io::Error::other)?;
            // The manifest first: a clip on disk always has the manifest that completes it.
            let (_, manifest) = self.write_message(&NewMessage {
                order: manifest_order,
                topic: clip.topic,
                payload: clip.manifest,
                retain: false,
            })?;
            write_durably(&descriptor, &json)?;
            let entry = ClipEntry {
                mp4: mp4.clone(),
                progress: self.dir.join(format!("{stem}.acked")),
                descriptor: descriptor.clone(),
                chunks: chunk_count(bytes, info.chunk_size),
                info,
                watermark: 0,
                above: BTreeSet::new(),
                unsaved: 0,
            };
            Ok((manifest, entry))
        })();
        if result.is_err() {
            for path in [&descriptor, &manifest_path, &mp4] {
                let _ = fs::remove_file(path);
            }
        }
        result
    }

    /// Drops clips, detection events' first and oldest first, until the spool fits. Alerts and
    /// other messages are never dropped, even when that leaves the spool over its size.
    fn make_room(&self, index: &mut Index) -> Vec<Dropped> {
        let mut dropped = Vec::new();
        while index.bytes > self.max_bytes {
            match drop_first_clip(index, None) {
                Some(clip) => dropped.push(clip),
                None => {
                    tracing::warn!(
                        bytes = index.bytes,
                        max = self.max_bytes,
                        "outbox over its size with nothing left to drop"
                    );
                    break;
                }
            }
        }
        dropped
    }

    /// Drops the clip that goes first when space runs short (a detection event's before a
    /// panic's, oldest first), for a disk that fills before the outbox does. `None` when no
    /// clip is left; alerts and other messages are never dropped.
    pub fn drop_one_clip(&self, keep: Uuid) -> Option<Dropped> {
        drop_first_clip(&mut self.index(), Some(keep))
    }

    /// The first message in delivery order that is not in `in_flight`, read from disk.
    pub fn next(&self, in_flight: &HashSet<Key>) -> io::Result<Option<Ready>> {
        let index = self.index();
        for (stem, entry) in &index.entries {
            match entry {
                Entry::Message { path, .. } => {
                    let key = Key {
                        stem: stem.clone(),
                        chunk: None,
                    };
                    if in_flight.contains(&key) {
                        continue;
                    }
                    let (topic, payload, retain) = read_message(path)?;
                    return Ok(Some(Ready {
                        key,
                        topic,
                        payload,
                        retain,
                    }));
                }
                Entry::Clip(clip) => {
                    let next = (clip.watermark..clip.chunks).find(|n| {
                        !clip.above.contains(n)
                            && !in_flight.contains(&Key {
                                stem: stem.clone(),
                                chunk: Some(*n),
                            })
                    });
                    let Some(n) = next else { continue };
                    let payload = read_chunk(&clip.mp4, n, clip.info.chunk_size, clip.info.bytes)?;
                    return Ok(Some(Ready {
                        key: Key {
                            stem: stem.clone(),
                            chunk: Some(n),
                        },
                        topic: format!("{}/{n}", clip.info.topic),
                        payload,
                        retain: false,
                    }));
                }
            }
        }
        Ok(None)
    }

    /// Records the broker's acknowledgement: the message leaves the disk (a clip once all its
    /// chunks are acknowledged). Keys of entries dropped meanwhile are ignored.
    pub fn ack(&self, key: &Key) -> io::Result<()> {
        let mut index = self.index();
        // Files are removed once the lock is released. Progress is saved under it (a small
        // write, not synced), so a clip dropped meanwhile cannot leave an orphan record.
        let mut remove = Vec::new();
        let done = match (index.entries.get_mut(&key.stem), key.chunk) {
            (Some(Entry::Message { path, bytes }), None) => {
                remove.push(path.clone());
                Some(*bytes)
            }
            (Some(Entry::Clip(clip)), Some(n)) if n >= clip.watermark => {
                clip.above.insert(n);
                while clip.above.remove(&clip.watermark) {
                    clip.watermark += 1;
                }
                clip.unsaved += 1;
                if clip.watermark >= clip.chunks {
                    remove.extend([
                        clip.mp4.clone(),
                        clip.descriptor.clone(),
                        clip.progress.clone(),
                    ]);
                    Some(clip.info.bytes)
                } else {
                    if clip.unsaved >= SAVE_PROGRESS_EVERY {
                        save_progress(&clip.progress, clip.watermark)?;
                        clip.unsaved = 0;
                    }
                    None
                }
            }
            _ => None,
        };
        if let Some(bytes) = done {
            index.entries.remove(&key.stem);
            index.bytes -= bytes;
        }
        drop(index);
        for path in &remove {
            // A delivered message left on disk would go again after a restart: say so. What a
            // finished clip leaves behind is only space.
            if let Err(error) = fs::remove_file(path)
                && key.chunk.is_none()
            {
                return Err(annotate(error, path));
            }
        }
        Ok(())
    }

    /// Sets a message aside that can never be sent (renamed `<name>.rejected`, kept for a
    /// technician to inspect). Returns where it went.
    pub fn reject(&self, key: &Key) -> io::Result<Option<PathBuf>> {
        let mut index = self.index();
        let Some(Entry::Message { path, bytes }) = index.entries.get(&key.stem) else {
            return Ok(None);
        };
        let (path, bytes) = (path.clone(), *bytes);
        let rejected = path.with_extension("rejected");
        fs::rename(&path, &rejected).map_err(|e| annotate(e, &path))?;
        index.entries.remove(&key.stem);
        index.bytes -= bytes;
        Ok(Some(rejected))
    }

    /// What the spool holds.
    pub fn stats(&self) -> Stats {
        let index = self.index();
        let mut events = HashSet::new();
        let mut messages = 0;
        for (stem, entry) in &index.entries {
            // Health alerts and event updates sort under keys of their own, not an event's.
            let own_key =
                stem.starts_with('1') || (stem.starts_with("0-") && !stem.ends_with("-00000"));
            if !own_key && let Some(event) = event_of(stem) {
                events.insert(event);
            }
            messages += match entry {
                Entry::Message { .. } => 1,
                Entry::Clip(clip) => {
                    u64::from(clip.chunks - clip.watermark) - clip.above.len() as u64
                }
            };
        }
        Stats {
            oldest: events.iter().min().copied(),
            events: events.len() as u64,
            bytes: index.bytes,
            messages,
        }
    }

    /// The most the spool holds before dropping clips.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Bytes held in reserve for alerts now: less than [`ALERT_RESERVE`] after alerts found
    /// the disk full, until it has room again.
    pub fn reserve_bytes(&self) -> u64 {
        self.reserve.bytes()
    }

    /// Takes back reserve space the disk has room for again.
    pub fn replenish_reserve(&self) {
        self.reserve.replenish();
    }
}

/// Removes the clip that goes first (see [`Outbox::drop_one_clip`]) with its manifest, never
/// one of `keep`'s.
fn drop_first_clip(index: &mut Index, keep: Option<Uuid>) -> Option<Dropped> {
    let (_, stem) = index
        .entries
        .iter()
        .filter(|(stem, _)| keep.is_none() || event_of(stem) != keep)
        .filter_map(|(stem, entry)| match entry {
            Entry::Clip(clip) => Some((!clip.info.detection, stem.clone())),
            Entry::Message { .. } => None,
        })
        .min()?;
    let Some(Entry::Clip(clip)) = index.entries.remove(&stem) else {
        return None;
    };
    for path in [&clip.mp4, &clip.descriptor, &clip.progress] {
        let _ = fs::remove_file(path);
    }
    index.bytes -= clip.info.bytes;
    // Its manifest would describe chunks that never come.
    if let Some(manifest) = manifest_stem(&stem)
        && let Some(Entry::Message { path, bytes }) = index.entries.remove(&manifest)
    {
        let _ = fs::remove_file(&path);
        index.bytes -= bytes;
    }
    Some(Dropped {
        event: event_of(&stem).unwrap_or_default(),
        camera: clip.info.camera.clone(),
        bytes: clip.info.bytes,
        detection: clip.info.detection,
    })
}

fn chunk_count(bytes: u64, chunk_size: u64) -> u32 {
    u32::try_from(bytes.div_ceil(chunk_size).max(1)).unwrap_or(u32::MAX)
}

/// The manifest of the clip at `stem`: the next rank.
fn manifest_stem(stem: &str) -> Option<String> {
    let (head, rank) = stem.rsplit_once('-')?;
    Some(format!("{head}-{:05}", rank.parse::<u16>().ok()? + 1))
}

/// The event id in a stem `<class>-<uuid>-<rank>`.
fn event_of(stem: &str) -> Option<Uuid> {
    let rest = stem.split_once('-')?.1;
    Uuid::parse_str(rest.rsplit_once('-')?.0).ok()
}

fn load_clip(dir: &Path, stem: &str) -> io::Result<ClipEntry> {
    let descriptor = dir.join(format!("{stem}.clip"));
    let info: ClipDescriptor =
        serde_json::from_slice(&fs::read(&descriptor)?).map_err(io::Error::other)?;
    let mp4 = dir.join(format!("{stem}.mp4"));
    let on_disk = fs::metadata(&mp4)?.len();
    if on_disk != info.bytes {
        return Err(io::Error::other(format!(
            "pinned clip is {on_disk} bytes, expected {}",
            info.bytes
        )));
    }
    let progress = dir.join(format!("{stem}.acked"));
    let watermark = fs::read_to_string(&progress)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    Ok(ClipEntry {
        mp4,
        descriptor,
        progress,
        chunks: chunk_count(info.bytes, info.chunk_size),
        info,
        watermark,
        above: BTreeSet::new(),
        unsaved: 0,
    })
}

/// Records a clip's acknowledged chunks. Not synced: the record only saves resending, and one
/// lost to a power cut (a missing or empty file) means resending from the start, which
/// receivers tolerate. The rename keeps a half-written number from ever being read.
fn save_progress(path: &Path, watermark: u32) -> io::Result<()> {
    let temp = progress_temp(path);
    fs::write(&temp, watermark.to_string()).map_err(|e| annotate(e, &temp))?;
    fs::rename(&temp, path).map_err(|e| annotate(e, path))
}

/// The temporary a progress record is written through: hidden, like every temporary, so a
/// crash leaves it for the next open to remove.
fn progress_temp(progress: &Path) -> PathBuf {
    hidden_temp(progress)
}

/// Pins `from` at `to`: a hard link when possible (same file system, no copy), else a synced
/// copy through a temporary.
fn pin(from: &Path, to: &Path) -> io::Result<()> {
    let _ = fs::remove_file(to);
    if fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    let temp = hidden_temp(to);
    fs::copy(from, &temp).map_err(|e| annotate(e, from))?;
    File::open(&temp)
        .and_then(|f| f.sync_all())
        .map_err(|e| annotate(e, &temp))?;
    crate::sys::rename_durably(&temp, to)
}

fn read_message(path: &Path) -> io::Result<(String, Vec<u8>, bool)> {
    let bytes = fs::read(path).map_err(|e| annotate(e, path))?;
    let corrupt = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: not an outbox message", path.display()),
        )
    };
    if bytes.len() < 7 || &bytes[..4] != MAGIC {
        return Err(corrupt());
    }
    let retain = bytes[4] != 0;
    let topic_len = u16::from_be_bytes([bytes[5], bytes[6]]) as usize;
    let topic = bytes.get(7..7 + topic_len).ok_or_else(corrupt)?;
    let topic = String::from_utf8(topic.to_vec()).map_err(|_| corrupt())?;
    Ok((topic, bytes[7 + topic_len..].to_vec(), retain))
}

fn read_chunk(path: &Path, n: u32, chunk_size: u64, total: u64) -> io::Result<Vec<u8>> {
    let offset = u64::from(n) * chunk_size;
    let len = chunk_size.min(total.saturating_sub(offset)) as usize;
    let mut file = File::open(path).map_err(|e| annotate(e, path))?;
    file.seek(SeekFrom::Start(offset))?;
    let mut chunk = vec![0; len];
    file.read_exact(&mut chunk).map_err(|e| annotate(e, path))?;
    Ok(chunk)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the outbox holds on disk, besides its reserve.
    fn spooled(dir: impl AsRef<Path>) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name != RESERVE_FILE)
            .collect()
    }

    fn message(class: Class, event: Uuid, rank: u16, text: &str) -> NewMessage {
        NewMessage {
            order: Order { class, event, rank },
            topic: format!("t/{text}"),
            payload: text.as_bytes().to_vec(),
            retain: false,
        }
    }

    fn clip(dir: &Path, event: Uuid, rank: u16, bytes: usize, detection: bool) -> NewClip {
        let file = dir.join(format!("{event}-{rank}.mp4"));
        let content: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
        fs::write(&file, content).unwrap();
        NewClip {
            order: Order {
                class: Class::Media,
                event,
                rank,
            },
            camera: format!("cam{rank}"),
            topic: format!("c/{event}/{rank}"),
            file,
            chunk_size: 100,
            manifest: b"manifest".to_vec(),
            detection,
        }
    }

    /// Sends everything in order with one message in flight at a time, acknowledging each.
    fn drain(outbox: &Outbox) -> Vec<(String, Vec<u8>)> {
        let mut sent = Vec::new();
        while let Some(ready) = outbox.next(&HashSet::new()).unwrap() {
            outbox.ack(&ready.key).unwrap();
            sent.push((ready.topic, ready.payload));
        }
        sent
    }

    #[test]
    fn alerts_go_before_media_and_events_keep_their_order() {
        let root = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&root.path().join("outbox"), u64::MAX).unwrap();
        let (old, new) = (Uuid::now_v7(), Uuid::now_v7());
        outbox
            .push(message(Class::Alert, old, 0, "alert-old"))
            .unwrap();
        outbox
            .push(message(Class::Media, old, 100, "snapshot-old"))
            .unwrap();
        outbox
            .push_clip(clip(root.path(), old, 1000, 250, false))
            .unwrap();
        outbox
            .push(message(Class::Media, new, 100, "snapshot-new"))
            .unwrap();
        outbox
            .push(message(Class::Alert, new, 0, "alert-new"))
            .unwrap();
        outbox
            .push(message(Class::Health, Uuid::now_v7(), 0, "health"))
            .unwrap();
        assert_eq!(outbox.stats().oldest, Some(old));
        assert_eq!(outbox.stats().events, 2, "health messages are not events");
        let topics: Vec<String> = drain(&outbox).into_iter().map(|(t, _)| t).collect();
        let old_clip = format!("c/{old}/1000");
        assert_eq!(
            topics,
            vec![
                "t/alert-old".to_owned(),
                "t/alert-new".into(),
                "t/health".into(),
                "t/snapshot-old".into(),
                format!("{old_clip}/0"),
                format!("{old_clip}/1"),
                format!("{old_clip}/2"),
                old_clip,
                "t/snapshot-new".into(),
            ]
        );
        assert_eq!(outbox.stats(), Stats::default());
        assert_eq!(
            spooled(root.path().join("outbox")),
            Vec::<String>::new(),
            "everything acknowledged leaves the disk"
        );
    }

    #[test]
    fn chunks_reassemble_into_the_clip() {
        let root = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&root.path().join("outbox"), u64::MAX).unwrap();
        let new = clip(root.path(), Uuid::now_v7(), 1000, 1234, false);
        let original = fs::read(&new.file).unwrap();
        outbox.push_clip(new).unwrap();
        let sent = drain(&outbox);
        assert_eq!(sent.len(), 14);
        let rebuilt: Vec<u8> = sent[..13].iter().flat_map(|(_, p)| p.clone()).collect();
        assert_eq!(rebuilt, original);
        assert_eq!(sent[13].1, b"manifest");
    }

    #[test]
    fn nothing_is_lost_across_a_restart_and_unacknowledged_messages_go_again() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("outbox");
        let event = Uuid::now_v7();
        {
            let outbox = Outbox::open(&dir, u64::MAX).unwrap();
            outbox
                .push(message(Class::Alert, event, 0, "alert"))
                .unwrap();
            outbox
                .push_clip(clip(root.path(), event, 1000, 5_000, false))
                .unwrap();
            // The alert and 20 chunks are sent; the alert and chunks 0..=19 acknowledged,
            // except chunk 7. Then the process dies.
            let mut in_flight = HashSet::new();
            for _ in 0..21 {
                let ready = outbox.next(&in_flight).unwrap().unwrap();
                in_flight.insert(ready.key);
            }
            let mut keys: Vec<Key> = in_flight
                .into_iter()
                .filter(|k| k.chunk != Some(7))
                .collect();
            keys.sort();
            for key in &keys {
                outbox.ack(key).unwrap();
            }
            // The manifest and 31 chunks (7, and 20 to 49) are left.
            assert_eq!(outbox.stats().messages, 32);
        }
        // Also a write interrupted by the crash.
        fs::write(dir.join(".1-x.msg.partial"), b"half").unwrap();
        let outbox = Outbox::open(&dir, u64::MAX).unwrap();
        let sent = drain(&outbox);
        let topics: Vec<&str> = sent.iter().map(|(t, _)| t.as_str()).collect();
        // The saved watermark (16 chunks) is where delivery resumes: chunks 7 and on go
        // again, some of them twice over the two runs. None is skipped.
        let prefix = format!("c/{event}/1000/");
        let chunks: Vec<u32> = topics
            .iter()
            .filter_map(|t| t.strip_prefix(&prefix))
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(chunks, (7..50).collect::<Vec<_>>());
        assert_eq!(topics.last(), Some(&format!("c/{event}/1000").as_str()));
        assert!(!dir.join(".1-x.msg.partial").exists());
    }

    #[test]
    fn when_full_detection_clips_go_first_then_the_oldest_and_alerts_never() {
        let root = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&root.path().join("outbox"), 3_500).unwrap();
        let events: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
        outbox
            .push(message(Class::Alert, events[0], 0, "alert0"))
            .unwrap();
        assert!(
            outbox
                .push_clip(clip(root.path(), events[0], 1000, 1000, false))
                .unwrap()
                .is_empty()
        );
        assert!(
            outbox
                .push_clip(clip(root.path(), events[1], 1000, 1000, true))
                .unwrap()
                .is_empty()
        );
        assert!(
            outbox
                .push_clip(clip(root.path(), events[2], 1000, 1000, false))
                .unwrap()
                .is_empty()
        );
        // Over the size: the detection clip goes, though it is not the oldest.
        let dropped = outbox
            .push_clip(clip(root.path(), events[3], 1000, 1000, false))
            .unwrap();
        assert_eq!(
            dropped,
            vec![Dropped {
                event: events[1],
                camera: "cam1000".into(),
                bytes: 1000,
                detection: true
            }]
        );
        // Then the oldest panic clip.
        let dropped = outbox
            .push(NewMessage {
                payload: vec![0; 600],
                ..message(Class::Alert, events[3], 0, "alert3")
            })
            .unwrap();
        assert_eq!(
            dropped.iter().map(|d| d.event).collect::<Vec<_>>(),
            vec![events[0]]
        );
        // Alerts are kept even past the size.
        for event in &events {
            outbox
                .push(NewMessage {
                    payload: vec![0; 2_000],
                    ..message(Class::Alert, *event, 0, "big")
                })
                .unwrap();
        }
        let sent = drain(&outbox);
        assert_eq!(sent.iter().filter(|(t, _)| t == "t/big").count(), 4);
        // No manifest of a dropped clip is sent.
        assert!(
            !sent
                .iter()
                .any(|(t, _)| t == &format!("c/{}/1000", events[1]))
        );
    }

    #[test]
    fn in_flight_messages_are_skipped_and_stale_keys_ignored() {
        let root = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&root.path().join("outbox"), u64::MAX).unwrap();
        let event = Uuid::now_v7();
        outbox.push(message(Class::Alert, event, 0, "a")).unwrap();
        outbox.push(message(Class::Alert, event, 1, "b")).unwrap();
        let first = outbox.next(&HashSet::new()).unwrap().unwrap();
        let second = outbox
            .next(&HashSet::from([first.key.clone()]))
            .unwrap()
            .unwrap();
        assert_eq!(
            (first.topic.as_str(), second.topic.as_str()),
            ("t/a", "t/b")
        );
        assert!(
            outbox
                .next(&HashSet::from([first.key.clone(), second.key.clone()]))
                .unwrap()
                .is_none()
        );
        outbox.ack(&first.key).unwrap();
        outbox.ack(&first.key).unwrap();
        assert_eq!(outbox.stats().messages, 1);
    }

    #[test]
    fn a_message_that_cannot_be_sent_is_set_aside_not_lost() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("outbox");
        let outbox = Outbox::open(&dir, u64::MAX).unwrap();
        let event = Uuid::now_v7();
        outbox
            .push(message(Class::Media, event, 1, "huge"))
            .unwrap();
        outbox
            .push(message(Class::Media, event, 2, "next"))
            .unwrap();
        let huge = outbox.next(&HashSet::new()).unwrap().unwrap();
        let aside = outbox.reject(&huge.key).unwrap().unwrap();
        assert!(aside.exists() && aside.extension().unwrap() == "rejected");
        assert_eq!(
            drain(&outbox)
                .into_iter()
                .map(|(t, _)| t)
                .collect::<Vec<_>>(),
            vec!["t/next".to_owned()]
        );
        // Not picked up again after a restart.
        assert!(
            Outbox::open(&dir, u64::MAX)
                .unwrap()
                .next(&HashSet::new())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_pinned_clip_survives_the_original_being_deleted() {
        let root = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&root.path().join("outbox"), u64::MAX).unwrap();
        let new = clip(root.path(), Uuid::now_v7(), 1000, 300, false);
        let original = new.file.clone();
        outbox.push_clip(new).unwrap();
        fs::remove_file(&original).unwrap();
        assert_eq!(drain(&outbox).len(), 4);
    }

    /// Acknowledges the next `n` messages, in order.
    fn ack_next(outbox: &Outbox, n: usize) {
        for _ in 0..n {
            let ready = outbox.next(&HashSet::new()).unwrap().unwrap();
            outbox.ack(&ready.key).unwrap();
        }
    }

    #[test]
    fn a_second_clip_under_the_same_key_is_refused_and_the_first_kept_whole() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("outbox");
        let outbox = Outbox::open(&dir, u64::MAX).unwrap();
        let event = Uuid::now_v7();
        let first = clip(root.path(), event, 1000, 2000, false);
        outbox.push_clip(first).unwrap();
        // Nineteen of its twenty chunks acknowledged: its progress is on disk.
        ack_next(&outbox, 19);
        assert!(
            fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .any(|e| e.path().extension() == Some("acked".as_ref()))
        );
        let held = outbox.stats().bytes;

        let mut second = clip(root.path(), Uuid::now_v7(), 1000, 500, false);
        second.order.event = event;
        let error = outbox.push_clip(second).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists, "{error}");
        assert_eq!(outbox.stats().bytes, held, "the count is the first clip's");

        // What is still delivered is the rest of the first clip, then its manifest.
        let rest = drain(&outbox);
        assert_eq!(rest.len(), 2);
        assert_eq!(rest[0].0, format!("c/{event}/1000/19"));
        assert_eq!(rest[1].1, b"manifest");
        assert_eq!(outbox.stats().bytes, 0);
        let left: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name != RESERVE_FILE)
            .collect();
        assert!(left.is_empty(), "nothing left behind: {left:?}");
    }

    #[test]
    fn a_crash_while_saving_progress_leaves_nothing_behind() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("outbox");
        let outbox = Outbox::open(&dir, u64::MAX).unwrap();
        let new = clip(root.path(), Uuid::now_v7(), 1000, 2000, false);
        let stem = new.order.stem();
        outbox.push_clip(new).unwrap();
        ack_next(&outbox, 16);
        // The temporary a save interrupted by a power cut leaves.
        let progress = dir.join(format!("{stem}.acked"));
        fs::write(progress_temp(&progress), b"3").unwrap();
        drop(outbox);
        let reopened = Outbox::open(&dir, u64::MAX).unwrap();
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name != RESERVE_FILE)
            .collect();
        for name in &names {
            let known = [".msg", ".clip", ".mp4", ".acked"];
            assert!(
                !name.starts_with('.') && known.iter().any(|ext| name.ends_with(ext)),
                "{name} left in the outbox: {names:?}"
            );
        }
        // Delivery resumes after the saved watermark: 4 chunks and the manifest.
        assert_eq!(drain(&reopened).len(), 5);
    }

    #[test]
    fn a_clip_whose_manifest_still_waits_keeps_its_key() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("outbox");
        let outbox = Outbox::open(&dir, u64::MAX).unwrap();
        let event = Uuid::now_v7();
        outbox
            .push_clip(clip(root.path(), event, 1000, 300, false))
            .unwrap();
        // Every chunk acknowledged; the manifest not yet.
        ack_next(&outbox, 3);
        let error = outbox
            .push_clip(clip(root.path(), event, 1000, 200, false))
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists, "{error}");
        let rest = drain(&outbox);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].1, b"manifest");
        // A stray progress record (its clip dropped or never described) goes at the next open.
        fs::write(dir.join(format!("2-{event}-01000.acked")), b"3").unwrap();
        fs::write(dir.join(format!("2-{event}-01000.acked.tmp")), b"3").unwrap();
        drop(outbox);
        Outbox::open(&dir, u64::MAX).unwrap();
        assert_eq!(spooled(&dir).len(), 0);
    }
}
