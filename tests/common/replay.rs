//! Replayed cameras: an RTSP server that answers as a real camera did, from the recorded
//! dialogues in `tests/cameras/`, and streams a real H.264 test stream.
//!
//! Each dialogue holds a camera's own replies to DESCRIBE, SETUP and PLAY, with its headers,
//! SDP, control URLs, `Session` and `Transport` formats and SSRC as the camera sent them. They
//! are replayed with only what must change for a test: the camera's address becomes the
//! server's, `CSeq` and `Content-Length` are the request's and the body's, the interleaved
//! channels or UDP ports are the client's, and the SDP's `sprop-parameter-sets` are the test
//! stream's, so that the video decodes. The video is one encoder's RTP packets, rewritten to
//! the camera's payload type, SSRC and the sequence number and RTP time its PLAY reply
//! announced.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{broadcast, mpsc};

/// One recorded camera dialogue.
#[derive(Debug, Clone)]
pub struct Dialogue {
    /// The file's name without `.rtsp`.
    pub name: String,
    /// The camera's stream URL as recorded (its address replaced when served).
    url: String,
    /// The camera's `host` or `host:port`, as its replies name it.
    authority: String,
    /// Replies by method (`DESCRIBE`, `SETUP`, `PLAY`, and optionally `OPTIONS`, `401`).
    replies: Vec<(String, String)>,
    /// A SETUP of a URL the camera does not serve goes unanswered (`unknown-setup silent`),
    /// rather than answered 404.
    silent_on_unknown: bool,
}

impl Dialogue {
    /// Every dialogue in `tests/cameras/`, by name.
    pub fn corpus() -> Vec<Dialogue> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cameras");
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "rtsp"))
            .collect();
        paths.sort();
        paths.iter().map(|p| Dialogue::read(p)).collect()
    }

    /// Reads one file: `#` comments, `url` and `authority` lines, then replies each after a
    /// `--- METHOD` line.
    pub fn read(path: &Path) -> Dialogue {
        let text = std::fs::read_to_string(path).unwrap();
        let (mut url, mut authority, mut silent_on_unknown) = (None, None, false);
        let mut replies: Vec<(String, String)> = Vec::new();
        for line in text.lines() {
            if let Some(method) = line.strip_prefix("--- ") {
                replies.push((method.trim().to_owned(), String::new()));
            } else if let Some((_, reply)) = replies.last_mut() {
                reply.push_str(line);
                reply.push('\n');
            } else if let Some(u) = line.strip_prefix("url ") {
                url = Some(u.trim().to_owned());
            } else if let Some(a) = line.strip_prefix("authority ") {
                authority = Some(a.trim().to_owned());
            } else if line.trim() == "unknown-setup silent" {
                silent_on_unknown = true;
            }
        }
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        Dialogue {
            url: url.unwrap_or_else(|| panic!("{name}: no url line")),
            authority: authority.unwrap_or_else(|| panic!("{name}: no authority line")),
            name,
            replies,
            silent_on_unknown,
        }
    }

    /// Whether the camera asks for a login (as `admin`, any password).
    pub fn needs_login(&self) -> bool {
        self.reply("401").is_some()
    }

    fn reply(&self, method: &str) -> Option<&str> {
        self.replies
            .iter()
            .find(|(m, _)| m == method)
            .map(|(_, r)| r.as_str())
    }

    /// `h264` or `h265`: the codec of the camera's video.
    pub fn codec(&self) -> &'static str {
        let describe = self.reply("DESCRIBE").unwrap_or_default();
        if describe.contains("H265/90000") {
            "h265"
        } else {
            "h264"
        }
    }

    /// The camera's video payload type: the first `m=video` line's format.
    fn video_pt(&self) -> u8 {
        let describe = self.reply("DESCRIBE").unwrap_or_default();
        describe
            .lines()
            .find_map(|l| l.strip_prefix("m=video "))
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|pt| pt.parse().ok())
            .unwrap_or(96)
    }
}

/// The test stream's RTP packets, for every replayed camera: 320x240 at 15 fps with a
/// keyframe a second and the parameter sets before each, in H.264 or H.265.
pub struct RtpSource {
    pipeline: gst::Pipeline,
    packets: broadcast::Sender<Arc<Vec<u8>>>,
    /// The SDP's parameter-set attributes and their values for this stream.
    sprops: Vec<(&'static str, String)>,
    h265: bool,
}

impl RtpSource {
    /// Starts an H.264 encoder, and returns once its parameter sets are known.
    pub async fn start() -> RtpSource {
        RtpSource::start_codec(false).await
    }

    /// The same in H.265.
    pub async fn h265() -> RtpSource {
        RtpSource::start_codec(true).await
    }

    async fn start_codec(h265: bool) -> RtpSource {
        gst::init().unwrap();
        let encode = if h265 {
            "x265enc tune=zerolatency speed-preset=ultrafast key-int-max=15 bitrate=300 \
             ! rtph265pay pt=96 config-interval=1 mtu=1200"
        } else {
            "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 bitrate=300 \
             ! video/x-h264,profile=baseline ! rtph264pay pt=96 config-interval=1 mtu=1200"
        };
        let names: &[&'static str] = if h265 {
            &["sprop-vps", "sprop-sps", "sprop-pps"]
        } else {
            &["sprop-parameter-sets"]
        };
        let pipeline = gst::parse::launch(&format!(
            "videotestsrc is-live=true pattern=ball ! video/x-raw,framerate=15/1 ! videoscale \
             ! capsfilter name=size caps=video/x-raw,width=320,height=240 \
             ! {encode} ! appsink name=sink sync=false"
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let sink = pipeline
            .by_name("sink")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        let (packets, _) = broadcast::channel(4096);
        let (sprop_tx, mut sprop_rx) =
            tokio::sync::watch::channel(None::<Vec<(&'static str, String)>>);
        let wanted = names.to_vec();
        let sender = packets.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    if sprop_tx.borrow().is_none()
                        && let Some(s) = sample.caps().and_then(|c| c.structure(0))
                    {
                        let found: Vec<(&'static str, String)> = wanted
                            .iter()
                            .filter_map(|n| Some((*n, s.get::<String>(*n).ok()?)))
                            .collect();
                        if found.len() == wanted.len() {
                            sprop_tx.send_replace(Some(found));
                        }
                    }
                    if let Some(buffer) = sample.buffer() {
                        let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                        let _ = sender.send(Arc::new(map.as_slice().to_vec()));
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        pipeline.set_state(gst::State::Playing).unwrap();
        let sprops = sprop_rx
            .wait_for(Option::is_some)
            .await
            .unwrap()
            .clone()
            .unwrap();
        RtpSource {
            pipeline,
            packets,
            sprops,
            h265,
        }
    }
}

impl RtpSource {
    /// Changes the picture size mid-stream, as a technician changing the camera's resolution
    /// does: the encoder starts again with new parameter sets and a keyframe.
    pub fn resize(&self, width: i32, height: i32) {
        let caps = gst::Caps::builder("video/x-raw")
            .field("width", width)
            .field("height", height)
            .build();
        self.pipeline
            .by_name("size")
            .unwrap()
            .set_property("caps", caps);
    }
}

impl Drop for RtpSource {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// A camera replaying its dialogue on a loopback port.
pub struct ReplayCamera {
    port: u16,
    path: String,
    task: tokio::task::JoinHandle<()>,
}

impl ReplayCamera {
    /// Serves `dialogue` with `source`'s video, until dropped.
    pub async fn start(dialogue: &Dialogue, source: &RtpSource) -> ReplayCamera {
        ReplayCamera::start_lossy(dialogue, source, None).await
    }

    /// The same, losing every `nth` video packet, as a lossy link would.
    pub async fn start_lossy(
        dialogue: &Dialogue,
        source: &RtpSource,
        lose_every: Option<u64>,
    ) -> ReplayCamera {
        ReplayCamera::start_with(dialogue, source, lose_every, None).await
    }

    /// The same, sending video a broken camera would.
    pub async fn start_hostile(
        dialogue: &Dialogue,
        source: &RtpSource,
        hostile: Hostile,
    ) -> ReplayCamera {
        ReplayCamera::start_with(dialogue, source, None, Some(hostile)).await
    }

    async fn start_with(
        dialogue: &Dialogue,
        source: &RtpSource,
        lose_every: Option<u64>,
        hostile: Option<Hostile>,
    ) -> ReplayCamera {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let ours = format!("127.0.0.1:{port}");
        let path = dialogue
            .url
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_owned()))
            .unwrap_or_else(|| "/".into());
        let served = Served {
            dialogue: dialogue.clone(),
            ours,
            sprops: source.sprops.clone(),
            h265: source.h265,
            pt: dialogue.video_pt(),
            lose_every,
            hostile,
        };
        let served = Arc::new(served);
        let packets = source.packets.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let served = served.clone();
                let packets = packets.subscribe();
                tokio::spawn(async move { served.session(socket, packets).await });
            }
        });
        ReplayCamera { port, path, task }
    }

    /// The URL a box is given for it.
    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}{}", self.port, self.path)
    }
}

impl Drop for ReplayCamera {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Served {
    dialogue: Dialogue,
    ours: String,
    sprops: Vec<(&'static str, String)>,
    h265: bool,
    pt: u8,
    lose_every: Option<u64>,
    hostile: Option<Hostile>,
}

/// What a broken camera sends instead of its video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostile {
    /// RTP headers around bytes that are no video (a fixed pseudo-random sequence).
    Garbage,
    /// The packets with RTP times that run backwards.
    Backwards,
    /// One access unit that never ends: slices with one RTP time and no marker, as fast as
    /// the connection takes them.
    Endless,
}

/// Where a session's video goes once it plays.
enum Sink {
    Interleaved(u8),
    Udp(UdpSocket, SocketAddr),
}

impl Sink {
    /// Sends one RTP packet: false when it could not go.
    async fn send(&self, out: &mpsc::Sender<Vec<u8>>, packet: &[u8]) -> bool {
        match self {
            Sink::Interleaved(channel) => {
                let mut frame = Vec::with_capacity(4 + packet.len());
                frame.extend_from_slice(&[b'$', *channel]);
                frame.extend_from_slice(&(packet.len() as u16).to_be_bytes());
                frame.extend_from_slice(packet);
                out.send(frame).await.is_ok()
            }
            Sink::Udp(socket, to) => socket.send_to(packet, to).await.is_ok(),
        }
    }
}

impl Served {
    /// Answers one connection's requests; after PLAY, streams the video to it.
    async fn session(&self, socket: TcpStream, mut packets: broadcast::Receiver<Arc<Vec<u8>>>) {
        let peer = socket.peer_addr().unwrap();
        let (mut reader, mut writer) = socket.into_split();
        let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(1024);
        let writing = tokio::spawn(async move {
            while let Some(bytes) = out_rx.recv().await {
                if writer.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        });
        let mut input = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut sink = None;
        let mut streaming: Option<tokio::task::JoinHandle<()>> = None;
        'read: loop {
            let n = match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            input.extend_from_slice(&chunk[..n]);
            loop {
                // Interleaved data from the client (its RTCP): skipped.
                if input.first() == Some(&b'$') {
                    if input.len() < 4 {
                        continue 'read;
                    }
                    let len = 4 + u16::from_be_bytes([input[2], input[3]]) as usize;
                    if input.len() < len {
                        continue 'read;
                    }
                    input.drain(..len);
                    continue;
                }
                let Some(end) = input.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue 'read;
                };
                let head = String::from_utf8_lossy(&input[..end]).into_owned();
                let body = header(&head, "Content-Length")
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if input.len() < end + 4 + body {
                    continue 'read;
                }
                input.drain(..end + 4 + body);
                let method = head
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let cseq = header(&head, "CSeq").unwrap_or("0").to_owned();
                let reply = match method.as_str() {
                    "SETUP" => match self.setup(&head, peer).await {
                        Ok((reply, chosen)) => {
                            sink = Some(chosen);
                            reply
                        }
                        Err(Some(refusal)) => refusal,
                        Err(None) => continue,
                    },
                    "PLAY" => {
                        let (reply, seq, rtptime, ssrc) = self.play();
                        if let Some(sink) = sink.take() {
                            let packets = std::mem::replace(&mut packets, broadcast::channel(1).1);
                            let play = Play {
                                pt: self.pt,
                                seq,
                                rtptime,
                                ssrc,
                                lose_every: self.lose_every,
                                h265: self.h265,
                                hostile: self.hostile,
                            };
                            streaming =
                                Some(tokio::spawn(stream(packets, sink, out_tx.clone(), play)));
                        }
                        reply
                    }
                    "DESCRIBE" => self.describe(&head),
                    "OPTIONS" => self.dialogue.reply("OPTIONS").map(str::to_owned).unwrap_or_else(|| {
                        "RTSP/1.0 200 OK\nPublic: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER\n\n".into()
                    }),
                    "TEARDOWN" => {
                        let _ = out_tx.send(framed("RTSP/1.0 200 OK\n\n", &cseq)).await;
                        break 'read;
                    }
                    _ => "RTSP/1.0 200 OK\n\n".into(),
                };
                if out_tx.send(framed(&reply, &cseq)).await.is_err() {
                    break 'read;
                }
            }
        }
        if let Some(streaming) = streaming {
            streaming.abort();
        }
        drop(out_tx);
        let _ = writing.await;
    }

    /// The camera's reply with its address replaced by the server's and the test stream's
    /// parameter sets.
    fn replayed(&self, reply: &str) -> String {
        let host = self
            .dialogue
            .authority
            .split(':')
            .next()
            .unwrap_or_default()
            .to_owned();
        let text = reply
            .replace(
                &format!("rtsp://{}", self.dialogue.authority),
                &format!("rtsp://{}", self.ours),
            )
            .replace(&host, "127.0.0.1");
        text.lines()
            .map(|line| {
                let mut line = line.to_owned();
                for (name, value) in &self.sprops {
                    let key = format!("{name}=");
                    if let Some(at) = line.find(&key) {
                        let start = at + key.len();
                        let end = line[start..]
                            .find([';', ' '])
                            .map_or(line.len(), |e| start + e);
                        line = format!("{}{value}{}", &line[..start], &line[end..]);
                    }
                }
                line
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    }

    fn describe(&self, request: &str) -> String {
        // A camera that asks for a login answers 401 until the request carries one.
        if let Some(challenge) = self.dialogue.reply("401")
            && header(request, "Authorization").is_none()
        {
            return challenge.to_owned();
        }
        if self.dialogue.reply("401").is_some() {
            let auth = header(request, "Authorization").unwrap_or_default();
            let user_ok = auth.contains("username=\"admin\"") || auth.starts_with("Basic ");
            if !user_ok {
                return "RTSP/1.0 401 Unauthorized\n\n".into();
            }
        }
        self.replayed(self.dialogue.reply("DESCRIBE").unwrap_or_default())
    }

    /// The camera's SETUP reply, its transport turned to what the client asked for; a 404 (or
    /// nothing, as some servers do) when the URL is not the stream's control URL resolved as
    /// the camera expects (below its Content-Base or the URL described, whatever RFC 3986
    /// says).
    /// `Err(None)` when the camera does not answer at all.
    async fn setup(
        &self,
        request: &str,
        peer: SocketAddr,
    ) -> Result<(String, Sink), Option<String>> {
        let target = request.split_whitespace().nth(1).unwrap_or_default();
        if !self
            .expected_setup_paths()
            .iter()
            .any(|p| p == path_of(target))
        {
            return Err(
                (!self.dialogue.silent_on_unknown).then(|| "RTSP/1.0 404 Not Found\n\n".into())
            );
        }
        let asked = header(request, "Transport").unwrap_or_default().to_owned();
        let reply = self.replayed(self.dialogue.reply("SETUP").unwrap_or_default());
        let param = |name: &str| {
            asked.split(';').find_map(|p| {
                let (k, v) = p.trim().split_once('=')?;
                (k == name).then(|| v.to_owned())
            })
        };
        // The camera's own parameters (unicast, mode, source, destination, ssrc ...) in its
        // order, then the client's channels or ports.
        let kept = |t: &str| {
            t.split(';')
                .skip(1)
                .filter(|p| {
                    let name = p.trim().split('=').next().unwrap_or_default();
                    !p.is_empty() && !["interleaved", "client_port", "server_port"].contains(&name)
                })
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        if let Some(channels) = param("interleaved") {
            let first: u8 = channels
                .split('-')
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or_default();
            let reply = rewrite_transport(&reply, |t| {
                let mut parts = vec!["RTP/AVP/TCP".to_owned()];
                parts.extend(kept(t));
                parts.push(format!("interleaved={channels}"));
                parts.join(";")
            });
            return Ok((reply, Sink::Interleaved(first)));
        }
        let ports = param("client_port")
            .ok_or_else(|| Some("RTSP/1.0 461 Unsupported Transport\n\n".to_owned()))?;
        let client_rtp: u16 = ports
            .split('-')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let (socket, server_rtp) = udp_pair().await;
        let reply = rewrite_transport(&reply, |t| {
            let mut parts = vec!["RTP/AVP".to_owned()];
            parts.extend(kept(t));
            parts.push(format!("client_port={ports}"));
            parts.push(format!("server_port={}-{}", server_rtp, server_rtp + 1));
            parts.join(";")
        });
        Ok((
            reply,
            Sink::Udp(socket, SocketAddr::new(peer.ip(), client_rtp)),
        ))
    }

    /// The paths a SETUP of the video stream is answered at.
    fn expected_setup_paths(&self) -> Vec<String> {
        let describe = self.replayed(self.dialogue.reply("DESCRIBE").unwrap_or_default());
        let sdp = describe.split_once("\n\n").map_or("", |(_, b)| b);
        let video = sdp
            .split("\nm=")
            .find(|m| m.starts_with("video"))
            .unwrap_or_default();
        let control = video
            .lines()
            .find_map(|l| l.strip_prefix("a=control:"))
            .unwrap_or("*")
            .trim();
        if control.contains("://") {
            return vec![path_of(control).to_owned()];
        }
        let base = header(&describe, "Content-Base")
            .map(str::to_owned)
            .unwrap_or_else(|| self.dialogue.url.clone());
        let base = path_of(&base).trim_end_matches('/').to_owned();
        if control == "*" {
            return vec![base];
        }
        vec![format!("{base}/{control}")]
    }

    /// The camera's PLAY reply, and the sequence number, RTP time and SSRC it announces.
    fn play(&self) -> (String, u16, u32, u32) {
        let reply = self.replayed(self.dialogue.reply("PLAY").unwrap_or_default());
        let info = header(&reply, "RTP-Info").unwrap_or_default().to_owned();
        let first = info.split(',').next().unwrap_or_default();
        let value = |name: &str| {
            first.split(';').find_map(|p| {
                let (k, v) = p.trim().split_once('=')?;
                (k == name).then(|| v.trim().to_owned())
            })
        };
        let seq = value("seq").and_then(|v| v.parse().ok()).unwrap_or(4242);
        let rtptime = value("rtptime")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0x1234_5678);
        // The SSRC the camera announced, in PLAY (decimal when longer than 8 digits) or
        // SETUP (hexadecimal, sometimes spaced or with 0x); else one of its own.
        let setup = self.dialogue.reply("SETUP").unwrap_or_default();
        let from_setup = header(setup, "Transport").and_then(|t| {
            t.split(';').find_map(|p| {
                let v = p.trim().strip_prefix("ssrc=")?.trim();
                let v = v.trim_start_matches("0x");
                u32::from_str_radix(v, 16).ok()
            })
        });
        let from_play = value("ssrc").and_then(|v| {
            if v.len() > 8 {
                v.parse().ok()
            } else {
                u32::from_str_radix(&v, 16).ok()
            }
        });
        let ssrc = from_setup.or(from_play).unwrap_or(0x5eed_cafe);
        (reply, seq, rtptime, ssrc)
    }
}

/// How a session's video is sent: the camera's payload type, the sequence number and RTP time
/// its PLAY reply announced, its SSRC, and the packets to lose.
struct Play {
    pt: u8,
    seq: u16,
    rtptime: u32,
    ssrc: u32,
    lose_every: Option<u64>,
    h265: bool,
    hostile: Option<Hostile>,
}

/// Streams the encoder's packets from the next keyframe's parameter sets on, renumbered from
/// `play`'s sequence number and RTP time, as the camera's payload type and SSRC.
async fn stream(
    mut packets: broadcast::Receiver<Arc<Vec<u8>>>,
    sink: Sink,
    out: mpsc::Sender<Vec<u8>>,
    play: Play,
) {
    let Play {
        pt,
        seq,
        rtptime,
        ssrc,
        lose_every,
        h265,
        hostile,
    } = play;
    if hostile == Some(Hostile::Endless) {
        return endless(sink, out, pt, seq, rtptime, ssrc).await;
    }
    let mut noise = 0x2545_f491_4f6c_dd1du64;
    let mut origin: Option<(u16, u32)> = None;
    let mut sent = 0u64;
    loop {
        let packet = match packets.recv().await {
            Ok(packet) => packet,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if packet.len() < 13 {
            continue;
        }
        let their_seq = u16::from_be_bytes([packet[2], packet[3]]);
        let their_ts = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        if origin.is_none() {
            // Start at the parameter sets (an H.264 SPS, an H.265 VPS), as a camera's first
            // packet after PLAY usually is.
            let first = if h265 {
                (packet[12] >> 1) & 0x3f == 32
            } else {
                packet[12] & 0x1f == 7
            };
            if !first {
                continue;
            }
            origin = Some((their_seq, their_ts));
        }
        let (seq0, ts0) = origin.unwrap();
        // After every `n` packets, the next packet of a P-frame is lost.
        sent += 1;
        if lose_every.is_some_and(|n| sent >= n) && !h265 && is_p_slice(&packet[12..]) {
            sent = 0;
            continue;
        }
        let mut rewritten = packet.as_ref().clone();
        let elapsed = their_ts.wrapping_sub(ts0);
        let ts = if hostile == Some(Hostile::Backwards) {
            rtptime.wrapping_sub(elapsed)
        } else {
            rtptime.wrapping_add(elapsed)
        };
        rewritten[1] = (rewritten[1] & 0x80) | (pt & 0x7f);
        rewritten[2..4]
            .copy_from_slice(&seq.wrapping_add(their_seq.wrapping_sub(seq0)).to_be_bytes());
        rewritten[4..8].copy_from_slice(&ts.to_be_bytes());
        if hostile == Some(Hostile::Garbage) {
            for byte in &mut rewritten[12..] {
                noise ^= noise << 13;
                noise ^= noise >> 7;
                noise ^= noise << 17;
                *byte = noise as u8;
            }
        }
        rewritten[8..12].copy_from_slice(&ssrc.to_be_bytes());
        if !sink.send(&out, &rewritten).await && matches!(sink, Sink::Interleaved(_)) {
            return;
        }
    }
}

/// [`Hostile::Endless`]: 1,400-byte non-IDR slices, all at `rtptime`, none with the marker.
async fn endless(
    sink: Sink,
    out: mpsc::Sender<Vec<u8>>,
    pt: u8,
    mut seq: u16,
    rtptime: u32,
    ssrc: u32,
) {
    loop {
        let mut packet = vec![0x80, pt & 0x7f];
        packet.extend_from_slice(&seq.to_be_bytes());
        packet.extend_from_slice(&rtptime.to_be_bytes());
        packet.extend_from_slice(&ssrc.to_be_bytes());
        packet.push(0x41);
        packet.resize(12 + 1400, 0x88);
        seq = seq.wrapping_add(1);
        if !sink.send(&out, &packet).await {
            return;
        }
    }
}

/// Whether an H.264 RTP payload carries (part of) a non-IDR slice: alone or in an FU-A.
fn is_p_slice(payload: &[u8]) -> bool {
    match payload.first().map(|b| b & 0x1f) {
        Some(1) => true,
        Some(28) => payload.get(1).is_some_and(|b| b & 0x1f == 1),
        _ => false,
    }
}

/// A UDP socket on an even loopback port whose odd neighbour is free too (RTP and RTCP).
async fn udp_pair() -> (UdpSocket, u16) {
    loop {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = socket.local_addr().unwrap().port();
        if port % 2 == 0
            && port < u16::MAX
            && UdpSocket::bind(("127.0.0.1", port + 1)).await.is_ok()
        {
            return (socket, port);
        }
    }
}

/// A reply with the request's CSeq in place of the recorded one, a Content-Length for its
/// body, and CR LF line ends.
fn framed(reply: &str, cseq: &str) -> Vec<u8> {
    let (head, body) = reply.split_once("\n\n").unwrap_or((reply, ""));
    let body = body.replace('\n', "\r\n");
    let mut lines: Vec<String> = Vec::new();
    let mut has_cseq = false;
    for line in head.lines() {
        let name = line.split(':').next().unwrap_or_default().trim();
        if name.eq_ignore_ascii_case("Content-Length") {
            continue;
        }
        if name.eq_ignore_ascii_case("CSeq") {
            // As the camera spells it ("Cseq", say).
            has_cseq = true;
            lines.push(format!("{name}: {cseq}"));
        } else {
            lines.push(line.to_owned());
        }
    }
    if !has_cseq {
        lines.insert(1.min(lines.len()), format!("CSeq: {cseq}"));
    }
    if !body.is_empty() {
        lines.push(format!("Content-Length: {}", body.len()));
    }
    format!("{}\r\n\r\n{body}", lines.join("\r\n")).into_bytes()
}

/// The path and query of an `rtsp://` URL.
fn path_of(url: &str) -> &str {
    url.split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or("/")
}

/// A header's value (the first of that name, case-insensitive).
fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The reply with its `Transport` header's value rewritten.
fn rewrite_transport(reply: &str, rewrite: impl Fn(&str) -> String) -> String {
    reply
        .lines()
        .map(|line| match line.split_once(':') {
            Some((name, value)) if name.trim().eq_ignore_ascii_case("Transport") => {
                format!("{name}: {}", rewrite(value.trim()))
            }
            _ => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}
