//! A relay on loopback between an RTSP client and a camera, which the box can cut.
//!
//! Both clients read through it over TCP. retina sizes its read buffer by the body a reply
//! announces, as rtspsrc does, and neither bounds it. rtspsrc reads an RTSP reply into a buffer of whatever size the camera announces, and waits
//! on its socket in a poll nothing can wake: a camera announcing a 2 GB body and trickling it
//! holds a pipeline that cannot be stopped, and each reconnect left another behind (RSS grew
//! by 150 MB a minute, and the daemon could not exit). So rtspsrc is pointed at this relay (its
//! `proxy` property) instead of the camera. The relay connects only to the camera's own
//! address, copies bytes both ways, and watches the camera's side for what rtspsrc cannot
//! bound: a message header over [`MAX_HEADER`] or a body over [`MAX_BODY`] ends the
//! connection, the reason kept for the camera's status. Stopping the relay closes both sides,
//! so rtspsrc's read ends and its teardown completes.
//!
//! Interleaved RTP (`$`, channel, 16-bit length, data) passes through with only its 4-byte
//! header and the RTP timestamp looked at: the video itself is copied once, never parsed
//! here. The timestamp bounds what no client bounds, an access unit that never ends: packets
//! that keep one timestamp past [`MAX_FRAME_BYTES`] end the connection.
//!
//! Once video flows, the relay lets the kernel gather about [`GATHER`] of the stream before
//! it wakes (`SO_RCVLOWAT`, sized from the rate of the second before): a camera writes each
//! RTP packet on its own, some 300 a second at 3 Mbit/s, and a wake-up, a read and a write
//! for each cost more than the rest of the ingest. Batched, the relay and the client behind
//! it each wake a dozen times a second, and a frame reaches the ring up to that much later
//! (for as much as a second where the bitrate falls sharply, until the rate is measured anew).

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The longest header of an RTSP message from a camera: replies are a few hundred bytes.
pub const MAX_HEADER: usize = 64 << 10;
/// The largest body of an RTSP message from a camera: an SDP is a few kilobytes.
pub const MAX_BODY: u64 = 1 << 20;
/// Connections one session makes within [`CONNECTIONS_WITHIN`]: one, or a few where a camera
/// closes its connection between requests. More is a camera redirecting rtspsrc in a loop,
/// which follows every redirect.
pub const MAX_CONNECTIONS: usize = 8;
const CONNECTIONS_WITHIN: Duration = Duration::from_secs(10);
/// The largest access unit taken from a camera: a 4K keyframe at a high quality is a few
/// megabytes. A bigger one is a broken or hostile stream.
pub const MAX_FRAME_BYTES: usize = 16 << 20;
/// Bytes read from the camera at a time.
const READ_SIZE: usize = 64 << 10;
/// About how much of the stream, in time, the kernel gathers before waking the relay.
pub const GATHER: Duration = Duration::from_millis(80);
/// The most it gathers, whatever the rate: below what a kernel's receive buffer holds.
const MAX_GATHER_BYTES: u64 = 64 << 10;

/// A running relay to one camera: rtspsrc connects to [`Relay::proxy`].
#[derive(Debug)]
pub struct Relay {
    port: u16,
    stop: CancellationToken,
    violation: Arc<Mutex<Option<String>>>,
}

impl Relay {
    /// Listens on a free loopback port; each connection made to it is relayed to `host` and
    /// `port`, the camera's own address, and nowhere else.
    pub async fn start(host: String, port: u16) -> io::Result<Relay> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let relay = Relay {
            port: listener.local_addr()?.port(),
            stop: CancellationToken::new(),
            violation: Arc::default(),
        };
        let (stop, violation) = (relay.stop.clone(), relay.violation.clone());
        tokio::spawn(async move {
            let mut recent = std::collections::VecDeque::new();
            loop {
                let accepted = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((client, _)) = accepted else {
                    // Out of descriptors, most likely: not in a tight loop.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let now = tokio::time::Instant::now();
                recent.retain(|at| now.duration_since(*at) < CONNECTIONS_WITHIN);
                recent.push_back(now);
                if recent.len() > MAX_CONNECTIONS {
                    let reason = format!(
                        "the camera made the connection start over more than {MAX_CONNECTIONS} times in {} s (a redirect loop?)",
                        CONNECTIONS_WITHIN.as_secs()
                    );
                    tracing::warn!(%host, port, %reason, "cut the camera's connection");
                    *lock(&violation) = Some(reason);
                    drop(client);
                    continue;
                }
                let (stop, violation, host) = (stop.clone(), violation.clone(), host.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        outcome = relay_one(client, &host, port) => {
                            match outcome {
                                Err(Ended::Violation(reason)) => {
                                    tracing::warn!(%host, port, %reason, "cut the camera's connection");
                                    *lock(&violation) = Some(reason);
                                }
                                Err(Ended::Unreachable(reason)) => *lock(&violation) = Some(reason),
                                Ok(()) | Err(Ended::Io) => {}
                            }
                        }
                    }
                });
            }
        });
        Ok(relay)
    }

    /// rtspsrc's `proxy` property.
    pub fn proxy(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Why the relay cut the camera's connection, or could not make it, if so.
    pub fn violation(&self) -> Option<String> {
        lock(&self.violation).clone()
    }

    /// Closes every connection, so that rtspsrc's reads end.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// How a relayed connection ended, when not with one side closing.
enum Ended {
    Io,
    /// The camera broke a limit.
    Violation(String),
    /// The camera's address could not be connected to.
    Unreachable(String),
}

/// Relays one client connection to the camera until either side closes it.
async fn relay_one(client: TcpStream, host: &str, port: u16) -> Result<(), Ended> {
    // The client sees only its connection to the relay close: why is said for it.
    let camera = TcpStream::connect((host, port))
        .await
        .map_err(|e| Ended::Unreachable(format!("could not connect to {host}:{port}: {e}")))?;
    let _ = (client.set_nodelay(true), camera.set_nodelay(true));
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_camera, mut to_camera) = camera.into_split();
    // rtspsrc's end of the stream (a half-close, or the whole connection) is passed on; the
    // relay lets go once the camera's side ends, or it breaks a limit.
    let upstream = async {
        let _ = tokio::io::copy(&mut from_client, &mut to_camera).await;
        let _ = to_camera.shutdown().await;
        std::future::pending::<()>().await
    };
    let downstream = async {
        let mut framing = Framing::default();
        let mut gathering = Gathering::new();
        let mut buffer = vec![0u8; READ_SIZE];
        loop {
            let n = from_camera.read(&mut buffer).await.map_err(|_| Ended::Io)?;
            if n == 0 {
                return Ok(());
            }
            framing.feed(&buffer[..n]).map_err(Ended::Violation)?;
            // Replies to the client's requests come one at a time, each awaited: only once
            // frames flow is there always more on its way to push a reply past the mark.
            if framing.frames_seen
                && let Some(bytes) = gathering.read(n)
                && let Err(e) = crate::sys::set_receive_low_water(from_camera.as_ref(), bytes)
            {
                tracing::debug!(error = %e, "SO_RCVLOWAT");
            }
            to_client
                .write_all(&buffer[..n])
                .await
                .map_err(|_| Ended::Io)?;
        }
    };
    tokio::select! {
        _ = upstream => Ok(()),
        ended = downstream => ended,
    }
}

/// The low-water mark of the camera's socket, sized each second to [`GATHER`] of the stream
/// as it ran the second before, so that a camera slowing to a trickle is not held back for
/// long.
struct Gathering {
    since: Instant,
    bytes: u64,
    mark: u64,
}

impl Gathering {
    fn new() -> Gathering {
        Gathering {
            since: Instant::now(),
            bytes: 0,
            mark: 1,
        }
    }

    /// Counts `n` bytes read; a new mark when the second is over and the mark moves by more
    /// than a quarter.
    fn read(&mut self, n: usize) -> Option<u32> {
        self.bytes += n as u64;
        let elapsed = self.since.elapsed();
        if elapsed < Duration::from_secs(1) {
            return None;
        }
        let per_second = self.bytes as f64 / elapsed.as_secs_f64();
        let mark = ((per_second * GATHER.as_secs_f64()) as u64).clamp(1, MAX_GATHER_BYTES);
        (self.since, self.bytes) = (Instant::now(), 0);
        if mark.abs_diff(self.mark) * 4 <= self.mark {
            return None;
        }
        self.mark = mark;
        u32::try_from(mark).ok()
    }
}

/// Where the camera's byte stream is: RTSP messages (a header, then `Content-Length` bytes
/// of body) and interleaved frames, one after another. It reads them as GStreamer's own
/// parser does (stray line ends between messages skipped; lines ended by CR LF, LF or CR;
/// folded lines joined), so that it never sees a boundary where rtspsrc does not.
#[derive(Debug, Default)]
struct Framing {
    state: State,
    /// An interleaved frame has passed: the session plays.
    frames_seen: bool,
    /// Per interleaved channel, the RTP timestamp of the last packet and the bytes sent with it.
    timestamps: Vec<(u8, u32, usize)>,
}

#[derive(Debug, Default)]
enum State {
    /// Between messages.
    #[default]
    Boundary,
    /// Inside an interleaved frame's 4-byte header, with the bytes so far.
    FrameHeader([u8; 4], usize),
    /// Inside a message's header.
    Header(Header),
    /// Right after a header that ended with a CR, with its body's length to come.
    AfterCr(u64),
    /// Inside an interleaved frame's data: its channel and length, and its first bytes, the
    /// RTP header up to the timestamp, with how many have come.
    FrameData {
        channel: u8,
        length: u16,
        head: [u8; 8],
        have: usize,
    },
    /// Inside a body or a frame's data, with this many bytes to go.
    Skip(u64),
}

/// A message header being read: its bytes, and where its current line stands.
#[derive(Debug, Default)]
struct Header {
    bytes: Vec<u8>,
    /// Bytes in the current line, line ends left out.
    line: usize,
    /// The last byte was a CR, which a LF may complete.
    after_cr: bool,
    /// The empty line that ends the header ended with a CR: a LF right after belongs to it.
    ended_by_cr: bool,
}

impl Framing {
    /// Follows `bytes`; an error says what the camera sent that is over the limits.
    fn feed(&mut self, mut bytes: &[u8]) -> Result<(), String> {
        while let Some(&first) = bytes.first() {
            match &mut self.state {
                // GStreamer skips line ends between messages.
                State::Boundary if first == b'\r' || first == b'\n' => bytes = &bytes[1..],
                State::Boundary if first == b'$' => self.state = State::FrameHeader([0; 4], 0),
                State::Boundary => self.state = State::Header(Header::default()),
                State::FrameHeader(header, have) => {
                    let take = (4 - *have).min(bytes.len());
                    header[*have..*have + take].copy_from_slice(&bytes[..take]);
                    *have += take;
                    bytes = &bytes[take..];
                    if *have == 4 {
                        let length = u16::from_be_bytes([header[2], header[3]]);
                        self.frames_seen = true;
                        self.state = if length >= 8 {
                            State::FrameData {
                                channel: header[1],
                                length,
                                head: [0; 8],
                                have: 0,
                            }
                        } else {
                            State::Skip(u64::from(length))
                        };
                    }
                }
                State::FrameData {
                    channel,
                    length,
                    head,
                    have,
                } => {
                    let take = (8 - *have).min(bytes.len());
                    head[*have..*have + take].copy_from_slice(&bytes[..take]);
                    *have += take;
                    bytes = &bytes[take..];
                    if *have == 8 {
                        let (channel, length) = (*channel, *length);
                        let timestamp = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
                        self.count(channel, timestamp, usize::from(length))?;
                        self.state = State::Skip(u64::from(length) - 8);
                    }
                }
                State::Header(header) => {
                    // Byte by byte, but only through the header: a few hundred bytes.
                    let mut used = 0;
                    let mut ended = false;
                    for &byte in bytes {
                        used += 1;
                        header.bytes.push(byte);
                        if header.bytes.len() > MAX_HEADER {
                            return Err(format!(
                                "the camera sent an RTSP header over {} KiB: not a camera's reply",
                                MAX_HEADER >> 10
                            ));
                        }
                        if header.line_end(byte) {
                            ended = true;
                            break;
                        }
                    }
                    bytes = &bytes[used..];
                    if ended {
                        let body = content_length(&header.bytes)?;
                        self.state = if header.ended_by_cr {
                            State::AfterCr(body)
                        } else {
                            State::Skip(body)
                        };
                    }
                }
                State::AfterCr(body) => {
                    // The LF of the CR LF that ended the header, wherever the read split it.
                    let body = *body;
                    if first == b'\n' {
                        bytes = &bytes[1..];
                    }
                    self.state = State::Skip(body);
                }
                State::Skip(left) => {
                    let take = (*left).min(bytes.len() as u64);
                    *left -= take;
                    bytes = &bytes[take as usize..];
                }
            }
            if let State::Skip(0) = self.state {
                self.state = State::Boundary;
            }
        }
        Ok(())
    }
}

impl Framing {
    /// Adds an RTP packet to the bytes its channel has sent at its timestamp. RTCP (the odd
    /// channels) carries no video and is left alone.
    fn count(&mut self, channel: u8, timestamp: u32, length: usize) -> Result<(), String> {
        if channel % 2 == 1 {
            return Ok(());
        }
        let at = match self.timestamps.iter().position(|(c, ..)| *c == channel) {
            Some(at) => at,
            None => {
                self.timestamps.push((channel, timestamp, 0));
                self.timestamps.len() - 1
            }
        };
        let (_, last, bytes) = &mut self.timestamps[at];
        if *last != timestamp {
            (*last, *bytes) = (timestamp, 0);
        }
        *bytes += length;
        if *bytes > MAX_FRAME_BYTES {
            return Err(format!(
                "the camera sent over {} MiB of RTP packets with one timestamp on channel {channel}: a frame that never ends",
                MAX_FRAME_BYTES >> 20
            ));
        }
        Ok(())
    }
}

impl Header {
    /// Takes one byte of the header; true when it ends the header (an empty line).
    fn line_end(&mut self, byte: u8) -> bool {
        match byte {
            b'\n' if self.after_cr => {
                // The LF of a CR LF: the line end was counted at the CR.
                self.after_cr = false;
                false
            }
            b'\n' | b'\r' => {
                self.after_cr = byte == b'\r';
                if self.line == 0 {
                    self.ended_by_cr = self.after_cr;
                    return true;
                }
                self.line = 0;
                false
            }
            _ => {
                self.after_cr = false;
                self.line += 1;
                false
            }
        }
    }
}

/// The `Content-Length` of a message's header (0 without one), within [`MAX_BODY`]. Folded
/// lines are joined first. A value that is not a plain number, or two that disagree, cut
/// the connection: where the relay and rtspsrc could read a header differently, neither
/// goes on.
fn content_length(header: &[u8]) -> Result<u64, String> {
    let text = String::from_utf8_lossy(header);
    let mut lines: Vec<String> = Vec::new();
    for line in text.split(['\r', '\n']).filter(|l| !l.is_empty()) {
        match lines.last_mut() {
            Some(last) if line.starts_with([' ', '\t']) => last.push_str(line),
            _ => lines.push(line.to_owned()),
        }
    }
    let mut found: Option<String> = None;
    for line in &lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("content-length") {
            continue;
        }
        let value = value.trim().to_owned();
        match &found {
            Some(earlier) if *earlier != value => {
                return Err(format!(
                    "the camera sent an RTSP reply with two Content-Lengths, \"{}\" and \"{}\"",
                    earlier.chars().take(20).collect::<String>(),
                    value.chars().take(20).collect::<String>()
                ));
            }
            _ => found = Some(value),
        }
    }
    let Some(value) = found else {
        return Ok(0);
    };
    match value.parse::<u64>() {
        Ok(length) if length <= MAX_BODY => Ok(length),
        Ok(length) => Err(format!(
            "the camera announced a {length}-byte RTSP reply, over the {} MiB a camera's reply can take",
            MAX_BODY >> 20
        )),
        Err(_) => Err(format!(
            "the camera sent an RTSP reply with a Content-Length of \"{}\"",
            value.chars().take(40).collect::<String>()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(channel: u8, data: &[u8]) -> Vec<u8> {
        let mut out = vec![b'$', channel];
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn replies_and_interleaved_frames_pass_in_pieces_of_any_size() {
        let sdp = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\n";
        let mut stream = format!(
            "RTSP/1.0 200 OK\r\nCSeq: 2\r\ncontent-length: {}\r\n\r\n{sdp}",
            sdp.len()
        )
        .into_bytes();
        // A frame whose data looks like a header, and a reply without a body.
        stream.extend(frame(
            0,
            b"RTSP/1.0 200 OK\r\nContent-Length: 999999999\r\n\r\n",
        ));
        stream.extend(frame(1, &[0u8; 1400]));
        stream.extend_from_slice(b"RTSP/1.0 200 OK\r\nCSeq: 3\r\n\r\n");
        stream.extend(frame(0, &[b'$'; 65535]));
        // A stray line end after a body, LF-only lines, and a folded header.
        stream.extend_from_slice(b"\r\nRTSP/1.0 200 OK\nCSeq: 4\nContent-Length: 3\n\nabc");
        stream.extend_from_slice(
            b"RTSP/1.0 200 OK\r\nX-Note: a\r\n  b\r\nContent-Length: 2\r\n\r\nhi",
        );
        stream.extend(frame(1, b"end"));
        for piece in [1, 3, 7, 1000, stream.len()] {
            let mut framing = Framing::default();
            for part in stream.chunks(piece) {
                framing.feed(part).unwrap();
            }
            assert!(matches!(framing.state, State::Boundary), "{piece}");
        }
    }

    fn rtp(timestamp: u32, length: usize) -> Vec<u8> {
        let mut packet = vec![0x80, 96, 0, 1];
        packet.extend_from_slice(&timestamp.to_be_bytes());
        packet.resize(length, 0x41);
        packet
    }

    #[test]
    fn a_frame_that_never_ends_is_cut_at_its_limit_and_only_then() {
        let packets = MAX_FRAME_BYTES / 1400 + 1;
        // Video whose timestamp moves on, and RTCP, pass however much of it comes.
        let mut framing = Framing::default();
        for i in 0..packets as u32 {
            framing.feed(&frame(0, &rtp(i / 10, 1400))).unwrap();
            framing.feed(&frame(1, &rtp(7, 1400))).unwrap();
        }
        assert!(framing.frames_seen);
        // One timestamp past the limit, the header split across reads.
        let mut framing = Framing::default();
        let error = (0..packets)
            .find_map(|_| {
                let bytes = frame(2, &rtp(90_000, 1400));
                framing
                    .feed(&bytes[..6])
                    .and_then(|()| framing.feed(&bytes[6..]))
                    .err()
            })
            .expect("refused");
        assert!(
            error.contains("16 MiB") && error.contains("channel 2"),
            "{error}"
        );
    }

    #[test]
    fn the_low_water_mark_follows_the_rate_of_the_second_before() {
        let mut gathering = Gathering::new();
        assert_eq!(gathering.read(1000), None, "within the first second");
        // 375 KB in a second (3 Mbit/s): about 80 ms of it.
        gathering.since -= Duration::from_secs(1);
        gathering.bytes = 375_000 - 1000;
        let mark = gathering.read(1000).unwrap();
        assert!((28_000..=32_000).contains(&mark), "{mark}");
        // Within a quarter: left as it is; a trickle: down to a few packets.
        gathering.since -= Duration::from_secs(1);
        assert_eq!(gathering.read(340_000), None);
        gathering.since -= Duration::from_secs(1);
        let mark = gathering.read(20_000);
        assert!(matches!(mark, Some(1500..=1600)), "{mark:?}");
        // Far more than any camera: no more than the kernel's buffer takes.
        gathering.since -= Duration::from_secs(1);
        assert_eq!(gathering.read(100 << 20), Some(64 << 10));
    }

    #[test]
    fn what_no_camera_sends_is_refused_with_the_reason() {
        let huge = b"RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Length: 2000000000\r\n\r\n";
        let error = Framing::default().feed(huge).unwrap_err();
        assert!(error.contains("2000000000-byte"), "{error}");
        // An endless header, arriving in pieces.
        let mut framing = Framing::default();
        let line = [b'x'; 1000];
        let error = (0..100)
            .find_map(|_| framing.feed(&line).err())
            .expect("refused before 100 KB");
        assert!(error.contains("over 64 KiB"), "{error}");
        for bad in [
            &b"RTSP/1.0 200 OK\r\nContent-Length: -1\r\n\r\n"[..],
            b"RTSP/1.0 200 OK\r\nContent-Length: 2000000000abc\r\n\r\n",
            b"RTSP/1.0 200 OK\r\nContent-Length: 0\r\nContent-Length: 2000000000\r\n\r\n",
            // Where another parser would end the header early, the body still counts.
            b"RTSP/1.0 200 OK\nContent-Length: 2000000000\n\n",
            b"RTSP/1.0 200 OK\rContent-Length: 2000000000\r\r",
            b"RTSP/1.0 200 OK\r\nX: y\r\n Content-Length: 0\r\nContent-Length: 2000000000\r\n\r\n",
        ] {
            assert!(
                Framing::default().feed(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // At the limit is fine.
        let ok = format!("RTSP/1.0 200 OK\r\nContent-Length: {MAX_BODY}\r\n\r\n");
        Framing::default().feed(ok.as_bytes()).unwrap();
    }
}
