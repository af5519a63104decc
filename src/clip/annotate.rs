//! Drawing what the detector saw onto a snapshot: a yellow box around each detection and its
//! label and score above it ("PERSON 91%"), so an officer sees at a glance what raised the
//! alert.
//!
//! It draws straight into the decoded I420 picture, before it is scaled and encoded, with a
//! built-in 5x7 bitmap font: no font files, no text-rendering plugin, the same result on every
//! box. Line width and letter size follow the picture's width.

use gstreamer as gst;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

use crate::detect::Detection;

/// A colour as Y, Cb, Cr (BT.601, limited range).
#[derive(Debug, Clone, Copy)]
struct Colour(u8, u8, u8);

const YELLOW: Colour = Colour(210, 16, 146);
const BLACK: Colour = Colour(16, 128, 128);

/// The 5x7 glyphs, one byte per row, the five low bits left to right. Letters are upper case
/// only; anything not here is drawn as a space.
const GLYPHS: [(char, [u8; 7]); 41] = [
    ('A', [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11]),
    ('B', [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E]),
    ('C', [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E]),
    ('D', [0x1E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1E]),
    ('E', [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F]),
    ('F', [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10]),
    ('G', [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F]),
    ('H', [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11]),
    ('I', [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E]),
    ('J', [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C]),
    ('K', [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11]),
    ('L', [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F]),
    ('M', [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11]),
    ('N', [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11]),
    ('O', [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E]),
    ('P', [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10]),
    ('Q', [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D]),
    ('R', [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11]),
    ('S', [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E]),
    ('T', [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04]),
    ('U', [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E]),
    ('V', [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04]),
    ('W', [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A]),
    ('X', [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11]),
    ('Y', [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04]),
    ('Z', [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F]),
    ('0', [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E]),
    ('1', [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E]),
    ('2', [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F]),
    ('3', [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E]),
    ('4', [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02]),
    ('5', [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E]),
    ('6', [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E]),
    ('7', [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08]),
    ('8', [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E]),
    ('9', [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C]),
    ('%', [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03]),
    ('-', [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00]),
    ('.', [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C]),
    ('_', [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F]),
    (' ', [0x00; 7]),
];

fn glyph(c: char) -> [u8; 7] {
    let c = c.to_ascii_uppercase();
    GLYPHS
        .iter()
        .find(|(g, _)| *g == c)
        .map_or([0; 7], |(_, rows)| *rows)
}

/// The three planes of an I420 picture.
struct Canvas<'a> {
    planes: [&'a mut [u8]; 4],
    strides: [usize; 3],
    width: usize,
    height: usize,
}

impl Canvas<'_> {
    /// Fills the rectangle `[x0, x1) x [y0, y1)`, clipped to the picture.
    fn fill(&mut self, x0: usize, y0: usize, x1: usize, y1: usize, colour: Colour) {
        let (x1, y1) = (x1.min(self.width), y1.min(self.height));
        if x0 >= x1 || y0 >= y1 {
            return;
        }
        for y in y0..y1 {
            self.planes[0][y * self.strides[0] + x0..y * self.strides[0] + x1].fill(colour.0);
        }
        // Chroma is half size both ways; a rectangle covers the chroma samples it overlaps.
        for y in y0 / 2..y1.div_ceil(2) {
            let (cx0, cx1) = (x0 / 2, x1.div_ceil(2));
            self.planes[1][y * self.strides[1] + cx0..y * self.strides[1] + cx1].fill(colour.1);
            self.planes[2][y * self.strides[2] + cx0..y * self.strides[2] + cx1].fill(colour.2);
        }
    }

    fn outline(&mut self, x0: usize, y0: usize, x1: usize, y1: usize, t: usize, colour: Colour) {
        self.fill(x0, y0, x1, y0 + t, colour);
        self.fill(x0, y1.saturating_sub(t), x1, y1, colour);
        self.fill(x0, y0, x0 + t, y1, colour);
        self.fill(x1.saturating_sub(t), y0, x1, y1, colour);
    }

    /// Writes `text` with its top left at `x, y`, each font pixel `s` x `s`.
    fn text(&mut self, text: &str, x: usize, y: usize, s: usize, colour: Colour) {
        for (i, c) in text.chars().enumerate() {
            let left = x + i * 6 * s;
            for (row, bits) in glyph(c).iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        let (px, py) = (left + col * s, y + row * s);
                        self.fill(px, py, px + s, py + s, colour);
                    }
                }
            }
        }
    }
}

/// Draws `detections` onto a copy of the I420 picture in `sample` and returns it.
pub fn draw(sample: &gst::Sample, detections: &[Detection]) -> Result<gst::Sample, String> {
    let caps = sample.caps().ok_or("a picture without caps")?;
    let info = gst_video::VideoInfo::from_caps(caps).map_err(|e| e.to_string())?;
    if info.format() != gst_video::VideoFormat::I420 {
        return Err(format!("cannot draw on {:?} pictures", info.format()));
    }
    let buffer = sample
        .buffer()
        .ok_or("a picture without a buffer")?
        .copy_deep()
        .map_err(|e| e.to_string())?;
    let mut frame = gst_video::VideoFrame::from_buffer_writable(buffer, &info)
        .map_err(|_| "cannot map the picture".to_owned())?;
    let (width, height) = (info.width() as usize, info.height() as usize);
    let stride = |i: usize| frame.plane_stride()[i] as usize;
    let strides = [stride(0), stride(1), stride(2)];
    let mut canvas = Canvas {
        planes: frame.planes_data_mut(),
        strides,
        width,
        height,
    };
    // About 2 px of line and 14 px letters at 640 wide; 4 and 28 at 1920.
    let t = (width / 400).max(2);
    let s = (width / 480).max(2);
    for d in detections {
        let x0 = (d.rect.x0.clamp(0.0, 1.0) * width as f32) as usize;
        let y0 = (d.rect.y0.clamp(0.0, 1.0) * height as f32) as usize;
        let x1 = (d.rect.x1.clamp(0.0, 1.0) * width as f32) as usize;
        let y1 = (d.rect.y1.clamp(0.0, 1.0) * height as f32) as usize;
        canvas.outline(x0, y0, x1, y1, t, YELLOW);
        let label = format!("{} {:.0}%", d.label, d.score * 100.0);
        let (label_w, label_h) = (label.chars().count() * 6 * s + s, 9 * s);
        // Above the box, or inside its top when the box touches the top of the picture.
        let top = if y0 >= label_h { y0 - label_h } else { y0 };
        let left = x0.min(width.saturating_sub(label_w));
        canvas.fill(left, top, left + label_w, top + label_h, YELLOW);
        canvas.text(&label, left + s, top + s, s, BLACK);
    }
    let buffer = frame.into_buffer();
    Ok(gst::Sample::builder()
        .buffer(&buffer)
        .caps(&caps.to_owned())
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Rect;

    fn grey(width: u32, height: u32) -> gst::Sample {
        gst::init().expect("GStreamer");
        let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::I420, width, height)
            .build()
            .expect("info");
        let mut buffer = gst::Buffer::with_size(info.size()).expect("buffer");
        buffer
            .get_mut()
            .expect("writable")
            .map_writable()
            .expect("map")
            .fill(128);
        gst::Sample::builder()
            .buffer(&buffer)
            .caps(&info.to_caps().expect("caps"))
            .build()
    }

    #[test]
    fn boxes_and_labels_land_where_the_detection_is() {
        let picture = grey(640, 360);
        let detection = Detection {
            label: "person".into(),
            score: 0.91,
            rect: Rect {
                x0: 0.25,
                y0: 0.5,
                x1: 0.5,
                y1: 1.0,
            },
            zone: None,
        };
        let drawn = draw(&picture, &[detection]).expect("draws");
        let map = drawn.buffer().expect("buffer").map_readable().expect("map");
        let luma = |x: usize, y: usize| map[y * 640 + x];
        assert_eq!(luma(160, 250), YELLOW.0, "left edge");
        assert_eq!(luma(200, 358), YELLOW.0, "bottom edge");
        assert_eq!(luma(240, 270), 128, "inside the box is untouched");
        assert_eq!(luma(10, 10), 128, "far away is untouched");
        // The label sits above the box: a yellow band with black letters.
        let band: Vec<u8> = (160..300).map(|x| luma(x, 180 - 9)).collect();
        assert!(
            band.contains(&YELLOW.0) && band.contains(&BLACK.0),
            "{band:?}"
        );
        // The original is left as it was.
        let original = picture
            .buffer()
            .expect("buffer")
            .map_readable()
            .expect("map");
        assert!(original.iter().all(|v| *v == 128));
    }
}
