//! The running cameras, kept apart from the rest of the daemon so that a reload (SIGHUP)
//! keeps each camera whose ingest settings did not change, with its buffer: a clip cut just
//! after a reload still has its pre-roll.

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config;
use crate::ingest::camera::Camera;

/// What a camera's ingest depends on: a change in any of it means a new connection.
#[derive(Debug, Clone, PartialEq)]
struct IngestSettings {
    /// The camera's table without what only clips and detection use.
    config: config::Camera,
    ring_bytes: usize,
    password: Option<String>,
}

impl IngestSettings {
    fn of(camera: &config::Camera, ring_bytes: usize, password: Option<String>) -> IngestSettings {
        IngestSettings {
            config: config::Camera {
                post_roll: config::HumanDuration(std::time::Duration::ZERO),
                detect: None,
                ..camera.clone()
            },
            ring_bytes,
            password,
        }
    }
}

struct Running {
    ingest: IngestSettings,
    camera: Camera,
    cancel: CancellationToken,
    /// Asked for since the last [`CameraPool::begin`].
    wanted: bool,
}

/// The cameras ingesting now.
pub struct CameraPool {
    running: Vec<Running>,
    tracker: TaskTracker,
}

impl Default for CameraPool {
    fn default() -> Self {
        CameraPool {
            running: Vec::new(),
            tracker: TaskTracker::new(),
        }
    }
}

impl CameraPool {
    /// Starts a round of [`CameraPool::get`] calls; [`CameraPool::end`] stops the cameras the
    /// round did not ask for.
    pub fn begin(&mut self) {
        self.running.iter_mut().for_each(|r| r.wanted = false);
    }

    /// The camera for `config`: the running one when its ingest settings are unchanged
    /// (`true`), or a new one, replacing any running camera with the same id.
    pub fn get(
        &mut self,
        config: &config::Camera,
        ring_bytes: usize,
        password: Option<String>,
    ) -> (Camera, bool) {
        let ingest = IngestSettings::of(config, ring_bytes, password.clone());
        if let Some(running) = self.running.iter_mut().find(|r| r.ingest == ingest) {
            running.wanted = true;
            let mut camera = running.camera.clone();
            camera.config = config.clone();
            return (camera, true);
        }
        if let Some(i) = self
            .running
            .iter()
            .position(|r| r.camera.config.id == config.id)
        {
            self.running.swap_remove(i).cancel.cancel();
        }
        let cancel = CancellationToken::new();
        let camera = Camera::spawn(
            config.clone(),
            ring_bytes,
            password,
            &self.tracker,
            cancel.clone(),
        );
        self.running.push(Running {
            ingest,
            camera: camera.clone(),
            cancel,
            wanted: true,
        });
        (camera, false)
    }

    /// Stops the cameras not asked for since [`CameraPool::begin`].
    pub fn end(&mut self) {
        self.running.retain(|r| {
            if !r.wanted {
                tracing::info!(camera = %r.camera.config.id, "camera removed");
                r.cancel.cancel();
            }
            r.wanted
        });
    }

    /// Stops every camera and waits up to `limit` for them to close.
    pub async fn stop(&mut self, limit: std::time::Duration) -> bool {
        for running in self.running.drain(..) {
            running.cancel.cancel();
        }
        self.tracker.close();
        let stopped = tokio::time::timeout(limit, self.tracker.wait())
            .await
            .is_ok();
        self.tracker = TaskTracker::new();
        stopped
    }
}
