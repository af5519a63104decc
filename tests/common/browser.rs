//! A real browser for tests: Debian's `chromium`, headless, driven over WebDriver by
//! `chromedriver` on a free loopback port (fantoccini). Conditions are awaited in the page
//! itself (a promise resolved by a DOM mutation or a media event), never by polling on a
//! timer.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a condition awaited in the page may take.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);

pub struct Browser {
    pub client: Client,
    _driver: Child,
}

/// Where the tests leave screenshots for a person to look at.
pub fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/desk-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session that accepts the desk's
    /// self-signed certificate, at a desktop window size.
    pub async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; make test installs it)");
        // chromedriver says when it listens.
        let mut lines = BufReader::new(driver.stdout.take().unwrap()).lines();
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.contains("started successfully") {
                    return;
                }
            }
            panic!("chromedriver exited before it listened");
        })
        .await
        .expect("chromedriver listening within 30 s");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let mut capabilities = serde_json::Map::new();
        capabilities.insert("acceptInsecureCerts".into(), json!(true));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,900", "--autoplay-policy=no-user-gesture-required",
                    "--no-first-run", "--no-default-browser-check"
                ]
            }),
        );
        capabilities.insert(
            "timeouts".into(),
            json!({"script": SCRIPT_TIMEOUT.as_millis() as u64, "pageLoad": 60000, "implicit": 0}),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session");
        Browser {
            client,
            _driver: driver,
        }
    }

    /// Runs `body` as the body of an async function in the page, given `args`, and returns
    /// what it resolves to; its last argument is the callback WebDriver waits for.
    pub async fn run(&self, body: &str, args: Vec<Value>) -> Value {
        let value = self.try_run(body, args).await.unwrap();
        assert!(value.get("thrown").is_none(), "in the page: {value}");
        value
    }

    async fn try_run(
        &self,
        body: &str,
        args: Vec<Value>,
    ) -> Result<Value, fantoccini::error::CmdError> {
        let n = args.len();
        let script = format!(
            "const done = arguments[{n}]; const args = Array.from(arguments).slice(0, {n}); \
             (async () => {{ {body} }})().then(done, (e) => done({{thrown: String(e)}}));"
        );
        self.client.execute_async(&script, args).await
    }

    /// Resolves once an element matching `selector` is in the page (now or later). Attribute
    /// changes are watched as well as added nodes: `body[data-live=open]` becomes true by
    /// an attribute alone, with nothing else in the page changing.
    ///
    /// A page replaced while it is watched (a form's answer, a reload) ends the script
    /// early: the new page is watched in turn, until the script's whole timeout has gone.
    pub async fn appears(&self, selector: &str) {
        let started = std::time::Instant::now();
        loop {
            match self.watch_for(selector).await {
                Ok(_) => return,
                Err(_) if started.elapsed() + Duration::from_secs(1) < SCRIPT_TIMEOUT => {}
                Err(error) => panic!("{selector} did not appear: {error}"),
            }
        }
    }

    async fn watch_for(&self, selector: &str) -> Result<Value, fantoccini::error::CmdError> {
        self.try_run(
            "const [selector] = args;
             if (document.querySelector(selector)) return true;
             await new Promise((resolve) => {
               const watch = new MutationObserver(() => {
                 if (document.querySelector(selector)) { watch.disconnect(); resolve(); }
               });
               watch.observe(document.documentElement, {childList: true, subtree: true, attributes: true});
             });
             return true;",
            vec![json!(selector)],
        )
        .await
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// Signs in on the login form the page shows (or is about to) as `name`, and waits
    /// for the console's live feed to open.
    pub async fn sign_in(&self, name: &str, password: &str) {
        self.appears("form.login").await;
        self.fill("input[name=name]", name).await;
        self.fill("input[name=password]", password).await;
        self.click("form.login button[type=submit]").await;
        self.appears("body[data-live=open]").await;
    }

    /// Types `text` into the empty field `css`.
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.client.find(Locator::Css(css)).await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    /// Replaces what the field `css` holds with `text`, as a person selecting it all and
    /// typing over it would (typing alone adds to a value the form filled in).
    pub async fn replace(&self, css: &str, text: &str) {
        let field = self.client.find(Locator::Css(css)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    /// Clicks the element `css` names. A live page may replace it between finding and
    /// clicking (a card fetched again): then it is found again, as a person's second try.
    pub async fn click(&self, css: &str) {
        for _ in 0..5 {
            let element = self.client.find(Locator::Css(css)).await.unwrap();
            match element.click().await {
                Ok(()) => return,
                Err(fantoccini::error::CmdError::Standard(e))
                    if e.error == fantoccini::error::ErrorStatus::StaleElementReference => {}
                Err(e) => panic!("clicking {css}: {e}"),
            }
        }
        panic!("{css} kept being replaced");
    }

    /// The text the element `css` names shows, read in one step in the page (a live page
    /// may replace the element at any time).
    pub async fn text(&self, css: &str) -> String {
        let text = self
            .run(
                "const element = document.querySelector(args[0]);
                 return element === null ? null : element.innerText;",
                vec![json!(css)],
            )
            .await;
        text.as_str()
            .unwrap_or_else(|| panic!("no {css} in the page"))
            .to_owned()
    }

    /// Saves a screenshot as `name`.png under target/desk-screenshots.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        assert_eq!(&png[1..4], b"PNG");
        std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.client.set_window_size(width, height).await.unwrap();
    }

    pub async fn close(self) {
        self.client.close().await.unwrap();
    }
}
