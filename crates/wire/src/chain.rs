//! The per-device alert chain, as a receiver follows it.
//!
//! Each alert, and each event update, carries its device's `sequence` (1, 2, 3 ..., one
//! numbering for both) and the SHA-256 of the previous link's payload as published
//! (`previous_alert_sha256`), so a receiver sees a deleted or suppressed event or update as a
//! gap, a replayed one by its sequence, and a rewritten history as a broken link. Sequence numbers come from outside: every step here is checked arithmetic, and
//! a number that cannot follow (the end of the range) is a broken chain, never a wrap.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A link of the chain: the box keeps its own head in `chain.json`, a receiver the last one
/// it saw of each device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainState {
    /// The last sequence number used (0 before the first alert).
    pub sequence: u64,
    /// SHA-256 of the last alert as published.
    pub last_alert_sha256: Option<String>,
}

impl ChainState {
    /// The head after an alert with `sequence` whose published bytes are `payload`.
    pub fn after(sequence: u64, payload: &[u8]) -> ChainState {
        ChainState {
            sequence,
            last_alert_sha256: Some(hex::encode(Sha256::digest(payload))),
        }
    }

    /// The sequence number of the next alert; `None` at the end of the range.
    pub fn next_sequence(&self) -> Option<u64> {
        self.sequence.checked_add(1)
    }
}

/// What a receiver concludes from an alert's place in its device's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// The first alert seen from this device.
    First,
    /// Follows the previous alert.
    Continues,
    /// Sequence numbers were skipped: alerts missing or suppressed.
    Gap {
        /// The last sequence number seen before.
        last: u64,
        /// The sequence number that arrived.
        got: u64,
        /// How many numbers in between never arrived.
        missing: u64,
    },
    /// The last link seen, the same bytes again: a redelivery (the broker sends a message
    /// again when the receiver that took it did not acknowledge it, having died after
    /// following the chain and before keeping the alert).
    Again,
    /// A sequence number already seen: a replay.
    Replay {
        /// The sequence number that arrived.
        sequence: u64,
        /// The last one seen before.
        last: u64,
    },
    /// Not linked to the previous alert: history rewritten, or a sequence number that cannot
    /// follow any other.
    Broken {
        /// The sequence number that arrived.
        sequence: u64,
    },
}

/// Places an alert (its sequence, previous hash, and own bytes) after the receiver's last
/// known link of that device, returning the verdict and the new last link (`None`: keep the
/// old one).
pub fn follow(
    last: Option<&ChainState>,
    sequence: u64,
    previous: Option<&str>,
    payload: &[u8],
) -> (Link, Option<ChainState>) {
    let head = ChainState::after(sequence, payload);
    let Some(last) = last else {
        return (Link::First, Some(head));
    };
    if sequence == last.sequence && head.last_alert_sha256 == last.last_alert_sha256 {
        return (Link::Again, None);
    }
    if sequence <= last.sequence {
        return (
            Link::Replay {
                sequence,
                last: last.sequence,
            },
            None,
        );
    }
    let Some(expected) = last.next_sequence() else {
        return (Link::Broken { sequence }, None);
    };
    if sequence > expected {
        // sequence > expected here, so this never saturates.
        let missing = sequence.saturating_sub(expected);
        return (
            Link::Gap {
                last: last.sequence,
                got: sequence,
                missing,
            },
            Some(head),
        );
    }
    if previous != last.last_alert_sha256.as_deref() {
        return (Link::Broken { sequence }, Some(head));
    }
    (Link::Continues, Some(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(p: &[u8]) -> String {
        hex::encode(Sha256::digest(p))
    }

    #[test]
    fn receivers_see_gaps_replays_and_rewrites() {
        let payloads: [&[u8]; 4] = [b"one", b"two", b"three", b"four"];
        let (link, head) = follow(None, 1, None, payloads[0]);
        assert_eq!(link, Link::First);
        let (link, head2) = follow(head.as_ref(), 2, Some(&hash(payloads[0])), payloads[1]);
        assert_eq!(link, Link::Continues);
        assert_eq!(
            follow(head2.as_ref(), 2, Some(&hash(payloads[0])), payloads[1]).0,
            Link::Again
        );
        assert_eq!(
            follow(head2.as_ref(), 2, Some(&hash(payloads[0])), b"another two").0,
            Link::Replay {
                sequence: 2,
                last: 2
            }
        );
        assert_eq!(
            follow(head2.as_ref(), 1, None, payloads[0]).0,
            Link::Replay {
                sequence: 1,
                last: 2
            }
        );
        assert_eq!(
            follow(head2.as_ref(), 4, Some(&hash(payloads[2])), payloads[3]).0,
            Link::Gap {
                last: 2,
                got: 4,
                missing: 1
            }
        );
        assert_eq!(
            follow(head2.as_ref(), 3, Some(&hash(b"rewritten")), payloads[2]).0,
            Link::Broken { sequence: 3 }
        );
    }

    #[test]
    fn sequence_numbers_at_the_end_of_the_range_never_wrap() {
        let last = ChainState {
            sequence: u64::MAX - 1,
            last_alert_sha256: Some(hash(b"x")),
        };
        assert_eq!(
            follow(Some(&last), u64::MAX, Some(&hash(b"x")), b"y").0,
            Link::Continues
        );
        let end = ChainState::after(u64::MAX, b"y");
        assert_eq!(end.next_sequence(), None);
        assert_eq!(
            follow(Some(&end), u64::MAX, None, b"z").0,
            Link::Replay {
                sequence: u64::MAX,
                last: u64::MAX
            }
        );
        let zero = ChainState::default();
        assert_eq!(
            follow(Some(&zero), u64::MAX, None, b"z").0,
            Link::Gap {
                last: 0,
                got: u64::MAX,
                missing: u64::MAX - 1
            }
        );
    }
}
