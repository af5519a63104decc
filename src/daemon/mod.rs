//! The daemon: wires cameras, the clipper and the control socket together, and shuts them
//! down in order.
//!
//! Data flows one way: cameras -> rings -> clipper -> clips on disk. Triggers enter through
//! one channel. Shutdown stops new triggers first, lets clips in progress gather post-roll for
//! most of the grace period, then finishes them with what they have, and stops the cameras
//! last.

pub mod control;
pub mod service;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clip::clipper::{Clipper, Outputs};
use crate::clip::history::EventLog;
use crate::clip::recover;
use crate::clip::storage::Storage;
use crate::clip::{ClipDone, Spool};
use crate::commands::{self, Commands};
use crate::config::Config;
use crate::delivery::{self, Publisher};
use crate::detect::Model;
use crate::detect::watch::{self, Detector, Watcher};
use crate::evidence::Evidence;
use crate::health::{self, Watched};
use crate::ingest::CameraPool;
use crate::ingest::camera::Camera;
use crate::trigger::Triggers;
use crate::trigger::buttons::light::Confirmations;
use crate::trigger::buttons::{self, Button, ButtonSetupError, DeliveryLink, LightShown};
use alertclip_mqtt::Session;
use service::Supervisor;

/// How long shutdown waits for clips in progress before finishing them as partial.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);
/// Time left after the grace period to mux, sync and rename what was gathered.
const FINISH_ALLOWANCE: Duration = Duration::from_secs(5);
/// Triggers waiting for the clipper before their sources wait for room.
const TRIGGER_QUEUE: usize = 64;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A secret named in the configuration could not be read.
    #[error("camera \"{camera}\": password_file {source}")]
    Secret {
        /// The camera's id.
        camera: String,
        /// The unreadable file.
        #[source]
        source: alertclip_mqtt::SecretError,
    },
    /// GStreamer could not be initialised.
    #[error("GStreamer: {0} (run scripts/setup.sh to install it)")]
    GStreamer(String),
    /// The clip directory could not be used.
    #[error("storage.dir: {0}")]
    Storage(std::io::Error),
    /// The device key or its chain could not be used.
    #[error("evidence.dir: {0}")]
    Evidence(#[source] crate::evidence::EvidenceError),
    /// The outbox could not be used.
    #[error("outbox.dir: {0}")]
    Outbox(#[source] std::io::Error),
    /// The broker password file cannot be read.
    #[error("mqtt.password_file {0}")]
    MqttPassword(#[source] alertclip_mqtt::SecretError),
    /// A TLS file of `[mqtt]` cannot be read.
    #[error("mqtt.{0}")]
    MqttTls(#[source] alertclip_mqtt::SettingsError),
    /// A button could not be set up.
    #[error(transparent)]
    Buttons(#[from] ButtonSetupError),
    /// The control socket could not be created.
    #[error(transparent)]
    Control(#[from] control::ControlError),
    /// The detector's runtime or model could not be loaded.
    #[error(transparent)]
    Detect(#[from] crate::detect::ModelError),
    /// `[desk]` cannot be used.
    #[error("{0}: {1}")]
    Desk(String, String),
}

impl StartError {
    /// Whether fixing the configuration (or a file it names) is what it takes.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            StartError::Secret { .. }
                | StartError::MqttPassword(_)
                | StartError::MqttTls(_)
                | StartError::Evidence(_)
                | StartError::Detect(_)
                | StartError::Desk(..)
        )
    }
}

/// A running daemon.
pub struct Daemon {
    config: Config,
    pool: CameraPool,
    cameras: Vec<Camera>,
    watched: Vec<Watched>,
    buttons: Vec<Button>,
    lights: Vec<LightShown>,
    triggers: Triggers,
    clips: broadcast::Sender<ClipDone>,
    /// Stops the control socket and the clipper.
    intake: CancellationToken,
    /// Finishes clips in progress with what they have.
    jobs: CancellationToken,
    /// Stops the detectors watching the cameras.
    cameras_cancel: CancellationToken,
    /// Stops delivery (last, after the clips in progress are spooled).
    delivery_cancel: CancellationToken,
    publisher: Option<Arc<Publisher>>,
    events: EventLog,
    tracker: TaskTracker,
    jobs_tracker: TaskTracker,
    delivery_tracker: TaskTracker,
}

impl Daemon {
    /// Starts every camera, the clipper and the control socket.
    pub async fn start(config: Config) -> Result<Daemon, StartError> {
        Daemon::start_with(config, CameraPool::default())
            .await
            .map_err(|(error, _)| error)
    }

    /// Starts with the cameras of `pool` that are still configured the same way, so that
    /// they keep their buffers. On failure the pool comes back, for another attempt.
    async fn start_with(
        config: Config,
        mut pool: CameraPool,
    ) -> Result<Daemon, (StartError, CameraPool)> {
        match Daemon::start_parts(&config, &mut pool).await {
            Ok(mut daemon) => {
                daemon.pool = pool;
                daemon.config = config;
                Ok(daemon)
            }
            Err(error) => Err((error, pool)),
        }
    }

    /// Everything but the camera pool, which the caller hands over.
    async fn start_parts(config: &Config, pool: &mut CameraPool) -> Result<Daemon, StartError> {
        gstreamer::init().map_err(|e| StartError::GStreamer(e.to_string()))?;
        match crate::sys::raise_open_files_limit() {
            Ok(limit) => tracing::debug!(limit, "open files limit"),
            Err(error) => tracing::warn!(%error, "cannot raise the open files limit"),
        }
        let storage = Storage::open(&config.storage.dir, config.storage.max_bytes.0)
            .map_err(StartError::Storage)?;

        let mut passwords = Vec::new();
        for camera in &config.cameras {
            let password = match &camera.password_file {
                Some(path) => Some(alertclip_mqtt::read_secret(path).map_err(|source| {
                    StartError::Secret {
                        camera: camera.id.clone(),
                        source,
                    }
                })?),
                None => None,
            };
            passwords.push(password);
        }

        // The device key, and delivery, are set up before anything starts, so that a bad key,
        // TLS or password file stops the daemon at once.
        // The alert chain is only kept by a box that delivers alerts.
        let evidence = Arc::new(
            Evidence::open(&config.evidence.dir, config.mqtt.is_some())
                .map_err(StartError::Evidence)?,
        );
        tracing::info!(key_id = %evidence.key().key_id(), "device key loaded");
        let delivery = match &config.mqtt {
            Some(mqtt) => {
                let publisher =
                    Arc::new(Publisher::open(config, mqtt).map_err(StartError::Outbox)?);
                let settings = delivery::settings(config, mqtt, publisher.topics())
                    .map_err(StartError::MqttPassword)?;
                Some((publisher, settings, mqtt.status_interval.0))
            }
            None => None,
        };
        // What buttons and lights hear of delivery. Wireless buttons on the delivery broker,
        // and the desk's commands, connect to it with sessions of their own, so that what
        // arrives on their topics can never take the alert channel down.
        let link = delivery
            .as_ref()
            .map(|(publisher, settings, _)| DeliveryLink {
                confirmations: Confirmations {
                    acked: publisher.acked_alerts(),
                    link: publisher.link(),
                    responses: publisher.responses(),
                },
                broker: settings.clone(),
            });
        let detector = load_detector(config)?;
        let listener = control::bind(&config.control.socket).await?;

        let tracker = TaskTracker::new();
        let jobs_tracker = TaskTracker::new();
        let delivery_tracker = TaskTracker::new();
        let cameras_cancel = CancellationToken::new();
        let delivery_cancel = CancellationToken::new();
        let (triggers, requests) = Triggers::channel(TRIGGER_QUEUE);
        let mut cameras = Vec::new();
        let mut watched = Vec::new();
        pool.begin();
        for (camera, password) in config.cameras.iter().zip(passwords) {
            let (running, kept) = pool.get(camera, config.ring_bytes(camera), password.clone());
            if kept {
                tracing::info!(camera = %camera.id, "camera unchanged: its buffer is kept");
            }
            let mut detect_status = None;
            if let (Some(detector), Some(detect)) = (&detector, &camera.detect) {
                // A substream is ingested like a camera of its own, into a small ring the
                // detector reads; the main stream's ring is left alone.
                let feed = match &detect.url {
                    Some(url) => {
                        pool.get(
                            &watch::substream(camera, url),
                            watch::SUBSTREAM_RING_BYTES,
                            password,
                        )
                        .0
                        .feed
                    }
                    None => running.feed.clone(),
                };
                let watcher = Watcher::spawn(
                    &camera.id,
                    detect,
                    feed,
                    detector,
                    triggers.clone(),
                    &tracker,
                    cameras_cancel.child_token(),
                );
                detect_status = Some(watcher.status);
            }
            watched.push(Watched {
                camera: running.clone(),
                detect: detect_status,
            });
            cameras.push(running);
        }
        pool.end();

        // Buttons before delivery starts: wireless ones subscribe on the delivery broker.
        let intake = CancellationToken::new();
        let buttons::Started { buttons, lights } = buttons::start(
            config,
            &triggers,
            link.as_ref(),
            &tracker,
            &intake,
            &delivery_cancel,
        )?;
        let log = EventLog::default();

        let publisher = match delivery {
            Some((publisher, settings, status_interval)) => {
                let link_cancel = CancellationToken::new();
                let (session, events) =
                    Session::start(&settings, &delivery_tracker, link_cancel.clone())
                        .map_err(StartError::MqttTls)?;
                let started_at = SystemTime::now();
                let status = {
                    let parts = health::Parts {
                        cameras: watched.clone(),
                        buttons: buttons.clone(),
                        lights: lights.clone(),
                        log: log.clone(),
                    };
                    let publisher = publisher.clone();
                    move || health::status(&parts, publisher.outbox(), started_at)
                };
                // What a light shows is in the status: published again when it changes, so
                // a desk sees the store's light change as the staff do.
                for light in &lights {
                    let (mut pattern, publisher) = (light.pattern.clone(), publisher.clone());
                    let cancel = delivery_cancel.clone();
                    tracker.spawn(async move {
                        loop {
                            tokio::select! {
                                _ = cancel.cancelled() => break,
                                changed = pattern.changed() => match changed {
                                    Ok(()) => publisher.status_changed(),
                                    Err(_) => break,
                                },
                            }
                        }
                    });
                }
                // Commands from the desk come on a session of their own to the same broker.
                if let Some(desk) = &config.desk {
                    let commands = Commands::new(
                        config,
                        desk,
                        log.clone(),
                        publisher.clone(),
                        evidence.clone(),
                        cameras.clone(),
                    )
                    .map_err(|(key, message)| StartError::Desk(key, message))?;
                    let messages = commands::listen(
                        &settings,
                        publisher.topics().commands(),
                        &delivery_tracker,
                        link_cancel.clone(),
                    )
                    .map_err(StartError::MqttTls)?;
                    tracker.spawn(commands::run(
                        commands,
                        messages,
                        triggers.clone(),
                        intake.clone(),
                    ));
                }
                let deliver = delivery::deliver(
                    publisher.clone(),
                    session,
                    events,
                    status,
                    status_interval,
                    delivery_cancel.clone(),
                );
                delivery_tracker.spawn(async move {
                    deliver.await;
                    link_cancel.cancel();
                });
                let dirs = vec![config.storage.dir.clone(), config.outbox.dir.clone()];
                delivery_tracker.spawn(health::monitor(
                    publisher.clone(),
                    cameras.clone(),
                    buttons.clone(),
                    dirs,
                    delivery_cancel.clone(),
                ));
                tracing::info!(broker = %settings.url, client_id = %settings.client_id, "delivering to the alert channel");
                Some(publisher)
            }
            None => {
                tracing::info!("no [mqtt] section: clips are kept locally only");
                None
            }
        };

        let (clips, _) = broadcast::channel(64);
        let jobs = CancellationToken::new();
        // Clips a crash interrupted before they were spooled: completed in the background,
        // since each is read whole, and before shutdown is allowed to finish.
        {
            let (storage, evidence, chunk_size) =
                (storage.clone(), evidence.clone(), config.chunk_size());
            let spool = publisher.clone().map(|p| p as Arc<dyn Spool>);
            jobs_tracker.spawn_blocking(move || {
                recover::recover(&storage, &evidence, spool.as_deref(), chunk_size)
            });
        }
        let outputs = Outputs {
            storage,
            done: clips.clone(),
            spool: publisher.clone().map(|p| p as Arc<dyn Spool>),
            evidence,
            chunk_size: config.chunk_size(),
            log: log.clone(),
        };
        let clipper = Clipper::new(
            &config.site,
            cameras.clone(),
            outputs,
            jobs_tracker.clone(),
            jobs.clone(),
        );
        // On the jobs' tracker: shutdown waits for the clipper to finish the trigger it is
        // answering (and to start that trigger's clips) before it waits for the clips.
        jobs_tracker.spawn(clipper.run(requests, intake.clone()));
        if let Some(publisher) = &publisher {
            let (mut acked, log) = (publisher.acked_alerts(), log.clone());
            let cancel = intake.clone();
            tracker.spawn(async move {
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        event = acked.recv() => match event {
                            Ok(event) => log.alert_acknowledged(event),
                            Err(broadcast::error::RecvError::Lagged(_)) => {}
                            Err(broadcast::error::RecvError::Closed) => break,
                        },
                    }
                }
            });
        }
        let context = control::Context {
            triggers: triggers.clone(),
            cameras: watched.clone(),
            buttons: buttons.clone(),
            lights: lights.clone(),
            publisher: publisher.clone(),
            log: log.clone(),
            started: std::time::Instant::now(),
        };
        tracker.spawn(control::serve(
            listener,
            context,
            tracker.clone(),
            intake.clone(),
        ));
        tracing::info!(site = %config.site.id, cameras = cameras.len(), socket = %config.control.socket.display(), "alertclip running");
        Ok(Daemon {
            config: config.clone(),
            pool: CameraPool::default(),
            cameras,
            watched,
            buttons,
            lights,
            triggers,
            clips,
            intake,
            jobs,
            cameras_cancel,
            delivery_cancel,
            publisher,
            events: log,
            tracker,
            jobs_tracker,
            delivery_tracker,
        })
    }

    /// The last few events, newest first, as `alertclip status` shows them.
    pub fn recent_events(&self) -> Vec<crate::clip::history::EventSummary> {
        self.events.recent()
    }

    /// The panic buttons, with their status.
    pub fn buttons(&self) -> &[Button] {
        &self.buttons
    }

    /// The feedback lights, with what each shows.
    pub fn lights(&self) -> &[LightShown] {
        &self.lights
    }

    /// Delivery to the alert channel, when configured.
    pub fn publisher(&self) -> Option<&Arc<Publisher>> {
        self.publisher.as_ref()
    }

    /// Where triggers go in.
    pub fn triggers(&self) -> Triggers {
        self.triggers.clone()
    }

    /// The cameras, with their rings and status.
    pub fn cameras(&self) -> &[Camera] {
        &self.cameras
    }

    /// The cameras with their detectors, as status reports see them.
    pub fn watched(&self) -> &[Watched] {
        &self.watched
    }

    /// Every clip written from now on.
    pub fn clips(&self) -> broadcast::Receiver<ClipDone> {
        self.clips.subscribe()
    }

    /// Stops taking triggers, lets clips in progress gather post-roll for up to `grace`,
    /// finishes them, and stops the cameras.
    pub async fn shutdown(self, grace: Duration) {
        tracing::info!("shutting down");
        let mut pool = self.stop_parts(grace).await;
        if !pool.stop(FINISH_ALLOWANCE).await {
            tracing::warn!("some cameras did not stop in time");
        }
        tracing::info!("stopped");
    }

    /// Applies `config`: everything is stopped (clips in progress are finished, within
    /// `grace`) and started again, except the cameras whose settings did not change, which
    /// keep streaming into the buffers they have. When the new configuration cannot start,
    /// the old one is started again and the error returned beside it.
    pub async fn reload(
        self,
        config: Config,
        grace: Duration,
    ) -> Result<(Daemon, Option<StartError>), StartError> {
        tracing::info!("reloading the configuration");
        let old = self.config.clone();
        let pool = self.stop_parts(grace).await;
        match Daemon::start_with(config, pool).await {
            Ok(daemon) => Ok((daemon, None)),
            Err((error, pool)) => {
                tracing::error!(%error, "the new configuration cannot start: back to the old one");
                // What started before should start again; if it does not (a file it names
                // went away), there is nothing left to fall back on.
                let daemon = Daemon::start_with(old, pool)
                    .await
                    .map_err(|(again, _)| again)?;
                Ok((daemon, Some(error)))
            }
        }
    }

    /// Stops everything but the cameras, in order, and hands the cameras back.
    async fn stop_parts(self, grace: Duration) -> CameraPool {
        self.intake.cancel();
        self.jobs_tracker.close();
        if tokio::time::timeout(grace, self.jobs_tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("finishing clips in progress early");
            self.jobs.cancel();
            if tokio::time::timeout(FINISH_ALLOWANCE, self.jobs_tracker.wait())
                .await
                .is_err()
            {
                tracing::error!("clips still being written at exit");
            }
        }
        self.cameras_cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout(FINISH_ALLOWANCE, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some tasks did not stop in time");
        }
        // What was not delivered stays in the outbox for the next start.
        self.delivery_cancel.cancel();
        self.delivery_tracker.close();
        if tokio::time::timeout(FINISH_ALLOWANCE, self.delivery_tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("the broker connection did not close in time");
        }
        self.pool
    }
}

/// Runs the daemon until `cancel`, then shuts it down within [`SHUTDOWN_GRACE`]. On SIGHUP
/// it reads `path` again and applies it ([`Daemon::reload`]); a configuration that does not
/// parse is reported and the running one kept. Under systemd it reports readiness once the
/// cameras are started, and pings the watchdog from this loop.
pub async fn run(
    config: Config,
    path: &std::path::Path,
    cancel: CancellationToken,
) -> Result<(), StartError> {
    use tokio::signal::unix::{SignalKind, signal};
    let supervisor = Supervisor::from_env();
    let mut daemon = Daemon::start(config).await?;
    let ready = |daemon: &Daemon| format!("watching {} cameras", daemon.cameras().len());
    supervisor.ready(&ready(&daemon));
    let mut watchdog = supervisor.watchdog_interval().map(|every| {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    });
    let mut hangup = signal(SignalKind::hangup()).ok();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = async {
                match watchdog.as_mut() {
                    Some(interval) => { interval.tick().await; }
                    None => std::future::pending::<()>().await,
                }
            } => supervisor.ping(),
            _ = async {
                match hangup.as_mut() {
                    Some(hangup) => { hangup.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {
                supervisor.reloading();
                match Config::load(path) {
                    Err(error) => {
                        tracing::error!(%error, "SIGHUP: the configuration has an error; keeping the running one");
                        supervisor.ready(&format!("{}; reload refused: {error}", ready(&daemon)));
                    }
                    Ok(config) => {
                        let (reloaded, error) = daemon.reload(config, SHUTDOWN_GRACE).await?;
                        daemon = reloaded;
                        match error {
                            None => {
                                tracing::info!("configuration reloaded");
                                supervisor.ready(&ready(&daemon));
                            }
                            Some(error) => supervisor.ready(&format!("{}; reload failed: {error}", ready(&daemon))),
                        }
                    }
                }
            }
        }
    }
    supervisor.stopping();
    daemon.shutdown(SHUTDOWN_GRACE).await;
    Ok(())
}

/// Loads the model when some camera is watched, so that a missing runtime or model stops the
/// daemon at start with the path and the fix, not at the first frame.
fn load_detector(config: &Config) -> Result<Option<Detector>, StartError> {
    if config.cameras.iter().all(|c| c.detect.is_none()) {
        return Ok(None);
    }
    // Checked with the rest of the configuration.
    let time_zone = crate::config::schedule::time_zone(config.site.timezone.as_deref())
        .unwrap_or(jiff::tz::TimeZone::UTC);
    let detect = &config.detect;
    let model = Model::load(
        &detect.runtime,
        &detect.model,
        detect.classes.len(),
        detect.threads,
    )?;
    tracing::info!(model = %detect.model.display(), runtime = %detect.runtime.display(), threads = detect.threads, "detector loaded");
    Ok(Some(Detector {
        model: Arc::new(std::sync::Mutex::new(model)),
        classes: detect.classes.iter().cloned().collect(),
        time_zone,
    }))
}
