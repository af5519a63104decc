//! alertclip as a systemd service: the unit file's validity and hardening, and the
//! notification protocol (READY, WATCHDOG, STOPPING) spoken to a real socket.

// A test or benchmark that cannot go on fails with the value it got.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use alertclip::demo::teststream::{TestServer, TestStream};

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/alertclip.service");

#[test]
fn the_unit_is_valid_and_hardened() {
    // The unit names the packaged binary; it is verified against the one just built.
    common::unit::assert_unit_hardened(
        Path::new(UNIT),
        "/usr/bin/alertclip",
        env!("CARGO_BIN_EXE_alertclip"),
        2.0,
    );
}

/// Reads datagrams until one has a line equal to `wanted`, failing after `limit`.
fn expect(socket: &UnixDatagram, wanted: &str, limit: Duration, seen: &mut Vec<String>) {
    expect_line(socket, |l| l == wanted, wanted, limit, seen)
}

/// Reads datagrams until one has a line `accept` takes, failing (naming `what`) after `limit`.
fn expect_line(
    socket: &UnixDatagram,
    accept: impl Fn(&str) -> bool,
    what: &str,
    limit: Duration,
    seen: &mut Vec<String>,
) {
    let deadline = Instant::now() + limit;
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        socket
            .set_read_timeout(Some(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            ))
            .unwrap();
        let Ok(n) = socket.recv(&mut buffer) else {
            break;
        };
        let message = String::from_utf8_lossy(&buffer[..n]).into_owned();
        let found = message.lines().any(&accept);
        seen.push(message);
        if found {
            return;
        }
    }
    panic!("no {what} from the daemon; got {seen:?}");
}

#[test]
fn the_daemon_tells_systemd_it_is_ready_alive_and_stopping() {
    gstreamer::init().unwrap();
    let server = TestServer::start(&[TestStream::h264("/cam")]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alertclip.toml");
    std::fs::write(&path, config_text(dir.path(), &server.url("/cam"))).unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();

    // As systemd does: WATCHDOG_PID is the daemon's own pid (the shell's, kept by exec).
    let runner = std::env::var("ALERTCLIP_TEST_RUNNER").unwrap_or_default();
    let daemon = Command::new("sh")
        .args([
            "-c",
            &format!("WATCHDOG_PID=$$ exec {runner} \"$0\" run --config \"$1\""),
        ])
        .arg(env!("CARGO_BIN_EXE_alertclip"))
        .arg(&path)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "1000000")
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let mut daemon = Reaped(daemon);
    let mut seen = Vec::new();
    expect(&socket, "READY=1", Duration::from_secs(30), &mut seen);
    // Half the watchdog timeout apart: at least two pings within two seconds.
    expect(&socket, "WATCHDOG=1", Duration::from_secs(2), &mut seen);
    expect(&socket, "WATCHDOG=1", Duration::from_secs(2), &mut seen);
    terminate(daemon.0.id());
    expect(&socket, "STOPPING=1", Duration::from_secs(10), &mut seen);
    let status = daemon.0.wait().unwrap();
    assert!(status.success(), "{status}");
}

fn config_text(dir: &Path, url: &str) -> String {
    format!(
        "[site]\nid = \"s\"\nname = \"Store\"\n[storage]\ndir = \"{0}/clips\"\n[control]\nsocket = \"{0}/sock\"\n\
         [evidence]\ndir = \"{0}/evidence\"\n[outbox]\ndir = \"{0}/outbox\"\n[log]\nlevel = \"warn\"\n\
         [[camera]]\nid = \"cam\"\nurl = \"{url}\"\npre_roll = \"2s\"\n",
        dir.display()
    )
}

fn terminate(pid: u32) {
    signal(pid, "TERM");
}

/// A child killed if the test fails before it exits.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The daemon's status, or `None` while its socket does not answer (starting, reloading).
fn status(socket: &Path) -> Option<alertclip::daemon::control::Response> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(alertclip::daemon::control::call(
            socket,
            &alertclip::daemon::control::Request::Status,
        ))
        .ok()
}

fn buffered(response: &alertclip::daemon::control::Response, camera: &str) -> Option<f64> {
    response
        .cameras
        .as_ref()?
        .get(camera)
        .map(|c| c.ingest.buffered_s)
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn sighup_applies_a_new_config_and_unchanged_cameras_keep_their_buffers() {
    gstreamer::init().unwrap();
    let server = TestServer::start(&[
        TestStream::h264("/a"),
        TestStream::h264("/b"),
        TestStream::h264("/c"),
    ])
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alertclip.toml");
    let socket = dir.path().join("sock");
    let head = config_text(dir.path(), &server.url("/a"))
        .replace("pre_roll = \"2s\"", "pre_roll = \"10s\"");
    let camera = |id: &str, pre_roll: &str| {
        format!(
            "[[camera]]\nid = \"{id}\"\nurl = \"{}\"\npre_roll = \"{pre_roll}\"\n",
            server.url(&format!("/{id}"))
        )
    };
    // Camera "cam" (on /a) and "b".
    std::fs::write(&path, format!("{head}{}", camera("b", "10s"))).unwrap();
    // The daemon says what it made of each reload, as it tells systemd.
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let daemon = common::alertclip_command()
        .args(["run", "--config"])
        .arg(&path)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    let daemon = Reaped(daemon);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(now) = status(&socket)
            && buffered(&now, "cam").unwrap_or(0.0) >= 4.0
            && buffered(&now, "b").unwrap_or(0.0) >= 4.0
        {
            break;
        }
        assert!(Instant::now() < deadline, "cameras did not buffer 4 s");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A configuration with an error is refused, and the daemon goes on as it was.
    std::fs::write(
        &path,
        format!("{head}{}pre_roll = \"ten\"\n", camera("b", "10s")),
    )
    .unwrap();
    signal(daemon.0.id(), "HUP");
    expect_line(
        &notify,
        |l| {
            l.starts_with("STATUS=")
                && l.contains("reload refused: ")
                && l.contains("alertclip.toml")
        },
        "STATUS=...reload refused",
        Duration::from_secs(30),
        &mut seen,
    );
    let after_bad = status(&socket).expect("still answering");
    assert!(buffered(&after_bad, "b").unwrap() >= 4.0, "{after_bad:?}");

    // "cam" unchanged, "b" with another pre-roll (a new connection), "c" new.
    std::fs::write(
        &path,
        format!("{head}{}{}", camera("b", "8s"), camera("c", "10s")),
    )
    .unwrap();
    signal(daemon.0.id(), "HUP");
    let deadline = Instant::now() + Duration::from_secs(30);
    let reloaded = loop {
        if let Some(now) = status(&socket)
            && buffered(&now, "c").is_some()
        {
            break now;
        }
        assert!(Instant::now() < deadline, "no reload");
        std::thread::sleep(Duration::from_millis(100));
    };
    let kept = buffered(&reloaded, "cam").unwrap();
    let restarted = buffered(&reloaded, "b").unwrap();
    assert!(
        kept >= 4.0,
        "the unchanged camera kept its buffer: {kept} s"
    );
    assert!(
        restarted < 3.0,
        "the changed camera started over: {restarted} s"
    );
    terminate(daemon.0.id());
}
