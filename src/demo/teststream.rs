//! An in-process RTSP server serving live encoded test patterns, standing in for cameras in
//! the demo, the tests and the benchmark.
//!
//! It runs gstreamer-rtsp-server on its own GLib main loop thread, listening on 127.0.0.1 at
//! a port the system chooses. A mount can be taken down (clients disconnected, new ones
//! refused) and brought back on the same URL, or made to stall with its connection open, which
//! is how the tests make a camera fail.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;

/// The codec a test stream is encoded with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestCodec {
    /// H.264 by x264.
    H264,
    /// H.265 by x265.
    H265,
    /// Motion JPEG, which alertclip does not take (for error tests).
    Mjpeg,
}

/// What one mount serves.
#[derive(Debug, Clone)]
pub struct TestStream {
    /// Mount path, such as `/cam1`.
    pub path: String,
    /// Encoding.
    pub codec: TestCodec,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Frames from one keyframe to the next.
    pub gop_frames: u32,
    /// Target bitrate in kbit/s.
    pub bitrate_kbps: u32,
    /// B-frames between references (H.264 only; 0 for none).
    pub bframes: u32,
    /// `videotestsrc` pattern: `ball`, `smpte`, `snow` ...
    pub pattern: String,
    /// Burns the wall-clock time and the stream time into the picture.
    pub clock_overlay: bool,
    /// Serves this MP4 (H.264) instead of encoding a pattern, each client from its start, at
    /// its own pace. The other fields are then ignored.
    pub file: Option<std::path::PathBuf>,
    /// Shows this still image (PNG, JPEG) instead of the pattern, scaled to the stream's size:
    /// a scene with known content for the detector.
    pub image: Option<std::path::PathBuf>,
    /// A user name and password the mount asks for (HTTP Basic), as most cameras do.
    pub login: Option<(String, String)>,
}

impl TestStream {
    /// A small H.264 stream: 320x240, 15 fps, one keyframe a second.
    pub fn h264(path: &str) -> TestStream {
        TestStream {
            path: path.to_owned(),
            codec: TestCodec::H264,
            width: 320,
            height: 240,
            fps: 15,
            gop_frames: 15,
            bitrate_kbps: 400,
            bframes: 0,
            pattern: "ball".to_owned(),
            clock_overlay: false,
            file: None,
            image: None,
            login: None,
        }
    }

    /// The same stream in H.265.
    pub fn h265(path: &str) -> TestStream {
        TestStream {
            codec: TestCodec::H265,
            ..TestStream::h264(path)
        }
    }

    /// The same stream in Motion JPEG.
    pub fn mjpeg(path: &str) -> TestStream {
        TestStream {
            codec: TestCodec::Mjpeg,
            ..TestStream::h264(path)
        }
    }

    /// The `gst-rtsp-server` launch line of this stream.
    pub fn launch(&self) -> String {
        if let Some(file) = &self.file {
            return format!(
                "( filesrc location=\"{}\" ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )",
                file.display()
            );
        }
        let overlay = if self.clock_overlay {
            " ! clockoverlay time-format=\"%Y-%m-%d %H:%M:%S\" halignment=left valignment=top \
             shaded-background=true font-desc=\"Sans 20\" \
             ! timeoverlay halignment=right valignment=bottom shaded-background=true font-desc=\"Sans 16\""
        } else {
            ""
        };
        let (g, b) = (self.gop_frames, self.bitrate_kbps);
        let encode = match self.codec {
            TestCodec::H264 if self.bframes == 0 => format!(
                "x264enc tune=zerolatency speed-preset=ultrafast key-int-max={g} bitrate={b} \
                 ! rtph264pay name=pay0 pt=96 config-interval=1"
            ),
            TestCodec::H264 => format!(
                "x264enc speed-preset=veryfast bframes={} b-adapt=false rc-lookahead=5 key-int-max={g} bitrate={b} \
                 ! video/x-h264,profile=main \
                 ! rtph264pay name=pay0 pt=96 config-interval=1",
                self.bframes
            ),
            TestCodec::H265 => format!(
                "x265enc tune=zerolatency speed-preset=ultrafast key-int-max={g} bitrate={b} \
                 ! rtph265pay name=pay0 pt=96 config-interval=1"
            ),
            TestCodec::Mjpeg => "jpegenc ! rtpjpegpay name=pay0 pt=26".to_owned(),
        };
        let (w, h, fps) = (self.width, self.height, self.fps);
        let source = match &self.image {
            Some(image) => format!(
                "filesrc location=\"{}\" ! decodebin ! videoconvert ! videoscale \
                 ! video/x-raw,format=I420,width={w},height={h},pixel-aspect-ratio=1/1 \
                 ! imagefreeze is-live=true ! video/x-raw,framerate={fps}/1",
                image.display()
            ),
            None => format!(
                "videotestsrc is-live=true pattern={} ! video/x-raw,format=I420,width={w},height={h},framerate={fps}/1",
                self.pattern
            ),
        };
        format!("( {source}{overlay} ! valve name=gate drop=false ! {encode} )")
    }
}

/// A token giving the media-factory role `role`.
fn role_token(role: &str) -> rtsp::RTSPToken {
    rtsp::RTSPToken::builder()
        .field(rtsp::RTSP_TOKEN_MEDIA_FACTORY_ROLE.as_str(), role)
        .build()
}

/// Why the test server could not start.
#[derive(Debug, thiserror::Error)]
#[error("test RTSP server: {0}")]
pub struct TestServerError(String);

/// A running RTSP server on 127.0.0.1. Stops when dropped.
pub struct TestServer {
    port: u16,
    context: glib::MainContext,
    main_loop: glib::MainLoop,
    thread: Option<JoinHandle<()>>,
    server: rtsp::RTSPServer,
    factories: HashMap<String, rtsp::RTSPMediaFactory>,
    /// The media pipeline currently playing on each mount, for stalling it.
    media: HashMap<String, Arc<Mutex<Option<gst::Element>>>>,
}

impl TestServer {
    /// Serves `streams`, each on its own path.
    pub fn start(streams: &[TestStream]) -> Result<TestServer, TestServerError> {
        gst::init().map_err(|e| TestServerError(e.to_string()))?;
        let server = rtsp::RTSPServer::new();
        server.set_address("127.0.0.1");
        server.set_service("0");
        let mounts = server
            .mount_points()
            .ok_or_else(|| TestServerError("no mount points".into()))?;
        let mut factories = HashMap::new();
        let mut media = HashMap::new();
        // With any login, the server checks every mount: the others are open to anyone.
        let auth = streams.iter().any(|s| s.login.is_some()).then(|| {
            let auth = rtsp::RTSPAuth::new();
            auth.set_default_token(Some(&mut role_token("anyone")));
            server.set_auth(Some(&auth));
            auth
        });
        for stream in streams {
            let factory = rtsp::RTSPMediaFactory::new();
            if let Some(auth) = &auth {
                let role = match &stream.login {
                    Some((user, password)) => {
                        let role = format!("login{}", stream.path.replace('/', "-"));
                        let basic = rtsp::RTSPAuth::make_basic(user, password);
                        auth.add_basic(basic.as_str(), &role_token(&role));
                        role
                    }
                    None => "anyone".to_owned(),
                };
                let permit = |role: &str, construct: bool| {
                    factory.add_role_from_structure(
                        &gst::Structure::builder(role)
                            .field(rtsp::RTSP_PERM_MEDIA_FACTORY_ACCESS.as_str(), true)
                            .field(rtsp::RTSP_PERM_MEDIA_FACTORY_CONSTRUCT.as_str(), construct)
                            .build(),
                    )
                };
                permit(&role, true);
                if role != "anyone" {
                    // Anyone may see the mount but not play it: a wrong login gets 401
                    // Unauthorized, as from a camera, rather than 404.
                    permit("anyone", false);
                }
            }
            factory.set_launch(&stream.launch());
            // A pattern is shared by every client, as a camera's stream is; a file plays from
            // its start for each.
            factory.set_shared(stream.file.is_none());
            let playing = Arc::new(Mutex::new(None));
            let slot = playing.clone();
            factory.connect_media_configure(move |_, media| {
                if let Ok(mut slot) = slot.lock() {
                    *slot = Some(media.element());
                }
            });
            mounts.add_factory(&stream.path, factory.clone());
            factories.insert(stream.path.clone(), factory);
            media.insert(stream.path.clone(), playing);
        }
        let context = glib::MainContext::new();
        server
            .attach(Some(&context))
            .map_err(|e| TestServerError(e.to_string()))?;
        let port = u16::try_from(server.bound_port())
            .map_err(|_| TestServerError("the server did not bind a port".into()))?;
        let main_loop = glib::MainLoop::new(Some(&context), false);
        let thread = {
            let (context, main_loop) = (context.clone(), main_loop.clone());
            std::thread::Builder::new()
                .name("rtsp-test-server".into())
                .spawn(move || {
                    let _ = context.with_thread_default(|| main_loop.run());
                })
                .map_err(|e| TestServerError(e.to_string()))?
        };
        Ok(TestServer {
            port,
            context,
            main_loop,
            thread: Some(thread),
            server,
            factories,
            media,
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `rtsp://` URL of a mount.
    pub fn url(&self, path: &str) -> String {
        format!("rtsp://127.0.0.1:{}{path}", self.port)
    }

    /// Takes a mount down as a failed camera would: every client is disconnected and new
    /// sessions are refused until [`TestServer::bring_up`].
    pub fn take_down(&self, path: &str) {
        let server = self.server.clone();
        let path = path.to_owned();
        self.on_loop(move || {
            if let Some(mounts) = server.mount_points() {
                mounts.remove_factory(&path);
            }
            server.client_filter(Some(&mut |_, _| rtsp::RTSPFilterResult::Remove));
        });
    }

    /// Serves a mount taken down again, on the same URL.
    pub fn bring_up(&self, path: &str) {
        let (server, factory) = (self.server.clone(), self.factories.get(path).cloned());
        let path = path.to_owned();
        self.on_loop(move || {
            if let (Some(mounts), Some(factory)) = (server.mount_points(), factory) {
                mounts.add_factory(&path, factory);
            }
        });
    }

    /// Stops (or resumes) sending frames on a mount while keeping its sessions open, as a
    /// camera whose encoder hangs would.
    pub fn stall(&self, path: &str, stalled: bool) {
        let element = self.media.get(path).and_then(|m| m.lock().ok()?.clone());
        if let Some(gate) = element
            .and_then(|e| e.downcast::<gst::Bin>().ok())
            .and_then(|bin| {
                bin.by_name_recurse_up("gate")
                    .or_else(|| bin.by_name("gate"))
            })
        {
            gate.set_property("drop", stalled);
        }
    }

    /// Runs `f` on the server's main loop thread and waits for it.
    fn on_loop(&self, f: impl FnOnce() + Send + 'static) {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        self.context.invoke(move || {
            f();
            let _ = done_tx.send(());
        });
        let _ = done_rx.recv();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let server = self.server.clone();
        self.on_loop(move || {
            server.client_filter(Some(&mut |_, _| rtsp::RTSPFilterResult::Remove));
        });
        self.main_loop.quit();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
