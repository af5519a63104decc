//! `alertclip demo`: the whole path on one machine, with no hardware and no configuration.
//!
//! A simulated camera (a live test pattern with the time burnt in) is served over RTSP on
//! loopback; the daemon buffers it, one trigger fires once the pre-roll has filled, and the
//! clip lands in the output directory with its sidecar.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::camera::CameraState;
use crate::config::Config;
use crate::daemon::{Daemon, SHUTDOWN_GRACE};
use crate::teststream::{TestCodec, TestServer, TestStream};
use crate::trigger::{Trigger, TriggerKind};

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
    let socket = std::env::temp_dir().join(format!("alertclip-demo-{}.sock", std::process::id()));
    let config = demo_config(&url, &out, &socket, &options)?;
    let daemon = Daemon::start(config).await?;
    let result = trigger_once(&daemon, &options).await;
    daemon.shutdown(SHUTDOWN_GRACE).await;
    drop(server);
    let _ = std::fs::remove_file(&socket);
    result
}

fn demo_config(
    url: &str,
    out: &Path,
    socket: &Path,
    options: &DemoOptions,
) -> anyhow::Result<Config> {
    let text = format!(
        r#"
[site]
id = "demo"
name = "alertclip demo store"

[[camera]]
id = "demo"
url = "{url}"
pre_roll = "{}"
post_roll = "{}"

[storage]
dir = "{}"

[control]
socket = "{}"
"#,
        humantime::format_duration(options.pre_roll),
        humantime::format_duration(options.post_roll),
        out.display(),
        socket.display(),
    );
    Ok(Config::parse(&text, Path::new("(demo configuration)"))?)
}

async fn trigger_once(daemon: &Daemon, options: &DemoOptions) -> anyhow::Result<()> {
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
    Ok(())
}
