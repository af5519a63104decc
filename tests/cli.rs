//! The `alertclip` command as a technician uses it: exit codes, messages, the control
//! socket, and signals.

// A test or benchmark that cannot go on fails with the value it got.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use alertclip::Daemon;
use alertclip::demo::teststream::{TestServer, TestStream};
use common::*;

/// Runs `alertclip run` on a configuration expected to be refused; returns its stderr.
fn refused(path: &Path) -> String {
    let out = alertclip_command()
        .args(["run", "--config"])
        .arg(path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    stderr
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn malformed_configs_exit_2_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[site]\nid = \"s\"\nname = \"n\"\n[[camera]]\nid = \"a\"\nurl = \"rtsp://h/x\"\npre_roll = \"ten\"\n",
            "camera[0].pre_roll: expected a duration like \"10s\", found \"ten\" (line 7)",
        ),
        (
            "[site]\nid = \"s\"\nname = \"n\"\n",
            "camera: no camera configured",
        ),
        (
            "[site]\nid = \"s\"\nname = \"n\"\n[[camera]]\nid = \"a\"\nurl = \"http://u:secret@h/x\"\n",
            "camera[0].url: expected an rtsp:// or rtsps:// URL, found \"http://u:***@h/x\"",
        ),
        ("[site\n", "bad.toml:1: "),
    ];
    let base = "[site]\nid = \"s\"\nname = \"n\"\n";
    let camera = "[[camera]]\nid = \"a\"\nurl = \"rtsp://h/x\"\n";
    let limits = [
        // Durations near their limits: refused with what is expected, never a panic.
        (
            format!("{base}{camera}pre_roll = \"18446744073709551615s\"\n"),
            "camera[0].pre_roll: expected at most 30 days".to_owned(),
        ),
        (
            format!("{base}{camera}post_roll = \"1h\"\n"),
            "camera[0].post_roll: expected at most \"10m\"".to_owned(),
        ),
        (
            format!("{base}[mqtt]\nurl = \"mqtt://h\"\nkeepalive = \"1000000s\"\n{camera}"),
            "mqtt.keepalive: expected at most".to_owned(),
        ),
        // Credentials in a broker URL are refused, and not printed.
        (
            format!("{base}[mqtt]\nurl = \"mqtt://u:secret@h\"\n{camera}"),
            "mqtt.url: credentials do not belong in the URL (found \"mqtt://***@h\")".to_owned(),
        ),
        // Fields that go into every alert are bounded, so an alert always fits.
        (
            format!(
                "[site]\nid = \"s\"\nname = \"n\"\naddress = \"{}\"\n{camera}",
                "x".repeat(2 << 20)
            ),
            "site.address: expected at most 300 characters".to_owned(),
        ),
        (
            format!(
                "{base}[mqtt]\nurl = \"mqtt://h\"\ntopic_prefix = \"a\\u0000b/{{site}}\"\n{camera}"
            ),
            "mqtt.topic_prefix: expected text without control characters".to_owned(),
        ),
        (
            format!(
                "{base}[mqtt]\nurl = \"mqtt://h\"\nclient_id = \"{}\"\n{camera}",
                "c".repeat(70_000)
            ),
            "mqtt.client_id: expected at most 128 bytes".to_owned(),
        ),
        (
            format!(
                "{base}[control]\nsocket = \"/{}\"\n{camera}",
                "d".repeat(200)
            ),
            "control.socket: expected a path of at most 107 bytes".to_owned(),
        ),
    ];
    for (text, expected) in &limits {
        let path = write(dir.path(), "bad.toml", text);
        let stderr = refused(&path);
        assert!(
            stderr.contains(expected.as_str()),
            "expected {expected:?} in {stderr:.400}"
        );
        assert!(
            !stderr.contains("secret") && stderr.len() < 4096,
            "{stderr:.400}"
        );
    }
    for (text, expected) in cases {
        let path = write(dir.path(), "bad.toml", text);
        let stderr = refused(&path);
        assert!(
            stderr.contains(&path.display().to_string()),
            "names the file: {stderr}"
        );
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in {stderr}"
        );
        assert!(!stderr.contains("secret"));
    }
    let stderr = refused(Path::new("/nonexistent/alertclip.toml"));
    assert!(
        stderr.contains("/nonexistent/alertclip.toml: cannot read"),
        "{stderr}"
    );
}

#[test]
fn missing_password_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[site]\nid = \"s\"\nname = \"n\"\n[storage]\ndir = \"{0}/clips\"\n[evidence]\ndir = \"{0}/evidence\"\n[control]\nsocket = \"{0}/c.sock\"\n\
         [[camera]]\nid = \"a\"\nurl = \"rtsp://127.0.0.1:1/x\"\nusername = \"u\"\npassword_file = \"{0}/missing\"\n",
        dir.path().display()
    );
    let stderr = refused(&write(dir.path(), "c.toml", &text));
    assert!(
        stderr.contains("camera[0].password_file: ") && stderr.contains("/missing: "),
        "{stderr}"
    );
}

/// A file the configuration names that is missing, a directory or an endless device makes
/// `check` (as `run`) refuse with exit 2, naming the key and the file.
#[test]
fn files_the_configuration_names_must_be_readable_files() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("ca_file", format!("{}/nowhere.pem", dir.path().display())),
        ("password_file", dir.path().display().to_string()),
        ("password_file", "/dev/zero".to_owned()),
    ];
    for (key, file) in cases {
        let login = if key == "password_file" {
            "username = \"u\"\n"
        } else {
            ""
        };
        let scheme = if key == "ca_file" { "mqtts" } else { "mqtt" };
        let text = format!(
            "[site]\nid = \"s\"\nname = \"n\"\n[mqtt]\nurl = \"{scheme}://127.0.0.1:1\"\n{login}{key} = \"{file}\"\n\
             [[camera]]\nid = \"a\"\nurl = \"rtsp://127.0.0.1:1/x\"\n"
        );
        let path = write(dir.path(), "c.toml", &text);
        let out = alertclip_command()
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key} = {file}: {stderr}");
        assert!(
            stderr.contains(&format!("mqtt.{key}: {file}: ")),
            "{key} = {file}: {stderr}"
        );
    }
}

/// `control.socket` pointing at something that is not a socket (here the configuration file
/// itself) is refused, and the file left alone.
#[test]
fn a_control_socket_path_that_is_not_a_socket_is_never_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alertclip.toml");
    let text = format!(
        "[site]\nid = \"s\"\nname = \"n\"\n[storage]\ndir = \"{0}/clips\"\n[evidence]\ndir = \"{0}/evidence\"\n\
         [control]\nsocket = \"{1}\"\n[[camera]]\nid = \"a\"\nurl = \"rtsp://127.0.0.1:1/x\"\n",
        dir.path().display(),
        path.display()
    );
    std::fs::write(&path, &text).unwrap();
    let out = alertclip_command()
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("not a socket"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        text,
        "the file is intact"
    );
}

#[test]
fn version_is_printed() {
    let out = alertclip_command().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("alertclip {}", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn trigger_command_reaches_the_daemon_through_its_socket() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&[TestStream::h264("/cam")]).unwrap();
    let extra = "pre_roll = \"2s\"\npost_roll = \"1s\"";
    let config = config(dir.path(), &[("cam", server.url("/cam"))], extra, "");
    let socket = config.control.socket.clone();
    let text = format!(
        "[site]\nid = \"test-site\"\nname = \"Test Store\"\n[control]\nsocket = \"{}\"\n[[camera]]\nid = \"cam\"\nurl = \"rtsp://unused/x\"\n",
        socket.display()
    );
    let config_path = write(dir.path(), "cli.toml", &text);
    let daemon = Daemon::start(config).await.unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o660
    );
    let mut clips = daemon.clips();
    wait_buffered(&daemon.cameras()[0], 2.5).await;

    let out = alertclip_command_async()
        .args([
            "trigger", "--camera", "cam", "--note", "aisle 3", "--config",
        ])
        .arg(&config_path)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let done = next_clip(&mut clips, Duration::from_secs(60)).await;
    assert_eq!(done.record.event_id.to_string(), printed);
    let trigger = &done.record.triggers[0];
    assert_eq!(
        (
            trigger.kind,
            trigger.source.as_str(),
            trigger.note.as_deref()
        ),
        (
            alertclip::trigger::TriggerKind::Manual,
            "cli",
            Some("aisle 3")
        )
    );
    check_clip(&done, "h264");

    let out = alertclip_command_async()
        .args(["trigger", "--camera", "nope", "--config"])
        .arg(&config_path)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown camera \"nope\" (configured: cam)")
    );

    // A second daemon on the same socket is refused.
    let again = config_with_socket(dir.path(), &socket, &server.url("/cam"));
    let error = Daemon::start(again)
        .await
        .err()
        .expect("second daemon refused");
    assert!(
        error
            .to_string()
            .contains("another alertclip daemon is listening"),
        "{error}"
    );
    daemon.shutdown(Duration::from_secs(5)).await;

    // With no daemon, the command says where it looked and what to check.
    let out = alertclip_command_async()
        .args(["trigger", "--config"])
        .arg(&config_path)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&socket.display().to_string()) && stderr.contains("is the daemon running?"),
        "{stderr}"
    );
}

fn config_with_socket(dir: &Path, socket: &Path, url: &str) -> alertclip::config::Config {
    let text = format!(
        "[site]\nid = \"s\"\nname = \"n\"\n[storage]\ndir = \"{0}/clips2\"\n[evidence]\ndir = \"{0}/evidence2\"\n[control]\nsocket = \"{1}\"\n[[camera]]\nid = \"cam\"\nurl = \"{url}\"\n",
        dir.display(),
        socket.display()
    );
    alertclip::config::Config::parse(&text, Path::new("second.toml")).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_clip_persists_it_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&[TestStream::h264("/cam")]).unwrap();
    // Post-roll longer than the shutdown grace: the clip must be finished early, not lost.
    let text = format!(
        "[site]\nid = \"s\"\nname = \"n\"\n[storage]\ndir = \"{0}/clips\"\n[evidence]\ndir = \"{0}/evidence\"\n[control]\nsocket = \"{0}/c.sock\"\n\
         [[camera]]\nid = \"cam\"\nurl = \"{1}\"\npre_roll = \"2s\"\npost_roll = \"60s\"\n",
        dir.path().display(),
        server.url("/cam")
    );
    let config_path = write(dir.path(), "c.toml", &text);
    let mut daemon = alertclip_command_async()
        .args(["run", "--config"])
        .arg(&config_path)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = daemon.stderr.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    // Wait until the camera streams and the pre-roll has filled, by the daemon's own log
    // and status.
    loop {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if line.contains("camera streaming") {
            break;
        }
    }
    let socket = dir.path().join("c.sock");
    loop {
        let status =
            alertclip::daemon::control::call(&socket, &alertclip::daemon::control::Request::Status)
                .await
                .unwrap();
        if status.cameras.unwrap()["cam"].ingest.buffered_s >= 2.5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = alertclip_command()
        .args(["trigger", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let event = String::from_utf8_lossy(&out.stdout).trim().to_owned();

    let pid = daemon.id().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let started = std::time::Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(30), daemon.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(20));
    let clip_dir = dir.path().join("clips").join(&event);
    let record: alertclip_wire::ClipRecord =
        serde_json::from_slice(&std::fs::read(clip_dir.join("cam.json")).unwrap()).unwrap();
    assert!(record.partial);
    assert_eq!(
        record.partial_reason.as_deref(),
        Some("the daemon shut down before post-roll ended")
    );
    let probe = ffprobe(&clip_dir.join("cam.mp4"));
    probe.assert_well_formed(&clip_dir.join("cam.mp4"));
    assert!(probe.duration >= 2.0);
    assert!(
        !std::fs::read_dir(&clip_dir).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with('.'))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_checks_a_clip_against_its_signed_manifest() {
    let mut rig = Rig::start(
        &[TestStream::h264("/cam")],
        "pre_roll = \"2s\"\npost_roll = \"1s\"",
        "",
    )
    .await;
    wait_buffered(rig.camera(0), 2.5).await;
    rig.fire(alertclip::trigger::Trigger::now(
        alertclip::trigger::TriggerKind::Manual,
        "test",
    ))
    .await;
    let done = rig.next_clip().await;
    let dir = rig.stop().await;
    let evidence = dir.path().join("evidence");
    let pubkey = evidence.join("device.pub");
    let verify = |clip: &Path, manifest: &Path, key: Option<&Path>| {
        let mut command = alertclip_command();
        command.arg("verify").arg(clip).arg(manifest);
        if let Some(key) = key {
            command.arg("--pubkey").arg(key);
        }
        let out = command.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = verify(&done.mp4, &done.manifest_path, Some(&pubkey));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("manifest signature: valid") && out.trim_end().ends_with("VALID"),
        "{out}"
    );

    // Without a key, the verdict says the signer was not checked against a registered key.
    let (code, out) = verify(&done.mp4, &done.manifest_path, None);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("not checked against a registered key"),
        "{out}"
    );

    // A byte flipped in the clip.
    let tampered = dir.path().join("tampered.mp4");
    let mut bytes = std::fs::read(&done.mp4).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&tampered, &bytes).unwrap();
    let (code, out) = verify(&tampered, &done.manifest_path, Some(&pubkey));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("INVALID: chunk") && out.contains("differs from the manifest"),
        "{out}"
    );

    // A byte changed in the manifest.
    let manifest = std::fs::read_to_string(&done.manifest_path).unwrap();
    let forged = dir.path().join("forged.manifest.json");
    std::fs::write(
        &forged,
        manifest.replacen("\"partial\":false", "\"partial\":true ", 1),
    )
    .unwrap();
    let (code, out) = verify(&done.mp4, &forged, Some(&pubkey));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("INVALID: manifest signature"), "{out}");

    // Another device's key.
    let other = tempfile::tempdir().unwrap();
    let other_key = alertclip::evidence::DeviceKey::load_or_create(other.path()).unwrap();
    let (code, out) = verify(
        &done.mp4,
        &done.manifest_path,
        Some(&other.path().join("device.pub")),
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("not by the given key"),
        "{out}: {}",
        other_key.key_id()
    );
}

#[test]
fn key_show_prints_the_public_key_and_keeps_the_private_one_private() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "c.toml",
        &format!(
            "[site]\nid = \"s\"\nname = \"n\"\n[evidence]\ndir = \"{}/evidence\"\n[[camera]]\nid = \"a\"\nurl = \"rtsp://h/x\"\n",
            dir.path().display()
        ),
    );
    let show = || {
        alertclip_command()
            .args(["key", "show", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    };
    let first = show();
    assert!(first.status.success());
    let first = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(
        first.contains("key id:")
            && first.contains("fingerprint: SHA256:")
            && first.contains("-----BEGIN PUBLIC KEY-----"),
        "{first}"
    );
    let second = String::from_utf8_lossy(&show().stdout).into_owned();
    assert_eq!(first, second, "the same key after a restart");
    let private = std::fs::read_to_string(dir.path().join("evidence/device.key")).unwrap();
    assert!(
        !first.contains(private.lines().nth(1).unwrap()),
        "the private key is never printed"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("evidence/device.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}
