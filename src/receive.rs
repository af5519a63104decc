//! `alertclip receive`: the officer side. Subscribes to the alert channel, prints each alert as
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

use serde_json::json;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::publish::message::{Alert, Health, Manifest, Status, TopicKind};
use crate::publish::mqtt::{LinkEvent, Session, Settings};
use crate::storage::write_durably;

/// Largest chunk index accepted: a guard against a hostile or broken sender.
const MAX_CHUNKS: u32 = 1_000_000;

/// What the receiver does.
#[derive(Debug, Clone)]
pub struct ReceiveOptions {
    /// The broker and how to log in.
    pub settings: Settings,
    /// A site id, or `+` for every site.
    pub site: String,
    /// Where alerts, snapshots and clips are kept.
    pub out: PathBuf,
    /// One JSON object per line instead of readable lines.
    pub json: bool,
}

/// Something the receiver reports, as a line of output.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// A new alert.
    Alert { site: String, alert: Box<Alert> },
    /// A snapshot was saved.
    Snapshot {
        site: String,
        event: Uuid,
        camera: String,
        path: PathBuf,
    },
    /// A clip was reassembled and verified.
    Clip {
        site: String,
        event: Uuid,
        camera: String,
        path: PathBuf,
        manifest: Box<Manifest>,
    },
    /// A clip or chunk failed verification.
    Invalid {
        site: String,
        event: Uuid,
        camera: String,
        reason: String,
    },
    /// A health alert from a device.
    Health { site: String, health: Health },
    /// A device went online or offline.
    Status { site: String, state: String },
}

/// Runs until `cancel`, handing every report to `report` (the command prints them).
pub async fn run(
    options: ReceiveOptions,
    cancel: CancellationToken,
    mut report: impl FnMut(Report) -> io::Result<()>,
) -> anyhow::Result<()> {
    fs::create_dir_all(&options.out)?;
    let mut receiver = Receiver::new(&options.out);
    for resumed in receiver.resume()? {
        report(resumed)?;
    }
    let tracker = tokio_util::task::TaskTracker::new();
    let (session, mut events) = Session::<()>::start(&options.settings, &tracker, cancel.clone())?;
    let filters = [
        format!("alertclip/v1/{}/events/#", options.site),
        format!("alertclip/v1/{}/alerts", options.site),
        format!("alertclip/v1/{}/status", options.site),
    ];
    let mut failures = 0u32;
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => break,
            event = events.recv() => event,
        };
        match event {
            None => break,
            Some(LinkEvent::Connected) => {
                failures = 0;
                tracing::info!(broker = %options.settings.url, "connected; subscribing");
                for filter in &filters {
                    session.subscribe(filter);
                }
            }
            Some(LinkEvent::Disconnected(error)) => {
                failures += 1;
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(%error, failures, "broker connection lost or refused; retrying");
                }
            }
            Some(LinkEvent::Incoming { topic, payload }) => match receiver.handle(&topic, &payload)
            {
                Ok(reports) => {
                    for one in reports {
                        report(one)?;
                    }
                }
                Err(error) => tracing::error!(%topic, %error, "cannot store a received message"),
            },
            Some(LinkEvent::Acked(()))
            | Some(LinkEvent::Refused((), _))
            | Some(LinkEvent::TooLarge((), _)) => {}
        }
    }
    session.disconnect().await;
    Ok(())
}

/// The receiver's state: everything lives on disk; this only remembers device states to
/// print changes once.
pub struct Receiver {
    out: PathBuf,
    states: HashMap<String, String>,
}

impl Receiver {
    /// A receiver keeping its files under `out`.
    pub fn new(out: &Path) -> Receiver {
        Receiver {
            out: out.to_owned(),
            states: HashMap::new(),
        }
    }

    /// Finishes what a previous run left: clips whose chunks and manifest all arrived.
    pub fn resume(&mut self) -> io::Result<Vec<Report>> {
        let mut reports = Vec::new();
        for site in read_dirs(&self.out)? {
            for event_dir in read_dirs(&site)? {
                let (Some(site_id), Some(event)) = (
                    site.file_name().map(|n| n.to_string_lossy().into_owned()),
                    event_dir
                        .file_name()
                        .and_then(|n| Uuid::parse_str(&n.to_string_lossy()).ok()),
                ) else {
                    continue;
                };
                for entry in fs::read_dir(&event_dir)?.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if let Some(camera) = name.strip_suffix(".manifest.json") {
                        reports.extend(self.assemble(&site_id, event, camera)?);
                    }
                }
            }
        }
        Ok(reports)
    }

    /// Stores one received message; returns what is worth reporting.
    pub fn handle(&mut self, topic: &str, payload: &[u8]) -> io::Result<Vec<Report>> {
        let Some(kind) = TopicKind::parse(topic) else {
            tracing::debug!(%topic, "ignoring an unknown topic");
            return Ok(Vec::new());
        };
        match kind {
            TopicKind::Alert { site, event } => {
                let Some(dir) = self.event_dir(&site, event)? else {
                    return Ok(Vec::new());
                };
                let path = dir.join("alert.json");
                let alert: Alert = match serde_json::from_slice(payload) {
                    Ok(alert) => alert,
                    Err(error) => {
                        tracing::warn!(%topic, %error, "ignoring an alert that is not valid JSON");
                        return Ok(Vec::new());
                    }
                };
                if path.exists() {
                    return Ok(Vec::new());
                }
                write_durably(&path, payload)?;
                Ok(vec![Report::Alert {
                    site,
                    alert: Box::new(alert),
                }])
            }
            TopicKind::Snapshot {
                site,
                event,
                camera,
            } => {
                let Some(dir) = self.event_dir(&site, event)? else {
                    return Ok(Vec::new());
                };
                if !safe_name(&camera) {
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
                if !safe_name(&camera)
                    || index >= MAX_CHUNKS
                    || dir.join(format!("{camera}.mp4")).exists()
                {
                    return Ok(Vec::new());
                }
                let chunks = dir.join(format!(".chunks-{camera}"));
                fs::create_dir_all(&chunks)?;
                write_durably(&chunks.join(index.to_string()), payload)?;
                self.assemble(&site, event, &camera)
            }
            TopicKind::Manifest {
                site,
                event,
                camera,
            } => {
                let Some(dir) = self.event_dir(&site, event)? else {
                    return Ok(Vec::new());
                };
                if !safe_name(&camera) {
                    return Ok(Vec::new());
                }
                if serde_json::from_slice::<Manifest>(payload).is_err() {
                    tracing::warn!(%topic, "ignoring a manifest that is not valid");
                    return Ok(Vec::new());
                }
                write_durably(&dir.join(format!("{camera}.manifest.json")), payload)?;
                self.assemble(&site, event, &camera)
            }
            TopicKind::Health { site } => match serde_json::from_slice::<Health>(payload) {
                Ok(health) => Ok(vec![Report::Health { site, health }]),
                Err(_) => Ok(Vec::new()),
            },
            TopicKind::Status { site } => match serde_json::from_slice::<Status>(payload) {
                Ok(status) if self.states.get(&site) != Some(&status.state) => {
                    self.states.insert(site.clone(), status.state.clone());
                    Ok(vec![Report::Status {
                        site,
                        state: status.state,
                    }])
                }
                _ => Ok(Vec::new()),
            },
        }
    }

    /// The directory of an event, created; `None` for a site id that is not a safe name.
    fn event_dir(&self, site: &str, event: Uuid) -> io::Result<Option<PathBuf>> {
        if !safe_name(site) {
            tracing::warn!(%site, "ignoring a site id that is not a safe file name");
            return Ok(None);
        }
        let dir = self.out.join(site).join(event.to_string());
        fs::create_dir_all(&dir)?;
        Ok(Some(dir))
    }

    /// Reassembles a camera's clip once its manifest and every chunk are here, verifying each
    /// chunk and the whole file. A chunk that fails is removed, to be replaced by the
    /// retransmission; the file is only written under its final name once it verifies.
    fn assemble(&mut self, site: &str, event: Uuid, camera: &str) -> io::Result<Vec<Report>> {
        let dir = self.out.join(site).join(event.to_string());
        let final_path = dir.join(format!("{camera}.mp4"));
        let manifest_path = dir.join(format!("{camera}.manifest.json"));
        let chunks = dir.join(format!(".chunks-{camera}"));
        if final_path.exists() {
            let _ = fs::remove_dir_all(&chunks);
            return Ok(Vec::new());
        }
        let Ok(manifest_bytes) = fs::read(&manifest_path) else {
            return Ok(Vec::new());
        };
        let Ok(manifest) = serde_json::from_slice::<Manifest>(&manifest_bytes) else {
            return Ok(Vec::new());
        };
        let invalid = |reason: String| Report::Invalid {
            site: site.to_owned(),
            event,
            camera: camera.to_owned(),
            reason,
        };
        if manifest.chunks as usize != manifest.chunk_sha256.len() || manifest.chunks > MAX_CHUNKS {
            return Ok(vec![invalid("the manifest is inconsistent".into())]);
        }
        let mut whole = Vec::with_capacity(manifest.bytes.min(1 << 30) as usize);
        for (n, expected) in manifest.chunk_sha256.iter().enumerate() {
            let Ok(chunk) = fs::read(chunks.join(n.to_string())) else {
                return Ok(Vec::new());
            };
            if &hex::encode(Sha256::digest(&chunk)) != expected {
                let _ = fs::remove_file(chunks.join(n.to_string()));
                return Ok(vec![invalid(format!(
                    "chunk {n} does not match its hash; waiting for it again"
                ))]);
            }
            whole.extend_from_slice(&chunk);
        }
        let sha256 = hex::encode(Sha256::digest(&whole));
        if whole.len() as u64 != manifest.bytes || sha256 != manifest.sha256 {
            return Ok(vec![invalid(format!(
                "the reassembled file ({} bytes, sha256 {sha256}) does not match the manifest ({} bytes, sha256 {})",
                whole.len(),
                manifest.bytes,
                manifest.sha256
            ))]);
        }
        write_durably(&final_path, &whole)?;
        let _ = fs::remove_dir_all(&chunks);
        Ok(vec![Report::Clip {
            site: site.to_owned(),
            event,
            camera: camera.to_owned(),
            path: final_path,
            manifest: Box::new(manifest),
        }])
    }
}

/// Site and camera ids come from topics: only names that cannot leave their directory.
fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn read_dirs(dir: &Path) -> io::Result<Vec<PathBuf>> {
    Ok(fs::read_dir(dir)?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect())
}

/// Prints a report as a readable line or a JSON object.
pub fn print(out: &mut impl Write, report: &Report, json: bool) -> io::Result<()> {
    let line = if json {
        match report {
            Report::Alert { site, alert } => json!({"type": "alert", "site": site, "alert": alert}),
            Report::Snapshot { site, event, camera, path } => {
                json!({"type": "snapshot", "site": site, "event_id": event, "camera": camera, "path": path})
            }
            Report::Clip { site, event, camera, path, manifest } => json!({
                "type": "clip", "site": site, "event_id": event, "camera": camera, "path": path,
                "verified": true, "manifest": manifest
            }),
            Report::Invalid { site, event, camera, reason } => json!({
                "type": "invalid", "site": site, "event_id": event, "camera": camera, "reason": reason
            }),
            Report::Health { site, health } => json!({"type": "health", "site": site, "health": health}),
            Report::Status { site, state } => json!({"type": "status", "site": site, "state": state}),
        }
        .to_string()
    } else {
        match report {
            Report::Alert { site, alert } => {
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
                    "{} ALERT{} {} ({}{address}): {} from {}{note}; cameras {}; event {}",
                    alert.triggered_at,
                    if alert.test { " (TEST)" } else { "" },
                    site,
                    alert.site.name,
                    serde_json::to_value(alert.trigger.kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    alert.trigger.source,
                    cameras.join(", "),
                    alert.event_id
                )
            }
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
            } => format!(
                "CLIP {site} event {event} camera {camera}: verified, {:.1} s, {} bytes{}: {}",
                manifest.duration_ms as f64 / 1000.0,
                manifest.bytes,
                if manifest.partial { " (partial)" } else { "" },
                path.display()
            ),
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
            Report::Status { site, state } => format!("STATUS {site} {state}"),
        }
    };
    writeln!(out, "{line}")?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(event: Uuid, data: &[u8], chunk: usize) -> Manifest {
        Manifest {
            schema: crate::publish::message::MANIFEST_SCHEMA.into(),
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
        }
    }

    #[test]
    fn chunks_in_any_order_with_duplicates_reassemble_once() {
        let out = tempfile::tempdir().unwrap();
        let mut receiver = Receiver::new(out.path());
        let event = Uuid::now_v7();
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 256) as u8).collect();
        let base = format!("alertclip/v1/s/events/{event}/clip/cam");
        let manifest_json = serde_json::to_vec(&manifest(event, &data, 300)).unwrap();
        assert!(
            receiver
                .handle(&format!("{base}/3"), &data[900..])
                .unwrap()
                .is_empty()
        );
        assert!(receiver.handle(&base, &manifest_json).unwrap().is_empty());
        assert!(
            receiver
                .handle(&format!("{base}/1"), &data[300..600])
                .unwrap()
                .is_empty()
        );
        assert!(
            receiver
                .handle(&format!("{base}/1"), &data[300..600])
                .unwrap()
                .is_empty()
        );
        assert!(
            receiver
                .handle(&format!("{base}/0"), &data[..300])
                .unwrap()
                .is_empty()
        );
        let reports = receiver
            .handle(&format!("{base}/2"), &data[600..900])
            .unwrap();
        let [Report::Clip { path, .. }] = reports.as_slice() else {
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
        let out = tempfile::tempdir().unwrap();
        let mut receiver = Receiver::new(out.path());
        let event = Uuid::now_v7();
        let data = vec![7u8; 500];
        let base = format!("alertclip/v1/s/events/{event}/clip/cam");
        receiver
            .handle(
                &base,
                &serde_json::to_vec(&manifest(event, &data, 250)).unwrap(),
            )
            .unwrap();
        receiver.handle(&format!("{base}/0"), &data[..250]).unwrap();
        let mut bad = data[250..].to_vec();
        bad[10] ^= 1;
        let reports = receiver.handle(&format!("{base}/1"), &bad).unwrap();
        assert!(
            matches!(reports.as_slice(), [Report::Invalid { reason, .. }] if reason.contains("chunk 1"))
        );
        let clip = out.path().join("s").join(event.to_string()).join("cam.mp4");
        assert!(
            !clip.exists(),
            "a clip that fails verification is never presented"
        );
        let reports = receiver.handle(&format!("{base}/1"), &data[250..]).unwrap();
        assert!(matches!(reports.as_slice(), [Report::Clip { .. }]));
        assert_eq!(fs::read(clip).unwrap(), data);
    }

    #[test]
    fn a_manifest_that_disagrees_with_verified_chunks_is_reported() {
        let out = tempfile::tempdir().unwrap();
        let mut receiver = Receiver::new(out.path());
        let event = Uuid::now_v7();
        let data = vec![1u8; 100];
        let mut wrong = manifest(event, &data, 100);
        wrong.sha256 = "00".repeat(32);
        let base = format!("alertclip/v1/s/events/{event}/clip/cam");
        receiver
            .handle(&base, &serde_json::to_vec(&wrong).unwrap())
            .unwrap();
        let reports = receiver.handle(&format!("{base}/0"), &data).unwrap();
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

    #[test]
    fn reassembly_resumes_after_a_restart() {
        let out = tempfile::tempdir().unwrap();
        let event = Uuid::now_v7();
        let data = vec![3u8; 200];
        let base = format!("alertclip/v1/s/events/{event}/clip/cam");
        {
            let mut receiver = Receiver::new(out.path());
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
        let reports = Receiver::new(out.path()).resume().unwrap();
        assert!(matches!(reports.as_slice(), [Report::Clip { .. }]));
    }

    #[test]
    fn hostile_names_are_ignored() {
        let out = tempfile::tempdir().unwrap();
        let mut receiver = Receiver::new(out.path());
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
