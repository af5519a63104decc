//! `alertclip check` as a technician runs it: against a real RTSP camera, a real mosquitto
//! and the real detector it passes; a wrong camera password, an unreachable broker and a
//! missing model each fail with a line that says so.

// A test or benchmark that cannot go on fails with the value it got.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use alertclip::demo::teststream::{TestServer, TestStream};
use alertclip::setup::check::{Outcome, Report};
use common::broker::Broker;
use common::{alertclip_command, patience, skip_without_onnx_runtime};

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

fn check(dir: &Path, text: &str) -> (Option<i32>, Report, String) {
    let path = dir.join("alertclip.toml");
    std::fs::write(&path, text).unwrap();
    check_file(&path)
}

/// Runs `alertclip check --json` on `path`. A check that does not exit within its limit
/// (minutes, where each probe has seconds) is killed, and the test fails saying so with what
/// it printed, rather than hanging.
fn check_file(path: &Path) -> (Option<i32>, Report, String) {
    let mut child = alertclip_command()
        .args(["check", "--json", "--config"])
        .arg(path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let (exited_tx, exited) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = exited_tx.send(child.wait());
    });
    let limit = patience(Duration::from_secs(120));
    let status = match exited.recv_timeout(limit) {
        Ok(status) => status.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!(
                "alertclip check ran for over {limit:?} and was killed; it printed: {} {}",
                stdout.join().unwrap(),
                stderr.join().unwrap()
            );
        }
    };
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    let report: Report =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout} {stderr}"));
    (status.code(), report, stderr)
}

fn base(dir: &Path) -> String {
    format!(
        "[site]\nid = \"s\"\nname = \"Store\"\n[storage]\ndir = \"{0}/clips\"\nmax_bytes = \"1MiB\"\n\
         [control]\nsocket = \"{0}/sock\"\n[evidence]\ndir = \"{0}/evidence\"\n\
         [outbox]\ndir = \"{0}/outbox\"\nmax_bytes = \"1MiB\"\n",
        dir.display()
    )
}

fn finding<'a>(report: &'a Report, subject: &str) -> &'a alertclip::setup::check::Finding {
    report
        .findings
        .iter()
        .find(|f| f.subject == subject)
        .unwrap_or_else(|| panic!("no {subject} in {report:?}"))
}

#[test]
fn a_working_box_passes_every_check() {
    let substream = TestStream {
        width: 160,
        height: 120,
        gop_frames: 60,
        ..TestStream::h264("/front-sub")
    };
    let server = TestServer::start(&[TestStream::h264("/front"), substream]).unwrap();
    let broker = Broker::start("");
    let dir = tempfile::tempdir().unwrap();
    let mut text = format!(
        "{}[mqtt]\nurl = \"{}\"\nprotocol = \"5\"\n[detect]\nruntime = \"{}\"\nmodel = \"{}\"\n\
         [[camera]]\nid = \"front\"\nurl = \"{}\"\npre_roll = \"5s\"\n\
         [camera.detect]\nurl = \"{}\"\n",
        base(dir.path()),
        broker.url(),
        models()
            .join("onnxruntime")
            .join(std::env::consts::ARCH)
            .join("libonnxruntime.so.1.31.1")
            .display(),
        models().join("yolox-nano.onnx").display(),
        server.url("/front"),
        server.url("/front-sub"),
    );
    let detector = !skip_without_onnx_runtime("the detector check");
    if !detector {
        text = text[..text.find("[camera.detect]").unwrap()].to_owned();
    }
    let (code, report, stderr) = check(dir.path(), &text);
    let camera = finding(&report, "camera front");
    assert_eq!(camera.outcome, Outcome::Pass, "{camera:?}");
    assert!(
        camera.detail.starts_with("h264 320x240") && camera.detail.contains("keyframe every 1.0 s"),
        "{camera:?}"
    );
    let broker_line = finding(&report, "broker");
    assert_eq!(broker_line.outcome, Outcome::Pass, "{broker_line:?}");
    assert!(
        broker_line.detail.contains("acknowledged"),
        "{broker_line:?}"
    );
    if detector {
        assert_eq!(finding(&report, "detector").outcome, Outcome::Pass);
        // The substream the detector watches is probed on its own, and its 4 s keyframe
        // interval is no concern: no clip is cut from it.
        let sub = finding(&report, "camera front.detect");
        assert_eq!(sub.outcome, Outcome::Pass, "{sub:?}");
        assert!(
            sub.detail.starts_with("h264 160x120") && sub.detail.contains("keyframe every 4.0 s"),
            "{sub:?}"
        );
    }
    assert_eq!(finding(&report, "disk clips").outcome, Outcome::Pass);
    assert!(report.ok, "{report:?}");
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn problems_fail_with_a_line_that_says_what_to_fix() {
    let login = Some(("admin".to_owned(), "right".to_owned()));
    let server = TestServer::start(&[TestStream {
        login,
        ..TestStream::h264("/front")
    }])
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = server
        .url("/front")
        .replace("rtsp://", "rtsp://admin:wrong@");
    let mut text = format!(
        "{}[mqtt]\nurl = \"mqtt://127.0.0.1:{closed}\"\n[detect]\nmodel = \"{}/not-a-model.onnx\"\n\
         runtime = \"{}\"\n[[camera]]\nid = \"front\"\nurl = \"{url}\"\n\
         [camera.detect]\nurl = \"{}\"\n",
        base(dir.path()),
        dir.path().display(),
        models()
            .join("onnxruntime")
            .join(std::env::consts::ARCH)
            .join("libonnxruntime.so.1.31.1")
            .display(),
        server.url("/no-such-substream"),
    );
    std::fs::write(dir.path().join("not-a-model.onnx"), b"not a model").unwrap();
    let detector = !skip_without_onnx_runtime("the broken model check");
    if detector {
        // A model file that is missing altogether: the configuration is unusable (exit 2),
        // named with its key and how to fetch one.
        let path = dir.path().join("missing-model.toml");
        std::fs::write(&path, text.replace("not-a-model.onnx", "missing.onnx")).unwrap();
        let out = alertclip_command()
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("detect.model: ")
                && stderr.contains("missing.onnx")
                && stderr.contains("models/fetch.sh"),
            "{stderr}"
        );
    } else {
        text = text[..text.find("[camera.detect]").unwrap()].to_owned();
    }
    let (code, report, stderr) = check(dir.path(), &text);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!report.ok);
    let camera = finding(&report, "camera front");
    assert_eq!(camera.outcome, Outcome::Fail);
    assert!(
        camera
            .detail
            .contains("check the camera's username and password"),
        "{camera:?}"
    );
    assert!(
        !camera.detail.contains("wrong"),
        "the password is not shown: {camera:?}"
    );
    let broker_line = finding(&report, "broker");
    assert_eq!(broker_line.outcome, Outcome::Fail);
    assert!(
        broker_line
            .detail
            .contains("cannot connect to mqtt://127.0.0.1"),
        "{broker_line:?}"
    );
    if detector {
        let detector = finding(&report, "detector");
        assert_eq!(detector.outcome, Outcome::Fail);
        assert!(detector.detail.contains("not-a-model.onnx"), "{detector:?}");
        let sub = finding(&report, "camera front.detect");
        assert_eq!(sub.outcome, Outcome::Fail, "{sub:?}");
        assert!(sub.detail.contains("check the URL's path"), "{sub:?}");
    }

    // For people, the same as a table.
    let table = report.render();
    assert!(
        table
            .lines()
            .any(|line| line.starts_with("camera front ") && line.contains(" FAIL "))
            && table.contains("some checks failed"),
        "{table}"
    );
}

#[test]
fn a_bad_config_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alertclip.toml");
    std::fs::write(&path, "[site]\nid = \"s\"\n").unwrap();
    let out = alertclip_command()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("alertclip.toml"));
}

#[test]
fn provision_writes_a_config_that_check_accepts_and_keeps_the_old_one() {
    let server = TestServer::start(&[TestStream {
        login: Some(("admin".to_owned(), "s3cret".to_owned())),
        ..TestStream::h264("/front")
    }])
    .unwrap();
    let broker = Broker::start("");
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("etc/alertclip/alertclip.toml");
    let camera = format!(
        "front={}",
        server
            .url("/front")
            .replace("rtsp://", "rtsp://admin:s3cret@")
    );
    let provision = |extra: &[&str]| {
        alertclip_command()
            .arg("provision")
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(root.path().join("var/lib/alertclip"))
            .args(["--site-id", "corner-12", "--site-name", "Corner Market"])
            .args(["--camera", &camera, "--broker", &broker.url(), "--yes"])
            .args(extra)
            .output()
            .unwrap()
    };

    // A dry run prints the configuration and writes nothing.
    let out = provision(&["--dry-run"]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("id = \"corner-12\"") && !printed.contains("s3cret"),
        "{printed}"
    );
    assert!(!config.exists());

    // For real: the configuration, the camera's password beside it, the device key, and a
    // check that passes.
    let out = provision(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("all checks passed") && stdout.contains("device key"),
        "{stdout}"
    );
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(!text.contains("s3cret"), "{text}");
    let secret = config.with_file_name("front.password");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "s3cret\n");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o640
    );
    let (code, report, _) = check_file(&config);
    assert_eq!(code, Some(0), "{report:?}");

    // Never over an existing configuration without --force; with it, the old one is kept.
    let out = provision(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    let out = provision(&["--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let backups: Vec<_> = std::fs::read_dir(config.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".bak"))
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert_eq!(std::fs::read_to_string(&backups[0]).unwrap(), text);
}

#[test]
fn provision_without_a_terminal_names_the_missing_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out = alertclip_command()
        .args(["provision", "--site-id", "s", "--config"])
        .arg(dir.path().join("alertclip.toml"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--site-name is required"), "{stderr}");
}

#[test]
fn provision_on_a_terminal_probes_each_camera_as_it_is_entered() {
    let server = TestServer::start(&[TestStream {
        login: Some(("admin".to_owned(), "s3cret".to_owned())),
        ..TestStream::h264("/front")
    }])
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("etc/alertclip/alertclip.toml");
    let with_login = |password: &str| {
        server
            .url("/front")
            .replace("rtsp://", &format!("rtsp://admin:{password}@"))
    };
    // The technician's answers: no address; a camera with a mistyped password, which the probe
    // refuses and they drop; the same camera right; no more cameras; no broker; write it.
    let answers = format!(
        "\nfront={}\nn\nfront={}\n\n\ny\n",
        with_login("s3cert"),
        with_login("s3cret")
    );
    let mut argv: Vec<String> = common::alertclip_argv()
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    argv.extend(
        [
            "provision",
            "--site-id",
            "corner-12",
            "--site-name",
            "Corner",
        ]
        .map(String::from),
    );
    argv.extend([
        "--config".to_owned(),
        config.display().to_string(),
        "--state-dir".to_owned(),
        root.path().join("var/lib/alertclip").display().to_string(),
    ]);
    let command: Vec<String> = argv
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    // script(1) gives provision a terminal, and types the answers into it.
    let mut child = std::process::Command::new("script")
        .args(["-qec", &command.join(" "), "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(answers.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert_eq!(out.status.code(), Some(0), "{stdout}");

    // Each camera was probed as it was entered, and the refused one said why.
    let probes: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("  FAIL") || l.starts_with("  ok"))
        .collect();
    assert_eq!(probes.len(), 2, "{probes:?} in {stdout}");
    assert!(
        probes[0].contains("check the camera's username and password"),
        "{stdout}"
    );
    assert!(probes[1].contains("h264 320x240"), "{stdout}");
    assert!(stdout.contains("all checks passed"), "{stdout}");

    // Only the camera that worked was written, with its password beside the configuration.
    let text = std::fs::read_to_string(&config).unwrap();
    assert_eq!(text.matches("[[camera]]").count(), 1, "{text}");
    assert_eq!(
        std::fs::read_to_string(config.with_file_name("front.password")).unwrap(),
        "s3cret\n"
    );
}
