//! The responses benchmark: how soon the store sees an officer's response, and how soon an
//! officer has the footage asked for.
//!
//! `cargo bench --bench responses -- [--responses N] [--requests N]`, by hand (not in CI).
//! A box daemon on a simulated camera, a local mosquitto, `alertclip-desk` in-process and a
//! headless Chromium signed in to its console:
//!
//! - a click on a response button of the event page to the box's light changing pattern,
//!   over N responses (50 by default) alternating acknowledged (double flash) and
//!   dispatched (help on the way), beside the same responses signed as the desk signs them
//!   and published straight to the box's commands topic (the box's and the broker's floor);
//! - a click asking the box for the last 30 s of its camera to the clip verified on the desk
//!   (5 requests by default), beside the box having written that clip.

// A test or benchmark that cannot go on fails with the value it got.
#![allow(clippy::unwrap_used)]

// Where precinct servers run, as the desk's tests do; the Raspberry Pi build leaves the
// desk's web stack out.
#[cfg(target_arch = "x86_64")]
#[path = "../tests/common/browser.rs"]
#[allow(dead_code)]
mod browser;
#[cfg(target_arch = "x86_64")]
#[path = "../tests/common/mod.rs"]
mod common;
#[cfg(target_arch = "x86_64")]
#[path = "../tests/common/desk.rs"]
#[allow(dead_code)]
mod desk_rig;

fn main() {
    #[cfg(target_arch = "x86_64")]
    bench::main();
    #[cfg(not(target_arch = "x86_64"))]
    eprintln!("the responses benchmark runs on x86_64, as the desk's tests do");
}

#[cfg(target_arch = "x86_64")]
mod bench {
    use std::time::{Duration, Instant, SystemTime};

    use crate::browser::Browser;
    use crate::common::broker::{Broker, mosquitto_pub};
    use crate::common::{Rig, wait_buffered};
    use crate::desk_rig::{DeskRig, Feed, PASSWORD, wait_subscribed};
    use alertclip::demo::teststream::TestStream;
    use alertclip::trigger::buttons::light::Pattern;
    use alertclip_desk::accounts::Role;
    use alertclip_mqtt::{BrokerUrl, LinkEvent, Session, Settings, Tag};
    use alertclip_wire::command::{RESPONSE_SCHEMA, Response, ResponseState};
    use alertclip_wire::signature::{self, SigningKey};
    use tokio::sync::mpsc;
    use uuid::Uuid;

    const SITE: &str = "test-site";
    const COMMANDS: &str = "alertclip/v1/test-site/commands";

    fn percentile(samples: &mut [f64], p: f64) -> f64 {
        samples.sort_by(|a, b| a.total_cmp(b));
        let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
        samples[index.min(samples.len() - 1)]
    }

    fn summary(name: &str, samples: &mut [f64]) -> String {
        format!(
            "{name:<54} p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms  (n = {})",
            percentile(samples, 0.5),
            percentile(samples, 0.99),
            percentile(samples, 1.0),
            samples.len()
        )
    }

    fn arg(name: &str, default: usize) -> usize {
        let args: Vec<String> = std::env::args().collect();
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |v| v.parse().unwrap())
    }

    /// Every change of the box's light, with when it was seen.
    fn watch_light(
        mut light: tokio::sync::watch::Receiver<Pattern>,
    ) -> mpsc::UnboundedReceiver<(Instant, Pattern)> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while light.changed().await.is_ok() {
                let pattern = *light.borrow_and_update();
                if tx.send((Instant::now(), pattern)).is_err() {
                    break;
                }
            }
        });
        rx
    }

    /// When the light next shows `pattern`, within 10 s.
    async fn shows(
        changes: &mut mpsc::UnboundedReceiver<(Instant, Pattern)>,
        pattern: Pattern,
    ) -> Instant {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let (at, shown) = changes.recv().await.unwrap();
                if shown == pattern {
                    return at;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the light did not show {pattern:?} within 10 s"))
    }

    fn state_of(i: usize) -> (ResponseState, Pattern, &'static str) {
        if i.is_multiple_of(2) {
            (
                ResponseState::Acknowledged,
                Pattern::DoubleFlash,
                "acknowledged",
            )
        } else {
            (ResponseState::Dispatched, Pattern::LongOn, "dispatched")
        }
    }

    /// A broker session of the bench's own, publishing as the desk would.
    async fn connect(port: u16) -> (Session<u64>, mpsc::UnboundedReceiver<LinkEvent<u64>>) {
        let url = BrokerUrl {
            tls: false,
            host: "127.0.0.1".into(),
            port,
        };
        let settings = Settings::new(url, format!("bench-desk-{}", std::process::id()));
        let tracker = tokio_util::task::TaskTracker::new();
        let cancel = tokio_util::sync::CancellationToken::new();
        let (session, mut events) = Session::<u64>::start(&settings, &tracker, cancel).unwrap();
        while !matches!(events.recv().await, Some(LinkEvent::Connected)) {}
        (session, events)
    }

    #[tokio::main(flavor = "multi_thread")]
    pub async fn main() {
        let responses = arg("--responses", 50);
        let requests = arg("--requests", 5);
        let broker = Broker::start("");
        let desk = DeskRig::start(&broker.url(), &[("ana", Role::Officer)], &[]).await;
        let desk_key = {
            use ed25519_dalek::pkcs8::DecodePrivateKey;
            let pem = std::fs::read_to_string(desk.dir().join("state/signing.key")).unwrap();
            SigningKey::from_pkcs8_pem(&pem).unwrap()
        };
        let tail = format!(
            "[mqtt]\nurl = \"{}\"\n\
             [[button]]\nid = \"office\"\nkind = \"mqtt\"\nlocation = \"back office\"\n\
             topic = \"zigbee2mqtt/office\"\nmatch = {{ action = \"single\" }}\n\
             [feedback]\nline = \"GPIO22\"\n\
             [desk]\nkeys = ['''\n{}''']\nrequests_per_hour = 600\n",
            broker.url(),
            signature::public_pem(&desk_key.verifying_key())
        );
        let mut rig = Rig::start(
            &[TestStream::h264("/cam")],
            "pre_roll = \"35s\"\npost_roll = \"1s\"",
            &tail,
        )
        .await;
        let box_key = std::fs::read_to_string(rig.dir.path().join("evidence/device.pub")).unwrap();
        let desk = desk.enrolling(SITE, "Bench Deli", &box_key).await;
        let (watcher, _) = desk.signed_in("ana").await;
        let mut feed = Feed::open(&watcher, &desk).await;
        wait_subscribed(&mut feed, broker.port).await;
        let mut changes = watch_light(rig.daemon.lights()[0].pattern.clone());
        println!("waiting for 31 s of the camera in the box's memory");
        wait_buffered(rig.camera(0), 31.0).await;

        mosquitto_pub(
            broker.port,
            "zigbee2mqtt/office",
            r#"{"action":"single"}"#,
            &[],
        );
        let alert = feed.wait_for(|c| c["kind"] == "alert").await;
        let id = alert["event"].as_str().unwrap().to_owned();
        let event: Uuid = id.parse().unwrap();
        shows(&mut changes, Pattern::On).await;
        rig.next_clip().await;

        let browser = Browser::start().await;
        browser.goto(&desk.at("/")).await;
        browser.sign_in("ana", PASSWORD).await;
        browser.goto(&desk.at(&format!("/events/{id}"))).await;
        let card = format!("#event-{id}");

        // Clicks on the event page, each changing the light.
        let mut clicked = Vec::with_capacity(responses);
        for i in 0..responses {
            let (_, pattern, state) = state_of(i);
            let button = format!("form.respond[data-state={state}] button");
            browser.appears(&button).await;
            let started = Instant::now();
            browser.click(&button).await;
            let at = shows(&mut changes, pattern).await;
            clicked.push(at.duration_since(started).as_secs_f64() * 1000.0);
            // The page the form's answer reloaded, before the next click.
            browser
                .appears(&format!("{card} p.response[data-state={state}]"))
                .await;
        }

        // The same responses signed as the desk signs them, straight to the broker.
        let (session, _events) = connect(broker.port).await;
        let mut direct = Vec::with_capacity(responses);
        for i in 0..responses {
            let (state, pattern, _) = state_of(responses + i); // each changes the light
            let response = Response {
                schema: RESPONSE_SCHEMA.into(),
                command_id: Uuid::now_v7(),
                site_id: SITE.into(),
                event_id: event,
                state,
                eta_minutes: None,
                disposition: None,
                note: None,
                by: "bench".into(),
                desk: "bench".into(),
                issued_at: alertclip::clock::rfc3339_ms(SystemTime::now()),
                signature: None,
            };
            let payload = signature::sign(&desk_key, &serde_json::to_vec(&response).unwrap());
            let started = Instant::now();
            session
                .publish(Tag::Message(i as u64), COMMANDS, payload, false)
                .unwrap();
            let at = shows(&mut changes, pattern).await;
            direct.push(at.duration_since(started).as_secs_f64() * 1000.0);
        }

        // Footage requests: the last 30 s, from the event page, to the clip verified. The
        // box's clips are noted as they are written, while the desk's feed is waited on.
        let (written_tx, mut written_rx) = mpsc::unbounded_channel();
        let mut clips = rig.daemon.clips();
        tokio::spawn(async move {
            while let Ok(done) = clips.recv().await {
                if written_tx.send((Instant::now(), done)).is_err() {
                    break;
                }
            }
        });
        let mut answered = std::collections::HashSet::new();
        let mut verified = Vec::with_capacity(requests);
        let mut cut = Vec::with_capacity(requests);
        for _ in 0..requests {
            browser.goto(&desk.at(&format!("/events/{id}"))).await;
            browser
                .replace("form.request input[name=minutes]", "0.5")
                .await;
            browser
                .replace("form.request input[name=seconds]", "30")
                .await;
            browser
                .fill("form.request input[name=reason]", "bench")
                .await;
            let started = Instant::now();
            browser.click("form.request button[type=submit]").await;
            let change = feed
                .wait_for(|c| {
                    c["kind"] == "clip"
                        && c["event"]
                            .as_str()
                            .is_some_and(|e| e != id && !answered.contains(e))
                })
                .await;
            verified.push(started.elapsed().as_secs_f64() * 1000.0);
            let asked = change["event"].as_str().unwrap().to_owned();
            answered.insert(asked.clone());
            let (at, written) = written_rx.recv().await.unwrap();
            assert_eq!(written.record.event_id.to_string(), asked);
            cut.push(at.duration_since(started).as_secs_f64() * 1000.0);
            let (signature, _) = desk.clip_record(&asked).await;
            assert_eq!(signature, "valid");
            let seconds = written.record.duration_ms as f64 / 1000.0;
            println!("request: a clip of {seconds:.1} s");
        }

        println!();
        println!(
            "{}",
            summary("click on the desk to the store's light", &mut clicked)
        );
        println!(
            "{}",
            summary(
                "baseline: signed response published to the light",
                &mut direct
            )
        );
        println!(
            "{}",
            summary("request (30 s) click to the box's clip written", &mut cut)
        );
        println!(
            "{}",
            summary(
                "request (30 s) click to the clip verified on the desk",
                &mut verified
            )
        );
        desk.stop().await;
        rig.stop().await;
    }
}
