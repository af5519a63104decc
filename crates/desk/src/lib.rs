//! `alertclip-desk`, the precinct's server: it receives what the stores' boxes send with the
//! receiver of `alertclip receive` (so a clip is verified exactly as there), keeps it in a
//! database, and serves officers a web console over HTTPS with the live feed, the clips and
//! the stores.
//!
//! [`Desk::start`] runs it in-process (the tests do); [`cli`] is the command line.

pub mod accounts;
pub mod audit;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod db;
pub mod events;
pub mod export;
pub mod ingest;
pub mod respond;
pub mod retention;
mod service;
pub mod sites;
pub mod tls;
pub mod viewing;
pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;

/// How long open requests (live feeds) may take to finish on stopping.
const GRACE: Duration = Duration::from_secs(5);

/// A running desk.
pub struct Desk {
    /// Where it listens (the real port when the config asked for port 0).
    pub addr: SocketAddr,
    /// Its database, for tools and tests that look inside.
    pub db: db::Db,
    /// How far receiving has come.
    progress: ingest::Progress,
    /// In a cluster, whether this desk leads it.
    lead: Option<tokio::sync::watch::Receiver<bool>>,
    /// In a cluster, whether every desk receives media (a shared subscription) or only the
    /// leader does.
    shares_media: bool,
    /// In a cluster, what announces this desk's changes to the others, and what ends it.
    announcing: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
    handle: axum_server::Handle,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Desk {
    /// Opens the database, starts receiving and starts serving the console.
    pub async fn start(config: Config) -> anyhow::Result<Desk> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        for dir in [&config.storage.directory, &config.media(), &config.keys()] {
            std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
        }
        let db = db::Db::open(config.database())?;
        let signer = Arc::new(respond::Signer::load_or_create(
            &config.signing_key(),
            &config.desk_name(),
            &config.mqtt.topic_prefix,
        )?);
        let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(
            &config.http.certificate,
            &config.http.key,
        )
        .await
        .with_context(|| {
            format!(
                "http.certificate {} / http.key {}: expected a PEM certificate and its key (alertclip-desk init writes a self-signed pair)",
                config.http.certificate.display(),
                config.http.key.display()
            )
        })?;
        // A console that falls this far behind loads its page again (the feed says reload).
        let (feed, _) = broadcast::channel(1024);
        let restart = Arc::new(Notify::new());
        let wake = Arc::new(Notify::new());
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        // Alone, what the desk records goes straight to its consoles; in a cluster, to every
        // desk's, through the database, and an enrolment here restarts every desk's receiver.
        let mut announcing = None;
        let (announce, enrolled, lead) = match &config.cluster {
            None => (feed.clone(), restart.clone(), None),
            Some(cluster) => {
                let drain = CancellationToken::new();
                let relay = cluster::Relay::start(
                    db.clone(),
                    config.database(),
                    feed.clone(),
                    wake.clone(),
                    restart.clone(),
                    cancel.clone(),
                    drain.clone(),
                );
                announcing = Some((drain, relay.announcing));
                let enrolled = Arc::new(Notify::new());
                let (announced, heard, stop) =
                    (relay.announced.clone(), enrolled.clone(), cancel.clone());
                tracker.spawn(async move {
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = heard.notified() => {
                                let _ = announced.send(cluster::registry_changed());
                            }
                        }
                    }
                });
                let lead = cluster::lead(config.database(), &cluster.name, cancel.clone());
                (relay.announced, enrolled, Some(lead))
            }
        };
        let shares_media = config
            .cluster
            .as_ref()
            .is_some_and(|c| c.media == config::MediaSharing::Shared);
        if let Some(keep) = config.storage.retention {
            tracker.spawn(retention::run(
                db.clone(),
                config.media(),
                keep,
                cancel.clone(),
            ));
        }
        let state = Arc::new(web::AppState {
            db: db.clone(),
            feed: feed.clone(),
            announce: announce.clone(),
            media: config.media(),
            scratch: config.storage.directory.clone(),
            keys: config.keys(),
            converter: viewing::available(),
            idle_s: config.http.idle_timeout.as_secs() as i64,
            restart: enrolled,
            stopping: cancel.clone(),
            signer,
            respond: wake.clone(),
        });
        let handle = axum_server::Handle::new();
        let app = web::router(state).into_make_service_with_connect_info::<SocketAddr>();
        let server = axum_server::bind_rustls(config.http.listen, tls).handle(handle.clone());
        let serving = tokio::spawn(server.serve(app));
        let Some(addr) = handle.listening().await else {
            let why = match serving.await {
                Ok(Err(error)) => error.to_string(),
                _ => "the server stopped".into(),
            };
            cancel.cancel();
            if let Some((drain, _)) = &announcing {
                drain.cancel();
            }
            anyhow::bail!("http.listen {}: {why}", config.http.listen);
        };
        tracing::info!(url = %format!("https://{addr}/"), "console serving");
        service::ready(&format!(
            "serving https://{addr}/; connecting to {}",
            config.mqtt.broker
        ));
        // Receiving starts once the console serves: what it records from now on is news for
        // someone (and `systemctl status` says "receiving" after "serving", never before).
        let progress = ingest::Progress {
            imported: tokio::sync::watch::Sender::new(false),
            subscribed: tokio::sync::watch::Sender::new(Default::default()),
        };
        match &lead {
            None => {
                tracker.spawn(respond::run(
                    config.clone(),
                    db.clone(),
                    wake,
                    announce.clone(),
                    cancel.clone(),
                ));
            }
            // The leader alone sends the officers' responses, under the cluster's session.
            Some(lead) => {
                let (config, db, announce) = (config.clone(), db.clone(), announce.clone());
                tracker.spawn(cluster::while_leading(
                    lead.clone(),
                    cancel.clone(),
                    move |this_lead| {
                        respond::run(
                            config.clone(),
                            db.clone(),
                            wake.clone(),
                            announce.clone(),
                            this_lead,
                        )
                    },
                ));
            }
        }
        tracker.spawn(ingest::run(
            config.clone(),
            db.clone(),
            announce,
            restart,
            progress.clone(),
            lead.clone(),
            cancel.clone(),
        ));
        Ok(Desk {
            addr,
            db,
            progress,
            lead,
            shares_media,
            announcing,
            handle,
            serving,
            cancel,
            tracker,
        })
    }

    /// Resolves once what the receiver kept but the desk had not recorded when it last
    /// stopped is recorded (at start, before receiving).
    pub async fn imported(&self) {
        let mut imported = self.progress.imported.subscribe();
        let _ = imported.wait_for(|done| *done).await;
    }

    /// Resolves once the desk receives: the broker granted the topics of its sessions (in a
    /// cluster, the media's if the desks share them, and the alerts' too if it leads).
    pub async fn receiving(&self) {
        let mut subscribed = self.progress.subscribed.subscribe();
        let leads = || self.lead.as_ref().is_none_or(|lead| *lead.borrow());
        let _ = subscribed
            .wait_for(|s| match leads() {
                true => s.contains("media") && s.contains("links"),
                false => !self.shares_media || s.contains("media"),
            })
            .await;
    }

    /// Resolves once this desk leads its cluster (at once for a desk alone) and receives its
    /// alerts.
    pub async fn leading(&self) {
        if let Some(lead) = &self.lead {
            let _ = lead.clone().wait_for(|leads| *leads).await;
        }
        let mut subscribed = self.progress.subscribed.subscribe();
        let _ = subscribed
            .wait_for(|s| s.contains("media") && s.contains("links"))
            .await;
    }

    /// Stops serving and receiving; what was received is recorded first.
    pub async fn stop(self) {
        // Cancelling first ends the live feeds, so the server's grace is for real requests.
        self.cancel.cancel();
        self.handle.graceful_shutdown(Some(GRACE));
        if let Ok(Err(error)) = self.serving.await {
            tracing::error!(%error, "the console stopped with an error");
        }
        self.tracker.close();
        self.tracker.wait().await;
        // What was recorded while stopping is announced to the other desks too.
        if let Some((drain, announcing)) = self.announcing {
            drain.cancel();
            let _ = announcing.await;
        }
    }

    /// Runs until `cancel`, then stops.
    pub async fn run_until(self, cancel: CancellationToken) {
        cancel.cancelled().await;
        self.stop().await;
    }
}
