//! `FrameRing`: one camera's pre-roll, its encoded frames indexed by GOP.
//!
//! The ring is pure and synchronous: the camera's streaming thread pushes into it under a
//! briefly held mutex, and the clipper reads ranges out of it. Frames are kept as the camera
//! encoded them (`gst::Buffer`s are reference-counted, so neither pushing nor reading copies a
//! payload). Eviction works on whole GOPs, so whatever stays always starts with a keyframe.
//!
//! Frames belong to *runs*: a run is a stretch of frames a decoder can play straight through,
//! with one set of caps and one continuous timeline. A new run starts when the caps change (a
//! camera reconfigured), when the stream restarts (a reconnect), or when time goes backwards.
//! A clip never spans two runs.

use std::collections::VecDeque;
use std::time::Duration;

use gstreamer as gst;

use crate::clock::MonoNs;

/// How far a frame's time may go back before it counts as a broken timeline. B-frames come
/// before the frames they follow in presentation order, by a few frame intervals at most.
const BACKWARD_TOLERANCE_NS: u64 = 1_000_000_000;

/// Spare frame vectors kept from evicted GOPs, so that steady-state pushing never allocates.
const SPARE_VECS: usize = 4;

/// One encoded access unit.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The encoded payload as the camera sent it (H.264 avc or H.265 hvc1, one access unit).
    pub buffer: gst::Buffer,
    /// Presentation time on the monotonic clock.
    pub time: MonoNs,
    /// Whether a decoder can start here.
    pub keyframe: bool,
}

/// A keyframe and the frames that depend on it, all of one run.
#[derive(Debug)]
struct Gop {
    run: u64,
    caps: gst::Caps,
    /// Sequence number of `frames[0]`; frame `i` has `first_seq + i`.
    first_seq: u64,
    frames: Vec<Frame>,
    bytes: usize,
}

impl Gop {
    fn start(&self) -> MonoNs {
        self.frames[0].time
    }
    fn end_seq(&self) -> u64 {
        self.first_seq + self.frames.len() as u64
    }
}

/// Counters of what the ring had to throw away, for status and health.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RingStats {
    /// Frames dropped because no keyframe preceded them in their run.
    pub frames_dropped: u64,
    /// Times one GOP alone exceeded the byte cap and was dropped whole.
    pub overflows: u64,
    /// Times time went backwards and the buffered frames were discarded.
    pub time_resets: u64,
}

/// What the ring holds, for status.
#[derive(Debug, Clone, Default)]
pub struct RingStatus {
    /// From the oldest keyframe to the newest frame.
    pub buffered: Duration,
    /// Encoded bytes held.
    pub bytes: usize,
    /// Frames held.
    pub frames: usize,
    /// Caps of the newest frames.
    pub caps: Option<gst::Caps>,
    /// Monotonic time of the newest frame.
    pub latest: Option<MonoNs>,
    /// What had to be thrown away so far.
    pub stats: RingStats,
    /// From the second-newest keyframe to the newest, once two of the current run are held.
    pub keyframe_interval: Option<Duration>,
}

/// Where a clip is in the ring: the run it reads and the next frame it wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    run: u64,
    next_seq: u64,
}

/// The start of a clip: its caps and a cursor at its first keyframe.
#[derive(Debug, Clone)]
pub struct Cut {
    /// Caps of every frame the cursor will read.
    pub caps: gst::Caps,
    /// Positioned at the clip's first keyframe.
    pub cursor: Cursor,
}

/// Why [`FrameRing::read`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadEnd {
    /// A frame later than `end` is buffered: the clip has all it asked for.
    Reached,
    /// No more frames yet; more will come in this run.
    Waiting,
    /// The run ended (caps change, reconnect): no more frames will come for this clip.
    RunEnded,
    /// Frames the clip still wanted were evicted before it read them.
    Lost,
}

/// One camera's buffered frames. See the module documentation.
#[derive(Debug)]
pub struct FrameRing {
    gops: VecDeque<Gop>,
    spare: Vec<Vec<Frame>>,
    keep_ns: u64,
    max_bytes: usize,
    bytes: usize,
    next_seq: u64,
    run: u64,
    run_caps: Option<gst::Caps>,
    /// Newest frame time seen in the current run.
    latest: MonoNs,
    /// Frames are dropped until a keyframe arrives.
    need_keyframe: bool,
    stats: RingStats,
}

impl FrameRing {
    /// A ring that keeps at least `keep` of video before its newest frame (plus the rest of
    /// the GOP that reaches back that far), within `max_bytes` of encoded data.
    pub fn new(keep: Duration, max_bytes: usize) -> FrameRing {
        FrameRing {
            gops: VecDeque::new(),
            spare: Vec::new(),
            keep_ns: keep.as_nanos() as u64,
            max_bytes,
            bytes: 0,
            next_seq: 0,
            run: 0,
            run_caps: None,
            latest: 0,
            need_keyframe: true,
            stats: RingStats::default(),
        }
    }

    /// Appends a frame with the caps in force. `discont` marks the first frame after the
    /// stream restarted. Frames before a run's first keyframe are dropped.
    pub fn push(&mut self, frame: Frame, caps: &gst::Caps, discont: bool) {
        let caps_changed = self.run_caps.as_ref().is_none_or(|c| !same_caps(c, caps));
        let went_back = frame.time.saturating_add(BACKWARD_TOLERANCE_NS) < self.latest;
        if went_back {
            // Buffered frames now lie in the future of the new timeline: a cut by time would
            // mix the two, so they are given up.
            self.clear();
            self.stats.time_resets += 1;
        }
        if discont || caps_changed || went_back {
            self.run += 1;
            self.run_caps = Some(caps.clone());
            self.latest = frame.time;
            self.need_keyframe = true;
        }
        if self.need_keyframe && !frame.keyframe {
            self.stats.frames_dropped += 1;
            return;
        }
        let size = frame.buffer.size();
        self.latest = self.latest.max(frame.time);
        if frame.keyframe {
            self.need_keyframe = false;
            let mut frames = self.spare.pop().unwrap_or_default();
            frames.push(frame);
            self.gops.push_back(Gop {
                run: self.run,
                caps: caps.clone(),
                first_seq: self.next_seq,
                frames,
                bytes: size,
            });
        } else if let Some(gop) = self.gops.back_mut() {
            gop.frames.push(frame);
            gop.bytes += size;
        }
        self.bytes += size;
        self.next_seq += 1;
        self.evict();
    }

    /// Packets were lost before the next frame: the frames that follow are dropped (and
    /// counted) until the next keyframe, in the same run, so that the GOP the loss damaged
    /// ends where it was whole and the run goes on from a frame a decoder can start at.
    pub fn lost(&mut self) {
        self.need_keyframe = true;
    }

    /// Drops GOPs from the front: those no longer needed to reach `keep` back from the newest
    /// frame, then as many as the byte cap requires. A GOP that alone exceeds the cap is
    /// dropped too, and the frames after it until the next keyframe: memory stays within the
    /// cap whatever the camera sends.
    fn evict(&mut self) {
        while self.gops.len() > 1
            && self.gops[1].start().saturating_add(self.keep_ns) <= self.latest
        {
            self.pop_front();
        }
        while self.bytes > self.max_bytes {
            if self.gops.len() == 1 {
                self.need_keyframe = true;
                self.stats.overflows += 1;
            }
            if !self.pop_front() {
                break;
            }
        }
    }

    fn pop_front(&mut self) -> bool {
        let Some(gop) = self.gops.pop_front() else {
            return false;
        };
        self.bytes -= gop.bytes;
        let mut frames = gop.frames;
        if self.spare.len() < SPARE_VECS {
            frames.clear();
            self.spare.push(frames);
        }
        true
    }

    fn clear(&mut self) {
        while self.pop_front() {}
    }

    /// Positions a clip that should start at `from` for a trigger at `at`: in the run that
    /// holds `at` (or the first run after it), at the last keyframe at or before `from`, or
    /// at the run's first keyframe when less is buffered. `None` while nothing is buffered.
    pub fn start_cut(&self, from: MonoNs, at: MonoNs) -> Option<Cut> {
        let run = self
            .gops
            .iter()
            .rev()
            .find(|g| g.start() <= at)
            .or_else(|| self.gops.iter().find(|g| g.start() > at))?
            .run;
        let mut in_run = self.gops.iter().filter(|g| g.run == run);
        let first = in_run.next()?;
        let gop = std::iter::once(first)
            .chain(in_run)
            .take_while(|g| g.start() <= from)
            .last()
            .unwrap_or(first);
        Some(Cut {
            caps: gop.caps.clone(),
            cursor: Cursor {
                run,
                next_seq: gop.first_seq,
            },
        })
    }

    /// Appends to `out` the cursor's run from its position up to the last frame not later
    /// than `end` (in decode order), and advances the cursor past what it appended. Payloads
    /// are shared, not copied.
    pub fn read(&self, cursor: &mut Cursor, end: MonoNs, out: &mut Vec<Frame>) -> ReadEnd {
        self.read_to(cursor, end, false, out)
    }

    /// Like [`read`](Self::read), but takes the first frame later than `end` too. The
    /// picture shown at `end` lasts until that frame's time, and a clip's frame times are
    /// snapped to a grid that can round the last one back by the camera's jitter: a clip
    /// that holds the next frame's start covers `end` whatever the rounding.
    pub fn read_past(&self, cursor: &mut Cursor, end: MonoNs, out: &mut Vec<Frame>) -> ReadEnd {
        self.read_to(cursor, end, true, out)
    }

    fn read_to(
        &self,
        cursor: &mut Cursor,
        end: MonoNs,
        past: bool,
        out: &mut Vec<Frame>,
    ) -> ReadEnd {
        let first = self
            .gops
            .partition_point(|g| g.end_seq() <= cursor.next_seq);
        if let Some(gop) = self.gops.get(first)
            && gop.first_seq > cursor.next_seq
        {
            return ReadEnd::Lost;
        }
        for gop in self.gops.range(first..) {
            if gop.run != cursor.run {
                return ReadEnd::RunEnded;
            }
            let skip = (cursor.next_seq - gop.first_seq) as usize;
            for frame in &gop.frames[skip..] {
                if frame.time > end {
                    if past {
                        out.push(frame.clone());
                        cursor.next_seq += 1;
                    }
                    return ReadEnd::Reached;
                }
                out.push(frame.clone());
                cursor.next_seq += 1;
            }
        }
        if self.run != cursor.run {
            ReadEnd::RunEnded
        } else {
            ReadEnd::Waiting
        }
    }

    /// What the ring holds now.
    pub fn status(&self) -> RingStatus {
        RingStatus {
            // What a trigger now would get: the current run only, since a clip never spans
            // a reconnect; video from before it is still held, but not counted.
            buffered: match self.gops.iter().find(|g| g.run == self.run) {
                Some(gop) => Duration::from_nanos(self.latest.saturating_sub(gop.start())),
                None => Duration::ZERO,
            },
            bytes: self.bytes,
            frames: self.gops.iter().map(|g| g.frames.len()).sum(),
            keyframe_interval: {
                let mut newest = self.gops.iter().rev();
                match (newest.next(), newest.next()) {
                    (Some(last), Some(before)) if last.run == before.run => Some(
                        Duration::from_nanos(last.start().saturating_sub(before.start())),
                    ),
                    _ => None,
                }
            },
            caps: self.gops.back().map(|g| g.caps.clone()),
            latest: (!self.gops.is_empty()).then_some(self.latest),
            stats: self.stats,
        }
    }
}

/// Caps objects are shared until the stream renegotiates, so pointer equality answers almost
/// every call without comparing structures.
fn same_caps(a: &gst::Caps, b: &gst::Caps) -> bool {
    a.as_ptr() == b.as_ptr() || a == b
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;

    fn caps(width: i32) -> gst::Caps {
        gst::init().unwrap();
        gst::Caps::builder("video/x-h264")
            .field("stream-format", "avc")
            .field("alignment", "au")
            .field("width", width)
            .build()
    }

    fn frame(time: MonoNs, keyframe: bool, size: usize) -> Frame {
        Frame {
            buffer: gst::Buffer::with_size(size).unwrap(),
            time,
            keyframe,
        }
    }

    /// Pushes `secs` of a `fps` stream with a keyframe every `gop` frames, starting at `t0`.
    fn feed(
        ring: &mut FrameRing,
        caps: &gst::Caps,
        t0: MonoNs,
        secs: u64,
        fps: u64,
        gop: u64,
        size: usize,
    ) -> MonoNs {
        let step = SEC / fps;
        let n = secs * fps;
        for i in 0..n {
            ring.push(frame(t0 + i * step, i % gop == 0, size), caps, false);
        }
        t0 + n * step
    }

    fn read_all(ring: &FrameRing, cut: &Cut, end: MonoNs) -> (Vec<Frame>, ReadEnd) {
        let mut cursor = cut.cursor;
        let mut out = Vec::new();
        let why = ring.read(&mut cursor, end, &mut out);
        (out, why)
    }

    #[test]
    fn after_a_reconnect_only_the_new_run_counts_as_buffered() {
        let caps = caps(640);
        let mut ring = FrameRing::new(Duration::from_secs(30), usize::MAX);
        let end = feed(&mut ring, &caps, 0, 20, 10, 10, 100);
        assert!(ring.status().buffered >= Duration::from_secs(19));
        // The camera comes back after 5 s; 1 s of the new run arrives.
        let back = end + 5 * SEC;
        ring.push(frame(back, true, 100), &caps, true);
        for i in 1..10 {
            ring.push(frame(back + i * 100 * MS, false, 100), &caps, false);
        }
        let status = ring.status();
        assert_eq!(status.buffered, Duration::from_millis(900));
        // And that is what a trigger now gets.
        let now = back + 900 * MS;
        let cut = ring.start_cut(now.saturating_sub(30 * SEC), now).unwrap();
        let (frames, _) = read_all(&ring, &cut, now);
        assert_eq!(frames[0].time, back);
    }

    #[test]
    fn after_lost_packets_the_rest_of_the_gop_is_dropped_and_the_run_goes_on() {
        let caps = caps(640);
        let mut ring = FrameRing::new(Duration::from_secs(30), usize::MAX);
        // 10 fps, a keyframe a second: 1.5 s, then loss, then the rest of 3 s.
        for i in 0..30u64 {
            if i == 15 {
                ring.lost();
            }
            ring.push(frame(i * 100 * MS, i % 10 == 0, 100), &caps, false);
        }
        let status = ring.status();
        // Frames 15 to 19 are gone; the second keyframe's GOP and the one after stay.
        assert_eq!(status.stats.frames_dropped, 5);
        assert_eq!(status.frames, 25);
        let now = 29 * 100 * MS;
        let cut = ring.start_cut(0, now).unwrap();
        let (frames, _) = read_all(&ring, &cut, now + 1);
        // One run, from the first keyframe, with the gap inside it.
        assert_eq!(frames.len(), 25);
        assert_eq!(frames[0].time, 0);
        assert_eq!(frames[15].time, 20 * 100 * MS);
        assert!(frames[15].keyframe);
    }

    #[test]
    fn keeps_pre_roll_plus_at_most_one_gop() {
        let caps = caps(640);
        let mut ring = FrameRing::new(Duration::from_secs(5), usize::MAX);
        // 10 fps, keyframe every 2 s, for a minute.
        feed(&mut ring, &caps, 100 * SEC, 60, 10, 20, 1000);
        let status = ring.status();
        assert!(
            status.buffered >= Duration::from_secs(5),
            "{:?}",
            status.buffered
        );
        assert!(
            status.buffered < Duration::from_secs(7),
            "{:?}",
            status.buffered
        );
        assert_eq!(status.bytes, status.frames * 1000);
        assert!(ring.gops.iter().all(|g| g.frames[0].keyframe));
    }

    #[test]
    fn cut_starts_at_last_keyframe_at_or_before_start() {
        let caps = caps(640);
        let mut ring = FrameRing::new(Duration::from_secs(30), usize::MAX);
        let end = feed(&mut ring, &caps, 0, 20, 10, 20, 100);
        // Keyframes at 0, 2, 4, ... s. A clip from 7.5 s starts at the keyframe at 6 s.
        let cut = ring.start_cut(7_500 * MS, 12 * SEC).unwrap();
        let (frames, why) = read_all(&ring, &cut, 15 * SEC);
        assert_eq!(why, ReadEnd::Reached);
        assert!(frames[0].keyframe);
        assert_eq!(frames[0].time, 6 * SEC);
        assert_eq!(frames.last().unwrap().time, 15 * SEC);
        assert_eq!(frames.len(), 91);
        // Reading past the end takes the next frame too, once.
        let mut cursor = cut.cursor;
        let mut past = Vec::new();
        let why = ring.read_past(&mut cursor, 15 * SEC, &mut past);
        assert_eq!(why, ReadEnd::Reached);
        assert_eq!(past.len(), 92);
        assert_eq!(past.last().unwrap().time, 15_100 * MS);
        // Exactly on a keyframe.
        let cut = ring.start_cut(8 * SEC, 12 * SEC).unwrap();
        assert_eq!(read_all(&ring, &cut, 8 * SEC).0.len(), 1);
        // Up to the newest frame, the clip waits for more.
        let (frames, why) = read_all(&ring, &cut, end + 5 * SEC);
        assert_eq!(why, ReadEnd::Waiting);
        assert_eq!(frames.last().unwrap().time, end - 100 * MS);
    }

    #[test]
    fn reading_resumes_where_it_stopped_and_shares_payloads() {
        let caps = caps(640);
        let mut ring = FrameRing::new(Duration::from_secs(30), usize::MAX);
        let t = feed(&mut ring, &caps, 0, 4, 10, 20, 100);
        let mut cut = ring.start_cut(0, 2 * SEC).unwrap();
        let mut out = Vec::new();
        assert_eq!(
            ring.read(&mut cut.cursor, 6 * SEC, &mut out),
            ReadEnd::Waiting
        );
        assert_eq!(out.len(), 40);
        let t = feed(&mut ring, &caps, t, 4, 10, 20, 100);
        assert_eq!(
            ring.read(&mut cut.cursor, 6 * SEC, &mut out),
            ReadEnd::Reached
        );
        assert_eq!(out.len(), 61);
        assert!(out.windows(2).all(|w| w[1].time > w[0].time));
        // Extending the end picks up exactly where the last read stopped.
        assert_eq!(ring.read(&mut cut.cursor, t, &mut out), ReadEnd::Waiting);
        assert_eq!(out.len(), 80);
        // The clip's frame and the ring's frame are one buffer.
        let stored = &ring.gops.back().unwrap().frames.last().unwrap().buffer;
        assert_eq!(stored.as_ptr(), out.last().unwrap().buffer.as_ptr());
    }

    #[test]
    fn caps_change_starts_a_new_run_and_ends_the_old_clip() {
        let (small, large) = (caps(640), caps(1920));
        let mut ring = FrameRing::new(Duration::from_secs(30), usize::MAX);
        let t = feed(&mut ring, &small, 0, 6, 10, 20, 100);
        let old = ring.start_cut(0, 5 * SEC).unwrap();
        // The camera is reconfigured; its first frames after the change are not keyframes.
        ring.push(frame(t, false, 100), &large, false);
        ring.push(frame(t + 100 * MS, true, 100), &large, false);
        feed(&mut ring, &large, t + 200 * MS, 4, 10, 20, 100);
        assert_eq!(ring.status().stats.frames_dropped, 1);

        let (frames, why) = read_all(&ring, &old, t + 10 * SEC);
        assert_eq!(why, ReadEnd::RunEnded);
        assert_eq!(frames.len(), 60, "the old clip ends at the change");
        assert_eq!(old.caps, small);

        // A trigger after the change cuts from the change, never across it.
        let new = ring.start_cut(t - 3 * SEC, t + 2 * SEC).unwrap();
        assert_eq!(new.caps, large);
        let (frames, _) = read_all(&ring, &new, t + 3 * SEC);
        assert_eq!(frames[0].time, t + 100 * MS);
        assert!(frames[0].keyframe);
        // A trigger before the change cuts from the old run.
        assert_eq!(ring.start_cut(SEC, 3 * SEC).unwrap().caps, small);
    }

    #[test]
    fn reconnect_starts_a_new_run() {
        let caps = caps(640);
        let mut ring = FrameRing::new(Duration::from_secs(30), usize::MAX);
        let t = feed(&mut ring, &caps, 0, 4, 10, 20, 100);
        let cut = ring.start_cut(0, SEC).unwrap();
        ring.push(frame(t + 3 * SEC, true, 100), &caps, true);
        let (frames, why) = read_all(&ring, &cut, t + 10 * SEC);
        assert_eq!((frames.len(), why), (40, ReadEnd::RunEnded));
    }

    #[test]
    fn frames_before_the_first_keyframe_are_dropped() {
        let caps = caps(640);
        let mut ring = FrameRing::new(Duration::from_secs(30), usize::MAX);
        for i in 0..5 {
            ring.push(frame(i * 100 * MS, false, 100), &caps, false);
        }
        assert_eq!(ring.status().frames, 0);
        assert!(ring.start_cut(0, SEC).is_none());
        ring.push(frame(500 * MS, true, 100), &caps, false);
        assert_eq!(ring.status().frames, 1);
        assert_eq!(ring.status().stats.frames_dropped, 5);
    }

    #[test]
    fn trigger_before_pre_roll_is_buffered_cuts_what_there_is() {
        let caps = caps(640);
        let mut ring = FrameRing::new(Duration::from_secs(30), usize::MAX);
        feed(&mut ring, &caps, 50 * SEC, 3, 10, 10, 100);
        let cut = ring.start_cut(52 * SEC - 30 * SEC, 52 * SEC).unwrap();
        let (frames, _) = read_all(&ring, &cut, 60 * SEC);
        assert_eq!(frames[0].time, 50 * SEC);
        assert_eq!(frames.len(), 30);
        // A trigger from before anything was buffered starts at the first frame.
        assert!(ring.start_cut(0, 10 * SEC).is_some());
    }

    #[test]
    fn gop_longer_than_pre_roll_is_kept_whole() {
        let caps = caps(640);
        let mut ring = FrameRing::new(Duration::from_secs(3), usize::MAX);
        // One keyframe every 10 s.
        let t = feed(&mut ring, &caps, 0, 25, 10, 100, 100);
        // Newest at 24.9 s; 3 s back is 21.9 s, reached only by the GOP that began at 20 s.
        let cut = ring.start_cut(t - 3 * SEC, t).unwrap();
        let (frames, _) = read_all(&ring, &cut, t);
        assert_eq!(frames[0].time, 20 * SEC);
        assert_eq!(ring.status().buffered, Duration::from_millis(4_900));
        // Before the GOP at 10 s is 3 s old, the 10 s GOP before it is still needed: kept whole.
        let mut ring = FrameRing::new(Duration::from_secs(3), usize::MAX);
        let t = feed(&mut ring, &caps, 0, 12, 10, 100, 100);
        let cut = ring.start_cut(t - 3 * SEC, t).unwrap();
        let (frames, _) = read_all(&ring, &cut, t);
        assert_eq!(frames[0].time, 0);
        assert_eq!(frames.len(), 120);
    }

    #[test]
    fn byte_cap_holds_against_a_high_bitrate_stream() {
        let caps = caps(1920);
        let cap = 8 << 20;
        let mut ring = FrameRing::new(Duration::from_secs(30), cap);
        // 20 Mbit/s at 25 fps (100 kB a frame), 2 s GOPs with large keyframes, for 60 s.
        let step = SEC / 25;
        let mut peak = 0;
        for i in 0..60 * 25 {
            let keyframe = i % 50 == 0;
            ring.push(
                frame(i * step, keyframe, if keyframe { 400_000 } else { 100_000 }),
                &caps,
                false,
            );
            peak = peak.max(ring.status().bytes);
        }
        assert!(peak <= cap, "peak {peak} over cap {cap}");
        let status = ring.status();
        assert!(
            status.buffered >= Duration::from_millis(1_900),
            "still holds a whole GOP: {:?}",
            status.buffered
        );
        assert!(status.buffered < Duration::from_secs(30));
        assert_eq!(status.stats.overflows, 0);
        let cut = ring.start_cut(0, 60 * SEC).unwrap();
        let (frames, _) = read_all(&ring, &cut, 60 * SEC);
        assert!(frames[0].keyframe);
    }

    #[test]
    fn a_single_gop_over_the_cap_is_dropped_until_the_next_keyframe() {
        let caps = caps(1920);
        let cap = 1 << 20;
        let mut ring = FrameRing::new(Duration::from_secs(30), cap);
        // A camera that sends a keyframe only every 20 s at 1 MB/s.
        let step = SEC / 10;
        for i in 0..400u64 {
            ring.push(frame(i * step, i % 200 == 0, 100_000), &caps, false);
            assert!(ring.status().bytes <= cap);
        }
        let status = ring.status();
        assert_eq!(status.stats.overflows, 2);
        assert!(status.stats.frames_dropped > 300);
        assert!(ring.gops.iter().all(|g| g.frames[0].keyframe));
    }

    #[test]
    fn time_going_backwards_discards_the_old_timeline() {
        let caps = caps(640);
        let mut ring = FrameRing::new(Duration::from_secs(30), usize::MAX);
        let t = feed(&mut ring, &caps, 100 * SEC, 5, 10, 10, 100);
        let cut = ring.start_cut(100 * SEC, 101 * SEC).unwrap();
        feed(&mut ring, &caps, 20 * SEC, 2, 10, 10, 100);
        let status = ring.status();
        assert_eq!(status.stats.time_resets, 1);
        assert_eq!(status.frames, 20);
        assert_eq!(status.latest, Some(21_900 * MS));
        let (_, why) = read_all(&ring, &cut, t);
        assert_eq!(why, ReadEnd::Lost);
        // B-frames a few intervals behind do not count as going backwards.
        ring.push(frame(21_800 * MS, false, 100), &caps, false);
        assert_eq!(ring.status().stats.time_resets, 1);
    }

    #[test]
    fn evicted_frames_are_reported_lost() {
        let caps = caps(640);
        let mut ring = FrameRing::new(Duration::from_secs(2), usize::MAX);
        feed(&mut ring, &caps, 0, 3, 10, 10, 100);
        let cut = ring.start_cut(0, SEC).unwrap();
        feed(&mut ring, &caps, 3 * SEC, 10, 10, 10, 100);
        assert_eq!(read_all(&ring, &cut, 20 * SEC).1, ReadEnd::Lost);
    }

    #[test]
    fn steady_state_pushing_reuses_frame_vectors() {
        let caps = caps(640);
        let mut ring = FrameRing::new(Duration::from_secs(2), usize::MAX);
        feed(&mut ring, &caps, 0, 30, 10, 10, 100);
        assert!(!ring.spare.is_empty());
        let before: Vec<_> = ring.spare.iter().map(|v| v.as_ptr()).collect();
        feed(&mut ring, &caps, 30 * SEC, 1, 10, 10, 100);
        let reused = ring.gops.back().unwrap().frames.as_ptr();
        assert!(before.contains(&reused), "a new GOP takes a spare vector");
    }
}
