//! YOLOX's pre- and post-processing: filling the input tensor from a scaled picture, decoding
//! the output grid into boxes, and non-maximum suppression.
//!
//! GStreamer has already scaled the picture by `r = min(W / w, H / h)` (so it fits the model's
//! W x H input, aspect kept); it sits at the top-left of the input and the rest is 114, as the
//! model was trained. Pixels of the picture are therefore pixels of the input, and a box
//! divided by the picture's size is a box in the camera's picture, normalised to 0..1.
//!
//! Everything here works in buffers owned by the caller and reused frame after frame.

use alertclip_wire::Rect;

/// The value YOLOX pads its letterbox with.
pub const PAD: f32 = 114.0;
/// YOLOX's output strides, in the order of its output rows.
pub const STRIDES: [usize; 3] = [8, 16, 32];
/// Boxes of one class overlapping more than this are one object (YOLOX's own default).
pub const NMS_IOU: f32 = 0.45;

/// A picture or an output that does not match the model's shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    /// The picture is empty, or larger than the model's input.
    #[error(
        "a {width}x{height} picture does not fit the model's {input_width}x{input_height} input"
    )]
    PictureSize {
        /// The picture's width.
        width: usize,
        /// The picture's height.
        height: usize,
        /// The model's input width.
        input_width: usize,
        /// The model's input height.
        input_height: usize,
    },
    /// The picture's buffer is shorter than its size says.
    #[error("the picture's buffer is shorter than its size")]
    ShortPicture,
    /// The input tensor is not the model's.
    #[error("the input tensor does not match the model")]
    Input,
    /// The model's output is not the grid YOLOX gives.
    #[error("the model's output holds {got} values, expected {rows} rows of {row_len}")]
    Output {
        /// Values found.
        got: usize,
        /// Rows expected.
        rows: usize,
        /// Values per row.
        row_len: usize,
    },
}

/// A decoded picture ready for the model: packed BGR, at most the model's input size.
#[derive(Debug, Clone, Copy)]
pub struct Picture<'a> {
    /// Rows of `width` BGR pixels, `stride` bytes apart.
    pub data: &'a [u8],
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Bytes from one row to the next.
    pub stride: usize,
}

/// One object the model found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Found {
    /// Index into the model's classes.
    pub class: usize,
    /// Objectness times class score.
    pub score: f32,
    /// Where, normalised.
    pub rect: Rect,
}

/// The shape of a YOLOX model's input and output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Input width in pixels.
    pub width: usize,
    /// Input height in pixels.
    pub height: usize,
    /// Number of classes.
    pub classes: usize,
}

impl Layout {
    /// Output rows: one per cell of each stride's grid.
    pub fn rows(&self) -> usize {
        STRIDES
            .iter()
            .map(|s| (self.width / s) * (self.height / s))
            .sum()
    }

    /// Values per output row: box (4), objectness, then one score per class.
    pub fn row_len(&self) -> usize {
        5 + self.classes
    }

    /// Values in the input tensor.
    pub fn input_len(&self) -> usize {
        3 * self.width * self.height
    }
}

/// The input tensor and what was last written to it, so that the padding is written only
/// when the picture's size changes.
#[derive(Debug)]
pub struct Input {
    layout: Layout,
    /// Width and height of the last picture written.
    filled: Option<(usize, usize)>,
}

impl Input {
    /// An input for `layout`; the tensor is filled on first use.
    pub fn new(layout: Layout) -> Input {
        Input {
            layout,
            filled: None,
        }
    }

    /// Writes `picture` into `tensor` (planar B, G, R as f32 0-255) at the top left, padding
    /// the rest with 114. Does not allocate.
    pub fn fill(&mut self, tensor: &mut [f32], picture: &Picture) -> Result<(), ShapeError> {
        let Layout { width, height, .. } = self.layout;
        if picture.width == 0
            || picture.height == 0
            || picture.width > width
            || picture.height > height
        {
            return Err(ShapeError::PictureSize {
                width: picture.width,
                height: picture.height,
                input_width: width,
                input_height: height,
            });
        }
        if picture.stride < picture.width * 3
            || picture.data.len() < picture.stride * (picture.height - 1) + picture.width * 3
        {
            return Err(ShapeError::ShortPicture);
        }
        if tensor.len() != self.layout.input_len() {
            return Err(ShapeError::Input);
        }
        if self.filled != Some((picture.width, picture.height)) {
            tensor.fill(PAD);
            self.filled = Some((picture.width, picture.height));
        }
        let plane = width * height;
        let (blue, rest) = tensor.split_at_mut(plane);
        let (green, red) = rest.split_at_mut(plane);
        for y in 0..picture.height {
            let row = &picture.data[y * picture.stride..][..picture.width * 3];
            let at = y * width;
            let b = &mut blue[at..at + picture.width];
            let g = &mut green[at..at + picture.width];
            let r = &mut red[at..at + picture.width];
            for (x, px) in row.chunks_exact(3).enumerate() {
                b[x] = px[0] as f32;
                g[x] = px[1] as f32;
                r[x] = px[2] as f32;
            }
        }
        Ok(())
    }
}

/// A class to look for and the lowest score that counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Wanted {
    /// Index into the model's classes.
    pub class: usize,
    /// Lowest objectness x class score reported.
    pub min_score: f32,
}

/// Decodes the model's output for a `width` x `height` picture into `out` (cleared first):
/// boxes of the wanted classes scoring at least their threshold, after per-class NMS, best
/// first.
pub fn decode(
    output: &[f32],
    layout: &Layout,
    picture: (usize, usize),
    wanted: &[Wanted],
    out: &mut Vec<Found>,
) -> Result<(), ShapeError> {
    out.clear();
    let row_len = layout.row_len();
    if output.len() != layout.rows() * row_len {
        return Err(ShapeError::Output {
            got: output.len(),
            rows: layout.rows(),
            row_len,
        });
    }
    let Some(floor) = wanted.iter().map(|w| w.min_score).reduce(f32::min) else {
        return Ok(());
    };
    let (pw, ph) = (picture.0 as f32, picture.1 as f32);
    let mut rows = output.chunks_exact(row_len);
    for stride in STRIDES {
        let grid_w = layout.width / stride;
        let cells = grid_w * (layout.height / stride);
        let s = stride as f32;
        for (cell, row) in rows.by_ref().take(cells).enumerate() {
            let objectness = row[4];
            // A class score is at most 1, so no class can reach the floor below it.
            if objectness < floor {
                continue;
            }
            for w in wanted {
                let score = objectness * row[5 + w.class];
                if score < w.min_score {
                    continue;
                }
                let cx = (row[0] + (cell % grid_w) as f32) * s;
                let cy = (row[1] + (cell / grid_w) as f32) * s;
                let half_w = row[2].exp() * s / 2.0;
                let half_h = row[3].exp() * s / 2.0;
                out.push(Found {
                    class: w.class,
                    score,
                    rect: Rect {
                        x0: ((cx - half_w) / pw).clamp(0.0, 1.0),
                        y0: ((cy - half_h) / ph).clamp(0.0, 1.0),
                        x1: ((cx + half_w) / pw).clamp(0.0, 1.0),
                        y1: ((cy + half_h) / ph).clamp(0.0, 1.0),
                    },
                });
            }
        }
    }
    suppress(out, NMS_IOU);
    Ok(())
}

/// Greedy per-class non-maximum suppression, in place; leaves the survivors best first.
pub fn suppress(found: &mut Vec<Found>, iou: f32) {
    found.sort_unstable_by(|a, b| a.class.cmp(&b.class).then(b.score.total_cmp(&a.score)));
    let mut kept = 0;
    for i in 0..found.len() {
        let candidate = found[i];
        // Everything kept so far of the same class scores higher.
        if found[..kept]
            .iter()
            .all(|k| k.class != candidate.class || k.rect.iou(&candidate.rect) <= iou)
        {
            found[kept] = candidate;
            kept += 1;
        }
    }
    found.truncate(kept);
    found.sort_unstable_by(|a, b| b.score.total_cmp(&a.score));
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAYOUT: Layout = Layout {
        width: 64,
        height: 32,
        classes: 3,
    };

    /// An output with one confident cell.
    fn output_with(stride: usize, gx: usize, gy: usize, row: [f32; 8]) -> Vec<f32> {
        let mut out = vec![0.0; LAYOUT.rows() * LAYOUT.row_len()];
        let mut base = 0;
        for s in STRIDES {
            let grid_w = LAYOUT.width / s;
            if s == stride {
                let at = (base + gy * grid_w + gx) * LAYOUT.row_len();
                out[at..at + 8].copy_from_slice(&row);
                break;
            }
            base += grid_w * (LAYOUT.height / s);
        }
        out
    }

    #[test]
    fn the_input_is_planar_bgr_at_the_top_left_padded_with_114() {
        let layout = Layout {
            width: 4,
            height: 3,
            classes: 1,
        };
        // A 2x2 picture with a stride of 8 bytes: pixel (x, y) = (10x+y, 100+x, 200+y).
        let mut data = vec![0u8; 16];
        for y in 0..2 {
            for x in 0..2 {
                data[y * 8 + x * 3..][..3].copy_from_slice(&[
                    (10 * x + y) as u8,
                    (100 + x) as u8,
                    (200 + y) as u8,
                ]);
            }
        }
        let picture = Picture {
            data: &data,
            width: 2,
            height: 2,
            stride: 8,
        };
        let mut tensor = vec![0.0; layout.input_len()];
        let mut input = Input::new(layout);
        input.fill(&mut tensor, &picture).unwrap();
        let at = |c: usize, x: usize, y: usize| tensor[c * 12 + y * 4 + x];
        assert_eq!(
            (at(0, 1, 1), at(1, 1, 1), at(2, 1, 1)),
            (11.0, 101.0, 201.0)
        );
        assert_eq!((at(0, 0, 1), at(2, 0, 0)), (1.0, 200.0));
        assert_eq!((at(0, 2, 0), at(1, 3, 2), at(2, 0, 2)), (PAD, PAD, PAD));
        let too_big = Picture {
            width: 5,
            ..picture
        };
        assert!(input.fill(&mut tensor, &too_big).is_err());
    }

    #[test]
    fn a_cell_decodes_to_its_box_normalised_to_the_picture() {
        // Stride 16, cell (2, 1): centre ((0.5 + 2) 16, (0.5 + 1) 16) = (40, 24); size
        // e^0 16 = 16 by e^ln2 16 = 32. Objectness 0.9, class 1 scores 0.8.
        let output = output_with(16, 2, 1, [0.5, 0.5, 0.0, 2f32.ln(), 0.9, 0.1, 0.8, 0.2]);
        let mut found = Vec::new();
        let wanted = [Wanted {
            class: 1,
            min_score: 0.5,
        }];
        decode(&output, &LAYOUT, (64, 32), &wanted, &mut found).unwrap();
        assert_eq!(found.len(), 1);
        let f = found[0];
        assert_eq!(f.class, 1);
        assert!((f.score - 0.72).abs() < 1e-6);
        let expected = Rect {
            x0: 32.0 / 64.0,
            y0: 8.0 / 32.0,
            x1: 48.0 / 64.0,
            y1: 1.0, // 40 / 32, clamped to the picture
        };
        assert!(f.rect.iou(&expected) > 0.999, "{:?}", f.rect);
        // Class 0 scores 0.09 and class 2 0.18: not wanted, or below the threshold.
        let everything = [0, 2].map(|class| Wanted {
            class,
            min_score: 0.5,
        });
        decode(&output, &LAYOUT, (64, 32), &everything, &mut found).unwrap();
        assert!(found.is_empty());
    }

    #[test]
    fn overlapping_boxes_of_one_class_are_merged_and_of_two_classes_kept() {
        let r = |x0: f32| Rect {
            x0,
            y0: 0.0,
            x1: x0 + 0.5,
            y1: 0.5,
        };
        let mut found = vec![
            Found {
                class: 0,
                score: 0.6,
                rect: r(0.02),
            },
            Found {
                class: 0,
                score: 0.9,
                rect: r(0.0),
            },
            Found {
                class: 1,
                score: 0.7,
                rect: r(0.0),
            },
            Found {
                class: 0,
                score: 0.8,
                rect: r(0.5),
            },
        ];
        suppress(&mut found, NMS_IOU);
        let kept: Vec<(usize, f32)> = found.iter().map(|f| (f.class, f.score)).collect();
        assert_eq!(kept, vec![(0, 0.9), (0, 0.8), (1, 0.7)]);
    }

    #[test]
    fn a_wrong_sized_output_is_refused() {
        let mut found = Vec::new();
        let wanted = [Wanted {
            class: 0,
            min_score: 0.5,
        }];
        let error = decode(&[0.0; 10], &LAYOUT, (64, 32), &wanted, &mut found).unwrap_err();
        assert!(
            matches!(error, ShapeError::Output { got: 10, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("expected"), "{error}");
    }
}
