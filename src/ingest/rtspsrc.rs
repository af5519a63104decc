//! The fallback ingest: GStreamer's `rtspsrc ! rtph26Xdepay ! h26Xparse ! appsink`, for
//! `rtsps://` cameras and for a camera the default client cannot read (`ingest =
//! "gstreamer"`).
//!
//! The appsink takes whole access units in `avc`/`hvc1` form, so every buffer carries its own
//! timestamp and keyframe flag. Its callback runs on GStreamer's streaming thread: it times
//! the frame and pushes it into the camera's feed. It never blocks or awaits. Over TCP,
//! rtspsrc reaches the camera through a [`Relay`] that bounds what the camera's replies can
//! make it hold and lets a stuck connection be cut.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::clock::{self, StreamClock};
use crate::config::Transport;
use crate::elements::make;
use crate::ingest::camera::{CameraFeed, Fault, Ingest, lock};
use crate::ingest::relay::Relay;
use crate::ingest::ring::Frame;

/// rtspsrc jitter-buffer latency. Low, because frames are buffered anyway and a clip can only
/// finish once its last frame is through.
const LATENCY_MS: u32 = 200;
/// A pipeline that does not stop within this long is abandoned (it can no longer push), and
/// the next connection waits for it.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// A stop not done by then has its connection to the camera cut (see `relay`).
const CUT_AFTER: Duration = Duration::from_secs(1);
/// How long the next connection waits for a pipeline that would not stop: after that it is
/// given up, and at most one per camera is ever waited for.
const STUCK_WAIT: Duration = Duration::from_secs(60);

/// One playing pipeline to a camera.
pub(super) struct Connection<'a> {
    ingest: &'a Ingest,
    teardown: Teardown<'a>,
    messages: gst::bus::BusStream,
    offered: Offered,
}

impl<'a> Connection<'a> {
    /// Builds the camera's pipeline and sets it playing, after the last pipeline that would
    /// not stop has (or has been given up).
    pub(super) async fn open(ingest: &'a Ingest) -> Result<Connection<'a>, Fault> {
        // One pipeline per camera that will not stop, at most: a camera that wedges every
        // connection must not pile them up.
        let stuck = lock(&ingest.stopping).take();
        if let Some(stopping) = stuck {
            tracing::warn!(camera = %ingest.config.id, "waiting for the previous connection to close before the next");
            if tokio::time::timeout(STUCK_WAIT, stopping).await.is_err() {
                tracing::error!(camera = %ingest.config.id, "the previous connection would not close; given up");
            }
        }
        let retired = Arc::new(AtomicBool::new(false));
        // rtsps:// goes to the camera directly: through the relay its replies are encrypted,
        // so only a stop could be made to work, not the limits. So does UDP: rtspsrc sends
        // its RTCP to the address it connected to, which would be the relay's.
        let relayed = !ingest.config.url.is_tls() && ingest.config.transport == Transport::Tcp;
        let relay = match ingest.config.url.host_port() {
            Some((host, port)) if relayed => Some(
                Relay::start(host, port)
                    .await
                    .map_err(|e| Fault::Start(format!("no relay to the camera: {e}")))?,
            ),
            _ => None,
        };
        let (pipeline, offered) = build_pipeline(ingest, retired.clone(), relay.as_ref())?;
        let teardown = Teardown {
            pipeline: pipeline.clone(),
            retired,
            relay,
            stuck: &ingest.stopping,
            stopped: false,
        };
        let Some(bus) = pipeline.bus() else {
            return Err(Fault::Start("pipeline without a bus".into()));
        };
        let messages = bus.stream();
        if let Err(e) = pipeline.set_state(gst::State::Playing) {
            teardown.stop().await;
            return Err(Fault::Start(e.to_string()));
        }
        Ok(Connection {
            ingest,
            teardown,
            messages,
            offered,
        })
    }

    /// Resolves when the pipeline fails or the camera ends the stream, with why. Frames flow
    /// on GStreamer's thread meanwhile. Cancel-safe: nothing is lost by dropping it.
    pub(super) async fn ended(&mut self) -> Fault {
        loop {
            let Some(message) = self.messages.next().await else {
                return Fault::Start("bus closed".into());
            };
            match message.view() {
                gst::MessageView::Error(e) => {
                    if let Some(offers) = self.offered.nothing_taken() {
                        return Fault::Unsupported(offers);
                    }
                    // rtspsrc saw only the connection end; the relay knows why.
                    if let Some(reason) = self.teardown.relay.as_ref().and_then(Relay::violation) {
                        return Fault::Stream(reason);
                    }
                    // GStreamer's details span lines; status and check show one.
                    let debug = e
                        .debug()
                        .map(|d| format!(" ({})", d.replace('\n', " ")))
                        .unwrap_or_default();
                    return Fault::Stream(self.ingest.redact(&format!("{}{debug}", e.error())));
                }
                gst::MessageView::Eos(_) => return Fault::Eos,
                _ => {}
            }
        }
    }

    /// Stops the pipeline (see [`Teardown::stop`]).
    pub(super) async fn stop(self) {
        self.teardown.stop().await;
    }
}

/// Builds the camera's pipeline. Also returns the encodings the camera offered, filled in
/// as the session is set up, to explain a camera with nothing alertclip can take.
fn build_pipeline(
    ingest: &Ingest,
    retired: Arc<AtomicBool>,
    relay: Option<&Relay>,
) -> Result<(gst::Pipeline, Offered), Fault> {
    let pipeline = gst::Pipeline::with_name(&format!("camera-{}", ingest.config.id));
    pipeline.use_clock(Some(&clock::pipeline_clock()));

    let src = make("rtspsrc")?;
    src.set_property("location", ingest.config.url.expose());
    if let Some(relay) = relay {
        src.set_property("proxy", relay.proxy());
    }
    src.set_property("latency", LATENCY_MS);
    // Timestamps straight from RTP: the jitter buffer's own clock slaving smears B-frames
    // by tens of milliseconds. Drift is corrected by `StreamClock` instead.
    src.set_property_from_str("buffer-mode", "none");
    src.set_property_from_str(
        "protocols",
        match ingest.config.transport {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        },
    );
    if let Some(user) = &ingest.config.username {
        src.set_property("user-id", user);
    }
    if let Some(password) = &ingest.password {
        src.set_property("user-pw", password);
    }

    let sink = gst_app::AppSink::builder()
        .caps(&accepted_caps())
        .sync(false)
        .enable_last_sample(false)
        .max_buffers(64)
        .build();
    sink.set_callbacks(frame_callbacks(
        ingest.feed.clone(),
        retired,
        ingest.config.stall_timeout.0,
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
