//! The local control socket: how `alertclip trigger` (and later `status`) reach the daemon.
//!
//! A Unix stream socket, mode 0660, so root and the service's group may use it. Each request
//! is one line of JSON and gets one line of JSON back.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::camera::{Camera, CameraStatus};
use crate::trigger::button::ButtonStatus;
use crate::trigger::buttons::Button;
use crate::trigger::{Trigger, TriggerKind, Triggers};

/// Longest request line accepted.
const MAX_REQUEST: usize = 64 * 1024;
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
    },
    /// Report the cameras' status.
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
    pub cameras: Option<BTreeMap<String, CameraStatus>>,
    /// Each button's status, for `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buttons: Option<BTreeMap<String, ButtonStatus>>,
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
    if path.exists() {
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
    triggers: Triggers,
    cameras: Vec<Camera>,
    buttons: Vec<Button>,
    tracker: TaskTracker,
    cancel: CancellationToken,
) {
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
        let (triggers, cameras, buttons, cancel) = (
            triggers.clone(),
            cameras.clone(),
            buttons.clone(),
            cancel.clone(),
        );
        tracker.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                result = answer(stream, &triggers, &cameras, &buttons) => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "control connection ended");
                    }
                }
            }
        });
    }
}

async fn answer(
    stream: UnixStream,
    triggers: &Triggers,
    cameras: &[Camera],
    buttons: &[Button],
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read.take(MAX_REQUEST as u64 + 1)).lines();
    while let Some(line) = lines.next_line().await? {
        let response = match serde_json::from_str::<Request>(&line) {
            Err(e) => Response::error(format!("bad request: {e}")),
            Ok(Request::Trigger { cameras: ids, note }) => {
                let mut trigger = Trigger::now(TriggerKind::Manual, "cli");
                trigger.cameras = ids;
                trigger.note = note;
                match triggers.fire(trigger).await {
                    Ok(event) => Response {
                        ok: true,
                        event_id: Some(event),
                        ..Response::default()
                    },
                    Err(e) => Response::error(e.to_string()),
                }
            }
            Ok(Request::Status) => Response {
                ok: true,
                buttons: Some(
                    buttons
                        .iter()
                        .map(|b| (b.id.clone(), b.status.borrow().clone()))
                        .collect(),
                ),
                cameras: Some(
                    cameras
                        .iter()
                        .map(|c| {
                            let mut status = c.status.borrow().clone();
                            status.detect = c.detect.as_ref().map(|d| d.borrow().clone());
                            (c.config.id.clone(), status)
                        })
                        .collect(),
                ),
                ..Response::default()
            },
        };
        let mut out = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
        out.push(b'\n');
        write.write_all(&out).await?;
    }
    Ok(())
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
