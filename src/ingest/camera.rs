//! Camera ingest: one GStreamer pipeline per camera feeding its [`FrameRing`], and the loop
//! that keeps it connected.
//!
//! The pipeline is `rtspsrc ! rtph26Xdepay ! h26Xparse ! appsink`, taking whole access units
//! in `avc`/`hvc1` form so every buffer carries its own timestamp and keyframe flag. The
//! appsink callback runs on GStreamer's streaming thread: it times the frame, pushes it into
//! the ring under a briefly held mutex and wakes any clip waiting for post-roll. It never
//! blocks or awaits. Everything else (reconnecting, stall detection, status) happens in one
//! tokio task per camera, so one camera failing never disturbs another.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use alertclip_mqtt::Backoff;
use futures_util::StreamExt;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::clock::{self, MonoNs, StreamClock};
use crate::config::{self, Transport};
use crate::elements::{MissingElement, make};
use crate::ingest::relay::Relay;
use crate::ingest::ring::{Frame, FrameRing};

/// How often the supervising task checks for stalls and refreshes the status.
const TICK: Duration = Duration::from_millis(250);
/// rtspsrc jitter-buffer latency. Low, because frames are buffered anyway and a clip can only
/// finish once its last frame is through.
const LATENCY_MS: u32 = 200;
/// Reconnect delays double from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A connection that streamed this long resets the reconnect delay.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// A pipeline that does not stop within this long is abandoned (it can no longer push), and
/// the next connection waits for it.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// A stop not done by then has its connection to the camera cut (see `relay`).
const CUT_AFTER: Duration = Duration::from_secs(1);
/// How long the next connection waits for a pipeline that would not stop: after that it is
/// given up, and at most one per camera is ever waited for.
const STUCK_WAIT: Duration = Duration::from_secs(60);

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

    /// Pushes a frame that arrived at `arrival` and wakes waiting clips.
    pub fn push(&self, frame: Frame, caps: &gst::Caps, discont: bool, arrival: MonoNs) {
        let size = frame.buffer.size() as u64;
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
struct Ingest {
    config: config::Camera,
    password: Option<String>,
    feed: Arc<CameraFeed>,
    status: watch::Sender<CameraStatus>,
    /// The stop of the last pipeline, when it did not finish in time.
    stopping: Mutex<Option<tokio::task::JoinHandle<()>>>,
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
        // One pipeline per camera that will not stop, at most: a camera that wedges every
        // connection must not pile them up.
        let stuck = lock(&self.stopping).take();
        if let Some(stopping) = stuck {
            tracing::warn!(camera = %self.config.id, "waiting for the previous connection to close before the next");
            tokio::select! {
                done = tokio::time::timeout(STUCK_WAIT, stopping) => if done.is_err() {
                    tracing::error!(camera = %self.config.id, "the previous connection would not close; given up");
                },
                _ = cancel.cancelled() => return Ok(()),
            }
        }
        let retired = Arc::new(AtomicBool::new(false));
        // rtsps:// goes to the camera directly: through the relay its replies are encrypted,
        // so only a stop could be made to work, not the limits. So does UDP: rtspsrc sends
        // its RTCP to the address it connected to, which would be the relay's.
        let relayed = !self.config.url.is_tls() && self.config.transport == Transport::Tcp;
        let relay = match self.config.url.host_port() {
            Some((host, port)) if relayed => Some(Relay::start(host, port).await.map_err(|e| {
                (
                    Fault::Start(format!("no relay to the camera: {e}")),
                    Duration::ZERO,
                )
            })?),
            _ => None,
        };
        let (pipeline, offered) = self
            .build_pipeline(retired.clone(), relay.as_ref())
            .map_err(|e| (e, Duration::ZERO))?;
        let guard = Teardown {
            pipeline: pipeline.clone(),
            retired,
            relay,
            stuck: &self.stopping,
            stopped: false,
        };
        let Some(bus) = pipeline.bus() else {
            return Err((
                Fault::Start("pipeline without a bus".into()),
                Duration::ZERO,
            ));
        };
        let mut messages = bus.stream();
        if let Err(e) = pipeline.set_state(gst::State::Playing) {
            guard.stop().await;
            return Err((Fault::Start(e.to_string()), Duration::ZERO));
        }

        let stall = self.config.stall_timeout.0;
        // Opening a session and waiting for the first keyframe takes longer than a gap
        // between frames, so the first frame gets more time.
        let first_frame_timeout = (stall * 2).max(Duration::from_secs(10));
        let started = clock::mono_now();
        let frames_at_start = self.feed.frames.load(Ordering::Relaxed);
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
                    guard.stop().await;
                    return Ok(());
                }
                message = messages.next() => {
                    let Some(message) = message else { break Fault::Start("bus closed".into()) };
                    match message.view() {
                        gst::MessageView::Error(e) => {
                            if let Some(offers) = offered.nothing_taken() {
                                break Fault::Unsupported(offers);
                            }
                            // rtspsrc saw only the connection end; the relay knows why.
                            if let Some(reason) = guard.relay.as_ref().and_then(Relay::violation) {
                                break Fault::Stream(reason);
                            }
                            // GStreamer's details span lines; status and check show one.
                            let debug = e
                                .debug()
                                .map(|d| format!(" ({})", d.replace('\n', " ")))
                                .unwrap_or_default();
                            break Fault::Stream(self.redact(&format!("{}{debug}", e.error())));
                        }
                        gst::MessageView::Eos(_) => break Fault::Eos,
                        _ => {}
                    }
                }
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
                        Some(_) => {
                            let last = self.feed.last_frame.load(Ordering::Relaxed);
                            now.saturating_sub(last) > stall.as_nanos() as u64
                        }
                    };
                    if silent {
                        break Fault::Stalled(stall);
                    }
                    if let Some(update) = meter.sample(now) {
                        let ring = self.feed.ring().status();
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
        guard.stop().await;
        Err((error, streamed(streaming_since)))
    }

    /// Builds the camera's pipeline. Also returns the encodings the camera offered, filled in
    /// as the session is set up, to explain a camera with nothing alertclip can take.
    fn build_pipeline(
        &self,
        retired: Arc<AtomicBool>,
        relay: Option<&Relay>,
    ) -> Result<(gst::Pipeline, Offered), Fault> {
        let pipeline = gst::Pipeline::with_name(&format!("camera-{}", self.config.id));
        pipeline.use_clock(Some(&clock::pipeline_clock()));

        let src = make("rtspsrc")?;
        src.set_property("location", self.config.url.expose());
        if let Some(relay) = relay {
            src.set_property("proxy", relay.proxy());
        }
        src.set_property("latency", LATENCY_MS);
        // Timestamps straight from RTP: the jitter buffer's own clock slaving smears B-frames
        // by tens of milliseconds. Drift is corrected by `StreamClock` instead.
        src.set_property_from_str("buffer-mode", "none");
        src.set_property_from_str(
            "protocols",
            match self.config.transport {
                Transport::Tcp => "tcp",
                Transport::Udp => "udp",
            },
        );
        if let Some(user) = &self.config.username {
            src.set_property("user-id", user);
        }
        if let Some(password) = &self.password {
            src.set_property("user-pw", password);
        }

        let sink = gst_app::AppSink::builder()
            .caps(&accepted_caps())
            .sync(false)
            .enable_last_sample(false)
            .max_buffers(64)
            .build();
        sink.set_callbacks(frame_callbacks(
            self.feed.clone(),
            retired,
            self.config.stall_timeout.0,
        ));

        pipeline
            .add_many([&src, sink.upcast_ref()])
            .map_err(|e| Fault::Start(e.to_string()))?;

        // Set up only the first H.264 or H.265 video stream; say what was offered otherwise.
        let chosen = Arc::new(AtomicBool::new(false));
        let offered = Offered::default();
        src.connect("select-stream", false, {
            let offered = offered.clone();
            move |args| {
                let caps = args.get(2).and_then(|v| v.get::<gst::Caps>().ok());
                let encoding = caps.as_ref().and_then(rtp_encoding).unwrap_or_default();
                let take = matches!(encoding.as_str(), "H264" | "H265")
                    && !chosen.swap(true, Ordering::Relaxed);
                offered.record(encoding, take);
                Some(take.to_value())
            }
        });
        let pipeline_weak = pipeline.downgrade();
        src.connect_pad_added(move |src, pad| {
            let Some(pipeline) = pipeline_weak.upgrade() else {
                return;
            };
            let Some(encoding) = pad.current_caps().as_ref().and_then(rtp_encoding) else {
                return;
            };
            if let Err(message) = link_video(&pipeline, pad, &encoding, &sink) {
                gst::element_error!(src, gst::CoreError::Negotiation, ("{message}"));
            }
        });
        Ok((pipeline, offered))
    }

    /// Removes the camera's password from a message, wherever GStreamer may have quoted it:
    /// done once, when the fault that quotes it is made.
    fn redact(&self, message: &str) -> String {
        let mut message = message.replace(self.config.url.expose(), &self.config.url.to_string());
        if let Some(password) = self.password.as_deref().filter(|p| !p.is_empty()) {
            message = message.replace(password, "***");
        }
        message
    }
}

/// The streams a camera offered while its session was set up.
#[derive(Debug, Clone, Default)]
struct Offered(Arc<Mutex<(Vec<String>, bool)>>);

impl Offered {
    fn record(&self, encoding: String, taken: bool) {
        if let Ok(mut offers) = self.0.lock() {
            offers.0.push(encoding);
            offers.1 |= taken;
        }
    }

    /// The offers, comma-separated, if there were some and none was taken.
    fn nothing_taken(&self) -> Option<String> {
        let offers = self.0.lock().ok()?;
        (!offers.0.is_empty() && !offers.1).then(|| offers.0.join(", "))
    }
}

/// `video/x-h264` in avc form or `video/x-h265` in hvc1 form, whole access units.
fn accepted_caps() -> gst::Caps {
    let mut caps = gst::Caps::builder("video/x-h264")
        .field("stream-format", "avc")
        .field("alignment", "au")
        .build();
    caps.merge(
        gst::Caps::builder("video/x-h265")
            .field("stream-format", "hvc1")
            .field("alignment", "au")
            .build(),
    );
    caps
}

/// The `encoding-name` of RTP caps, if they describe video.
fn rtp_encoding(caps: &gst::Caps) -> Option<String> {
    let s = caps.structure(0)?;
    let media = s.get::<&str>("media").ok()?;
    let encoding = s.get::<&str>("encoding-name").ok()?.to_ascii_uppercase();
    Some(if media == "video" {
        encoding
    } else {
        format!("{media}/{encoding}")
    })
}

/// Links a newly added rtspsrc pad through a depayloader and parser to the appsink.
fn link_video(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    encoding: &str,
    sink: &gst_app::AppSink,
) -> Result<(), String> {
    let (depay, parse) = match encoding {
        "H264" => ("rtph264depay", "h264parse"),
        "H265" => ("rtph265depay", "h265parse"),
        other => return Err(format!("unsupported video encoding {other}")),
    };
    let depay = make(depay).map_err(|e| e.to_string())?;
    let parse = make(parse).map_err(|e| e.to_string())?;
    pipeline
        .add_many([&depay, &parse])
        .map_err(|e| e.to_string())?;
    gst::Element::link_many([&depay, &parse, sink.upcast_ref()]).map_err(|e| e.to_string())?;
    for element in [&parse, &depay] {
        element
            .sync_state_with_parent()
            .map_err(|e| e.to_string())?;
    }
    let depay_sink = depay
        .static_pad("sink")
        .ok_or("depayloader without a sink pad")?;
    pad.link(&depay_sink)
        .map_err(|e| format!("cannot link the camera's video: {e:?}"))?;
    Ok(())
}

/// The appsink callback: times each access unit and pushes it into the ring.
///
/// rtspsrc runs its jitter buffer with `buffer-mode=none`, so buffer times are the camera's
/// RTP timestamps, exact relative to each other; [`StreamClock`] then places them on the
/// monotonic clock by their arrival.
fn frame_callbacks(
    feed: Arc<CameraFeed>,
    retired: Arc<AtomicBool>,
    stall_timeout: Duration,
) -> gst_app::AppSinkCallbacks {
    let mut first = true;
    let mut base_time: Option<gst::ClockTime> = None;
    let mut stream_clock = StreamClock::new(stall_timeout);
    let clock = clock::pipeline_clock();
    gst_app::AppSinkCallbacks::builder()
        .new_sample(move |sink| {
            let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
            if retired.load(Ordering::Relaxed) {
                return Err(gst::FlowError::Flushing);
            }
            let (Some(buffer), Some(caps)) = (sample.buffer_owned(), sample.caps_owned()) else {
                return Ok(gst::FlowSuccess::Ok);
            };
            // The base time is fixed once the pipeline plays; read it once per connection.
            let base = match base_time {
                Some(base) => base,
                None => {
                    let Some(base) = sink.base_time() else {
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    base_time = Some(base);
                    base
                }
            };
            let running = sample
                .segment()
                .and_then(|s| s.downcast_ref::<gst::ClockTime>())
                .zip(buffer.pts())
                .and_then(|(segment, pts)| segment.to_running_time(pts));
            let Some(running) = running else {
                return Ok(gst::FlowSuccess::Ok);
            };
            let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
            let arrival = clock.time().nseconds();
            let (time, jumped) = stream_clock.place((base + running).nseconds(), arrival);
            let frame = Frame {
                buffer,
                time,
                keyframe,
            };
            feed.push(frame, &caps, std::mem::take(&mut first) || jumped, arrival);
            Ok(gst::FlowSuccess::Ok)
        })
        .build()
}

/// Stops a pipeline off the async runtime: rtspsrc's teardown can block on the network.
struct Teardown<'a> {
    pipeline: gst::Pipeline,
    retired: Arc<AtomicBool>,
    relay: Option<Relay>,
    /// Where a stop that did not finish in time is left, for the next connection to wait on.
    stuck: &'a Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Whether [`Teardown::stop`] ran.
    stopped: bool,
}

impl Drop for Teardown<'_> {
    /// A connection dropped without [`Teardown::stop`] (its task cancelled: the runtime
    /// ending, a shutdown that gave up) still stops its pipeline. A pipeline disposed while
    /// PLAYING leaves rtspsrc's thread reading a closed connection, in a loop that takes a
    /// core until the process ends. The connection is cut first, so the stop cannot wait on
    /// the camera; it blocks only this abnormal path.
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        self.retired.store(true, Ordering::Relaxed);
        if let Some(relay) = &self.relay {
            relay.stop();
        }
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

impl Teardown<'_> {
    async fn stop(mut self) {
        self.stopped = true;
        self.retired.store(true, Ordering::Relaxed);
        let pipeline = self.pipeline.clone();
        let mut stopping = tokio::task::spawn_blocking(move || {
            let _ = pipeline.set_state(gst::State::Null);
        });
        // A stop that goes well sends the camera its TEARDOWN. One stuck in a read gets its
        // connection cut: the read ends, and the stop completes.
        let stopped = match &self.relay {
            Some(relay) => {
                let stopped = tokio::time::timeout(CUT_AFTER, &mut stopping).await.is_ok();
                if !stopped {
                    relay.stop();
                }
                stopped
            }
            None => false,
        };
        if !stopped
            && tokio::time::timeout(TEARDOWN_TIMEOUT, &mut stopping)
                .await
                .is_err()
        {
            tracing::warn!(pipeline = %self.pipeline.name(), "pipeline did not stop in time; the next connection waits for it");
            *lock(self.stuck) = Some(stopping);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
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
