//! Camera ingest: one tokio task per camera that keeps it connected and feeds its
//! [`FrameRing`], whichever RTSP client reads it.
//!
//! A connection is made by the camera's client ([`rtsp`], retina, by default; [`rtspsrc`],
//! GStreamer's, as the fallback and for `rtsps://`). Either pushes whole access units, timed
//! on the monotonic clock, into the camera's [`CameraFeed`] under a briefly held mutex and
//! wakes any clip waiting for post-roll. Everything else (reconnecting with backoff, stall and
//! keyframe timeouts, status) is this module's, the same for both, so one camera failing never
//! disturbs another and both clients behave alike.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use alertclip_mqtt::Backoff;
use gstreamer as gst;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::clock::{self, MonoNs};
use crate::config::{self, IngestClient};
use crate::elements::MissingElement;
use crate::ingest::ring::{Frame, FrameRing};
use crate::ingest::{rtsp, rtspsrc};

/// How often the supervising task checks for stalls and refreshes the status.
const TICK: Duration = Duration::from_millis(250);
/// Reconnect delays double from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A connection that streamed this long resets the reconnect delay.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// A camera whose frames arrive but none of them a keyframe for this long is reconnected:
/// its frames fill no clip. Real cameras send one every 1 to 10 s, "smart" codecs up to 20 s.
pub const KEYFRAME_TIMEOUT: Duration = Duration::from_secs(60);
/// Times one connection's frames may go back by more than the ring tolerates (each throws the
/// buffer away) before the camera is reconnected: once is a camera's clock being set, again
/// and again is a stream whose times cannot be trusted.
const MAX_TIME_RESETS: u64 = 5;

/// How long a new connection has to deliver its first frame: opening a session and waiting
/// for the first keyframe take longer than a gap between frames.
pub fn first_frame_timeout(stall_timeout: Duration) -> Duration {
    (stall_timeout * 2).max(Duration::from_secs(10))
}

/// What a camera is doing, for status and health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CameraState {
    /// Opening the RTSP session, or waiting for the first frame.
    Connecting,
    /// Frames are arriving.
    Streaming,
    /// Frames stopped for longer than `stall_timeout`; about to reconnect.
    Stalled,
    /// The last attempt failed; waiting before the next.
    Failed,
    /// Stopped on shutdown.
    Stopped,
}

impl CameraState {
    /// Its name in status reports, as serialized.
    pub fn as_str(&self) -> &'static str {
        match self {
            CameraState::Connecting => "connecting",
            CameraState::Streaming => "streaming",
            CameraState::Stalled => "stalled",
            CameraState::Failed => "failed",
            CameraState::Stopped => "stopped",
        }
    }
}

/// One camera's status, refreshed a few times a second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CameraStatus {
    /// What the camera is doing.
    pub state: CameraState,
    /// The last error, with the password redacted.
    pub last_error: Option<String>,
    /// How many times the camera was reconnected.
    pub reconnects: u64,
    /// `h264` or `h265`, once known.
    pub codec: Option<String>,
    /// Frame width in pixels, once known.
    pub width: Option<i32>,
    /// Frame height in pixels, once known.
    pub height: Option<i32>,
    /// Frames per second over the last second.
    pub fps: f64,
    /// Encoded kilobits per second over the last second.
    pub kbps: f64,
    /// Seconds of video buffered.
    pub buffered_s: f64,
    /// Encoded bytes buffered.
    pub buffered_bytes: u64,
    /// Frames dropped because they could not start a GOP, or overflowed the byte cap.
    pub frames_dropped: u64,
    /// Times a single GOP exceeded the byte cap.
    pub overflows: u64,
}

impl Default for CameraStatus {
    fn default() -> Self {
        CameraStatus {
            state: CameraState::Connecting,
            last_error: None,
            reconnects: 0,
            codec: None,
            width: None,
            height: None,
            fps: 0.0,
            kbps: 0.0,
            buffered_s: 0.0,
            buffered_bytes: 0,
            frames_dropped: 0,
            overflows: 0,
        }
    }
}

/// Why one connection attempt to a camera ended, with the camera and its URL (the password
/// replaced by `***`) to find it by.
#[derive(Debug, thiserror::Error)]
#[error("camera \"{camera}\" ({url}): {fault}")]
pub struct CameraError {
    /// The camera's id.
    pub camera: String,
    /// Its URL, without the password.
    pub url: String,
    /// What went wrong.
    #[source]
    pub fault: Fault,
}

/// What ended a connection attempt. Anything quoted from GStreamer has the camera's password
/// removed when the fault is made.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    /// A GStreamer element is not installed.
    #[error(transparent)]
    MissingElement(#[from] MissingElement),
    /// The pipeline reported an error (connection refused, unauthorized, bad stream ...).
    #[error("{0}")]
    Stream(String),
    /// The camera offers no stream alertclip can buffer.
    #[error("the camera offers no H.264 or H.265 video (offered: {0}); set its encoder to H.264")]
    Unsupported(String),
    /// The camera ended the stream.
    #[error("the camera ended the stream")]
    Eos,
    /// No frame arrived for `stall_timeout`.
    #[error("no frame for {0:?}")]
    Stalled(Duration),
    /// No frame arrived after connecting.
    #[error("no video within {0:?} of connecting")]
    NoVideo(Duration),
    /// The frames' times went back again and again.
    #[error("the camera's timestamps ran backwards {0} times in one connection")]
    Backwards(u64),
    /// Frames arrived, but no keyframe among them for this long.
    #[error("no keyframe for {0:?}: the camera's frames cannot start a clip")]
    NoKeyframe(Duration),
    /// The pipeline refused to start.
    #[error("the pipeline could not start: {0}")]
    Start(String),
}

/// What a camera's last error means, for people (the health alerts officers' dispatch reads):
/// what happened and what to do, without GStreamer's source locations and element paths,
/// which stay in the log and in `alertclip status`.
pub fn explain(error: &str) -> String {
    let lower = error.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    let said = if has(&["401", "unauthorized", "not authorized", "forbidden", "403"]) {
        "the camera refused the login: check its username and password"
    } else if has(&["404", "not found"]) {
        "the camera has no stream at that path: check the URL's path (the camera's manual lists it)"
    } else if has(&["503", "service unavailable"]) {
        "the camera is busy or still starting; the box keeps trying"
    } else if has(&[
        "connection refused",
        "could not connect",
        "no route",
        "unreachable",
    ]) {
        "the camera does not answer at its address: is it powered and on the network, and the address right?"
    } else if has(&["timeout", "timed out"]) {
        "the camera stopped answering: check its power and network cable"
    } else if has(&["no frame for"]) {
        "the camera stopped sending video; the box reconnects"
    } else if has(&["timestamps ran backwards"]) {
        "the camera's video runs backwards in time; the box reconnects (check the camera's time settings and firmware)"
    } else if has(&["no keyframe for"]) {
        "the camera sends video a player cannot start (no keyframe); set its keyframe (I-frame) interval to at most 10 s"
    } else if has(&["no video within"]) {
        "the camera answered but sent no video; the box reconnects"
    } else if has(&["ended the stream"]) {
        "the camera ended the stream; the box reconnects"
    } else if has(&["offers no h.264"]) {
        return error.to_owned();
    } else {
        "the camera's video cannot be read; the box's log has the details"
    };
    said.to_owned()
}

/// The frames of one camera, shared between its streaming thread (the only writer) and the
/// clipper.
#[derive(Debug)]
pub struct CameraFeed {
    ring: Mutex<FrameRing>,
    /// Woken after every frame, so that a clip waiting for post-roll sees it at once.
    arrived: Notify,
    frames: AtomicU64,
    bytes: AtomicU64,
    last_frame: AtomicU64,
    last_keyframe: AtomicU64,
}

impl CameraFeed {
    /// A feed around an empty ring.
    pub fn new(ring: FrameRing) -> CameraFeed {
        CameraFeed {
            ring: Mutex::new(ring),
            arrived: Notify::new(),
            frames: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            last_frame: AtomicU64::new(0),
            last_keyframe: AtomicU64::new(0),
        }
    }

    /// The ring, locked. Hold it briefly: the camera's streaming thread waits on it.
    pub fn ring(&self) -> MutexGuard<'_, FrameRing> {
        // A panic while holding the lock cannot leave the ring half-updated in a way that
        // matters more than losing the camera, so a poisoned lock is used as is.
        self.ring
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Resolves after the next frame is pushed. Create it before checking the ring, so a
    /// frame arriving in between is not missed (see `tokio::sync::Notify::notified`).
    pub fn arrived(&self) -> tokio::sync::futures::Notified<'_> {
        self.arrived.notified()
    }

    /// When the newest frame arrived, if any did: a stall is frames not arriving, whatever
    /// times they are placed at (frames held up by the network keep their capture times).
    pub fn last_frame(&self) -> Option<MonoNs> {
        match self.last_frame.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }

    /// Packets were lost before the next frame (see [`FrameRing::lost`]).
    pub fn lost(&self) {
        self.ring().lost();
    }

    /// Pushes a frame that arrived at `arrival` and wakes waiting clips.
    pub fn push(&self, frame: Frame, caps: &gst::Caps, discont: bool, arrival: MonoNs) {
        let size = frame.buffer.size() as u64;
        if frame.keyframe {
            self.last_keyframe.store(arrival.max(1), Ordering::Relaxed);
        }
        self.ring().push(frame, caps, discont);
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(size, Ordering::Relaxed);
        self.last_frame.store(arrival.max(1), Ordering::Relaxed);
        self.arrived.notify_waiters();
    }
}

/// A running camera: its frames and its status.
#[derive(Debug, Clone)]
pub struct Camera {
    /// Its configuration.
    pub config: config::Camera,
    /// Its frames.
    pub feed: Arc<CameraFeed>,
    /// Its status, refreshed a few times a second.
    pub status: watch::Receiver<CameraStatus>,
}

impl Camera {
    /// Starts ingesting `config` on `tracker`, until `cancel`. `ring_bytes` caps the ring;
    /// `password` comes from the camera's `password_file`.
    pub fn spawn(
        config: config::Camera,
        ring_bytes: usize,
        password: Option<String>,
        tracker: &tokio_util::task::TaskTracker,
        cancel: CancellationToken,
    ) -> Camera {
        // One second of slack beyond pre-roll covers the time a trigger takes to arrive.
        let keep = config.pre_roll.0 + Duration::from_secs(1);
        let feed = Arc::new(CameraFeed::new(FrameRing::new(keep, ring_bytes)));
        let (status_tx, status) = watch::channel(CameraStatus::default());
        let ingest = Ingest {
            config: config.clone(),
            password,
            feed: feed.clone(),
            status: status_tx,
            stopping: Mutex::new(None),
        };
        tracker.spawn(ingest.supervise(cancel));
        Camera {
            config,
            feed,
            status,
        }
    }
}

/// Whether the camera answers again: for `rtsp://`, a DESCRIBE of its stream is answered with
/// 200, or 401 asking for the credentials the connection will give (a 404 or 503, what a
/// camera rebooting or a server without the stream says, is no answer); for `rtsps://`, its
/// port accepts a connection. Asked while a reconnection backs off, so that a camera coming
/// back is streaming within a probe and a handshake, not after the rest of the delay.
async fn answers(url: &config::SecretUrl) -> Option<bool> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (host, port) = url.host_port()?;
    let deadline = tokio::time::Instant::now() + alertclip_mqtt::backoff::PROBE_EVERY;
    let connect = tokio::net::TcpStream::connect((host.as_str(), port));
    // Refused is an answer; no answer in time is not.
    let mut stream = match tokio::time::timeout_at(deadline, connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(_)) => return Some(false),
        Err(_) => return None,
    };
    if url.is_tls() {
        return Some(true);
    }
    let probe = async {
        let request = format!(
            "DESCRIBE {} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\nUser-Agent: alertclip\r\n\r\n",
            url.without_userinfo()
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut reply = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        while reply.len() < 16 << 10 {
            match stream.read(&mut chunk).await.ok()? {
                0 => break,
                n => reply.extend_from_slice(&chunk[..n]),
            }
            if reply_complete(&reply) {
                break;
            }
        }
        Some(reply.starts_with(b"RTSP/1.0 200") || reply.starts_with(b"RTSP/1.0 401"))
    };
    let answer = tokio::time::timeout_at(deadline, probe)
        .await
        .ok()
        .flatten();
    // Decided; then the connection is closed in turn, briefly, so that the server sees a
    // client leave rather than a connection reset.
    let _ = tokio::time::timeout(Duration::from_millis(50), async {
        let _ = stream.shutdown().await;
        let mut chunk = [0u8; 1024];
        while let Ok(n) = stream.read(&mut chunk).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    answer
}

/// Whether an RTSP reply holds its headers and the body they announce.
fn reply_complete(reply: &[u8]) -> bool {
    let Some(end) = reply.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let headers = String::from_utf8_lossy(&reply[..end]);
    let body = headers
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    reply.len() >= end + 4 + body
}

/// The task that keeps one camera connected.
pub(super) struct Ingest {
    pub(super) config: config::Camera,
    pub(super) password: Option<String>,
    pub(super) feed: Arc<CameraFeed>,
    status: watch::Sender<CameraStatus>,
    /// The stop of the last rtspsrc pipeline, when it did not finish in time.
    pub(super) stopping: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// One connection to a camera, by the client its configuration names.
enum Connection<'a> {
    Retina(rtsp::Connection<'a>),
    Gstreamer(rtspsrc::Connection<'a>),
}

impl Connection<'_> {
    /// Why the connection ended. Cancel-safe.
    async fn ended(&mut self) -> Fault {
        match self {
            Connection::Retina(c) => c.ended().await,
            Connection::Gstreamer(c) => c.ended().await,
        }
    }

    async fn stop(self) {
        match self {
            Connection::Retina(c) => c.stop().await,
            Connection::Gstreamer(c) => c.stop().await,
        }
    }
}

impl Ingest {
    async fn supervise(self, cancel: CancellationToken) {
        let id = self.config.id.clone();
        let url = self.config.url.to_string();
        tracing::info!(camera = %id, %url, "camera starting");
        let mut backoff = Backoff::new(BACKOFF_FIRST, BACKOFF_MAX);
        let mut attempt = 0u64;
        loop {
            if attempt > 0 {
                self.status.send_modify(|s| s.reconnects += 1);
            }
            attempt += 1;
            self.status
                .send_modify(|s| s.state = CameraState::Connecting);
            let result = self.connect_once(&cancel).await;
            let streamed = match result {
                Ok(()) => break,
                Err((fault, streamed)) => {
                    let state = match fault {
                        Fault::Stalled(_) => CameraState::Stalled,
                        _ => CameraState::Failed,
                    };
                    // Status lists the camera already: its last error is the fault alone.
                    let message = fault.to_string();
                    let error = CameraError {
                        camera: id.clone(),
                        url: url.clone(),
                        fault,
                    };
                    tracing::warn!(%error, "camera connection ended");
                    self.status.send_modify(|s| {
                        s.state = state;
                        s.last_error = Some(message);
                        s.fps = 0.0;
                        s.kbps = 0.0;
                    });
                    streamed
                }
            };
            if streamed >= STABLE_AFTER {
                backoff.reset();
            }
            // Cut short once the camera accepts connections again: a camera that is down
            // is pre-roll missing from the next incident.
            let url = &self.config.url;
            let waited = backoff.wait_until(&cancel, || answers(url)).await;
            if !waited {
                break;
            }
        }
        self.status.send_modify(|s| s.state = CameraState::Stopped);
        tracing::info!(camera = %id, "camera stopped");
    }

    /// One connection: runs until cancelled (`Ok`) or until the connection fails, returning
    /// the error and how long frames were flowing.
    async fn connect_once(&self, cancel: &CancellationToken) -> Result<(), (Fault, Duration)> {
        let opening = async {
            Ok(match self.config.ingest_client() {
                IngestClient::Retina => Connection::Retina(rtsp::Connection::open(self).await?),
                IngestClient::Gstreamer => {
                    Connection::Gstreamer(rtspsrc::Connection::open(self).await?)
                }
            })
        };
        let mut connection = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            opened = opening => opened.map_err(|fault| (fault, Duration::ZERO))?,
        };

        let stall = self.config.stall_timeout.0;
        // Opening a session and waiting for the first keyframe takes longer than a gap
        // between frames, so the first frame gets more time.
        let first_frame_timeout = first_frame_timeout(stall);
        let started = clock::mono_now();
        let frames_at_start = self.feed.frames.load(Ordering::Relaxed);
        let resets_at_start = self.feed.ring().status().stats.time_resets;
        let mut streaming_since: Option<MonoNs> = None;
        let mut meter = Meter::new(&self.feed);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        let streamed = |since: Option<MonoNs>| {
            since
                .map(|s| Duration::from_nanos(clock::mono_now().saturating_sub(s)))
                .unwrap_or_default()
        };
        let error = loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    connection.stop().await;
                    return Ok(());
                }
                fault = connection.ended() => break fault,
                _ = tick.tick() => {
                    let now = clock::mono_now();
                    let got_frames = self.feed.frames.load(Ordering::Relaxed) != frames_at_start;
                    if got_frames && streaming_since.is_none() {
                        streaming_since = Some(now);
                        tracing::info!(camera = %self.config.id, "camera streaming");
                    }
                    let silent = match streaming_since {
                        None if now.saturating_sub(started) > first_frame_timeout.as_nanos() as u64 => {
                            break Fault::NoVideo(first_frame_timeout);
                        }
                        None => false,
                        Some(since) => {
                            // Frames that never start a GOP fill no clip: as good as none.
                            let keyframe = self.feed.last_keyframe.load(Ordering::Relaxed).max(since);
                            if now.saturating_sub(keyframe) > KEYFRAME_TIMEOUT.as_nanos() as u64 {
                                break Fault::NoKeyframe(KEYFRAME_TIMEOUT);
                            }
                            let last = self.feed.last_frame.load(Ordering::Relaxed);
                            now.saturating_sub(last) > stall.as_nanos() as u64
                        }
                    };
                    if silent {
                        break Fault::Stalled(stall);
                    }
                    if let Some(update) = meter.sample(now) {
                        let ring = self.feed.ring().status();
                        let resets = ring.stats.time_resets - resets_at_start;
                        if resets > MAX_TIME_RESETS {
                            break Fault::Backwards(resets);
                        }
                        self.status.send_modify(|s| {
                            s.state = if streaming_since.is_some() { CameraState::Streaming } else { CameraState::Connecting };
                            s.fps = update.fps;
                            s.kbps = update.kbps;
                            s.buffered_s = ring.buffered.as_secs_f64();
                            s.buffered_bytes = ring.bytes as u64;
                            s.frames_dropped = ring.stats.frames_dropped;
                            s.overflows = ring.stats.overflows;
                            if let Some(caps) = &ring.caps {
                                describe_caps(caps, s);
                            }
                        });
                    }
                }
            }
        };
        connection.stop().await;
        Err((error, streamed(streaming_since)))
    }

    /// Removes the camera's password from a message, wherever a client may have quoted it:
    /// done once, when the fault that quotes it is made.
    pub(super) fn redact(&self, message: &str) -> String {
        let mut message = message.replace(self.config.url.expose(), &self.config.url.to_string());
        if let Some(password) = self.password.as_deref().filter(|p| !p.is_empty()) {
            message = message.replace(password, "***");
        }
        message
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Frame and byte rates from the feed's counters, over about a second.
struct Meter<'a> {
    feed: &'a CameraFeed,
    at: MonoNs,
    frames: u64,
    bytes: u64,
}

struct Rates {
    fps: f64,
    kbps: f64,
}

impl<'a> Meter<'a> {
    fn new(feed: &'a CameraFeed) -> Meter<'a> {
        Meter {
            feed,
            at: clock::mono_now(),
            frames: feed.frames.load(Ordering::Relaxed),
            bytes: feed.bytes.load(Ordering::Relaxed),
        }
    }

    fn sample(&mut self, now: MonoNs) -> Option<Rates> {
        let elapsed = now.saturating_sub(self.at);
        if elapsed < 1_000_000_000 {
            return None;
        }
        let frames = self.feed.frames.load(Ordering::Relaxed);
        let bytes = self.feed.bytes.load(Ordering::Relaxed);
        let secs = elapsed as f64 / 1e9;
        let rates = Rates {
            fps: (frames - self.frames) as f64 / secs,
            kbps: (bytes - self.bytes) as f64 * 8.0 / 1000.0 / secs,
        };
        (self.at, self.frames, self.bytes) = (now, frames, bytes);
        Some(rates)
    }
}

/// Fills codec and resolution from the caps in force.
fn describe_caps(caps: &gst::Caps, status: &mut CameraStatus) {
    if let Some(s) = caps.structure(0) {
        status.codec = codec_name(caps).map(str::to_owned);
        status.width = s.get::<i32>("width").ok();
        status.height = s.get::<i32>("height").ok();
    }
}

/// `h264` or `h265` for encoded video caps.
pub fn codec_name(caps: &gst::CapsRef) -> Option<&'static str> {
    match caps.structure(0)?.name().as_str() {
        "video/x-h264" => Some("h264"),
        "video/x-h265" => Some("h265"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_explained_for_people_without_gstreamer_internals() {
        let raw = "Unhandled error (../gst/rtsp/gstrtspsrc.c(6954): gst_rtspsrc_send (): /GstPipeline:camera-cam/GstRTSPSrc:rtspsrc5: Service Unavailable (503))";
        assert_eq!(
            explain(raw),
            "the camera is busy or still starting; the box keeps trying"
        );
        let login = "Unauthorized (401) gstrtspsrc.c(8336): gst_rtspsrc_retrieve_sdp ()";
        assert!(explain(login).contains("username and password"));
        let refused = "Could not open resource for reading and writing. gstrtspsrc.c(8336): Failed to connect. (Connection refused)";
        assert!(explain(refused).contains("does not answer at its address"));
        for said in [raw, login, refused, "something else entirely (gstfoo.c(1))"] {
            let explained = explain(said);
            assert!(
                !explained.contains(".c(") && !explained.contains("Gst"),
                "{explained}"
            );
        }
    }
}
