//! The default ingest: the `retina` RTSP client, in the camera's own tokio task.
//!
//! retina reads the session (TCP interleaved, or UDP), depacketizes H.264 or H.265 into
//! whole access units with 4-byte NAL lengths and the parameter sets kept apart, which is
//! exactly the `avc`/`hvc1` form the ring holds and the MP4 muxer takes. Each frame's bytes
//! become a `gst::Buffer` without a copy. There is no jitter buffer and no thread per camera:
//! a frame is in the ring as soon as its last packet is read.
//!
//! A change of parameter sets starts a new run with caps of its own (their `codec_data`
//! built by retina from the new SPS/PPS/VPS), so no clip spans it. After lost packets (UDP)
//! the ring drops the frames that follow until the next keyframe: a damaged frame never
//! reaches a clip, which has a gap there instead.
//!
//! Over TCP, the session goes through the camera's [`Relay`], which bounds what the camera
//! can make retina buffer: retina sizes its buffer by the body a reply announces, and grows a
//! frame for as long as its packets keep one timestamp.

use futures_util::StreamExt;
use gstreamer as gst;
use retina::client::{
    Credentials, Demuxed, PlayOptions, SessionOptions, SetupOptions, TcpTransportOptions,
    Transport as RetinaTransport, UdpTransportOptions,
};
use retina::codec::{CodecItem, FrameFormat, ParametersRef, VideoFrame, VideoParametersCodec};

use crate::clock::{self, MonoNs, StreamClock};
use crate::config::Transport;
use crate::ingest::camera::{Fault, Ingest, first_frame_timeout};
use crate::ingest::relay::{MAX_FRAME_BYTES, Relay};
use crate::ingest::ring::Frame;

/// One playing retina session to a camera.
pub(super) struct Connection<'a> {
    ingest: &'a Ingest,
    demuxed: Demuxed,
    /// The index of the video stream set up.
    stream: usize,
    /// The caps of the current run: rebuilt only when the parameters change.
    caps: Option<gst::Caps>,
    clock: StreamClock,
    /// The monotonic time the stream's timestamps count from.
    origin: MonoNs,
    /// The next frame starts a new run.
    discont: bool,
    relay: Option<Relay>,
}

impl<'a> Connection<'a> {
    /// DESCRIBE, SETUP of the first H.264 or H.265 video stream, PLAY: within the time a
    /// first frame is given.
    pub(super) async fn open(ingest: &'a Ingest) -> Result<Connection<'a>, Fault> {
        let within = first_frame_timeout(ingest.config.stall_timeout.0);
        match tokio::time::timeout(within, Connection::open_unbounded(ingest)).await {
            Ok(opened) => opened,
            Err(_) => Err(Fault::Stream(format!(
                "the camera did not set up a session within {within:?} (timeout)"
            ))),
        }
    }

    async fn open_unbounded(ingest: &'a Ingest) -> Result<Connection<'a>, Fault> {
        let config = &ingest.config;
        let (mut url, creds) = session_url(config, ingest.password.as_deref())?;
        let relay = match (config.transport, config.url.host_port()) {
            (Transport::Tcp, Some((host, port))) => {
                let relay = Relay::start(host, port)
                    .await
                    .map_err(|e| Fault::Start(format!("no relay to the camera: {e}")))?;
                // retina connects where the URL says: to the relay, which connects to the
                // camera alone. Only the authority changes; the path is the camera's.
                let relayed = url
                    .set_host(Some("127.0.0.1"))
                    .ok()
                    .and_then(|()| url.set_port(Some(relay.port())).ok());
                if relayed.is_none() {
                    return Err(Fault::Start(format!(
                        "cannot relay {}: the URL has no host",
                        config.url
                    )));
                }
                Some(relay)
            }
            _ => None,
        };
        let failed = |e: retina::Error| match relay.as_ref().and_then(Relay::violation) {
            Some(reason) => Fault::Stream(reason),
            None => Fault::Stream(ingest.redact(&one_line(&e))),
        };
        let options = SessionOptions::default()
            .creds(creds)
            .user_agent(format!("alertclip/{}", env!("CARGO_PKG_VERSION")));
        let mut session = retina::client::Session::describe(url, options)
            .await
            .map_err(failed)?;
        let chosen = session
            .streams()
            .iter()
            .position(|s| s.media() == "video" && matches!(s.encoding_name(), "h264" | "h265"));
        let Some(stream) = chosen else {
            let offered: Vec<String> = session
                .streams()
                .iter()
                .map(|s| match s.media() {
                    "video" => s.encoding_name().to_ascii_uppercase(),
                    media => format!("{media}/{}", s.encoding_name().to_ascii_uppercase()),
                })
                .collect();
            return Err(Fault::Unsupported(if offered.is_empty() {
                "nothing".into()
            } else {
                offered.join(", ")
            }));
        };
        let transport = match config.transport {
            Transport::Tcp => RetinaTransport::Tcp(TcpTransportOptions::default()),
            Transport::Udp => RetinaTransport::Udp(UdpTransportOptions::default()),
        };
        session
            .setup(
                stream,
                SetupOptions::default()
                    .transport(transport)
                    .frame_format(FrameFormat::MP4),
            )
            .await
            .map_err(failed)?;
        // Timestamps are left to `StreamClock` and the ring, as rtspsrc's are: retina's own
        // check of their jumps refuses a B-frame's step back.
        let playing = session.play(PlayOptions::default()).await.map_err(failed)?;
        let demuxed = playing.demuxed().map_err(failed)?;
        Ok(Connection {
            ingest,
            demuxed,
            stream,
            caps: None,
            clock: StreamClock::new(ingest.config.stall_timeout.0),
            origin: clock::mono_now(),
            discont: true,
            relay,
        })
    }

    /// Reads frames into the camera's feed until the session fails or ends, and says why.
    /// Cancel-safe: a frame is taken whole between two reads, never across one.
    pub(super) async fn ended(&mut self) -> Fault {
        loop {
            let item = match self.demuxed.next().await {
                Some(Ok(item)) => item,
                Some(Err(e)) => return self.failed(&e),
                // The relay's cut ends the stream as the camera's close would.
                None => return self.cut().unwrap_or(Fault::Eos),
            };
            if let CodecItem::VideoFrame(frame) = item
                && frame.stream_id() == self.stream
                && let Err(fault) = self.take(frame)
            {
                return fault;
            }
        }
    }

    /// Ends the session: retina sends TEARDOWN in the background where the camera needs one
    /// (UDP, or a server known to keep sessions), and the relay closes what is left.
    pub(super) async fn stop(self) {
        drop(self.demuxed);
        if let Some(relay) = &self.relay {
            relay.stop();
        }
    }

    fn failed(&self, e: &retina::Error) -> Fault {
        self.cut()
            .unwrap_or_else(|| Fault::Stream(self.ingest.redact(&one_line(e))))
    }

    /// Why the relay cut the camera off, if it did: that, not what retina saw of it after.
    fn cut(&self) -> Option<Fault> {
        self.relay
            .as_ref()
            .and_then(Relay::violation)
            .map(Fault::Stream)
    }

    /// Times one frame and pushes it into the feed.
    fn take(&mut self, frame: VideoFrame) -> Result<(), Fault> {
        let arrival = clock::mono_now();
        if frame.has_new_parameters() || self.caps.is_none() {
            let Some(ParametersRef::Video(params)) = self
                .demuxed
                .streams()
                .get(self.stream)
                .and_then(|s| s.parameters())
            else {
                // No SPS/PPS yet: nothing can decode this frame.
                return Ok(());
            };
            self.caps = Some(caps_of(params)?);
            self.discont = true;
        }
        let Some(caps) = &self.caps else {
            return Ok(());
        };
        // Packets lost before this frame took part of what it depends on, unless it is a
        // keyframe: the ring drops it and the rest of its GOP.
        let h265 = caps
            .structure(0)
            .is_some_and(|s| s.name() == "video/x-h265");
        let keyframe = frame.is_random_access_point() || (h265 && starts_h265_gop(frame.data()));
        let damaged = frame.loss() > 0 && !keyframe;
        let timestamp = frame.timestamp();
        let elapsed = i128::from(timestamp.elapsed()) * 1_000_000_000
            / i128::from(timestamp.clock_rate().get());
        let stream = self
            .origin
            .saturating_add_signed(i64::try_from(elapsed).unwrap_or(i64::MAX));
        let (time, jumped) = self.clock.place(stream, arrival);
        let data = frame.into_data();
        if data.len() > MAX_FRAME_BYTES {
            return Err(Fault::Stream(format!(
                "the camera sent a frame of {} bytes, more than the {MAX_FRAME_BYTES} a camera's frame may be",
                data.len()
            )));
        }
        if damaged {
            self.ingest.feed.lost();
        }
        let discont = std::mem::take(&mut self.discont) || jumped;
        let frame = Frame {
            buffer: gst::Buffer::from_mut_slice(data),
            time,
            keyframe,
        };
        self.ingest.feed.push(frame, caps, discont, arrival);
        Ok(())
    }
}

/// retina's error without the context (connection, stream, packet, with their addresses and
/// times) that follows it after an empty line: status and `check` show what went wrong, and
/// the log keeps the rest.
fn one_line(e: &retina::Error) -> String {
    let text = e.to_string();
    tracing::debug!(error = %text, "retina");
    text.split("\n\n")
        .next()
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Whether an H.265 access unit (4-byte NAL lengths) holds an IRAP picture: IDR, CRA or BLA,
/// NAL unit types 16 to 23. retina flags IDR alone, but most H.265 encoders (x265, cameras'
/// "smart" codecs) start their GOPs after the first with CRA, where a player starts as well.
fn starts_h265_gop(data: &[u8]) -> bool {
    let mut rest = data;
    while let Some((len, after)) = rest.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*len) as usize;
        let Some(&header) = after.first() else {
            return false;
        };
        if (16..=23).contains(&((header >> 1) & 0x3f)) {
            return true;
        }
        rest = after.get(len..).unwrap_or_default();
    }
    false
}

/// The URL retina is given, without credentials (retina takes them apart), and the
/// credentials: the URL's own, or `username` and the password file's.
fn session_url(
    config: &crate::config::Camera,
    password: Option<&str>,
) -> Result<(url::Url, Option<Credentials>), Fault> {
    let mut url = url::Url::parse(config.url.expose()).map_err(|e| {
        Fault::Start(format!(
            "the camera's URL {} cannot be read: {e}",
            config.url
        ))
    })?;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let embedded_user = (!url.username().is_empty()).then(|| decode(url.username()));
    let embedded_password = url.password().map(decode);
    let username = config.username.clone().or(embedded_user);
    let password = password.map(str::to_owned).or(embedded_password);
    let creds = username.map(|username| Credentials {
        username,
        password: password.unwrap_or_default(),
    });
    let cleared = url.set_username("").is_ok() && url.set_password(None).is_ok();
    if !cleared {
        return Err(Fault::Start(format!(
            "the camera's URL {} cannot hold credentials",
            config.url
        )));
    }
    // rtsps:// never comes here (see `Camera::ingest_client`); retina reads `rtsp` alone.
    Ok((url, creds))
}

/// `video/x-h264` in avc form or `video/x-h265` in hvc1 form, with the parameters' decoder
/// configuration record as `codec_data`.
fn caps_of(params: &retina::codec::VideoParameters) -> Result<gst::Caps, Fault> {
    let (name, format) = match params.codec_params() {
        VideoParametersCodec::H264 { .. } => ("video/x-h264", "avc"),
        VideoParametersCodec::H265 { .. } => ("video/x-h265", "hvc1"),
        other => {
            return Err(Fault::Unsupported(format!("{other:?}")));
        }
    };
    let (width, height) = params.pixel_dimensions();
    let mut caps = gst::Caps::builder(name)
        .field("stream-format", format)
        .field("alignment", "au")
        .field(
            "codec_data",
            gst::Buffer::from_slice(params.extra_data().to_vec()),
        )
        .field("width", i32::try_from(width).unwrap_or(i32::MAX))
        .field("height", i32::try_from(height).unwrap_or(i32::MAX));
    if let Some((num, den)) = params.frame_rate()
        && let (Ok(n), Ok(d)) = (i32::try_from(den), i32::try_from(num))
        && n > 0
        && d > 0
    {
        // retina gives the frame duration (num/den seconds); caps give frames per second.
        caps = caps.field("framerate", gst::Fraction::new(n, d));
    }
    Ok(caps.build())
}
