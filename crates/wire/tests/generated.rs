//! Generated input for what a receiver parses from the network: signatures, the alert chain,
//! topics, payloads and clip checks never panic, whatever bytes they are given, and a valid
//! signature never survives a change to the bytes it covers. Bounded (proptest's case count,
//! `PROPTEST_CASES` to change it) so that it runs in CI on every change.

// A test that cannot go on fails with the value it got.
#![allow(clippy::unwrap_used)]

use alertclip_wire::chain::{self, ChainState};
use alertclip_wire::signature::{self, SigningKey, Verdict};
use alertclip_wire::{Alert, Health, Manifest, Status, TopicLayout};
use proptest::prelude::*;

/// Bytes that look like what arrives: JSON-ish text, fragments of real payloads, or noise.
fn payloads() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        "[{}\\[\\]\":,a-z0-9 .\\-]{0,300}".prop_map(String::into_bytes),
        (0usize..200, any::<u8>()).prop_map(|(cut, byte)| {
            let mut real = br#"{"schema":"alertclip.alert.v1","event_id":"01a2230b-5694-742b-bf4e-9e1f596c6c22","sequence":3,"signature":{"alg":"ed25519","key_id":"51b05cca6a8846ad","public_key":"nzZebCBdNcb8uvA3SqjqNTgNn7Qpa7iswGzJE1Tm68U=","sig":"3zEf"}}"#.to_vec();
            let at = cut.min(real.len() - 1);
            real[at] = byte;
            real.truncate(real.len() - cut / 2);
            real
        }),
    ]
}

/// Topics around the real layout: its words, separators, wildcards and odd text.
fn topics() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        Just("alertclip".to_owned()),
        Just("v1".to_owned()),
        Just("events".to_owned()),
        Just("clip".to_owned()),
        Just("snapshot".to_owned()),
        Just("status".to_owned()),
        Just("alerts".to_owned()),
        Just("01a2230b-5694-742b-bf4e-9e1f596c6c22".to_owned()),
        Just("..".to_owned()),
        Just("+".to_owned()),
        Just("#".to_owned()),
        "[a-zA-Z0-9_.\\-]{0,12}",
        "\\PC{0,8}",
        any::<u32>().prop_map(|n| n.to_string()),
    ];
    proptest::collection::vec(word, 0..9).prop_map(|words| words.join("/"))
}

proptest! {
    #[test]
    fn parsing_network_bytes_never_panics(payload in payloads()) {
        let _ = signature::split(&payload);
        let _ = signature::verify(&payload, &|_| None);
        let _ = serde_json::from_slice::<Alert>(&payload);
        let _ = serde_json::from_slice::<Manifest>(&payload);
        let _ = serde_json::from_slice::<Health>(&payload);
        let _ = serde_json::from_slice::<Status>(&payload);
        let _ = signature::parse_public_key(&String::from_utf8_lossy(&payload));
    }

    #[test]
    fn topics_parse_or_are_refused_without_panicking(topic in topics(), template in prop_oneof![
        Just("alertclip/v1/{site}".to_owned()),
        Just("acme/stores/{site}".to_owned()),
        Just("one/box".to_owned()),
    ]) {
        for site in [None, Some("corner-12")] {
            if let Ok(layout) = TopicLayout::new(&template, site) {
                let _ = layout.parse(&topic);
            }
        }
        let _ = TopicLayout::new(&topic, Some("s"));
    }

    #[test]
    fn a_signature_covers_every_byte_it_signs(
        body in "[a-z]{1,8}",
        value in any::<u32>(),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let unsigned = format!(r#"{{"{body}":{value}}}"#);
        let signed = signature::sign(&key, unsigned.as_bytes());
        let trusted = |id: &str| (id == signature::key_id(&key.verifying_key())).then(|| key.verifying_key());
        prop_assert_eq!(signature::verify(&signed, &trusted), Verdict::Valid);
        let mut changed = signed.clone();
        let at = flip.index(changed.len());
        changed[at] ^= 1 << bit;
        prop_assert_ne!(signature::verify(&changed, &trusted), Verdict::Valid);
    }

    #[test]
    fn the_chain_never_panics_and_never_calls_a_rewrite_a_continuation(
        last in proptest::option::of((any::<u64>(), proptest::option::of("[0-9a-f]{64}"))),
        sequence in any::<u64>(),
        previous in proptest::option::of("[0-9a-f]{0,64}"),
        payload in payloads(),
    ) {
        let last = last.map(|(sequence, last_alert_sha256)| ChainState { sequence, last_alert_sha256 });
        let (link, _) = chain::follow(last.as_ref(), sequence, previous.as_deref(), &payload);
        if let (Some(last), chain::Link::Continues) = (&last, &link) {
            prop_assert_eq!(Some(sequence), last.next_sequence());
            prop_assert_eq!(previous.as_deref(), last.last_alert_sha256.as_deref());
        }
    }

    #[test]
    fn clip_checks_take_any_manifest(manifest in payloads(), clip in proptest::collection::vec(any::<u8>(), 0..256)) {
        let dir = std::env::temp_dir().join(format!("alertclip-generated-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("clip.mp4");
        std::fs::write(&path, &clip).unwrap();
        let checked = alertclip_wire::digest::check_clip(&path, &manifest, None).unwrap();
        prop_assert!(checked.failure.is_some(), "random bytes never pass as a clip");
    }
}
