//! What the benchmarks share: reading a process's CPU time, asking a daemon for its status,
//! and children that do not outlive a failed run.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat.rsplit_once(')').context("stat format")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(ticks as f64 / clock_ticks() as f64)
}

pub fn clock_ticks() -> u64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().ok();
    out.and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

pub fn status(socket: &Path) -> anyhow::Result<Vec<alertclip::daemon::control::CameraReport>> {
    let runtime = tokio::runtime::Runtime::new()?;
    let response = runtime.block_on(alertclip::daemon::control::call(
        socket,
        &alertclip::daemon::control::Request::Status,
    ))?;
    Ok(response
        .cameras
        .context("status without cameras")?
        .into_values()
        .collect())
}

/// A child process killed when the benchmark is done with it, or fails.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts this benchmark's own executable with `--serve` and `args`, in a process of its own
/// so that the RTSP server's encoding is not counted, and returns it with the first line it
/// prints (its URL).
pub fn spawn_server(args: &[String]) -> anyhow::Result<(KillOnDrop, String)> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--serve")
        .args(args)
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().context("server stdout")?;
    let child = KillOnDrop(child);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
    let url = line.trim().to_owned();
    if url.is_empty() {
        bail!("the RTSP server did not start");
    }
    Ok((child, url))
}
