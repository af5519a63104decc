//! Generated input for the receiver's message handling: whatever arrives on whatever topic,
//! in whatever order, the receiver never panics, writes only under its directory, never
//! reports a clip verified that no trusted key signed, and never prints a control character.
//! Bounded (proptest's case count, `PROPTEST_CASES` to change it) so that it runs in CI.

// A test that cannot go on fails with the value it got.
#![allow(clippy::unwrap_used)]

use alertclip_officer::receive::{Receiver, Report, print};
use alertclip_wire::TopicLayout;
use alertclip_wire::signature::Verdict;
use proptest::prelude::*;

const EVENT: &str = "01a2230b-5694-742b-bf4e-9e1f596c6c22";

/// A message: a topic of the box's layout (or near it) and bytes.
fn messages() -> impl Strategy<Value = (String, Vec<u8>)> {
    let topic = prop_oneof![
        Just(format!("alertclip/v1/s/events/{EVENT}")),
        (0u32..3).prop_map(|n| format!("alertclip/v1/s/events/{EVENT}/update/{n}")),
        Just(format!("alertclip/v1/s/events/{EVENT}/snapshot/cam")),
        Just(format!("alertclip/v1/s/events/{EVENT}/clip/cam")),
        (0u32..4).prop_map(|n| format!("alertclip/v1/s/events/{EVENT}/clip/cam/{n}")),
        Just("alertclip/v1/s/status".to_owned()),
        Just("alertclip/v1/s/alerts".to_owned()),
        "alertclip/v1/[a-z.\\-]{0,6}/events/[0-9a-f\\-]{0,36}(/[a-z.]{0,8}){0,3}",
        "\\PC{0,40}",
    ];
    let payload = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..400),
        "[{}\\[\\]\":,a-z0-9 .\\-\u{1b}\n]{0,200}".prop_map(String::into_bytes),
        Just(format!(r#"{{"schema":"alertclip.alert.v1","event_id":"{EVENT}","site":{{"id":"s","name":"n\u001b[2J"}},"sequence":1}}"#).into_bytes()),
        Just(format!(r#"{{"schema":"alertclip.event_update.v1","event_id":"{EVENT}","update":1,"site_id":"s","trigger":{{"kind":"button","source":"b\u001b"}},"triggered_at":"x","cameras":[],"clock":{{"synchronized":null}},"test":false,"device_version":"0","sequence":2,"previous_alert_sha256":null}}"#).into_bytes()),
        Just(format!(r#"{{"schema":"alertclip.manifest.v1","event_id":"{EVENT}","site_id":"s","camera":"cam","bytes":3,"sha256":"00","chunk_size":1,"chunks":1,"chunk_sha256":["00"]}}"#).into_bytes()),
    ];
    (topic, payload)
}

proptest! {
    #[test]
    fn any_sequence_of_messages_is_handled_safely(batch in proptest::collection::vec(messages(), 1..24)) {
        let out = tempfile::tempdir().unwrap();
        let mut receiver = Receiver::new(out.path(), TopicLayout::default());
        for (topic, payload) in &batch {
            let Ok(reports) = receiver.handle(topic, payload) else { continue };
            for report in &reports {
                if let Report::Clip { signature, path, .. } = report {
                    // No key is trusted here: nothing can be verified.
                    prop_assert_ne!(signature, &Verdict::Valid);
                    prop_assert!(path.to_string_lossy().contains(".unverified."), "{}", path.display());
                }
                let mut line = Vec::new();
                print(&mut line, report, false).unwrap();
                let line = String::from_utf8(line).unwrap();
                prop_assert!(!line.trim_end_matches('\n').chars().any(char::is_control), "{line:?}");
            }
        }
        // Nothing escaped the output directory.
        for entry in walk(out.path()) {
            prop_assert!(entry.starts_with(out.path()));
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        }
        found.push(path);
    }
    found
}
