//! Generated input for the box's two local surfaces: the configuration loader and the
//! control protocol. Whatever a technician types into the configuration, the loader answers
//! with a configuration or an error naming the file, never a panic; whatever a local client
//! sends on the control socket, the daemon answers each line with one JSON response and keeps
//! running. Bounded (proptest's case count, `PROPTEST_CASES` to change it) so it runs in CI.

// A test or benchmark that cannot go on fails with the value it got.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use alertclip::config::Config;
use alertclip::demo::teststream::TestStream;
use proptest::prelude::*;
use proptest::test_runner::{Config as Cases, TestRunner};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const EXAMPLE: &str = include_str!("../alertclip.example.toml");

/// The example configuration with one of its lines changed: deleted, doubled, its value
/// replaced by something else, or its text cut.
fn configurations() -> impl Strategy<Value = String> {
    let lines = EXAMPLE.lines().count();
    let value = prop_oneof![
        Just("\"18446744073709551615s\"".to_owned()),
        Just("-1".to_owned()),
        Just("\"\"".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("\"\\u0000\"".to_owned()),
        Just("1e400".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        "\"[ -~]{0,40}\"",
        "[ -~]{0,20}",
    ];
    (0..lines, 0u8..4, value, 0usize..80).prop_map(|(at, how, value, cut)| {
        let mut out: Vec<String> = EXAMPLE.lines().map(str::to_owned).collect();
        match how {
            0 => {
                out.remove(at);
            }
            1 => {
                let line = out[at].clone();
                out.insert(at, line);
            }
            2 => {
                if let Some((key, _)) = out[at].split_once('=') {
                    out[at] = format!("{key}= {value}");
                }
            }
            _ => {
                let line = &out[at];
                let end = line.char_indices().nth(cut).map_or(line.len(), |(i, _)| i);
                out[at] = line[..end].to_owned();
            }
        }
        out.join("\n")
    })
}

proptest! {
    #[test]
    fn any_configuration_loads_or_is_refused_naming_the_file(text in configurations()) {
        match Config::parse(&text, Path::new("generated.toml")) {
            Ok(config) => {
                let _ = config.check_files(Path::new("generated.toml"));
                let _ = config.ring_bytes(&config.cameras[0]);
            }
            Err(error) => prop_assert!(error.to_string().starts_with("generated.toml"), "{error}"),
        }
    }
}

/// Lines a local client might send: requests of the protocol, near misses, and noise.
fn lines() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(r#"{"command":"status"}"#.to_owned()),
        Just(r#"{"command":"trigger","test":true,"note":"generated"}"#.to_owned()),
        "\\{\"command\":\"trigger\",\"cameras\":\\[\"[a-z]{0,6}\"\\],\"test\":true\\}",
        "\\{\"command\":\"trigger\",\"test\":true,\"note\":\"\\PC{0,600}\"\\}",
        "\\{\"command\":\"[a-z_]{0,10}\"(,\"[a-z]{1,6}\":[0-9a-z\"]{1,6}){0,3}\\}",
        "[{}\\[\\]\":,a-z0-9 ]{0,120}",
        "[^\n]{0,200}",
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn any_line_on_the_control_socket_gets_one_answer_and_the_daemon_stays_up() {
    use alertclip::daemon::control::{Request, Response, call};
    let rig = common::Rig::start(
        &[TestStream::h264("/cam")],
        "pre_roll = \"2s\"\npost_roll = \"1s\"",
        "",
    )
    .await;
    let socket = rig.dir.path().join("control.sock");
    let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    let (read, write) = stream.into_split();
    let connection = std::cell::RefCell::new((write, BufReader::new(read).lines()));
    let handle = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(Cases::with_cases(64));
    let outcome = tokio::task::block_in_place(|| {
        runner.run(&lines(), |line| {
            let mut connection = connection.borrow_mut();
            let (write, answers) = &mut *connection;
            handle.block_on(async {
                write
                    .write_all(format!("{line}\n").as_bytes())
                    .await
                    .unwrap();
                let answer = answers.next_line().await.unwrap().unwrap();
                let response: Response = serde_json::from_str(&answer).unwrap();
                prop_assert!(response.ok || response.error.is_some(), "{answer}");
                Ok(())
            })
        })
    });
    outcome.unwrap();
    // Still up, and answering others.
    let status = call(&socket, &Request::Status).await.unwrap();
    assert!(status.ok);
    rig.stop().await;
}
