//! Timestamps for a clip's frames: presentation times snapped to the frame grid, and decode
//! times synthesised.
//!
//! Frames arrive with presentation times from rtspsrc's jitter buffer, which follows the
//! camera's clock but wobbles by a few milliseconds from frame to frame, and with no decode
//! times at all (RTP carries none). An MP4 needs decode times that rise strictly and never
//! pass the presentation time; a file on a clean grid also plays and converts without
//! dropped or duplicated frames.
//!
//! The retimer ranks presentation times through a min-heap over a look-ahead window wider
//! than any camera's reordering. In presentation order, each time is snapped onto a grid
//! whose interval is measured from the stream itself and which re-anchors on every frame, so
//! it never drifts from the camera. The n-th decode time is then the n-th presentation time
//! shifted back by the stream's reorder delay. Without B-frames this is simply DTS = PTS.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use crate::clock::MonoNs;
use crate::ingest::ring::Frame;

/// Frames whose rank is kept open: more than any camera reorders by.
const WINDOW: usize = 16;
/// Frame interval assumed for a clip too short to measure one (15 fps).
const FALLBACK_INTERVAL_NS: f64 = 1e9 / 15.0;
/// Smallest step between two decode times, so that they stay distinct in a 90 kHz track.
const MIN_STEP_NS: u64 = 11_112;

/// A frame with the times it is written with.
pub(crate) struct Timed {
    pub frame: Frame,
    pub pts: MonoNs,
    pub dts: MonoNs,
    pub duration: u64,
}

/// See the module documentation. Frames go in in decode order and come out in decode order.
#[derive(Default)]
pub(crate) struct Retimer {
    /// Frames not yet emitted, in decode order.
    pending: VecDeque<Frame>,
    /// Presentation times whose rank is not final yet.
    unranked: BinaryHeap<Reverse<MonoNs>>,
    /// (raw, snapped) presentation times in presentation order, from rank `first_rank` on.
    ranked: VecDeque<(MonoNs, MonoNs)>,
    first_rank: usize,
    emitted: usize,
    grid: Option<Grid>,
    delay: Option<u64>,
    last_dts: Option<MonoNs>,
}

/// The frame grid: the last snapped time, and the interval measured since the anchor.
struct Grid {
    anchor: MonoNs,
    last: MonoNs,
    slots: u64,
    interval: f64,
}

impl Grid {
    /// Snaps the next presentation time (in presentation order) onto the grid: a whole number
    /// of intervals, at least one, after the previous one. Measuring from the previous
    /// *snapped* time keeps the grid within half an interval of the camera's clock.
    fn snap(&mut self, raw: MonoNs) -> MonoNs {
        let steps = ((raw as f64 - self.last as f64) / self.interval)
            .round()
            .max(1.0);
        self.last += (steps * self.interval).round() as u64;
        self.slots += steps as u64;
        // Re-measured over a span long enough for jitter to average out.
        if self.slots >= 2 * WINDOW as u64 && raw > self.anchor {
            self.interval = (raw - self.anchor) as f64 / self.slots as f64;
        }
        self.last
    }
}

impl Retimer {
    /// Takes the next frame in decode order; appends to `out` the frames now ready.
    pub fn push(&mut self, frame: Frame, out: &mut Vec<Timed>) {
        self.unranked.push(Reverse(frame.time));
        self.pending.push_back(frame);
        while self.unranked.len() > WINDOW {
            self.rank_next();
        }
        // The reorder delay is measured once, over a window of final ranks.
        if self.delay.is_some() || self.ranked.len() >= WINDOW {
            self.emit(out);
        }
    }

    /// Appends every frame still held to `out`.
    pub fn finish(&mut self, out: &mut Vec<Timed>) {
        while !self.unranked.is_empty() {
            self.rank_next();
        }
        self.emit(out);
    }

    /// Fixes the rank of the smallest open presentation time and snaps it.
    fn rank_next(&mut self) {
        if self.grid.is_none() {
            let interval = initial_interval(&self.unranked).unwrap_or(FALLBACK_INTERVAL_NS);
            let Some(&Reverse(first)) = self.unranked.peek() else {
                return;
            };
            self.grid = Some(Grid {
                anchor: first,
                last: first,
                slots: 0,
                interval,
            });
            self.unranked.pop();
            self.ranked.push_back((first, first));
            return;
        }
        let (Some(grid), Some(Reverse(raw))) = (self.grid.as_mut(), self.unranked.pop()) else {
            return;
        };
        let snapped = grid.snap(raw);
        self.ranked.push_back((raw, snapped));
    }

    /// The snapped time of a ranked raw presentation time.
    fn snapped(&self, raw: MonoNs) -> Option<MonoNs> {
        let slices = self.ranked.as_slices();
        let find = |s: &[(MonoNs, MonoNs)]| {
            s.binary_search_by_key(&raw, |&(r, _)| r)
                .ok()
                .map(|i| s[i].1)
        };
        find(slices.0)
            .or_else(|| find(slices.1))
            // A frame reordered further than the window ranks out of order: search linearly.
            .or_else(|| {
                self.ranked
                    .iter()
                    .rev()
                    .find(|&&(r, _)| r == raw)
                    .map(|&(_, s)| s)
            })
    }

    /// The snapped presentation time of rank `rank`, once final.
    fn rank_time(&self, rank: usize) -> Option<MonoNs> {
        rank.checked_sub(self.first_rank)
            .and_then(|i| self.ranked.get(i))
            .map(|&(_, s)| s)
    }

    fn emit(&mut self, out: &mut Vec<Timed>) {
        while let Some(front) = self.pending.front() {
            let (Some(pts), Some(rank_time)) =
                (self.snapped(front.time), self.rank_time(self.emitted))
            else {
                break;
            };
            let delay = match self.delay {
                Some(delay) => delay,
                None => *self.delay.insert(self.reorder_delay()),
            };
            let mut dts = rank_time.saturating_sub(delay).min(pts);
            if let Some(last) = self.last_dts {
                dts = dts.max(last + MIN_STEP_NS);
            }
            self.last_dts = Some(dts);
            let duration = self
                .grid
                .as_ref()
                .map_or(FALLBACK_INTERVAL_NS, |g| g.interval) as u64;
            let Some(frame) = self.pending.pop_front() else {
                break;
            };
            out.push(Timed {
                frame,
                pts,
                dts,
                duration,
            });
            self.emitted += 1;
            // Frames still pending rank at most a window behind the decode position.
            while self.first_rank + 2 * WINDOW < self.emitted && self.ranked.len() > 1 {
                self.ranked.pop_front();
                self.first_rank += 1;
            }
        }
    }

    /// How far decode times must trail presentation times, from the frames held now: the
    /// most by which the time of a decode position exceeds its own frame's time.
    fn reorder_delay(&self) -> u64 {
        self.pending
            .iter()
            .enumerate()
            .filter_map(|(i, frame)| {
                let own = self.snapped(frame.time)?;
                let position = self.rank_time(self.emitted + i)?;
                Some(position.saturating_sub(own))
            })
            .max()
            .unwrap_or(0)
    }
}

/// The frame interval over the first window: the span divided into the fewest whole steps
/// that put every time near a grid point. Dividing by the number of gaps alone would be
/// thrown off by a missing frame, or by the window's last frame lying beyond a gap that a
/// B-frame not yet received will fill; the median gap alone, by jitter.
fn initial_interval(times: &BinaryHeap<Reverse<MonoNs>>) -> Option<f64> {
    let mut sorted: Vec<MonoNs> = times.iter().map(|&Reverse(t)| t).collect();
    sorted.sort_unstable();
    let (first, last) = (*sorted.first()?, *sorted.last()?);
    let span = (last - first) as f64;
    let gaps = sorted.len() - 1;
    if gaps == 0 || span == 0.0 {
        return None;
    }
    let mean_residual = |interval: f64| {
        let total: f64 = sorted
            .iter()
            .map(|&t| {
                let steps = (t - first) as f64 / interval;
                (steps - steps.round()).abs() * interval
            })
            .sum();
        total / sorted.len() as f64
    };
    (gaps..2 * gaps)
        .map(|steps| span / steps as f64)
        .find(|&interval| mean_residual(interval) < interval / 10.0)
        .or(Some(span / gaps as f64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gstreamer as gst;

    const FRAME: u64 = 66_666_667;
    const T0: u64 = 1_000_000_000_000;

    fn frame(time: u64) -> Frame {
        gst::init().unwrap();
        Frame {
            buffer: gst::Buffer::new(),
            time,
            keyframe: false,
        }
    }

    /// Retimes frames with these presentation times, given in decode order.
    fn retime(times: impl IntoIterator<Item = u64>) -> Vec<(u64, u64, u64)> {
        let mut retimer = Retimer::default();
        let mut out = Vec::new();
        for time in times {
            retimer.push(frame(time), &mut out);
        }
        retimer.finish(&mut out);
        out.iter().map(|t| (t.frame.time, t.pts, t.dts)).collect()
    }

    fn assert_valid(out: &[(u64, u64, u64)]) {
        for &(_, pts, dts) in out {
            assert!(dts <= pts, "dts {dts} after pts {pts}");
        }
        for w in out.windows(2) {
            assert!(w[1].2 > w[0].2, "dts not rising: {w:?}");
        }
        let mut pts: Vec<u64> = out.iter().map(|t| t.1).collect();
        pts.sort_unstable();
        pts.dedup();
        assert_eq!(pts.len(), out.len(), "presentation times collide");
    }

    /// Presentation times of an IBBP stream in decode order: I0 P3 B1 B2 P6 B4 B5 ...
    fn ibbp(n: u64) -> Vec<u64> {
        let mut order = vec![0];
        for base in (0..n).step_by(3) {
            order.extend([base + 3, base + 1, base + 2]);
        }
        order
    }

    #[test]
    fn on_grid_without_b_frames_times_are_kept() {
        let out = retime((0..100).map(|i| T0 + i * FRAME));
        assert_eq!(out.len(), 100);
        for &(raw, pts, dts) in &out {
            assert!(raw.abs_diff(pts) <= 2, "{raw} moved to {pts}");
            assert_eq!(pts, dts);
        }
    }

    #[test]
    fn jitter_is_snapped_to_the_grid() {
        // rtspsrc's skew correction wobbles times by a few milliseconds.
        let wobble = [0i64, 4, -3, 6, -5, 2, -1, 5, -4, 3];
        let out =
            retime((0..300).map(|i| {
                (T0 as i64 + i * FRAME as i64 + wobble[i as usize % 10] * 1_000_000) as u64
            }));
        assert_valid(&out);
        for w in out.windows(2) {
            let step = w[1].1 - w[0].1;
            assert!(
                step.abs_diff(FRAME) < 1_000_000,
                "step {step} is not one frame"
            );
        }
        // The grid stays with the camera's clock.
        let (raw, pts, _) = out[299];
        assert!(raw.abs_diff(pts) < FRAME / 2, "drifted: {raw} vs {pts}");
    }

    #[test]
    fn dropped_frames_leave_gaps_not_shifts() {
        let times: Vec<u64> = (0..60)
            .filter(|i| i % 7 != 3)
            .map(|i| T0 + i * FRAME)
            .collect();
        let out = retime(times.clone());
        assert_valid(&out);
        for (&raw, &(_, pts, _)) in times.iter().zip(&out) {
            assert!(raw.abs_diff(pts) <= 2);
        }
    }

    #[test]
    fn b_frames_get_decode_times_one_frame_behind() {
        let order = ibbp(60);
        let out = retime(order.iter().map(|&i| T0 + i * FRAME));
        assert_valid(&out);
        assert_eq!(out.len(), order.len());
        for (i, &(raw, pts, dts)) in out.iter().enumerate() {
            assert!(raw.abs_diff(pts) <= 2);
            let want = T0 + i as u64 * FRAME - FRAME;
            assert!(dts.abs_diff(want) <= 2, "frame {i}: dts {dts}, want {want}");
        }
    }

    #[test]
    fn jittered_b_frames_and_pyramids_stay_valid() {
        let wobble = [0i64, 3, -2, 5, -4, 1];
        let order = ibbp(90);
        let jittered = order.iter().enumerate().map(|(k, &i)| {
            (T0 as i64 + i as i64 * FRAME as i64 + wobble[k % 6] * 1_000_000) as u64
        });
        assert_valid(&retime(jittered));
        // I0 P4 B2 b1 b3 P8 ...: a B-pyramid reorders by two frames.
        let mut pyramid = vec![0];
        for base in (0..64).step_by(4) {
            pyramid.extend([base + 4, base + 2, base + 1, base + 3]);
        }
        assert_valid(&retime(pyramid.iter().map(|&i| T0 + i * FRAME)));
    }

    #[test]
    fn short_clips_are_written_whole() {
        assert_eq!(retime([T0]).len(), 1);
        assert_valid(&retime([T0, T0 + 2 * FRAME, T0 + FRAME]));
        // A camera repeating a timestamp still gets rising decode times.
        let out = retime([T0, T0, T0 + FRAME]);
        assert!(out.windows(2).all(|w| w[1].2 > w[0].2 && w[1].2 <= w[1].1));
    }
}
