//! The motion gate: a cheap frame difference that lets an unchanging picture skip inference.
//!
//! A sparse grid of brightness samples (every 4th pixel of every 4th row) is compared with the
//! samples of the last picture the model ran on. The picture has changed when enough samples
//! moved by more than sensor noise. Comparing with the last inference, not the last frame,
//! catches slow changes too: a person creeping in changes the picture a little per frame but
//! a lot since the model last looked. Inference is forced now and then regardless, so a
//! person standing still in view is still seen by the persistence rule.

use std::time::Duration;

use super::yolox::Picture;
use crate::clock::MonoNs;

/// Sample spacing in pixels, both ways.
const STEP: usize = 4;
/// A brightness change (0-255) larger than compression noise and sensor flicker.
const THRESHOLD: i16 = 24;
/// The share of samples that must change: 0.1 %, about a hand at the far side of a 416 px
/// picture.
const CHANGED_SHARE: f64 = 0.001;
/// At least this many samples, so a few noisy pixels in a small picture do not count.
const MIN_CHANGED: usize = 4;
/// The longest the model goes without looking.
pub const FORCE_EVERY: Duration = Duration::from_secs(10);

/// What the gate decided for one picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Run the model.
    Infer,
    /// The picture has not changed since the model last ran.
    Skip,
}

/// The reference samples of one camera. Its buffer is reused; it grows only when the picture
/// size changes.
#[derive(Debug, Default)]
pub struct MotionGate {
    reference: Vec<u8>,
    size: (usize, usize),
    last_inference: Option<MonoNs>,
}

impl MotionGate {
    /// Decides whether `picture`, seen at `now`, needs the model. When it does, the picture
    /// becomes the new reference.
    pub fn check(&mut self, picture: &Picture, now: MonoNs) -> Gate {
        let size = (picture.width, picture.height);
        let forced = self
            .last_inference
            .is_none_or(|t| now.saturating_sub(t) >= FORCE_EVERY.as_nanos() as u64);
        if size != self.size || forced {
            self.size = size;
            self.reference.clear();
            samples(picture, |v| self.reference.push(v));
            self.last_inference = Some(now);
            return Gate::Infer;
        }
        let mut changed = 0usize;
        let mut i = 0usize;
        samples(picture, |v| {
            if (v as i16 - self.reference[i] as i16).abs() > THRESHOLD {
                changed += 1;
            }
            i += 1;
        });
        let needed = ((self.reference.len() as f64 * CHANGED_SHARE) as usize).max(MIN_CHANGED);
        if changed < needed {
            return Gate::Skip;
        }
        let mut i = 0usize;
        let reference = &mut self.reference;
        samples(picture, |v| {
            reference[i] = v;
            i += 1;
        });
        self.last_inference = Some(now);
        Gate::Infer
    }
}

/// Calls `f` with the brightness of each sampled pixel, in a fixed order.
fn samples(picture: &Picture, mut f: impl FnMut(u8)) {
    for y in (0..picture.height).step_by(STEP) {
        let row = &picture.data[y * picture.stride..][..picture.width * 3];
        for px in row.chunks_exact(3).step_by(STEP) {
            // (B + 2G + R) / 4: close enough to luma for spotting change.
            let v = (px[0] as u16 + 2 * px[1] as u16 + px[2] as u16) / 4;
            f(v as u8);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn picture(data: &[u8], width: usize, height: usize) -> Picture<'_> {
        Picture {
            data,
            width,
            height,
            stride: width * 3,
        }
    }

    #[test]
    fn an_unchanged_picture_is_skipped_until_forced() {
        let data = vec![100u8; 64 * 48 * 3];
        let mut gate = MotionGate::default();
        assert_eq!(gate.check(&picture(&data, 64, 48), 0), Gate::Infer);
        assert_eq!(gate.check(&picture(&data, 64, 48), SECOND), Gate::Skip);
        assert_eq!(gate.check(&picture(&data, 64, 48), 9 * SECOND), Gate::Skip);
        assert_eq!(
            gate.check(&picture(&data, 64, 48), 10 * SECOND),
            Gate::Infer
        );
    }

    #[test]
    fn noise_is_not_motion_but_an_object_is() {
        let mut data = vec![100u8; 64 * 48 * 3];
        let mut gate = MotionGate::default();
        gate.check(&picture(&data, 64, 48), 0);
        // Flicker everywhere below the threshold.
        data.iter_mut().for_each(|v| *v = 110);
        assert_eq!(gate.check(&picture(&data, 64, 48), SECOND), Gate::Skip);
        // A bright 8x8 square.
        for y in 8..16 {
            data[y * 64 * 3 + 8 * 3..y * 64 * 3 + 16 * 3].fill(250);
        }
        assert_eq!(gate.check(&picture(&data, 64, 48), 2 * SECOND), Gate::Infer);
        // Now the reference: the same picture again is still.
        assert_eq!(gate.check(&picture(&data, 64, 48), 3 * SECOND), Gate::Skip);
    }

    #[test]
    fn a_new_size_always_infers() {
        let data = vec![100u8; 64 * 48 * 3];
        let mut gate = MotionGate::default();
        gate.check(&picture(&data, 64, 48), 0);
        assert_eq!(gate.check(&picture(&data, 48, 64), SECOND), Gate::Infer);
    }
}
