//! `alertclip-desk` in-process for tests (included by tests/desk.rs alone, so that other
//! tests do not link the web stack): a self-signed certificate, a config on port 0, a
//! database prepared with accounts and enrolled stores, and an HTTPS client that trusts the
//! certificate and keeps cookies, as a browser would.

use std::sync::Arc;
use std::time::Duration;

use alertclip_desk::accounts::{self, Role};
use alertclip_desk::db::Db;
use alertclip_desk::db::scratch::Scratch;
use alertclip_desk::sites::{self, Site};
use alertclip_desk::{Config, Desk, params};
use reqwest::StatusCode;

pub const PASSWORD: &str = "a long test password";

pub struct DeskRig {
    pub desk: Desk,
    _dir: tempfile::TempDir,
    pub url: String,
    cert: Vec<u8>,
    /// The PostgreSQL server the desk's database is on, if it is not SQLite.
    pub postgres: Option<Arc<Scratch>>,
}

/// Which database a desk keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Database {
    /// The embedded default.
    Sqlite,
    /// A scratch PostgreSQL server of the test's own.
    Postgres,
    /// The same, committing to disk as production does: for benchmarks.
    #[allow(dead_code)] // the desk benchmark's alone
    PostgresDurable,
}

/// What the desks of one cluster share: a PostgreSQL server and database, and a media
/// directory.
#[allow(dead_code)] // tests/desk.rs's alone
pub struct ClusterRig {
    pub server: Arc<Scratch>,
    pub name: String,
    pub database: String,
    pub media: tempfile::TempDir,
    /// Desks' signing keys made before they start, by instance.
    keys: tempfile::TempDir,
    /// `[cluster] media`: `"shared"`, or `"leader"` for a broker without shared
    /// subscriptions.
    pub media_sharing: &'static str,
}

#[allow(dead_code)]
impl ClusterRig {
    pub fn start(name: &str) -> ClusterRig {
        ClusterRig::on(Scratch::start().unwrap(), name)
    }

    /// The same on a server that commits to disk, as production does (for benchmarks).
    pub fn start_durable(name: &str) -> ClusterRig {
        ClusterRig::on(Scratch::start_durable().unwrap(), name)
    }

    fn on(server: Scratch, name: &str) -> ClusterRig {
        let server = Arc::new(server);
        ClusterRig {
            database: server.database().unwrap(),
            server,
            name: name.into(),
            media: tempfile::tempdir().unwrap(),
            keys: tempfile::tempdir().unwrap(),
            media_sharing: "shared",
        }
    }

    /// The public key (PEM) desk `instance` will sign with, made now, so that a box can
    /// list it before the desk starts.
    pub fn desk_key(&self, instance: &str) -> String {
        let path = self.keys.path().join(format!("{instance}.key"));
        alertclip_desk::respond::Signer::load_or_create(&path, instance, "alertclip/v1/{site}")
            .unwrap()
            .public_pem()
    }
}

/// A store to enrol before the desk starts.
pub fn site(id: &str, name: &str, key_pem: &str) -> Site {
    Site {
        id: id.into(),
        name: name.into(),
        address: Some("12 Main St".into()),
        latitude: Some(40.7128),
        longitude: Some(-74.006),
        phone: Some("+1 212 555 0100".into()),
        public_key: key_pem.into(),
    }
}

impl DeskRig {
    /// A desk reading `broker_url`, with accounts `users` (name, role) and stores `sites`.
    pub async fn start(broker_url: &str, users: &[(&str, Role)], sites: &[Site]) -> DeskRig {
        DeskRig::start_on(Database::Sqlite, broker_url, users, sites).await
    }

    /// The same, on `database`.
    pub async fn start_on(
        database: Database,
        broker_url: &str,
        users: &[(&str, Role)],
        sites: &[Site],
    ) -> DeskRig {
        let postgres = match database {
            Database::Sqlite => None,
            Database::Postgres => Some(Arc::new(Scratch::start().unwrap())),
            Database::PostgresDurable => Some(Arc::new(Scratch::start_durable().unwrap())),
        };
        let url = postgres.as_ref().map(|server| server.database().unwrap());
        let mut settings = format!(
            "[mqtt]\nbroker = \"{broker_url}\"\nclient_id = \"desk-{}\"\n",
            uuid::Uuid::now_v7()
        );
        if let Some(url) = url {
            settings.push_str(&format!("[storage]\ndatabase = \"{url}\"\n"));
        }
        DeskRig::launch(&settings, None, postgres, users, sites).await
    }

    /// The desk `instance` of `cluster`, with `mqtt` its `[mqtt]` settings (`broker = ...`
    /// and any others), and accounts `users` and stores `sites` added to the cluster's
    /// database before it starts.
    pub async fn start_in(
        cluster: &ClusterRig,
        instance: &str,
        mqtt: &str,
        users: &[(&str, Role)],
        sites: &[Site],
    ) -> DeskRig {
        let settings = format!(
            "[mqtt]\n{mqtt}\n[cluster]\nname = \"{}\"\ninstance = \"{instance}\"\nmedia = \"{}\"\n\
             [storage]\ndatabase = \"{}\"\nmedia = \"{}\"\n",
            cluster.name,
            cluster.media_sharing,
            cluster.database,
            cluster.media.path().display()
        );
        let key = cluster.keys.path().join(format!("{instance}.key"));
        let key = std::fs::read_to_string(key).ok();
        DeskRig::launch(&settings, key, Some(cluster.server.clone()), users, sites).await
    }

    /// A desk whose config is `settings` (its broker, and any storage or cluster settings)
    /// with a self-signed certificate, port 0, its own state directory, and `signing_key`
    /// (PEM) if given.
    async fn launch(
        settings: &str,
        signing_key: Option<String>,
        postgres: Option<Arc<Scratch>>,
        users: &[(&str, Role)],
        sites: &[Site],
    ) -> DeskRig {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("desk.crt"), dir.path().join("desk.key"));
        alertclip_desk::tls::write_self_signed(
            &["127.0.0.1".into(), "localhost".into()],
            &cert,
            &key,
        )
        .unwrap();
        let config_path = dir.path().join("desk.toml");
        // `[storage]` may come in `settings`: the directory joins it, or starts it.
        let storage = "[storage]\ndirectory = \"state\"\n";
        let settings = if settings.contains("[storage]\n") {
            settings.replacen("[storage]\n", storage, 1)
        } else {
            format!("{settings}{storage}")
        };
        std::fs::write(
            &config_path,
            format!(
                "[http]\nlisten = \"127.0.0.1:0\"\ncertificate = \"desk.crt\"\nkey = \"desk.key\"\n\n{settings}"
            ),
        )
        .unwrap();
        let config = Config::load(&config_path).unwrap();
        std::fs::create_dir_all(&config.storage.directory).unwrap();
        if let Some(pem) = signing_key {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(config.signing_key())
                .unwrap();
            file.write_all(pem.as_bytes()).unwrap();
        }
        let db = Db::open(config.database()).unwrap();
        let hash = accounts::hash_password(PASSWORD).unwrap();
        let (users, sites, keys): (Vec<_>, Vec<_>, _) = (
            users.iter().map(|(n, r)| (n.to_string(), *r)).collect(),
            sites.to_vec(),
            config.keys(),
        );
        db.call(move |c| {
            for (name, role) in users {
                accounts::add_user(c, &name, role, &hash)?;
            }
            for site in sites {
                sites::enrol(c, &keys, &site).unwrap();
            }
            Ok(())
        })
        .await
        .unwrap();
        drop(db);
        let desk = Desk::start(config).await.unwrap();
        let url = format!("https://{}", desk.addr);
        DeskRig {
            desk,
            url,
            cert: std::fs::read(&cert).unwrap(),
            _dir: dir,
            postgres,
        }
    }

    /// A browser-like client: trusts the desk's certificate, keeps cookies, does not follow
    /// redirects (so that tests see them), and says it wants pages. Its TLS uses the crypto
    /// provider the desk installed (one provider in the process: the box's MQTT TLS would
    /// not know which to take if a second were compiled in).
    pub fn client(&self) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::ACCEPT, "text/html".parse().unwrap());
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&self.cert).unwrap())
            .tls_built_in_root_certs(false)
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .default_headers(headers)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Logs `name` in with `password`; the response as the desk gave it.
    pub async fn login(
        &self,
        client: &reqwest::Client,
        name: &str,
        password: &str,
    ) -> reqwest::Response {
        let page = client.get(self.at("/login")).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let csrf = csrf_of(&page.text().await.unwrap());
        client
            .post(self.at("/login"))
            .form(&[("name", name), ("password", password), ("csrf", &csrf)])
            .send()
            .await
            .unwrap()
    }

    /// A new session for `name`, as the `cookie` header a browser would send with it.
    pub async fn session_cookie(&self, name: &str) -> String {
        let client = self.client();
        let response = self.login(&client, name, PASSWORD).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "login of {name}");
        let set = response.headers()["set-cookie"].to_str().unwrap();
        set.split(';').next().unwrap().to_owned()
    }

    /// A signed-in client for `name`, and its page's CSRF token.
    pub async fn signed_in(&self, name: &str) -> (reqwest::Client, String) {
        let client = self.client();
        let response = self.login(&client, name, PASSWORD).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "login of {name}");
        assert_eq!(response.headers()["location"], "/");
        let feed = client.get(self.at("/")).send().await.unwrap();
        assert_eq!(feed.status(), StatusCode::OK);
        let csrf = csrf_of(&feed.text().await.unwrap());
        (client, csrf)
    }

    /// Stops the desk, runs `while_stopped` on its database, and starts it again on the same
    /// files (its broker session, with the same client id, resumed).
    pub async fn restart(self, while_stopped: impl FnOnce(&Db)) -> DeskRig {
        let DeskRig {
            desk,
            cert,
            _dir,
            postgres,
            ..
        } = self;
        desk.stop().await;
        let config = Config::load(&_dir.path().join("desk.toml")).unwrap();
        while_stopped(&Db::open(config.database()).unwrap());
        let desk = Desk::start(config).await.unwrap();
        let url = format!("https://{}", desk.addr);
        DeskRig {
            desk,
            url,
            cert,
            _dir,
            postgres,
        }
    }

    /// The desk restarted with the store `id` (`name`, its box's public key in PEM)
    /// enrolled: a desk made first, for its signing key, takes the store once its box has
    /// a key of its own.
    pub async fn enrolling(self, id: &str, name: &str, box_key: &str) -> DeskRig {
        let keys = self.dir().join("state/keys");
        let store = site(id, name, box_key);
        self.restart(|db| {
            db.call_blocking(move |c| {
                sites::enrol(c, &keys, &store).unwrap();
                Ok(())
            })
            .unwrap();
        })
        .await
    }

    /// What the desk recorded of `event`'s clip: its signature verdict and its manifest.
    pub async fn clip_record(&self, event: &str) -> (String, String) {
        let event = event.to_owned();
        self.desk
            .db
            .call(move |c| {
                c.query_row(
                    "SELECT signature, manifest FROM media WHERE event = ?1 AND kind = 'clip'",
                    params![event],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
            })
            .await
            .unwrap()
    }

    /// The directory holding the desk's config, certificate and storage.
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    pub async fn stop(self) {
        self.desk.stop().await;
    }
}

/// The CSRF token in a page's forms.
pub fn csrf_of(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no CSRF field in {page}"));
    let rest = &page[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// The console's live feed as a browser's EventSource reads it.
pub struct Feed {
    response: reqwest::Response,
    buffer: String,
}

impl Feed {
    pub async fn open(client: &reqwest::Client, rig: &DeskRig) -> Feed {
        let response = client
            .get(rig.at("/feed"))
            .header("accept", "text/event-stream")
            .timeout(Duration::from_secs(600))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Feed {
            response,
            buffer: String::new(),
        }
    }

    /// The next message of the stream, whole.
    async fn message(&mut self) -> String {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                return self.buffer.drain(..end + 2).collect();
            }
            let chunk = self
                .response
                .chunk()
                .await
                .unwrap()
                .expect("the feed stays open");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next change announced, failing the test after a minute and a half.
    pub async fn next(&mut self) -> serde_json::Value {
        tokio::time::timeout(Duration::from_secs(90), async {
            loop {
                let message = self.message().await;
                assert!(
                    !message.lines().any(|l| l == "event: reload"),
                    "the live feed fell behind and asked for a reload"
                );
                if let Some(data) = message.lines().find_map(|l| l.strip_prefix("data: "))
                    && message.lines().any(|l| l == "event: change")
                {
                    return serde_json::from_str(data).unwrap();
                }
            }
        })
        .await
        .expect("a change on the live feed within 90 s")
    }

    /// Waits for the feed to ask the page to load itself again, skipping changes.
    #[allow(dead_code)] // tests/desk.rs's alone
    pub async fn reload(&mut self) {
        tokio::time::timeout(Duration::from_secs(90), async {
            while !self.message().await.lines().any(|l| l == "event: reload") {}
        })
        .await
        .expect("the live feed asks for a reload within 90 s")
    }

    /// Waits for a change `predicate` accepts, skipping others.
    pub async fn wait_for(
        &mut self,
        predicate: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        loop {
            let change = self.next().await;
            if predicate(&change) {
                return change;
            }
        }
    }
}

/// Waits until the desk's receiver has both its sessions subscribed: a retained probe status
/// (alerts' session) and a retained probe snapshot (media's) must come back on the live feed.
pub async fn wait_subscribed(feed: &mut Feed, broker_port: u16) {
    let event = uuid::Uuid::now_v7();
    let state = format!("probe-{event}");
    let status = format!("{{\"schema\":\"alertclip.status.v1\",\"state\":\"{state}\"}}");
    let snapshot = format!("alertclip/v1/probe/events/{event}/snapshot/probe");
    crate::common::broker::mosquitto_pub(
        broker_port,
        "alertclip/v1/probe/status",
        &status,
        &["-r"],
    );
    crate::common::broker::mosquitto_pub(broker_port, &snapshot, "probe", &["-r"]);
    let (mut status_seen, mut snapshot_seen) = (false, false);
    while !(status_seen && snapshot_seen) {
        let change = feed.next().await;
        status_seen |= change["kind"] == "site" && change["site"] == "probe";
        snapshot_seen |= change["kind"] == "snapshot" && change["event"] == event.to_string();
    }
    crate::common::broker::mosquitto_pub_with(broker_port, &snapshot, &["-r", "-n"]);
}
