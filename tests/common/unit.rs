//! A systemd unit checked as `systemd-analyze` checks it: valid against the binary just built,
//! and hardened to at most a given exposure score. Shared by the box's and the desk's tests
//! (each includes this file by path).

use std::path::Path;
use std::process::Command;

/// Verifies `unit` with its `packaged` binary path replaced by `built`, and returns its
/// exposure score, failing the test if it is above `max`.
pub fn assert_unit_hardened(unit: &Path, packaged: &str, built: &str, max: f64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(unit)
        .unwrap()
        .replace(packaged, built);
    let copy = dir.path().join(unit.file_name().unwrap());
    std::fs::write(&copy, text).unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze (scripts/setup.sh --test installs systemd)");
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&security.stdout);
    let line = out
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no score in {out}"));
    println!("{line}");
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable score: {line}"));
    assert!(score <= max, "exposure {score} > {max}:\n{out}");
    score
}
