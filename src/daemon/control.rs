//! The local control socket: how `alertclip trigger` (and later `status`) reach the daemon.
//!
//! A Unix stream socket, mode 0660, so root and the service's group may use it. Each request
//! is one line of JSON and gets one line of JSON back.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::clip::history::{EventLog, EventSummary};
use crate::delivery::Publisher;
use crate::detect::DetectStatus;
use crate::health::Watched;
use crate::ingest::CameraStatus;
use crate::trigger::buttons::button::ButtonStatus;
use crate::trigger::buttons::{Button, LightShown};
use crate::trigger::{Trigger, TriggerKind, Triggers};
use alertclip_mqtt::LinkStatus;

/// Longest request line accepted.
const MAX_REQUEST: usize = 64 * 1024;
/// The longest note a trigger may carry: it goes into the alert, which must always fit.
pub const MAX_NOTE: usize = 500;
/// Control connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// A control connection that sends no request for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client waits for the daemon.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A request to the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Cut a clip now.
    Trigger {
        /// Cameras to clip; empty for all.
        #[serde(default)]
        cameras: Vec<String>,
        /// Free text recorded with the trigger.
        #[serde(default)]
        note: Option<String>,
        /// A test of the whole path (`alertclip test-alert`), marked `test` end to end, not
        /// a real alarm.
        #[serde(default)]
        test: bool,
    },
    /// Report the daemon's status.
    Status,
}

/// The daemon's answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// Why it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The event a trigger belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Uuid>,
    /// Each camera's status, for `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cameras: Option<BTreeMap<String, CameraReport>>,
    /// Each button's status, for `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buttons: Option<BTreeMap<String, ButtonStatus>>,
    /// The daemon's version, for `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Seconds since the daemon started, for `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_s: Option<u64>,
    /// What waits for the broker, for `status` with `[mqtt]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox: Option<OutboxStatus>,
    /// The broker connection, for `status` with `[mqtt]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<LinkStatus>,
    /// The last events, newest first, for `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<EventSummary>>,
    /// What each feedback light shows (`off`, `sending`, `delivered`, `failing`,
    /// `acknowledged`, `help_on_the_way`), for `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lights: Option<BTreeMap<String, String>>,
}

/// A camera in `status`: its ingest, how fresh its newest frame is, and its detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CameraReport {
    /// What ingest reports.
    #[serde(flatten)]
    pub ingest: CameraStatus,
    /// Seconds since the newest frame arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_frame_age_s: Option<f64>,
    /// Its detector, when it has `[camera.detect]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detect: Option<DetectStatus>,
}

/// The outbox, in `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxStatus {
    /// Events with something still to deliver.
    pub events: u64,
    /// Bytes waiting.
    pub bytes: u64,
    /// Messages (or clip chunks) waiting.
    pub messages: u64,
    /// The outbox's cap in bytes.
    pub max_bytes: u64,
    /// When the oldest event still waiting was raised, RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest: Option<String>,
}

/// What the control socket answers from: the daemon's parts.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    pub triggers: Triggers,
    pub cameras: Vec<Watched>,
    pub buttons: Vec<Button>,
    pub lights: Vec<LightShown>,
    pub publisher: Option<Arc<Publisher>>,
    pub log: EventLog,
    pub started: Instant,
}

impl Response {
    fn error(message: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(message.into()),
            ..Response::default()
        }
    }
}

/// Why the control socket could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The socket could not be created.
    #[error("control socket {path}: {message}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// What went wrong and what to do.
        message: String,
    },
    /// The daemon could not be reached.
    #[error("cannot reach the daemon at {path}: {message}")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// What went wrong and what to do.
        message: String,
    },
    /// The daemon answered something unreadable.
    #[error("unexpected answer from the daemon at {path}: {message}")]
    Protocol {
        /// The socket path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Creates the socket at `path`: its directory if missing, replacing a stale socket left by a
/// crash, but refusing to take over one a running daemon still answers on.
pub(crate) async fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let error = |message: String| ControlError::Bind {
        path: path.to_owned(),
        message,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| error(format!("cannot create {}: {e}", dir.display())))?;
    }
    if let Ok(existing) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        // Only a socket is ever removed: a path that names the configuration, the device key
        // or anything else by mistake is left alone.
        if !existing.file_type().is_socket() {
            return Err(error(
                "something that is not a socket is there: point control.socket at a path of its own"
                    .into(),
            ));
        }
        if UnixStream::connect(path).await.is_ok() {
            return Err(error("another alertclip daemon is listening on it".into()));
        }
        std::fs::remove_file(path)
            .map_err(|e| error(format!("cannot remove the stale socket: {e}")))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| error(e.to_string()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| error(format!("cannot set mode 0660: {e}")))?;
    Ok(listener)
}

/// Answers requests until `cancel`.
pub(crate) async fn serve(
    listener: UnixListener,
    context: Context,
    tracker: TaskTracker,
    cancel: CancellationToken,
) {
    let context = Arc::new(context);
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Bounded, so that idle or hostile connections cannot take the descriptors the
        // alert path needs: beyond the limit a connection is closed at once.
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(
                limit = MAX_CONNECTIONS,
                "control socket: too many connections; closing a new one"
            );
            drop(stream);
            continue;
        };
        let (context, cancel) = (context.clone(), cancel.clone());
        tracker.spawn(async move {
            let _permit = permit;
            tokio::select! {
                _ = cancel.cancelled() => {}
                result = answer(stream, &context) => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "control connection ended");
                    }
                }
            }
        });
    }
}

async fn answer(stream: UnixStream, context: &Context) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read.take(MAX_REQUEST as u64 + 1)).lines();
    loop {
        // A connection that sends nothing is closed: status and trigger are one line each.
        let line = match tokio::time::timeout(IDLE_TIMEOUT, lines.next_line()).await {
            Ok(line) => line?,
            Err(_) => return Ok(()),
        };
        let Some(line) = line else { break };
        let response = match serde_json::from_str::<Request>(&line) {
            Err(e) => Response::error(format!("bad request: {e}")),
            Ok(Request::Trigger {
                cameras: ids,
                note,
                test,
            }) if note
                .as_deref()
                .is_some_and(|n| crate::config::check_text(n, MAX_NOTE).is_err()) =>
            {
                let _ = (ids, test);
                Response::error(format!(
                    "note: {}",
                    note.as_deref()
                        .map(|n| crate::config::check_text(n, MAX_NOTE))
                        .and_then(Result::err)
                        .unwrap_or_default()
                ))
            }
            Ok(Request::Trigger {
                cameras: ids,
                note,
                test,
            }) => {
                let mut trigger = if test {
                    Trigger::now(TriggerKind::Test, "test-alert")
                } else {
                    Trigger::now(TriggerKind::Manual, "cli")
                };
                trigger.cameras = ids;
                trigger.note = note;
                match context.triggers.fire(trigger).await {
                    Ok(event) => Response {
                        ok: true,
                        event_id: Some(event),
                        ..Response::default()
                    },
                    // An event raised whose alert is not on disk yet still has its id.
                    Err(e) => Response {
                        event_id: e.event(),
                        ..Response::error(e.to_string())
                    },
                }
            }
            Ok(Request::Status) => status(context),
        };
        let mut out = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
        out.push(b'\n');
        // A client that never reads its answers does not keep its connection.
        match tokio::time::timeout(IDLE_TIMEOUT, write.write_all(&out)).await {
            Ok(written) => written?,
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

fn status(context: &Context) -> Response {
    let now = crate::clock::mono_now();
    Response {
        ok: true,
        version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        uptime_s: Some(context.started.elapsed().as_secs()),
        buttons: Some(
            context
                .buttons
                .iter()
                .map(|b| (b.id.clone(), b.status.borrow().clone()))
                .collect(),
        ),
        cameras: Some(
            context
                .cameras
                .iter()
                .map(|w| {
                    let report = CameraReport {
                        ingest: w.camera.status.borrow().clone(),
                        last_frame_age_s: w
                            .camera
                            .feed
                            .last_frame()
                            .map(|t| now.saturating_sub(t) as f64 / 1e9),
                        detect: w.detect.as_ref().map(|d| d.borrow().clone()),
                    };
                    (w.camera.config.id.clone(), report)
                })
                .collect(),
        ),
        outbox: context.publisher.as_ref().map(|p| {
            let stats = p.outbox().stats();
            OutboxStatus {
                events: stats.events,
                bytes: stats.bytes,
                messages: stats.messages,
                max_bytes: p.outbox().max_bytes(),
                oldest: stats.oldest.and_then(event_time),
            }
        }),
        broker: context.publisher.as_ref().map(|p| p.link_status()),
        events: Some(context.log.recent()),
        lights: Some(
            context
                .lights
                .iter()
                .map(|l| (l.name.clone(), l.pattern.borrow().meaning().to_owned()))
                .collect(),
        ),
        ..Response::default()
    }
}

/// `alertclip status` for people: a few lines and tables.
pub fn render_status(response: &Response) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let uptime = response.uptime_s.unwrap_or(0);
    let _ = writeln!(
        out,
        "alertclip {}, up {}h {:02}m",
        response.version.as_deref().unwrap_or("?"),
        uptime / 3600,
        uptime / 60 % 60
    );
    let dash = || "-".to_owned();
    if let Some(cameras) = &response.cameras {
        let _ = writeln!(
            out,
            "\n{:<16} {:<10} {:>5} {:>6} {:>9} {:>11} {:<13} last error",
            "camera", "state", "fps", "kbps", "buffered", "last frame", "detector"
        );
        for (id, c) in cameras {
            let state = c.ingest.state.as_str();
            let detector = c
                .detect
                .as_ref()
                .map_or_else(dash, |d| d.state.as_str().to_owned());
            let _ = writeln!(
                out,
                "{:<16} {:<10} {:>5.1} {:>6.0} {:>8.1}s {:>11} {:<13} {}",
                id,
                state,
                c.ingest.fps,
                c.ingest.kbps,
                c.ingest.buffered_s,
                c.last_frame_age_s
                    .map_or_else(dash, |age| format!("{age:.1}s ago")),
                detector,
                c.ingest.last_error.as_deref().unwrap_or("-")
            );
        }
    }
    if let Some(buttons) = response.buttons.as_ref().filter(|b| !b.is_empty()) {
        let _ = writeln!(out, "\n{:<16} {:<10} last error", "button", "state");
        for (id, b) in buttons {
            let state = b.state.as_str();
            let _ = writeln!(
                out,
                "{:<16} {:<10} {}",
                id,
                state,
                b.last_error.as_deref().unwrap_or("-")
            );
        }
    }
    if let Some(lights) = response.lights.as_ref().filter(|l| !l.is_empty()) {
        let shown: Vec<String> = lights
            .iter()
            .map(|(name, pattern)| format!("{name} {}", pattern.replace('_', " ")))
            .collect();
        let _ = writeln!(out, "\nlights: {}", shown.join(", "));
    }
    match (&response.broker, &response.outbox) {
        (Some(broker), Some(outbox)) => {
            let _ = writeln!(
                out,
                "\nbroker: {}, last acknowledgement {}{}",
                if broker.connected {
                    "connected"
                } else {
                    "NOT CONNECTED"
                },
                broker.last_ack.as_deref().unwrap_or("never"),
                broker
                    .last_error
                    .as_deref()
                    .map(|e| format!(", last error: {e}"))
                    .unwrap_or_default()
            );
            let _ = writeln!(
                out,
                "outbox: {} events, {} messages, {:.1} MiB of {:.0} MiB{}",
                outbox.events,
                outbox.messages,
                outbox.bytes as f64 / (1 << 20) as f64,
                outbox.max_bytes as f64 / (1 << 20) as f64,
                outbox
                    .oldest
                    .as_deref()
                    .map(|t| format!(", oldest from {t}"))
                    .unwrap_or_default()
            );
        }
        _ => {
            let _ = writeln!(out, "\nno [mqtt]: clips are kept on this box only");
        }
    }
    if let Some(events) = &response.events {
        let _ = writeln!(out, "\nlast events:");
        if events.is_empty() {
            let _ = writeln!(out, "  none since start");
        }
        for e in events {
            let kind = e.kind.as_str();
            let delivery = e.delivery.as_str();
            let _ = writeln!(
                out,
                "  {}  {:<9} {:<16} clips {}/{}  {}  {}",
                e.time,
                kind,
                e.source,
                e.clips,
                e.cameras.len(),
                delivery.replace('_', " "),
                e.event_id
            );
            if let Some(r) = &e.response {
                let _ = writeln!(
                    out,
                    "      officer response: {} (issued {}, received {})",
                    r.summary, r.issued_at, r.received_at
                );
            }
        }
    }
    out
}

/// When a (version 7, time-ordered) event id was made.
fn event_time(event: Uuid) -> Option<String> {
    let (seconds, nanos) = event.get_timestamp()?.to_unix();
    Some(crate::clock::rfc3339_ms(
        std::time::UNIX_EPOCH + Duration::new(seconds, nanos),
    ))
}

/// Sends one request to the daemon listening on `path` and returns its answer.
pub async fn call(path: &Path, request: &Request) -> Result<Response, ControlError> {
    let connect_error = |message: String| ControlError::Connect {
        path: path.to_owned(),
        message,
    };
    let protocol_error = |message: String| ControlError::Protocol {
        path: path.to_owned(),
        message,
    };
    let exchange = async {
        let stream = UnixStream::connect(path).await.map_err(|e| {
            connect_error(match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    format!("{e} (is the daemon running? try `systemctl status alertclip`)")
                }
                std::io::ErrorKind::PermissionDenied => {
                    format!("{e} (run as root or as a member of the service's group)")
                }
                _ => e.to_string(),
            })
        })?;
        let (read, mut write) = stream.into_split();
        let mut line = serde_json::to_vec(request).map_err(|e| protocol_error(e.to_string()))?;
        line.push(b'\n');
        write
            .write_all(&line)
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        let mut answer = String::new();
        BufReader::new(read)
            .read_line(&mut answer)
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        serde_json::from_str::<Response>(&answer)
            .map_err(|e| protocol_error(format!("{e}: {answer:?}")))
    };
    tokio::time::timeout(CLIENT_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(connect_error(format!(
                "no answer within {CLIENT_TIMEOUT:?}"
            )))
        })
}
