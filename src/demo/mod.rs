//! `alertclip demo`: the whole path on one machine, with no hardware and no configuration.
//!
//! A simulated camera (a live test pattern with the time burnt in) is served over RTSP on
//! loopback; the daemon buffers it, one trigger fires once the pre-roll has filled, and the
//! clip lands in the output directory with its sidecar. With mosquitto installed, a local
//! broker carries the alert, snapshot and clip to an in-process `alertclip receive`, and the
//! demo ends with the verified clip the officer side reassembled. Where `alertclip-desk` is
//! built too (`make demo` builds it), a throw-away desk receives the same alert, and the demo
//! ends on the console's URL with the event on it.

pub mod desk;
pub mod localbroker;
pub mod teststream;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{BrokerUrl, Config};
use crate::daemon::{Daemon, SHUTDOWN_GRACE};
use crate::demo::desk::{DemoDesk, DemoSite};
use crate::demo::localbroker::LocalBroker;
use crate::demo::teststream::{TestCodec, TestServer, TestStream};
use crate::ingest::camera::CameraState;
use crate::trigger::{Trigger, TriggerKind};
use alertclip_mqtt::Settings;
use alertclip_officer::receive::{self, ReceiveOptions, Report};

/// What the demo does.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where the clip goes.
    pub out: PathBuf,
    /// Pre-roll of the simulated camera.
    pub pre_roll: Duration,
    /// Post-roll of the simulated camera.
    pub post_roll: Duration,
    /// Codec of the simulated camera.
    pub codec: TestCodec,
}

/// Runs the demo and prints what happened.
pub async fn run(options: DemoOptions) -> anyhow::Result<()> {
    let stream = TestStream {
        width: 1280,
        height: 720,
        gop_frames: 30,
        bitrate_kbps: 2000,
        pattern: "smpte".to_owned(),
        clock_overlay: true,
        codec: options.codec,
        ..TestStream::h264("/demo")
    };
    let server = TestServer::start(std::slice::from_ref(&stream))?;
    let url = server.url("/demo");
    println!("simulated camera: {url} (1280x720, 15 fps, the time burnt into the picture)");

    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("creating {}", options.out.display()))?;
    let out = options.out.canonicalize()?;
    let broker = match LocalBroker::start(&out.join("broker"), "") {
        Ok(broker) => {
            println!("local broker: {} (mosquitto)", broker.url());
            Some(broker)
        }
        Err(error) => {
            println!("no delivery in this demo: {error}");
            None
        }
    };
    let socket = std::env::temp_dir().join(format!("alertclip-demo-{}.sock", std::process::id()));
    let config = demo_config(&url, &out, &socket, broker.as_ref(), &options)?;

    // The device key, registered with the officer side as a precinct would.
    let key = crate::evidence::DeviceKey::load_or_create(&out.join("evidence"))?;
    let trusted = out.join("trusted-keys");
    std::fs::create_dir_all(&trusted)?;
    std::fs::write(trusted.join("demo.pub"), key.public_pem())?;
    println!("device key {} ({})", key.key_id(), key.fingerprint());

    // The precinct's desk, with the store enrolled by that key.
    let mut desk = match (&broker, DemoDesk::program()) {
        (Some(broker), Some(program)) => {
            let site = DemoSite {
                id: "demo",
                name: "alertclip demo store",
                address: "1 Example Street",
                key: &trusted.join("demo.pub"),
            };
            let desk = DemoDesk::start(&program, &out.join("desk"), &broker.url(), &site)
                .await
                .context("starting the demo's desk")?;
            println!("officer desk: {} (alertclip-desk)", desk.url);
            Some(desk)
        }
        (Some(_), None) => {
            println!(
                "no desk in this demo: alertclip-desk is not built (cargo build --release -p alertclip-desk, as make demo does)"
            );
            None
        }
        (None, _) => None,
    };

    // The officer side first, so it is listening when the alert goes out.
    let cancel = CancellationToken::new();
    let (reports_tx, reports) = mpsc::unbounded_channel();
    let receiver = broker.as_ref().map(|broker| {
        let options = receiver_options(broker, &out);
        let cancel = cancel.clone();
        tokio::spawn(receive::run(options, cancel, move |report| {
            let _ = reports_tx.send(report);
            Ok(())
        }))
    });

    let daemon = Daemon::start(config).await?;
    let result = trigger_once(&daemon, &options, reports, broker.is_some(), &out).await;
    let result = match (result, desk.as_mut()) {
        (Ok(event), Some(desk)) => desk
            .wait_for_clip(event, "demo")
            .await
            .context("the clip did not reach the desk")
            .map(|()| Some(event)),
        (result, _) => result.map(|_| None),
    };
    daemon.shutdown(SHUTDOWN_GRACE).await;
    cancel.cancel();
    if let Some(receiver) = receiver {
        let _ = receiver.await;
    }
    drop(server);
    let _ = std::fs::remove_file(&socket);
    if let (Ok(Some(event)), Some(desk)) = (&result, &desk) {
        show_desk(desk, *event).await;
    }
    drop(desk);
    drop(broker);
    result.map(|_| ())
}

/// Prints where the event is on the desk, and keeps the desk up until Ctrl-C when someone is
/// there to look.
async fn show_desk(desk: &DemoDesk, event: uuid::Uuid) {
    println!(
        "\nthe officer desk has it: {}events/{event}\n  sign in as {} with password {} (a throw-away account; the \
         certificate is self-signed, so the browser asks once)",
        desk.url,
        desk::USER,
        desk.password
    );
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        println!("  Ctrl-C stops the desk and ends the demo.");
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn receiver_options(broker: &LocalBroker, out: &Path) -> ReceiveOptions {
    ReceiveOptions {
        settings: Settings {
            max_incoming: 64 << 20,
            ..Settings::new(
                BrokerUrl {
                    tls: false,
                    host: "127.0.0.1".into(),
                    port: broker.port(),
                },
                format!("alertclip-demo-receiver-{}", std::process::id()),
            )
        },
        // The demo broker carries only the demo box.
        layout: alertclip_wire::TopicLayout::default(),
        out: out.join("received"),
        json: false,
        // The demo device's own key: the officer side trusts it as if registered.
        keys: Some(out.join("trusted-keys")),
        trust_on_first_use: false,
        sessions: Default::default(),
    }
}

fn demo_config(
    url: &str,
    out: &Path,
    socket: &Path,
    broker: Option<&LocalBroker>,
    options: &DemoOptions,
) -> anyhow::Result<Config> {
    let mqtt = broker
        .map(|b| format!("[mqtt]\nurl = \"{}\"\n", b.url()))
        .unwrap_or_default();
    let text = format!(
        r#"
[site]
id = "demo"
name = "alertclip demo store"
address = "1 Example Street"

[[camera]]
id = "demo"
url = "{url}"
pre_roll = "{}"
post_roll = "{}"

[storage]
dir = "{}"

[control]
socket = "{}"

[outbox]
dir = "{}"

[evidence]
dir = "{}"

{mqtt}
"#,
        humantime::format_duration(options.pre_roll),
        humantime::format_duration(options.post_roll),
        out.join("clips").display(),
        socket.display(),
        out.join("outbox").display(),
        out.join("evidence").display(),
    );
    Ok(Config::parse(&text, Path::new("(demo configuration)"))?)
}

async fn trigger_once(
    daemon: &Daemon,
    options: &DemoOptions,
    mut reports: mpsc::UnboundedReceiver<Report>,
    delivering: bool,
    out: &Path,
) -> anyhow::Result<uuid::Uuid> {
    let camera = daemon.cameras()[0].clone();
    let mut status = camera.status.clone();
    let mut clips = daemon.clips();
    println!(
        "buffering {} of pre-roll ...",
        humantime::format_duration(options.pre_roll)
    );
    let filled = tokio::time::timeout(options.pre_roll + Duration::from_secs(30), async {
        status
            .wait_for(|s| {
                s.state == CameraState::Streaming && s.buffered_s >= options.pre_roll.as_secs_f64()
            })
            .await
            .map(|s| s.clone())
    })
    .await;
    let current = camera.status.borrow().clone();
    let Ok(Ok(ready)) = filled else {
        bail!(
            "the simulated camera did not fill the pre-roll (state {:?}, last error: {})",
            current.state,
            current.last_error.as_deref().unwrap_or("none")
        );
    };
    println!(
        "camera streaming: {} {}x{} at {:.1} fps, {:.0} kbit/s, {:.1} s buffered",
        ready.codec.as_deref().unwrap_or("?"),
        ready.width.unwrap_or(0),
        ready.height.unwrap_or(0),
        ready.fps,
        ready.kbps,
        ready.buffered_s
    );
    let mut trigger = Trigger::now(TriggerKind::Test, "demo");
    trigger.note = Some("alertclip demo".to_owned());
    let event = daemon.triggers().fire(trigger).await?;
    println!(
        "triggered event {event}; waiting {} of post-roll ...",
        humantime::format_duration(options.post_roll)
    );
    let done = tokio::time::timeout(options.post_roll + Duration::from_secs(30), clips.recv())
        .await
        .context("no clip was written in time")??;
    println!(
        "\nclip: {}\nsidecar: {}",
        done.mp4.display(),
        done.sidecar.display()
    );
    println!("{}", serde_json::to_string_pretty(&done.record)?);
    if !delivering {
        return Ok(event);
    }

    println!("\nthe officer side (alertclip receive) got:");
    let mut stdout = std::io::stdout();
    let delivered = tokio::time::timeout(Duration::from_secs(60), async {
        let (mut alert, mut clip) = (None, None);
        while let Some(report) = reports.recv().await {
            let _ = receive::print(&mut stdout, &report, false);
            match report {
                Report::Alert { alert: a, .. } if a.event_id == event => alert = Some(a),
                Report::Clip {
                    event: e,
                    path,
                    manifest,
                    signature,
                    ..
                } if e == event => clip = Some((path, manifest, signature)),
                Report::Invalid {
                    event: e, reason, ..
                } if e == event => {
                    anyhow::bail!("the received clip did not verify: {reason}");
                }
                _ => {}
            }
            if let (Some(alert), Some(clip)) = (&alert, &clip) {
                return Ok((alert.clone(), clip.clone()));
            }
        }
        anyhow::bail!("the receiver stopped")
    })
    .await
    .context("the alert and clip did not reach the receiver in time")??;
    let (alert, (path, manifest, signature)) = delivered;
    println!(
        "\ndelivered: the alert for event {} ({} from {}, alert {} of this device), then the clip, \
         verified (sha256 {}, manifest signature {} by the registered device key):\n{}",
        alert.event_id,
        serde_json::to_value(alert.trigger.kind)?
            .as_str()
            .unwrap_or_default(),
        alert.trigger.source,
        alert.sequence,
        manifest.sha256,
        signature.word(),
        path.display()
    );
    println!(
        "\ncheck it yourself: alertclip verify {} {} --pubkey {}",
        path.display(),
        path.with_extension("manifest.json").display(),
        out.join("evidence/device.pub").display()
    );
    Ok(event)
}
