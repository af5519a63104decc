//! H.264 viewing copies of H.265 clips. Most browsers cannot play H.265 (Chromium without a
//! hardware decoder refuses it), so the desk converts such a clip with ffmpeg, when ffmpeg
//! is installed, into a copy an officer can play. The copy is labelled as derived wherever
//! it is shown; the original stays the evidence, and only the original is exported.

use std::path::{Path, PathBuf};

use crate::params;
use tokio::sync::{Semaphore, broadcast};
use uuid::Uuid;

use crate::db::{Db, now};
use crate::ingest::Change;

/// Conversions at once: each takes a core for about as long as the clip lasts.
static CONVERTING: Semaphore = Semaphore::const_new(1);

/// Whether ffmpeg is on the PATH (looked up once at start).
pub fn available() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("ffmpeg").is_file()))
}

/// The viewing copy's file beside the clip: hidden, so that exports and the receiver leave it.
pub fn copy_path(clip: &Path, camera: &str) -> PathBuf {
    clip.with_file_name(format!(".view-{camera}.mp4"))
}

/// Makes `clip`'s viewing copy, records it and announces it.
pub async fn convert(
    db: Db,
    media: PathBuf,
    feed: broadcast::Sender<Change>,
    (site, event, camera): (String, Uuid, String),
    clip: PathBuf,
) {
    let Ok(_permit) = CONVERTING.acquire().await else {
        return;
    };
    let copy = copy_path(&clip, &camera);
    let partial = clip.with_file_name(format!(".view-{camera}.partial.mp4"));
    let converted = tokio::process::Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-i"])
        .arg(&clip)
        .args([
            "-map",
            "0:v:0",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            "20",
            "-pix_fmt",
            "yuv420p",
            "-movflags",
            "+faststart",
            "-an",
            "-f",
            "mp4",
        ])
        .arg(&partial)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await;
    let failure = match converted {
        Ok(output) if output.status.success() => match tokio::fs::rename(&partial, &copy).await {
            Ok(()) => None,
            Err(error) => Some(format!("cannot keep the viewing copy: {error}")),
        },
        Ok(output) => Some(format!(
            "ffmpeg could not make a viewing copy: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(error) => Some(format!("cannot run ffmpeg: {error}")),
    };
    if let Some(reason) = failure {
        tracing::warn!(%event, %camera, %reason, "no viewing copy");
        let _ = tokio::fs::remove_file(&partial).await;
        return;
    }
    let Some(relative) = copy
        .strip_prefix(&media)
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
    else {
        return;
    };
    let (row_site, row_camera) = (site.clone(), camera.clone());
    let recorded = db
        .call(move |c| {
            c.execute(
                "INSERT INTO media (site, event, camera, kind, path, received)
                 VALUES (?1, ?2, ?3, 'view', ?4, ?5)
                 ON CONFLICT (site, event, camera, kind) DO UPDATE SET path = excluded.path",
                params![row_site, event.to_string(), row_camera, relative, now()],
            )
        })
        .await;
    match recorded {
        Ok(_) => {
            let _ = feed.send(Change {
                kind: "clip",
                site,
                event: Some(event),
            });
        }
        Err(error) => tracing::error!(%error, "cannot record a viewing copy"),
    }
}
