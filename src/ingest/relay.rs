//! A relay on loopback between rtspsrc and a camera, which the box can cut.
//!
//! rtspsrc reads an RTSP reply into a buffer of whatever size the camera announces, and waits
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
//! header looked at: the video itself is copied once, never parsed here.

use std::io;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The longest header of an RTSP message from a camera: replies are a few hundred bytes.
pub const MAX_HEADER: usize = 64 << 10;
/// The largest body of an RTSP message from a camera: an SDP is a few kilobytes.
pub const MAX_BODY: u64 = 1 << 20;
/// Connections one session makes: one, or a few where a camera closes its connection between
/// requests. More is a camera redirecting rtspsrc in a loop, which follows every redirect.
pub const MAX_CONNECTIONS: usize = 8;
/// Bytes read from the camera at a time.
const READ_SIZE: usize = 64 << 10;

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
            let mut connections = 0;
            loop {
                let accepted = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((client, _)) = accepted else { continue };
                connections += 1;
                if connections > MAX_CONNECTIONS {
                    let reason = format!(
                        "the camera made the connection start over more than {MAX_CONNECTIONS} times in one session (a redirect loop?)"
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
                            if let Err(Ended::Violation(reason)) = outcome {
                                tracing::warn!(%host, port, %reason, "cut the camera's connection");
                                *lock(&violation) = Some(reason);
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

    /// Why the relay cut the camera's connection, if it did.
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
    Violation(String),
}

/// Relays one rtspsrc connection to the camera until either side closes it.
async fn relay_one(client: TcpStream, host: &str, port: u16) -> Result<(), Ended> {
    let camera = TcpStream::connect((host, port))
        .await
        .map_err(|_| Ended::Io)?;
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
        let mut buffer = vec![0u8; READ_SIZE];
        loop {
            let n = from_camera.read(&mut buffer).await.map_err(|_| Ended::Io)?;
            if n == 0 {
                return Ok(());
            }
            framing.feed(&buffer[..n]).map_err(Ended::Violation)?;
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

/// Where the camera's byte stream is: RTSP messages (a header, then `Content-Length` bytes
/// of body) and interleaved frames, one after another.
#[derive(Debug, Default)]
struct Framing {
    state: State,
}

#[derive(Debug, Default)]
enum State {
    /// Between messages.
    #[default]
    Boundary,
    /// Inside an interleaved frame's 4-byte header, with the bytes so far.
    FrameHeader([u8; 4], usize),
    /// Inside a message's header, with the bytes so far.
    Header(Vec<u8>),
    /// Inside a body or a frame's data, with this many bytes to go.
    Skip(u64),
}

impl Framing {
    /// Follows `bytes`; an error says what the camera sent that is over the limits.
    fn feed(&mut self, mut bytes: &[u8]) -> Result<(), String> {
        while let Some(&first) = bytes.first() {
            match &mut self.state {
                State::Boundary if first == b'$' => self.state = State::FrameHeader([0; 4], 0),
                State::Boundary => self.state = State::Header(Vec::new()),
                State::FrameHeader(header, have) => {
                    let take = (4 - *have).min(bytes.len());
                    header[*have..*have + take].copy_from_slice(&bytes[..take]);
                    *have += take;
                    bytes = &bytes[take..];
                    if *have == 4 {
                        let length = u16::from_be_bytes([header[2], header[3]]);
                        self.state = State::Skip(u64::from(length));
                    }
                }
                State::Header(header) => {
                    // Only the header is kept, and only up to its limit.
                    let before = header.len();
                    let room = MAX_HEADER + 1 - before;
                    let take = room.min(bytes.len());
                    header.extend_from_slice(&bytes[..take]);
                    let from = before.saturating_sub(3);
                    match find(&header[from..], b"\r\n\r\n") {
                        Some(at) => {
                            let end = from + at + 4;
                            let body = content_length(&header[..end])?;
                            bytes = &bytes[end - before..];
                            self.state = State::Skip(body);
                        }
                        None if header.len() > MAX_HEADER => {
                            return Err(format!(
                                "the camera sent an RTSP header over {} KiB: not a camera's reply",
                                MAX_HEADER >> 10
                            ));
                        }
                        None => bytes = &bytes[take..],
                    }
                }
                State::Skip(left) => {
                    let take = (*left).min(bytes.len() as u64);
                    *left -= take;
                    bytes = &bytes[take as usize..];
                    if *left == 0 {
                        self.state = State::Boundary;
                    }
                }
            }
            if let State::Skip(0) = self.state {
                self.state = State::Boundary;
            }
        }
        Ok(())
    }
}

/// The `Content-Length` of a message's header (0 without one), within [`MAX_BODY`].
fn content_length(header: &[u8]) -> Result<u64, String> {
    let text = String::from_utf8_lossy(header);
    let Some(value) = text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().to_owned())
    }) else {
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

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
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
        for piece in [1, 3, 7, 1000, stream.len()] {
            let mut framing = Framing::default();
            for part in stream.chunks(piece) {
                framing.feed(part).unwrap();
            }
            assert!(matches!(framing.state, State::Boundary), "{piece}");
        }
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
        let bad = b"RTSP/1.0 200 OK\r\nContent-Length: -1\r\n\r\n";
        assert!(Framing::default().feed(bad).is_err());
        // At the limit is fine.
        let ok = format!("RTSP/1.0 200 OK\r\nContent-Length: {MAX_BODY}\r\n\r\n");
        Framing::default().feed(ok.as_bytes()).unwrap();
    }
}
