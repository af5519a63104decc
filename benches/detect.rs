//! The detection benchmark: what watching a camera costs.
//!
//! `make bench` (or `cargo bench --bench detect -- [--frames N] [--seconds N]`), after
//! `scripts/setup.sh --bench` (the model, the test photos, and onnxruntime for Python in
//! target/bench-venv). In one run:
//!
//! 1. Per frame, on the astronaut photo with the model on 2 threads: alertclip's
//!    pre-processing, inference and post-processing, beside the same model on the same
//!    threads and options through onnxruntime's Python API, inference only (the baseline).
//!    The two runs alternate in rounds, so both see the same machine.
//! 2. The decode branch's CPU share: a 640x360 15 fps H.264 camera, served from a separate
//!    process, watched at 2 fps, with and without the motion gate, less the same camera
//!    buffered but not watched. Two scenes: a still one (an empty shop at night) and a
//!    moving one (the test pattern's ball).

// A test or benchmark that cannot go on fails with the value it got.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use alertclip::demo::teststream::{TestServer, TestStream};
use alertclip::detect::Model;
use alertclip::detect::frames;
use alertclip::detect::yolox::{Found, Wanted};
use anyhow::{Context, bail};
use common::{KillOnDrop, cpu_seconds};

const THREADS: usize = 2;
const WARM_UP_FRAMES: usize = 20;
const ROUNDS: usize = 3;
const WARM_UP: Duration = Duration::from_secs(8);

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut frames = 200usize;
    let mut seconds = 30u64;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--serve" => return serve(&args.collect::<Vec<_>>()),
            "--frames" => frames = args.next().context("--frames N")?.parse()?,
            "--seconds" => seconds = args.next().context("--seconds N")?.parse()?,
            "--bench" => {}
            other => bail!("unknown argument {other}"),
        }
    }
    gstreamer::init()?;
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let runtime = models
        .join("onnxruntime")
        .join(std::env::consts::ARCH)
        .join("libonnxruntime.so.1.31.1");
    let model_path = models.join("yolox-nano.onnx");
    let photo = models.join("test-images/astronaut.png");
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-venv/bin/python");
    for (path, what) in [
        (&runtime, "the runtime"),
        (&model_path, "the model"),
        (&photo, "the test photos"),
        (&python, "onnxruntime for Python"),
    ] {
        if !path.exists() {
            bail!(
                "{what} is missing ({}): run scripts/setup.sh --bench",
                path.display()
            );
        }
    }
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("detect");
    std::fs::create_dir_all(&work)?;

    per_frame(&runtime, &model_path, &photo, &python, &work, frames)?;
    decode_branch(
        &runtime,
        &model_path,
        &models,
        &work,
        Duration::from_secs(seconds),
    )?;
    Ok(())
}

/// Milliseconds: median and mean.
#[derive(Debug, Clone, Copy, Default)]
struct Figure {
    median: f64,
    mean: f64,
}

fn figure(mut ms: Vec<f64>) -> Figure {
    ms.sort_by(f64::total_cmp);
    Figure {
        median: ms[ms.len() / 2],
        mean: ms.iter().sum::<f64>() / ms.len() as f64,
    }
}

fn per_frame(
    runtime: &Path,
    model_path: &Path,
    photo: &Path,
    python: &Path,
    work: &Path,
    frames: usize,
) -> anyhow::Result<()> {
    let mut model = Model::load(runtime, model_path, 80, THREADS)?;
    let sample = frames::load_still(photo, model.input_size()).map_err(anyhow::Error::msg)?;
    // The same scaled picture, for Python.
    let raw = work.join("picture.bgr");
    let (width, height) = frames::with_picture(&sample, |p| {
        let mut packed = Vec::with_capacity(p.width * p.height * 3);
        for y in 0..p.height {
            packed.extend_from_slice(&p.data[y * p.stride..][..p.width * 3]);
        }
        std::fs::write(&raw, packed).map(|()| (p.width, p.height))
    })
    .map_err(anyhow::Error::msg)??;
    let wanted = [Wanted {
        class: 0,
        min_score: 0.5,
    }];
    let mut found: Vec<Found> = Vec::new();
    let (mut pre, mut inference, mut post, mut total) = (vec![], vec![], vec![], vec![]);
    let mut baseline = Vec::new();
    let mut python_score = 0.0;
    println!(
        "per frame: YOLOX-Nano 416x416 on a {width}x{height} picture, {THREADS} threads, {frames} frames x {ROUNDS} rounds"
    );
    for round in 0..ROUNDS {
        for i in 0..WARM_UP_FRAMES + frames {
            let t = frames::with_picture(&sample, |picture| {
                model.detect(picture, &wanted, &mut found)
            })
            .map_err(anyhow::Error::msg)??;
            if i >= WARM_UP_FRAMES {
                let ms = |d: Duration| d.as_secs_f64() * 1e3;
                pre.push(ms(t.pre));
                inference.push(ms(t.inference));
                post.push(ms(t.post));
                total.push(ms(t.pre + t.inference + t.post));
            }
        }
        let (times, score) = python_baseline(python, model_path, &raw, (width, height), frames)?;
        baseline.extend(times);
        python_score = score;
        eprintln!("  round {} done", round + 1);
    }
    let rust_score = found.first().map_or(0.0, |f| f.score);
    let (pre, inference, post, total, baseline) = (
        figure(pre),
        figure(inference),
        figure(post),
        figure(total),
        figure(baseline),
    );
    println!("  {:<44} {:>10} {:>10}", "", "median ms", "mean ms");
    for (name, f) in [
        ("alertclip pre-processing", pre),
        ("alertclip inference", inference),
        ("alertclip post-processing", post),
        ("alertclip pre + inference + post", total),
        ("onnxruntime Python, inference only (baseline)", baseline),
    ] {
        println!("  {name:<44} {:>10.3} {:>10.3}", f.median, f.mean);
    }
    println!(
        "  pre + inference + post / baseline: {:.3}x median, {:.3}x mean (target <= 1.05x)",
        total.median / baseline.median,
        total.mean / baseline.mean
    );
    println!(
        "  pre-processing: {:.3} ms median (target <= 1 ms)",
        pre.median
    );
    println!(
        "  same input, same answer: person score {rust_score:.4} (alertclip) vs {python_score:.4} (Python)\n"
    );
    Ok(())
}

/// Times the model in onnxruntime's Python API on the same letterboxed input; returns the
/// per-run milliseconds and the best person score, to show both saw the same tensor.
fn python_baseline(
    python: &Path,
    model: &Path,
    raw: &Path,
    (width, height): (usize, usize),
    frames: usize,
) -> anyhow::Result<(Vec<f64>, f32)> {
    const SCRIPT: &str = r#"
import sys, time, json
import numpy as np
import onnxruntime as ort
model, raw, w, h, frames, warm, threads = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
options = ort.SessionOptions()
options.intra_op_num_threads = threads
options.inter_op_num_threads = 1
options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
options.add_session_config_entry("session.intra_op.allow_spinning", "0")
session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
_, _, H, W = session.get_inputs()[0].shape
picture = np.fromfile(raw, dtype=np.uint8).reshape(h, w, 3)
tensor = np.full((1, 3, H, W), 114.0, dtype=np.float32)
tensor[0, :, :h, :w] = picture.transpose(2, 0, 1)
times = []
for i in range(warm + frames):
    start = time.perf_counter()
    out = session.run(None, {name: tensor})[0]
    took = time.perf_counter() - start
    if i >= warm:
        times.append(took * 1e3)
score = float((out[0, :, 4] * out[0, :, 5]).max())
print(json.dumps({"ms": times, "score": score}))
"#;
    let out = Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(model)
        .arg(raw)
        .args(
            [width, height, frames, WARM_UP_FRAMES, THREADS]
                .iter()
                .map(ToString::to_string),
        )
        .output()?;
    if !out.status.success() {
        bail!(
            "the Python baseline failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let value: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let times = value["ms"]
        .as_array()
        .context("ms")?
        .iter()
        .filter_map(serde_json::Value::as_f64)
        .collect();
    Ok((times, value["score"].as_f64().context("score")? as f32))
}

/// A scene the camera shows.
#[derive(Debug, Clone, Copy)]
enum Scene {
    /// An empty shop: nothing moves.
    Still,
    /// The test pattern's ball, moving all the time.
    Moving,
}

fn decode_branch(
    runtime: &Path,
    model: &Path,
    models: &Path,
    work: &Path,
    window: Duration,
) -> anyhow::Result<()> {
    println!(
        "decode branch: one 640x360 15 fps H.264 camera (1 s GOP), watched at 2 fps; CPU over {} s after {} s warm-up, in % of one core",
        window.as_secs(),
        WARM_UP.as_secs()
    );
    println!(
        "  {:<10} {:>22} {:>22} {:>22}",
        "scene", "buffered, not watched", "watched, no gate", "watched, motion gate"
    );
    for scene in [Scene::Still, Scene::Moving] {
        let server = Server::start(scene, models)?;
        let mut cpu = Vec::new();
        let mut looked = Vec::new();
        for watch in [None, Some(false), Some(true)] {
            let config = daemon_config(work, &server.url, runtime, model, watch)?;
            let (share, inferences) = measure(&config, work, window)?;
            cpu.push(share);
            looked.push(inferences);
        }
        println!(
            "  {:<10} {:>21.1}% {:>13.1}% (+{:.1}) {:>13.1}% (+{:.1})",
            format!("{scene:?}").to_lowercase(),
            cpu[0],
            cpu[1],
            cpu[1] - cpu[0],
            cpu[2],
            cpu[2] - cpu[0],
        );
        println!(
            "  {:<10} {:>22} {:>22} {:>22}",
            "  inferences", "-", looked[1], looked[2]
        );
    }
    Ok(())
}

/// Runs the daemon on `config` and returns its CPU share over `window` and the inferences
/// it ran in that time.
fn measure(config: &Path, work: &Path, window: Duration) -> anyhow::Result<(f64, u64)> {
    let child = Command::new(env!("CARGO_BIN_EXE_alertclip"))
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let mut child = KillOnDrop(child);
    std::thread::sleep(WARM_UP);
    let socket = work.join("control.sock");
    let inferences = |socket: &Path| -> anyhow::Result<u64> {
        Ok(common::status(socket)?
            .iter()
            .filter_map(|s| s.detect.as_ref().map(|d| d.inferences))
            .sum())
    };
    let (cpu_before, inferences_before) = (cpu_seconds(child.0.id())?, inferences(&socket)?);
    std::thread::sleep(window);
    let (cpu_after, inferences_after) = (cpu_seconds(child.0.id())?, inferences(&socket)?);
    if let Some(status) = child.0.try_wait()? {
        bail!("alertclip exited early ({status})");
    }
    Ok((
        (cpu_after - cpu_before) / window.as_secs_f64() * 100.0,
        inferences_after - inferences_before,
    ))
}

fn daemon_config(
    work: &Path,
    url: &str,
    runtime: &Path,
    model: &Path,
    watch: Option<bool>,
) -> anyhow::Result<PathBuf> {
    let mut text = format!(
        "[site]\nid = \"bench\"\nname = \"Benchmark\"\n[storage]\ndir = \"{0}/clips\"\n[evidence]\ndir = \"{0}/evidence\"\n\
         [control]\nsocket = \"{0}/control.sock\"\n[detect]\nruntime = \"{1}\"\nmodel = \"{2}\"\nthreads = {THREADS}\n\
         [[camera]]\nid = \"cam\"\nurl = \"{url}\"\npre_roll = \"10s\"\n",
        work.display(),
        runtime.display(),
        model.display()
    );
    if let Some(gate) = watch {
        text.push_str(&format!("[camera.detect]\nfps = 2\nmotion_gate = {gate}\n"));
    }
    let path = work.join("alertclip.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The RTSP server, in a process of its own so its encoding is not counted.
struct Server {
    _child: KillOnDrop,
    url: String,
}

impl Server {
    fn start(scene: Scene, models: &Path) -> anyhow::Result<Server> {
        let what = match scene {
            // Coffee on a table: a still scene without people.
            Scene::Still => models.join("test-images/coffee.png").display().to_string(),
            Scene::Moving => "ball".to_owned(),
        };
        let (child, url) = common::spawn_server(&[what])?;
        Ok(Server { _child: child, url })
    }
}

/// `--serve IMAGE|ball`: serves the scene on /cam until killed, printing its URL.
fn serve(args: &[String]) -> anyhow::Result<()> {
    let what = args.first().context("--serve IMAGE|ball")?;
    let stream = TestStream {
        width: 640,
        height: 360,
        bitrate_kbps: 800,
        image: (what != "ball").then(|| PathBuf::from(what)),
        ..TestStream::h264("/cam")
    };
    let server = TestServer::start(&[stream])?;
    println!("{}", server.url("/cam"));
    loop {
        std::thread::park();
    }
}
