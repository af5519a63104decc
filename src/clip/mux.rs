//! Muxing a clip: frames from the ring into a faststart MP4, without re-encoding.
//!
//! `appsrc ! mp4mux faststart=true ! filesink`, written under a temporary name and renamed
//! once complete, so a file with the final name is always whole. The writer receives frames
//! as the clip gathers them (the pre-roll at once, post-roll as it arrives), so that little is
//! left to do when post-roll ends.
//!
//! Timestamps are rewritten on the way in (see [`retime`]): snapped to the frame grid, with
//! decode times synthesised for streams with B-frames.

use std::path::{Path, PathBuf};
use std::time::Duration;

use alertclip_wire::digest::{Digests, digest};
use futures_util::StreamExt;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::retime::{Retimer, Timed};
use crate::clock::MonoNs;
use crate::elements::{MissingElement, make};
use crate::ingest::ring::Frame;

/// Timescale of the MP4 track: the RTP video clock, so no timestamp is rounded.
const TRACK_TIMESCALE: u32 = 90_000;
/// How long muxing may take after the last frame before the clip is given up as failed.
const FINISH_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a clip could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    /// A GStreamer element is not installed.
    #[error(transparent)]
    MissingElement(#[from] MissingElement),
    /// The muxing pipeline failed.
    #[error("muxing {path}: {message}")]
    Mux {
        /// The clip being written.
        path: PathBuf,
        /// What GStreamer said.
        message: String,
    },
    /// The file system failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file being written.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// No frame was pushed.
    #[error("{path}: no frames to write")]
    Empty {
        /// The clip that would have been written.
        path: PathBuf,
    },
}

impl ClipError {
    /// Whether it failed because the disk is full (GStreamer's file sink says "No space left
    /// on the resource").
    pub fn is_disk_full(&self) -> bool {
        match self {
            ClipError::Mux { message, .. } => message.contains("No space left"),
            ClipError::Io { source, .. } => crate::sys::is_disk_full(source),
            _ => false,
        }
    }
}

/// A finished MP4 on disk.
#[derive(Debug, Clone)]
pub struct MuxedClip {
    /// Where it is, synced, under a hidden name until [`MuxedClip::place`].
    pub sealed: PathBuf,
    /// Its final path.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// SHA-256 of the whole file, lowercase hex.
    pub sha256: String,
    /// SHA-256 of each block of `block_size` bytes, when asked for.
    pub block_sha256: Vec<String>,
    /// The block size of `block_sha256` (0: none).
    pub block_size: u64,
    /// Frames written.
    pub frames: u64,
    /// Presentation time of the first frame.
    pub start: MonoNs,
    /// Presentation time of the last frame plus its duration.
    pub end: MonoNs,
}

impl MuxedClip {
    /// Renames the sealed file to its final name, durably. Done once its sidecar is on disk,
    /// so a visible clip always has the record that describes it; a crash in between leaves a
    /// sidecar beside the sealed file, which [`super::recover`] puts in place.
    pub fn place(&self) -> std::io::Result<()> {
        crate::sys::rename_durably(&self.sealed, &self.path)
    }
}

/// Writes one MP4 from frames of a single run.
pub struct ClipWriter {
    pipeline: gst::Pipeline,
    appsrc: gst_app::AppSrc,
    temp: PathBuf,
    path: PathBuf,
    block_size: u64,
    retimer: Retimer,
    /// Frames retimed and ready to write; reused to avoid allocating per frame.
    ready: Vec<Timed>,
    /// Timestamps in the file are relative to this.
    origin: Option<MonoNs>,
    frames: u64,
    start: MonoNs,
    end: MonoNs,
}

impl ClipWriter {
    /// Starts writing `path` (through a hidden temporary beside it) with the frames' `caps`.
    /// With a `block_size`, the finished file's blocks are hashed too, in the same pass as the
    /// whole file (delivery sends clips in blocks of that size).
    pub fn create(path: &Path, caps: &gst::Caps, block_size: u64) -> Result<ClipWriter, ClipError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = path.parent().unwrap_or(Path::new("."));
        let temp = dir.join(format!(".{name}.partial"));
        let moov_temp = dir.join(format!(".{name}.mdat"));
        let mux_error = |message: String| ClipError::Mux {
            path: path.to_owned(),
            message,
        };

        let pipeline = gst::Pipeline::with_name(&format!("clip-{name}"));
        let appsrc = gst_app::AppSrc::builder()
            .caps(caps)
            .format(gst::Format::Time)
            .is_live(false)
            .build();
        let mux = make("mp4mux")?;
        mux.set_property("faststart", true);
        mux.set_property("faststart-file", moov_temp.to_string_lossy().as_ref());
        mux.set_property("trak-timescale", TRACK_TIMESCALE);
        let sink = make("filesink")?;
        sink.set_property("location", temp.to_string_lossy().as_ref());
        pipeline
            .add_many([appsrc.upcast_ref(), &mux, &sink])
            .map_err(|e| mux_error(e.to_string()))?;
        // Linked by pad name: left to itself, linking picks the muxer's first request pad,
        // which is an audio one.
        let video_pad = mux
            .request_pad_simple("video_%u")
            .ok_or_else(|| mux_error("mp4mux gave no video pad".into()))?;
        let src_pad = appsrc
            .static_pad("src")
            .ok_or_else(|| mux_error("appsrc without a src pad".into()))?;
        src_pad
            .link(&video_pad)
            .map_err(|e| mux_error(format!("{e:?}")))?;
        mux.link(&sink).map_err(|e| mux_error(e.to_string()))?;
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| mux_error(e.to_string()))?;
        Ok(ClipWriter {
            pipeline,
            appsrc,
            temp,
            path: path.to_owned(),
            block_size,
            retimer: Retimer::default(),
            ready: Vec::new(),
            origin: None,
            frames: 0,
            start: 0,
            end: 0,
        })
    }

    /// Adds the next frame in decode order. The payload is shared, not copied.
    pub fn push(&mut self, frame: Frame) -> Result<(), ClipError> {
        self.retimer.push(frame, &mut self.ready);
        self.write_ready()
    }

    fn write_ready(&mut self) -> Result<(), ClipError> {
        let mut ready = std::mem::take(&mut self.ready);
        let result = ready.drain(..).try_for_each(|timed| self.write(timed));
        self.ready = ready;
        result
    }

    fn write(&mut self, timed: Timed) -> Result<(), ClipError> {
        let Timed {
            frame,
            pts,
            dts,
            duration,
        } = timed;
        let origin = *self.origin.get_or_insert(dts);
        if self.frames == 0 {
            self.start = pts;
        }
        self.start = self.start.min(pts);
        self.end = self.end.max(pts + duration);
        self.frames += 1;
        let mut buffer = frame.buffer;
        {
            // Shares the memory: only the buffer's small header is copied when the ring
            // still holds the frame.
            let buffer = buffer.make_mut();
            buffer.set_pts(gst::ClockTime::from_nseconds(pts - origin));
            buffer.set_dts(gst::ClockTime::from_nseconds(dts - origin));
            buffer.set_duration(gst::ClockTime::from_nseconds(duration));
        }
        self.appsrc
            .push_buffer(buffer)
            .map_err(|e| ClipError::Mux {
                path: self.path.clone(),
                message: format!("the muxer refused a frame: {e:?}"),
            })?;
        Ok(())
    }

    /// Writes the remaining frames, finalises the file and syncs it to disk, still under its
    /// hidden name (see [`MuxedClip::place`]). Returns its size and hash.
    pub async fn finish(mut self) -> Result<MuxedClip, ClipError> {
        self.retimer.finish(&mut self.ready);
        self.write_ready()?;
        if self.frames == 0 {
            self.abort();
            return Err(ClipError::Empty {
                path: self.path.clone(),
            });
        }
        let mux_error = |path: &Path, message: String| ClipError::Mux {
            path: path.to_owned(),
            message,
        };
        let _ = self.appsrc.end_of_stream();
        let bus = self
            .pipeline
            .bus()
            .ok_or_else(|| mux_error(&self.path, "no bus".into()))?;
        let mut messages = bus.stream();
        let outcome = tokio::time::timeout(FINISH_TIMEOUT, async {
            while let Some(message) = messages.next().await {
                match message.view() {
                    gst::MessageView::Eos(_) => return Ok(()),
                    gst::MessageView::Error(e) => return Err(e.error().to_string()),
                    _ => {}
                }
            }
            Err("bus closed".to_owned())
        })
        .await
        .unwrap_or_else(|_| Err(format!("not finished after {FINISH_TIMEOUT:?}")));
        let _ = self.pipeline.set_state(gst::State::Null);
        if let Err(message) = outcome {
            let _ = std::fs::remove_file(&self.temp);
            return Err(mux_error(&self.path, message));
        }
        let (temp, block_size) = (self.temp.clone(), self.block_size);
        let digests = tokio::task::spawn_blocking(move || seal(&temp, block_size))
            .await
            .map_err(|e| mux_error(&self.path, e.to_string()))??;
        Ok(MuxedClip {
            sealed: self.temp.clone(),
            path: self.path.clone(),
            bytes: digests.bytes,
            sha256: digests.sha256,
            block_sha256: digests.blocks,
            block_size,
            frames: self.frames,
            start: self.start,
            end: self.end,
        })
    }

    /// Stops writing and removes the temporary file.
    pub fn abort(&self) {
        let _ = self.pipeline.set_state(gst::State::Null);
        let _ = std::fs::remove_file(&self.temp);
    }
}

/// Syncs the temporary file and hashes it. It keeps its hidden name until
/// [`MuxedClip::place`]: the caller first writes what describes it.
fn seal(temp: &Path, block_size: u64) -> Result<Digests, ClipError> {
    let io = |source| ClipError::Io {
        path: temp.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(temp).map_err(io)?;
    file.sync_all().map_err(io)?;
    digest(&mut file, block_size).map_err(io)
}
