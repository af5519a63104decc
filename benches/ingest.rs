//! The ingest benchmark: what keeping pre-roll costs, beside other ways of keeping it.
//!
//! `make bench` (or `cargo bench --bench ingest -- [--seconds N] [--rounds N]`). Serves a
//! 1920x1080 15 fps ~3 Mbit/s H.264 stream (2 s GOP, encoded once into target/) over RTSP
//! from a separate process, and compares, on the same stream:
//!
//! - alertclip ingesting it into its ring (30 s pre-roll), with its default client (retina)
//!   and with `ingest = "gstreamer"`;
//! - a bare retina client keeping 30 s of frames (`examples/retina_client.rs`: `make bench`
//!   builds it);
//! - the GStreamer floor: `rtspsrc ! rtph264depay ! h264parse ! fakesink`;
//! - the ffmpeg segment recorder NVRs use to keep pre-roll;
//! - Motion with its netcam in passthrough and a pre-capture buffer (if installed).
//!
//! Peak RSS comes from one stream per tool. CPU per minute of one stream is a fraction of a
//! second, within the noise of a single short run, so it is measured with four streams per
//! tool at once, over several rounds that alternate the tools, and averaged. Then alertclip
//! with four cameras (RSS against bytes buffered), with sixteen (total CPU and RSS), and the
//! time from the end of post-roll to the finished MP4 for 20 s clips.

// A test or benchmark that cannot go on fails with the value it got.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use alertclip::demo::teststream::{TestServer, TestStream};
use anyhow::{Context, bail};
use common::{KillOnDrop, cpu_seconds, status};

const FIXTURE_SECONDS: u64 = 240;
const WARM_UP: Duration = Duration::from_secs(10);
const STREAMS: usize = 4;
/// Cameras at once in the last run.
const MANY: usize = 16;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut seconds = 60u64;
    let mut rounds = 2usize;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--serve" => return serve(&args.collect::<Vec<_>>()),
            "--seconds" => seconds = args.next().context("--seconds N")?.parse()?,
            "--rounds" => rounds = args.next().context("--rounds N")?.parse()?,
            "--bench" => {}
            other => bail!("unknown argument {other}"),
        }
    }
    let longest = FIXTURE_SECONDS - WARM_UP.as_secs() - 10;
    if seconds > longest || rounds == 0 {
        bail!("--seconds is at most {longest}, --rounds at least 1");
    }
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ingest");
    std::fs::create_dir_all(&work)?;
    let fixture = fixture(&work)?;
    let server = Server::start(&fixture, STREAMS)?;
    let window = Duration::from_secs(seconds);
    println!(
        "stream: 1920x1080, 15 fps, ~3 Mbit/s H.264, 2 s GOP; {seconds} s measured after {} s warm-up\n",
        WARM_UP.as_secs()
    );

    let retina_client = retina_client()?;
    let mut tools = vec![
        Tool::Alertclip,
        Tool::AlertclipGstreamer,
        Tool::Retina,
        Tool::GstFloor,
        Tool::Ffmpeg,
    ];
    if Command::new("motion").arg("-h").output().is_ok() {
        tools.push(Tool::Motion);
    } else {
        println!("Motion is not installed (scripts/setup.sh --bench installs it): skipped\n");
    }

    println!("one stream per tool:");
    let mut single = Vec::new();
    for tool in &tools {
        single.push(measure(*tool, &work, &server, 1, window)?);
    }

    println!("\n{STREAMS} streams per tool at once, {rounds} rounds:");
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); tools.len()];
    for _ in 0..rounds {
        for (i, tool) in tools.iter().enumerate() {
            cpu[i].push(measure(*tool, &work, &server, STREAMS, window)?.cpu_per_minute);
        }
    }
    print_table(&tools, &single, &cpu);

    four_cameras(&work, &server)?;
    drop(server);
    many_cameras(&work, &fixture, &retina_client, window)?;
    let server = Server::start(&fixture, 1)?;
    clip_latency(&work, &server)?;
    Ok(())
}

/// The bare retina client, built beside this benchmark.
fn retina_client() -> anyhow::Result<PathBuf> {
    let path = Path::new(env!("CARGO_BIN_EXE_alertclip"))
        .with_file_name("examples")
        .join("retina_client");
    if !path.exists() {
        bail!(
            "{} is missing: `cargo build --release --example retina_client` (make bench does)",
            path.display()
        );
    }
    Ok(path)
}

/// A way of keeping pre-roll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Alertclip,
    AlertclipGstreamer,
    Retina,
    GstFloor,
    Ffmpeg,
    Motion,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Alertclip => "alertclip (30 s pre-roll)",
            Tool::AlertclipGstreamer => "alertclip, ingest = \"gstreamer\"",
            Tool::Retina => "bare retina client (30 s of frames kept)",
            Tool::GstFloor => "GStreamer floor (rtspsrc ! depay ! parse ! fakesink)",
            Tool::Ffmpeg => "ffmpeg segment recorder (-c copy, 10 s segments)",
            Tool::Motion => "Motion (netcam passthrough, 60-frame pre_capture)",
        }
    }

    /// The processes that run this tool on streams 1 to `n`.
    fn commands(self, work: &Path, server: &Server, n: usize) -> anyhow::Result<Vec<Command>> {
        let urls: Vec<String> = (1..=n).map(|i| server.url(i)).collect();
        Ok(match self {
            Tool::Alertclip => vec![alertclip_run(&daemon_config(
                work, &urls, "30s", "10s", "",
            )?)],
            Tool::AlertclipGstreamer => vec![alertclip_run(&daemon_config(
                work,
                &urls,
                "30s",
                "10s",
                "ingest = \"gstreamer\"",
            )?)],
            Tool::Retina => {
                let mut command = Command::new(retina_client()?);
                command.arg("--keep").arg("30").args(&urls);
                vec![command]
            }
            Tool::GstFloor => vec![gst_floor(&urls)],
            Tool::Ffmpeg => {
                let segments = work.join("ffmpeg-segments");
                let _ = std::fs::remove_dir_all(&segments);
                std::fs::create_dir_all(&segments)?;
                urls.iter()
                    .enumerate()
                    .map(|(i, url)| ffmpeg_recorder(url, &segments, i))
                    .collect()
            }
            Tool::Motion => vec![motion(&motion_config(work, &urls)?)],
        })
    }
}

/// What one run of a tool cost.
struct Sample {
    /// CPU seconds per minute of video, per stream.
    cpu_per_minute: f64,
    /// Peak RSS of its largest process.
    peak_rss_mib: f64,
}

/// Runs a tool on `n` streams for the warm-up plus `window`; reads its CPU time over the
/// window and its peak RSS from /proc.
fn measure(
    tool: Tool,
    work: &Path,
    server: &Server,
    n: usize,
    window: Duration,
) -> anyhow::Result<Sample> {
    let mut children = Vec::new();
    for mut command in tool.commands(work, server, n)? {
        let child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn();
        children.push(KillOnDrop(
            child.with_context(|| format!("starting {}", tool.name()))?,
        ));
    }
    std::thread::sleep(WARM_UP);
    let cpu = |children: &[KillOnDrop]| -> anyhow::Result<f64> {
        children.iter().map(|c| cpu_seconds(c.0.id())).sum()
    };
    let before = cpu(&children)?;
    std::thread::sleep(window);
    let after = cpu(&children)?;
    let mut peak_kib = 0;
    for child in &mut children {
        peak_kib = peak_kib.max(peak_rss_kib(child.0.id())?);
        if let Some(status) = child.0.try_wait()? {
            bail!("{} exited early ({status})", tool.name());
        }
    }
    let sample = Sample {
        cpu_per_minute: (after - before) / window.as_secs_f64() * 60.0 / n as f64,
        peak_rss_mib: peak_kib as f64 / 1024.0,
    };
    println!(
        "  {:<54} {:>7.3} CPU-s per minute of video per stream, peak RSS {:>6.1} MiB",
        tool.name(),
        sample.cpu_per_minute,
        sample.peak_rss_mib
    );
    Ok(sample)
}

fn print_table(tools: &[Tool], single: &[Sample], cpu: &[Vec<f64>]) {
    let mean = |v: &Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
    let base_cpu = mean(&cpu[0]);
    let base_rss = single[0].peak_rss_mib;
    println!(
        "\n{:<54} {:>12} {:>11} {:>13} {:>11}",
        "", "CPU-s/min", "x alertclip", "peak RSS MiB", "x alertclip"
    );
    for (i, tool) in tools.iter().enumerate() {
        println!(
            "{:<54} {:>12.3} {:>11.2} {:>13.1} {:>11.2}",
            tool.name(),
            mean(&cpu[i]),
            mean(&cpu[i]) / base_cpu,
            single[i].peak_rss_mib,
            single[i].peak_rss_mib / base_rss
        );
    }
    let find = |t: Tool| tools.iter().position(|&x| x == t);
    let ratio = |a: Tool, b: Tool| Some(mean(&cpu[find(a)?]) / mean(&cpu[find(b)?]));
    println!();
    for (a, b, what, target) in [
        (
            Tool::Alertclip,
            Tool::Retina,
            "alertclip CPU / bare retina client",
            "<= 1.5",
        ),
        (
            Tool::Alertclip,
            Tool::Ffmpeg,
            "alertclip CPU / ffmpeg recorder",
            "<= 0.6",
        ),
        (
            Tool::Alertclip,
            Tool::AlertclipGstreamer,
            "alertclip CPU / alertclip with ingest = \"gstreamer\"",
            "",
        ),
        (
            Tool::AlertclipGstreamer,
            Tool::GstFloor,
            "alertclip with ingest = \"gstreamer\" CPU / GStreamer floor",
            "<= 1.1",
        ),
    ] {
        if let Some(r) = ratio(a, b) {
            let target = if target.is_empty() {
                String::new()
            } else {
                format!(" (target {target})")
            };
            println!("{what}: {r:.2}{target}");
        }
    }
    if let Some(i) = find(Tool::Motion) {
        println!(
            "alertclip RSS / Motion RSS, one camera: {:.2} (target <= 0.3)",
            base_rss / single[i].peak_rss_mib
        );
    }
    println!();
}

/// Four cameras with 30 s of pre-roll: RSS against what the rings hold.
fn four_cameras(work: &Path, server: &Server) -> anyhow::Result<()> {
    let urls: Vec<String> = (1..=4).map(|i| server.url(i)).collect();
    let config = daemon_config(work, &urls, "30s", "10s", "")?;
    let mut child = KillOnDrop(
        alertclip_run(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let socket = work.join("control.sock");
    std::thread::sleep(Duration::from_secs(3));
    let rss_empty = rss_kib(child.0.id())? as f64 / 1024.0;
    std::thread::sleep(Duration::from_secs(40));
    let status: Vec<_> = status(&socket)?.into_iter().map(|r| r.ingest).collect();
    let rss_full = rss_kib(child.0.id())? as f64 / 1024.0;
    let peak = peak_rss_kib(child.0.id())? as f64 / 1024.0;
    let buffered: f64 =
        status.iter().map(|s| s.buffered_bytes as f64).sum::<f64>() / (1 << 20) as f64;
    let stream_bytes: f64 = status
        .iter()
        .map(|s| s.kbps * 1000.0 / 8.0 * s.buffered_s)
        .sum::<f64>()
        / (1 << 20) as f64;
    if let Some(status) = child.0.try_wait()? {
        bail!("alertclip exited early ({status})");
    }
    println!("four cameras, 30 s pre-roll each:");
    for (i, s) in status.iter().enumerate() {
        println!(
            "  camera {}: {:?}, {:.1} fps, {:.0} kbit/s, {:.1} s buffered, {:.1} MiB",
            i + 1,
            s.state,
            s.fps,
            s.kbps,
            s.buffered_s,
            s.buffered_bytes as f64 / (1 << 20) as f64
        );
    }
    println!(
        "  rings hold {buffered:.1} MiB; bitrate x seconds buffered = {stream_bytes:.1} MiB; ratio {:.2} (target <= 1.2)",
        buffered / stream_bytes
    );
    println!(
        "  RSS {rss_empty:.1} MiB at start, {rss_full:.1} MiB with full rings (peak {peak:.1}): growth {:.1} MiB = {:.2} x the bytes buffered",
        rss_full - rss_empty,
        (rss_full - rss_empty) / buffered
    );
    let n = status.len() as f64;
    println!(
        "  RSS per camera {:.1} MiB, bytes buffered per camera {:.1} MiB + 12 MiB = {:.1} MiB (target: RSS per camera <= that)\n",
        rss_full / n,
        buffered / n,
        buffered / n + 12.0
    );
    Ok(())
}

/// Sixteen cameras at once, beside the bare retina client on the same sixteen streams: total
/// CPU per minute of video and RSS.
fn many_cameras(
    work: &Path,
    fixture: &Path,
    retina_client: &Path,
    window: Duration,
) -> anyhow::Result<()> {
    let server = Server::start(fixture, MANY)?;
    let urls: Vec<String> = (1..=MANY).map(|i| server.url(i)).collect();
    println!("{MANY} cameras at once, 30 s pre-roll each:");
    let mut results = Vec::new();
    for (name, mut command) in [
        (
            "alertclip",
            alertclip_run(&daemon_config(work, &urls, "30s", "10s", "")?),
        ),
        ("bare retina client", {
            let mut command = Command::new(retina_client);
            command.arg("--keep").arg("30").args(&urls);
            command
        }),
    ] {
        let mut child = KillOnDrop(
            command
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        // The rings fill for 30 s before the window opens, so RSS is that of full rings.
        std::thread::sleep(Duration::from_secs(32));
        let before = cpu_seconds(child.0.id())?;
        std::thread::sleep(window);
        let cpu = (cpu_seconds(child.0.id())? - before) / window.as_secs_f64() * 60.0;
        let rss = rss_kib(child.0.id())? as f64 / 1024.0;
        let streaming = if name == "alertclip" {
            let status = status(&work.join("control.sock"))?;
            let streaming = status
                .iter()
                .filter(|r| r.ingest.state == alertclip::ingest::CameraState::Streaming)
                .count();
            let buffered: f64 = status
                .iter()
                .map(|r| r.ingest.buffered_bytes as f64)
                .sum::<f64>()
                / (1 << 20) as f64;
            format!(", {streaming} of {MANY} streaming, {buffered:.1} MiB buffered")
        } else {
            String::new()
        };
        if let Some(exit) = child.0.try_wait()? {
            bail!("{name} exited early ({exit})");
        }
        println!(
            "  {name:<20} {cpu:>7.2} CPU-s per minute of video in all ({:.3} per camera), RSS {rss:.1} MiB{streaming}",
            cpu / MANY as f64
        );
        results.push(cpu);
    }
    println!(
        "  alertclip CPU / bare retina client, {MANY} cameras: {:.2}\n",
        results[0] / results[1]
    );
    Ok(())
}

/// 20 s clips (10 s pre, 10 s post): the time from the end of post-roll to the finished,
/// synced, renamed MP4.
fn clip_latency(work: &Path, server: &Server) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let config = alertclip::config::Config::parse(
            &std::fs::read_to_string(daemon_config(work, &[server.url(1)], "10s", "10s", "")?)?,
            Path::new("bench.toml"),
        )?;
        let daemon = alertclip::Daemon::start(config).await?;
        let camera = daemon.cameras()[0].clone();
        let mut status = camera.status.clone();
        status.wait_for(|s| s.buffered_s >= 10.5).await?;
        let mut clips = daemon.clips();
        let mut latencies = Vec::new();
        for _ in 0..3 {
            let trigger =
                alertclip::trigger::Trigger::now(alertclip::trigger::TriggerKind::Test, "bench");
            let post_roll_end = trigger.at.mono + 10_000_000_000;
            daemon.triggers().fire(trigger).await?;
            let done = clips.recv().await?;
            let latency = alertclip::clock::mono_now().saturating_sub(post_roll_end) as f64 / 1e6;
            println!(
                "  {:.1} s clip, {:.1} MiB: finished {latency:.0} ms after post-roll ended",
                done.record.duration_ms as f64 / 1000.0,
                done.record.bytes as f64 / (1 << 20) as f64
            );
            latencies.push(latency);
        }
        latencies.sort_by(f64::total_cmp);
        println!(
            "clip finished after post-roll: median {:.0} ms, worst {:.0} ms (target <= 200 ms)",
            latencies[1], latencies[2]
        );
        daemon.shutdown(Duration::from_secs(5)).await;
        anyhow::Ok(())
    })
}

/// The stream file, encoded once: SMPTE bars with a running clock and a 640x360 patch of
/// noise that keeps the encoder at its 3 Mbit/s budget, as a busy scene would.
fn fixture(work: &Path) -> anyhow::Result<PathBuf> {
    let path = work.join(format!("1080p15-3mbps-{FIXTURE_SECONDS}s.mp4"));
    if path.exists() {
        return Ok(path);
    }
    println!("encoding the {FIXTURE_SECONDS} s fixture once (a few minutes) ...");
    let frames = FIXTURE_SECONDS * 15;
    let partial = path.with_extension("partial");
    let pipeline = format!(
        "compositor name=mix sink_1::xpos=1280 sink_1::ypos=720 ! video/x-raw,width=1920,height=1080,framerate=15/1 \
         ! timeoverlay font-desc=\"Sans 36\" ! x264enc bitrate=3000 key-int-max=30 speed-preset=veryfast tune=zerolatency \
         ! h264parse ! mp4mux ! filesink location={} \
         videotestsrc num-buffers={frames} pattern=smpte ! video/x-raw,width=1920,height=1080,framerate=15/1 ! mix. \
         videotestsrc num-buffers={frames} pattern=snow ! video/x-raw,width=640,height=360,framerate=15/1 ! mix.",
        partial.display()
    );
    let status = Command::new("gst-launch-1.0")
        .arg("-q")
        .arg("-e")
        .args(shell_words(&pipeline))
        .status()?;
    if !status.success() {
        bail!("encoding the fixture failed");
    }
    std::fs::rename(&partial, &path)?;
    Ok(path)
}

/// Splits a gst-launch description into arguments (quotes kept together).
fn shell_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            _ => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// The RTSP server, in a process of its own so its CPU is not counted.
struct Server {
    /// Held so the server stops with the benchmark.
    _child: KillOnDrop,
    base: String,
}

impl Server {
    fn start(fixture: &Path, mounts: usize) -> anyhow::Result<Server> {
        let (child, first) =
            common::spawn_server(&[fixture.display().to_string(), mounts.to_string()])?;
        Ok(Server {
            _child: child,
            base: first.trim_end_matches("/cam1").to_owned(),
        })
    }

    fn url(&self, i: usize) -> String {
        format!("{}/cam{i}", self.base)
    }
}

/// `--serve FILE N`: serves FILE on /cam1 .. /camN until killed, printing the first URL.
fn serve(args: &[String]) -> anyhow::Result<()> {
    let file = PathBuf::from(args.first().context("--serve FILE N")?);
    let mounts: usize = args.get(1).context("--serve FILE N")?.parse()?;
    let streams: Vec<TestStream> = (1..=mounts)
        .map(|i| TestStream {
            file: Some(file.clone()),
            ..TestStream::h264(&format!("/cam{i}"))
        })
        .collect();
    let server = TestServer::start(&streams)?;
    println!("{}", server.url("/cam1"));
    loop {
        std::thread::park();
    }
}

fn daemon_config(
    work: &Path,
    urls: &[String],
    pre_roll: &str,
    post_roll: &str,
    camera_extra: &str,
) -> anyhow::Result<PathBuf> {
    let mut text = format!(
        "[site]\nid = \"bench\"\nname = \"Benchmark\"\n[storage]\ndir = \"{0}/clips\"\n[evidence]\ndir = \"{0}/evidence\"\n[control]\nsocket = \"{0}/control.sock\"\n",
        work.display()
    );
    for (i, url) in urls.iter().enumerate() {
        text.push_str(&format!("[[camera]]\nid = \"cam{}\"\nurl = \"{url}\"\npre_roll = \"{pre_roll}\"\npost_roll = \"{post_roll}\"\n{camera_extra}\n", i + 1));
    }
    let path = work.join("alertclip.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

fn alertclip_run(config: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_alertclip"));
    command
        .arg("run")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn");
    command
}

/// One gst-launch process with a branch per stream.
fn gst_floor(urls: &[String]) -> Command {
    let mut command = Command::new("gst-launch-1.0");
    command.arg("-q");
    for url in urls {
        command.args([
            "rtspsrc",
            &format!("location={url}"),
            "protocols=tcp",
            "!",
            "rtph264depay",
            "!",
            "h264parse",
            "!",
            "fakesink",
        ]);
    }
    command
}

fn ffmpeg_recorder(url: &str, dir: &Path, index: usize) -> Command {
    let mut command = Command::new("ffmpeg");
    command
        .args([
            "-nostdin",
            "-loglevel",
            "error",
            "-rtsp_transport",
            "tcp",
            "-i",
            url,
        ])
        .args([
            "-c",
            "copy",
            "-an",
            "-f",
            "segment",
            "-segment_time",
            "10",
            "-segment_format",
            "mp4",
            "-reset_timestamps",
            "1",
        ])
        .arg(dir.join(format!("cam{index}-%03d.mp4")));
    command
}

/// A Motion configuration with one camera per URL, each buffering 60 decoded frames (4 s) of
/// pre-capture and recording by passthrough. The threshold is the whole picture, so no event
/// fires and what is measured is the waiting state, as for the others.
fn motion_config(work: &Path, urls: &[String]) -> anyhow::Result<PathBuf> {
    let dir = work.join("motion");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut text = format!(
        "daemon off\nsetup_mode off\nlog_level 4\nlog_file {0}/motion.log\ntarget_dir {0}\n\
         webcontrol_port 0\nstream_port 0\n",
        dir.display()
    );
    for (i, url) in urls.iter().enumerate() {
        let camera = dir.join(format!("camera{}.conf", i + 1));
        std::fs::write(
            &camera,
            format!(
                "camera_id {}\nnetcam_url {url}\nnetcam_params rtsp_transport=tcp\nwidth 1920\nheight 1080\n\
                 framerate 15\nmovie_passthrough on\nmovie_output on\npicture_output off\npre_capture 60\n\
                 post_capture 0\nthreshold 2073600\n",
                i + 1
            ),
        )?;
        text.push_str(&format!("camera {}\n", camera.display()));
    }
    let path = dir.join("motion.conf");
    std::fs::write(&path, text)?;
    Ok(path)
}

fn motion(config: &Path) -> Command {
    let mut command = Command::new("motion");
    command.arg("-n").arg("-c").arg(config);
    command
}

fn status_kib(pid: u32, key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .with_context(|| format!("{key} in /proc/{pid}/status"))?;
    Ok(line.split_whitespace().nth(1).context("value")?.parse()?)
}

fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmHWM:")
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmRSS:")
}
