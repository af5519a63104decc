//! The daemon's two clocks and the mapping between them.
//!
//! Frames are timed on the monotonic clock that GStreamer pipelines run on, so that an NTP
//! step or a technician changing the date never reorders or loses buffered video. Wall-clock
//! (UTC) time is only derived, through a [`ClockMap`] taken at the moment of a trigger.

use std::time::{Duration, SystemTime};

pub use alertclip_wire::{MapRecord, Provenance};
use gstreamer as gst;
use gstreamer::prelude::*;

/// Nanoseconds on the monotonic clock shared by every pipeline (GStreamer's system clock).
pub type MonoNs = u64;

/// The clock every camera pipeline runs on; its time is the daemon's monotonic time.
pub fn pipeline_clock() -> gst::Clock {
    gst::SystemClock::obtain()
}

/// The monotonic time now, on the same clock frames are timed with.
pub fn mono_now() -> MonoNs {
    pipeline_clock().time().nseconds()
}

/// A pair of readings of the monotonic and the wall clock taken together, used to turn one
/// into the other around that instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockMap {
    /// Monotonic time of the reading.
    pub mono: MonoNs,
    /// Wall-clock time of the same reading.
    pub wall: SystemTime,
}

impl ClockMap {
    /// Reads both clocks now.
    pub fn now() -> ClockMap {
        ClockMap {
            mono: mono_now(),
            wall: SystemTime::now(),
        }
    }

    /// The wall-clock time of monotonic instant `mono`.
    pub fn wall_of(&self, mono: MonoNs) -> SystemTime {
        if mono >= self.mono {
            self.wall + Duration::from_nanos(mono - self.mono)
        } else {
            self.wall - Duration::from_nanos(self.mono - mono)
        }
    }

    /// The monotonic instant of wall-clock time `wall` (saturating at zero).
    pub fn mono_of(&self, wall: SystemTime) -> MonoNs {
        match wall.duration_since(self.wall) {
            Ok(ahead) => self.mono.saturating_add(ahead.as_nanos() as u64),
            Err(behind) => self
                .mono
                .saturating_sub(behind.duration().as_nanos() as u64),
        }
    }
}

/// How fast a camera's clock may drift from ours and still be followed smoothly: 200 ppm,
/// ten times what cheap crystals manage.
const MAX_DRIFT_PPM: i64 = 200;
/// How fast the offset may fall, in percent of elapsed time.
const MAX_CATCH_UP_PERCENT: i64 = 2;
/// How far a camera's timestamps may step beyond the time that passed between two frames (or
/// back, as B-frames do) before it counts as a jump in its timestamps.
const JUMP_NS: i64 = 1_000_000_000;

/// Places frames timed by a camera's clock (its RTP timestamps) on the monotonic clock.
///
/// RTP timestamps are exact relative to each other (B-frames keep their order, frames keep
/// their spacing) but run on the camera's crystal, which drifts from ours by seconds a week.
/// Arrival times are on our clock but carry network jitter. The offset between the two is
/// tracked as a lower envelope of (arrival - stream time): it follows a frame that arrives
/// with less delay than any before, and otherwise rises no faster than clocks drift. Either
/// way it moves gradually (at most 2% of elapsed time when falling, as after the burst that
/// starts a session), so frames keep the camera's spacing to within 2% and never overlap,
/// while staying within a network delay of when they arrived.
///
/// A jump is told from a stall by the timestamps: in a stall the frames arrive late but their
/// timestamps keep the camera's spacing (they are placed when they were captured, and the clip
/// in progress goes on); in a jump the timestamps step far from the time that passed (the
/// camera restarted its clock), and the timeline starts again.
#[derive(Debug, Clone)]
pub struct StreamClock {
    offset: Option<i64>,
    last_arrival: MonoNs,
    last_stream: MonoNs,
    max_delay_ns: i64,
}

impl StreamClock {
    /// A clock for a camera whose frames may arrive up to `max_delay` later than their
    /// timestamps say and still be late frames of the same timeline: the camera's stall
    /// timeout. A stall delays frames without moving their capture times, and one longer
    /// than the stall timeout ends the connection; so a frame later than that means the
    /// camera's clock itself stood still, as a camera that counts frames rather than time
    /// does when it drops some.
    pub fn new(max_delay: std::time::Duration) -> StreamClock {
        StreamClock {
            offset: None,
            last_arrival: 0,
            last_stream: 0,
            max_delay_ns: i64::try_from(max_delay.as_nanos()).unwrap_or(i64::MAX),
        }
    }

    /// The monotonic time of a frame with stream time `stream` that arrived at `arrival`, and
    /// whether the camera's timestamps jumped (a discontinuity).
    pub fn place(&mut self, stream: MonoNs, arrival: MonoNs) -> (MonoNs, bool) {
        let lag = arrival as i64 - stream as i64;
        let elapsed = arrival.saturating_sub(self.last_arrival) as i64;
        let step = stream as i64 - self.last_stream as i64;
        let (offset, jumped) = match self.offset {
            None => (lag, false),
            Some(previous)
                if step > elapsed + JUMP_NS
                    || step < -JUMP_NS
                    || lag - previous > self.max_delay_ns =>
            {
                (lag, true)
            }
            Some(previous) => {
                let ceiling = previous + elapsed * MAX_DRIFT_PPM / 1_000_000;
                // Measured in stream time, so frame spacing shrinks by at most that much. A
                // B-frame (stream time going back in decode order) allows none.
                let spacing = stream.saturating_sub(self.last_stream) as i64;
                let floor = previous - spacing * MAX_CATCH_UP_PERCENT / 100;
                (lag.min(ceiling).max(floor), false)
            }
        };
        self.offset = Some(offset);
        self.last_arrival = arrival;
        self.last_stream = stream;
        ((stream as i64 + offset).max(0) as MonoNs, jumped)
    }
}

/// The wall clock's provenance now.
pub fn provenance() -> Provenance {
    let (synchronized, estimated_error_us) = crate::sys::clock_state();
    let source = [
        ("/run/systemd/timesync/synchronized", "systemd-timesyncd"),
        ("/run/chrony", "chrony"),
        ("/run/chronyd.pid", "chrony"),
        ("/run/ntpd.pid", "ntpd"),
    ]
    .iter()
    .find(|(path, _)| std::path::Path::new(path).exists())
    .map(|(_, name)| (*name).to_owned());
    Provenance {
        synchronized,
        source,
        estimated_error_us: (synchronized == Some(true)).then_some(estimated_error_us),
    }
}

/// Whether the kernel reports the system clock synchronised; `None` when it cannot be asked.
pub fn synchronized() -> Option<bool> {
    provenance().synchronized
}

impl From<ClockMap> for MapRecord {
    fn from(map: ClockMap) -> MapRecord {
        MapRecord {
            monotonic_ns: map.mono,
            wall: humantime::format_rfc3339_micros(map.wall).to_string(),
        }
    }
}

/// RFC 3339 UTC with milliseconds, the form every timestamp takes in metadata.
pub fn rfc3339_ms(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_round_trips_both_ways() {
        let map = ClockMap {
            mono: 5_000_000_000,
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000),
        };
        let later = map.wall_of(7_500_000_000);
        assert_eq!(
            later,
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_002_500)
        );
        assert_eq!(map.mono_of(later), 7_500_000_000);
        let earlier = map.wall_of(1_000_000_000);
        assert_eq!(earlier, SystemTime::UNIX_EPOCH + Duration::from_secs(996));
        assert_eq!(map.mono_of(earlier), 1_000_000_000);
        assert_eq!(
            map.mono_of(SystemTime::UNIX_EPOCH),
            0,
            "saturates instead of wrapping"
        );
    }

    #[test]
    fn a_wall_clock_step_does_not_move_frames() {
        // Frames are buffered on the monotonic clock. The wall clock is then stepped back an
        // hour (an NTP correction); a trigger maps "now" through a fresh reading, so the frame
        // 10 s before the trigger is still found 10 s before it.
        let before_step = ClockMap {
            mono: 100_000_000_000,
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(10_000),
        };
        let frame = before_step.mono - 10_000_000_000;
        let after_step = ClockMap {
            mono: before_step.mono,
            wall: before_step.wall - Duration::from_secs(3_600),
        };
        let trigger_mono = after_step.mono_of(after_step.wall);
        assert_eq!(trigger_mono - frame, 10_000_000_000);
        assert_eq!(
            after_step.wall_of(frame),
            after_step.wall - Duration::from_secs(10)
        );
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn stream_clock_keeps_camera_spacing_despite_jitter() {
        let mut clock = StreamClock::new(Duration::from_secs(5));
        let jitter = [30u64, 5, 12, 2, 25, 8, 40, 3, 15, 9];
        let mut placed = Vec::new();
        for i in 0..300u64 {
            let stream = i * 66 * MS;
            let arrival = 1_000_000 * MS + stream + 20 * MS + jitter[i as usize % 10] * MS;
            placed.push(clock.place(stream, arrival));
        }
        // Spacing stays within 2% of the camera's while the offset settles ...
        for w in placed.windows(2) {
            assert!(
                (w[1].0 - w[0].0).abs_diff(66 * MS) <= 66 * MS / 50 + 1,
                "{w:?}"
            );
        }
        // ... and once it has, it is the camera's, give or take the microseconds the offset
        // creeps by (200 ppm) between least-delayed frames.
        for w in placed[50..].windows(2) {
            assert!((w[1].0 - w[0].0).abs_diff(66 * MS) < 200_000, "{w:?}");
            assert!(!w[1].1);
        }
        // And times sit at the least-delayed arrival: 22 ms after capture.
        assert!(
            placed[299]
                .0
                .abs_diff(1_000_000 * MS + 299 * 66 * MS + 22 * MS)
                < 100_000
        );
    }

    #[test]
    fn stream_clock_settles_after_a_start_up_burst_without_overlapping_frames() {
        // The first frames arrive 300 ms late, in a burst, then the stream runs live.
        let mut clock = StreamClock::new(Duration::from_secs(5));
        let mut placed = Vec::new();
        for i in 0..600u64 {
            let stream = i * 66 * MS;
            let live = 1_000 * MS + stream + 20 * MS;
            let burst = 1_000 * MS + 300 * MS + i * MS;
            let arrival = live.max(burst);
            placed.push(clock.place(stream, arrival).0);
        }
        for w in placed.windows(2) {
            let step = w[1] - w[0];
            assert!(step >= 66 * MS * 98 / 100, "frames squeezed to {step} ns");
        }
        assert!(placed[599].abs_diff(1_000 * MS + 599 * 66 * MS + 20 * MS) < MS);
    }

    #[test]
    fn stream_clock_follows_a_slow_camera_clock() {
        // The camera's clock runs 100 ppm slow: its timestamps fall behind ours.
        let mut clock = StreamClock::new(Duration::from_secs(5));
        let mut last = (0, false);
        for i in 0..100_000u64 {
            let ours = i * 66 * MS;
            let stream = ours - ours / 10_000;
            last = clock.place(stream, 5_000 * MS + ours + 10 * MS);
        }
        let ours = 99_999 * 66 * MS;
        let error = last.0 as i64 - (5_000 * MS + ours + 10 * MS) as i64;
        assert!(
            error.abs() < 2 * MS as i64,
            "{error} ns off after two hours"
        );
        // A fast camera clock is followed at once.
        let mut clock = StreamClock::new(Duration::from_secs(5));
        for i in 0..100_000u64 {
            let ours = i * 66 * MS;
            last = clock.place(ours + ours / 10_000, 5_000 * MS + ours + 10 * MS);
        }
        let error = last.0 as i64 - (5_000 * MS + 99_999 * 66 * MS + 10 * MS) as i64;
        assert!(
            error.abs() < 2 * MS as i64,
            "{error} ns off after two hours"
        );
    }

    #[test]
    fn stream_clock_keeps_b_frame_order() {
        // Decode order I0 P3 B1 B2: the B-frames arrive after the later P-frame.
        let mut clock = StreamClock::new(Duration::from_secs(5));
        let order = [0u64, 3, 1, 2, 6, 4, 5];
        let placed: Vec<u64> = order
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                clock
                    .place(i * 66 * MS, 1_000 * MS + k as u64 * 66 * MS + 50 * MS)
                    .0
            })
            .collect();
        assert!(placed[2] < placed[3] && placed[3] < placed[1] && placed[1] < placed[5]);
        assert!((placed[1] - placed[2]).abs_diff(2 * 66 * MS) < 50_000);
    }

    #[test]
    fn stream_clock_reports_timestamp_jumps() {
        let mut clock = StreamClock::new(Duration::from_secs(5));
        clock.place(0, 1_000 * MS);
        assert!(!clock.place(66 * MS, 1_066 * MS).1);
        // The camera's timestamps leap an hour ahead without the session closing ...
        let (time, jumped) = clock.place(3_600_000 * MS, 1_133 * MS);
        assert!(jumped);
        assert_eq!(time, 1_133 * MS);
        let (time, jumped) = clock.place(3_600_066 * MS, 1_199 * MS);
        assert!(!jumped);
        assert_eq!(time, 1_199 * MS);
        // ... and back to zero.
        let (time, jumped) = clock.place(0, 1_266 * MS);
        assert!(jumped);
        assert_eq!(time, 1_266 * MS);
    }

    #[test]
    fn stream_clock_keeps_frames_delayed_by_a_stall_on_their_timeline() {
        // Live at 15 fps, then nothing arrives for 2.5 s (a Wi-Fi camera's stall over TCP),
        // then the frames held up arrive in a burst, 1 ms apart, and the stream runs live again.
        let mut clock = StreamClock::new(Duration::from_secs(5));
        let mut placed = Vec::new();
        for i in 0..300u64 {
            let stream = i * 66 * MS;
            let live = 1_000 * MS + stream + 20 * MS;
            let arrival = if (100..140).contains(&i) {
                live.max(1_000 * MS + 100 * 66 * MS + 2_500 * MS + (i - 100) * MS)
            } else {
                live
            };
            let (time, jumped) = clock.place(stream, arrival);
            assert!(!jumped, "frame {i}, 2.5 s late, taken for a jump");
            placed.push(time);
        }
        // Every frame is where the camera captured it: the stall moved none of them.
        for (i, time) in placed.iter().enumerate() {
            let captured = 1_000 * MS + i as u64 * 66 * MS + 20 * MS;
            assert!(
                time.abs_diff(captured) < MS,
                "frame {i}: {time} vs {captured}"
            );
        }
    }

    #[test]
    fn stream_clock_takes_a_clock_that_stood_still_for_a_jump() {
        // A camera that stamps frames by count stops counting for 20 s while frames go on
        // arriving: its timeline is no longer ours.
        let mut clock = StreamClock::new(Duration::from_secs(5));
        let mut jumps = Vec::new();
        for i in 0..400u64 {
            let arrival = 1_000 * MS + i * 66 * MS;
            let stream = if i < 100 { i * 66 * MS } else { 100 * 66 * MS };
            if clock.place(stream, arrival).1 {
                jumps.push(i);
            }
        }
        // 5 s (the stall timeout) of standing still is 76 frames: the first beyond is the
        // jump, then (the timestamps stuck) the next each 5 s on.
        assert_eq!(jumps.first(), Some(&(100 + 76)), "{jumps:?}");
    }

    #[test]
    fn formats_utc_with_milliseconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_341_403_123);
        assert_eq!(rfc3339_ms(t), "2025-11-28T14:50:03.123Z");
    }
}
