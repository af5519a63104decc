//! The decode branch: encoded frames in, pictures ready for the model out.
//!
//! `appsrc ! <decoder> ! videorate drop-only ! videoscale ! videoconvert ! BGR ! appsink`.
//! Decoding is GStreamer's (the Pi's V4L2 decoder where it exists, libav otherwise), and so is
//! the scaling: frames are dropped to the detection rate before they are scaled, and scaled
//! before they are converted, so the expensive steps touch as few pixels as possible. The
//! Rust side receives BGR pictures already the size the model wants.
//!
//! The encoded frames are the ring's own buffers: pushing one shares its memory.

use std::path::{Path, PathBuf};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use super::yolox::Picture;
use crate::clock::MonoNs;
use crate::elements::{MissingElement, make};
use crate::ingest::ring::Frame;

/// Decoders to try per codec, best first: the hardware ones exist only on boxes that have
/// them.
const H264_DECODERS: [&str; 3] = ["v4l2slh264dec", "v4l2h264dec", "avdec_h264"];
const H265_DECODERS: [&str; 3] = ["v4l2slh265dec", "v4l2h265dec", "avdec_h265"];

/// Encoded frames queued in the branch beyond which it is behind: a Pi can decode a
/// substream many times faster than real time, so a backlog this long means it is starved.
pub const MAX_BACKLOG: u64 = 30;

/// The size a `width` x `height` picture (with pixel aspect `par`) is scaled to so that it
/// fits a `fit_w` x `fit_h` model input with its shape kept: YOLOX's letterbox scale.
pub fn fitted_size(width: u32, height: u32, par: gst::Fraction, fit: (usize, usize)) -> (u32, u32) {
    let shown = width as f64 * par.numer() as f64 / par.denom().max(1) as f64;
    let r = (fit.0 as f64 / shown).min(fit.1 as f64 / height as f64);
    let w = ((shown * r).floor() as u32).clamp(2, fit.0 as u32);
    let h = ((height as f64 * r).floor() as u32).clamp(2, fit.1 as u32);
    (w, h)
}

/// Why the decode branch, or a still picture, gave no picture.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// A GStreamer element is not installed.
    #[error(transparent)]
    Missing(#[from] MissingElement),
    /// The ring holds something other than H.264 or H.265.
    #[error("cannot decode {0} for detection")]
    Unsupported(String),
    /// None of the decoders for the codec is installed.
    #[error("no decoder for detection ({0}): run scripts/setup.sh to install gstreamer1.0-libav")]
    NoDecoder(String),
    /// The configured detection rate cannot be a frame rate.
    #[error("{0} frames per second is not a usable rate")]
    Rate(f64),
    /// The branch's elements could not be put together.
    #[error("the decode branch could not be built: {0}")]
    Build(#[from] gst::glib::BoolError),
    /// The branch could not start.
    #[error("the decode branch could not start: {0}")]
    Start(#[from] gst::StateChangeError),
    /// The decoder took no more frames.
    #[error("the decoder refused a frame: {0:?}")]
    Refused(gst::FlowError),
    /// The decoder reported an error.
    #[error("decoding for detection failed: {0}")]
    Failed(String),
    /// A picture the model cannot take.
    #[error("{0}")]
    Picture(String),
    /// An image file gave no picture.
    #[error("{path}: {what}")]
    Still {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        what: String,
    },
}

/// Adds `[videorate ! capsfilter] ! videoscale ! videoconvert ! capsfilter` to `pipeline`,
/// ending in BGR pictures that fit `fit`. Returns the first and last elements.
fn add_scaler(
    pipeline: &gst::Pipeline,
    fps: Option<f64>,
    fit: (usize, usize),
) -> Result<(gst::Element, gst::Element), DecodeError> {
    let mut chain = Vec::new();
    if let Some(fps) = fps {
        let rate = gst::Fraction::approximate_f64(fps).ok_or(DecodeError::Rate(fps))?;
        let videorate = make("videorate")?;
        videorate.set_property("drop-only", true);
        chain.push(videorate);
        let capsfilter = make("capsfilter")?;
        capsfilter.set_property(
            "caps",
            gst::Caps::builder("video/x-raw")
                .field("framerate", rate)
                .build(),
        );
        chain.push(capsfilter);
    }
    let scale = make("videoscale")?;
    let convert = make("videoconvert")?;
    let output = make("capsfilter")?;
    output.set_property(
        "caps",
        gst::Caps::builder("video/x-raw")
            .field("format", "BGR")
            .build(),
    );
    // The output size depends on the input's, known only when the decoder announces it (and
    // again whenever the camera changes resolution): set it as the caps go by.
    let filter = output.clone();
    let sink = scale
        .static_pad("sink")
        .ok_or_else(|| DecodeError::Picture("videoscale without a sink pad".to_owned()))?;
    sink.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
        if let Some(gst::PadProbeData::Event(event)) = &info.data
            && let gst::EventView::Caps(caps) = event.view()
            && let Ok(input) = gst_video::VideoInfo::from_caps(caps.caps())
        {
            let (w, h) = fitted_size(input.width(), input.height(), input.par(), fit);
            filter.set_property(
                "caps",
                gst::Caps::builder("video/x-raw")
                    .field("format", "BGR")
                    .field("width", w as i32)
                    .field("height", h as i32)
                    .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
                    .build(),
            );
        }
        gst::PadProbeReturn::Ok
    });
    chain.extend([scale, convert, output]);
    pipeline.add_many(&chain)?;
    gst::Element::link_many(&chain)?;
    Ok((chain[0].clone(), chain[chain.len() - 1].clone()))
}

fn add_appsink(
    pipeline: &gst::Pipeline,
    after: &gst::Element,
    on_picture: Option<Box<dyn FnMut(gst::Sample) + Send>>,
) -> Result<gst_app::AppSink, DecodeError> {
    let appsink = gst_app::AppSink::builder()
        .sync(false)
        .max_buffers(1)
        .drop(true)
        .build();
    pipeline.add(&appsink)?;
    after.link(&appsink)?;
    if let Some(mut on_picture) = on_picture {
        appsink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    if let Ok(sample) = sink.pull_sample() {
                        on_picture(sample);
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
    }
    Ok(appsink)
}

/// A running decode branch for one run of a camera (one set of caps).
#[derive(Debug)]
pub struct DecodeBranch {
    pipeline: gst::Pipeline,
    appsrc: gst_app::AppSrc,
    /// The first frame's time: pictures are timed from it.
    base: Option<MonoNs>,
    /// The decoder in use, for status.
    decoder: String,
}

impl DecodeBranch {
    /// Starts decoding frames of `caps` (H.264 or H.265 as the ring holds them), handing each
    /// picture at `fps` to `on_picture`, scaled to fit `fit`.
    pub fn start(
        caps: &gst::Caps,
        fps: f64,
        fit: (usize, usize),
        on_picture: impl FnMut(gst::Sample) + Send + 'static,
    ) -> Result<DecodeBranch, DecodeError> {
        let candidates: &[&str] = match caps.structure(0).map(|s| s.name().as_str()) {
            Some("video/x-h264") => &H264_DECODERS,
            Some("video/x-h265") => &H265_DECODERS,
            other => {
                return Err(DecodeError::Unsupported(
                    other.unwrap_or("unknown caps").to_owned(),
                ));
            }
        };
        let decoder_name = candidates
            .iter()
            .find(|name| gst::ElementFactory::find(name).is_some())
            .ok_or_else(|| DecodeError::NoDecoder(candidates.join(", ")))?;
        let decoder = make(decoder_name)?;
        let pipeline = gst::Pipeline::with_name("detect");
        let appsrc = gst_app::AppSrc::builder()
            .caps(caps)
            .format(gst::Format::Time)
            .is_live(true)
            .build();
        pipeline.add_many([appsrc.upcast_ref(), &decoder])?;
        appsrc.link(&decoder)?;
        let (first, last) = add_scaler(&pipeline, Some(fps), fit)?;
        decoder.link(&first)?;
        add_appsink(&pipeline, &last, Some(Box::new(on_picture)))?;
        pipeline.set_state(gst::State::Playing)?;
        Ok(DecodeBranch {
            pipeline,
            appsrc,
            base: None,
            decoder: (*decoder_name).to_owned(),
        })
    }

    /// The decoder element in use.
    pub fn decoder(&self) -> &str {
        &self.decoder
    }

    /// Queues one encoded frame, in decode order. Shares the payload.
    pub fn push(&mut self, frame: &Frame) -> Result<(), DecodeError> {
        let base = *self.base.get_or_insert(frame.time);
        let mut buffer = frame.buffer.clone();
        {
            let buffer = buffer.make_mut();
            buffer.set_pts(gst::ClockTime::from_nseconds(
                frame.time.saturating_sub(base),
            ));
            buffer.set_dts(gst::ClockTime::NONE);
        }
        self.appsrc
            .push_buffer(buffer)
            .map(|_| ())
            .map_err(DecodeError::Refused)
    }

    /// Encoded frames waiting to be decoded.
    pub fn backlog(&self) -> u64 {
        self.appsrc.current_level_buffers()
    }

    /// The first error the branch reported, if any.
    pub fn error(&self) -> Option<DecodeError> {
        let bus = self.pipeline.bus()?;
        while let Some(message) = bus.pop_filtered(&[gst::MessageType::Error]) {
            if let gst::MessageView::Error(e) = message.view() {
                return Some(DecodeError::Failed(e.error().to_string()));
            }
        }
        None
    }
}

impl Drop for DecodeBranch {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Runs `f` on the BGR picture in `sample`.
pub fn with_picture<R>(
    sample: &gst::Sample,
    f: impl FnOnce(&Picture) -> R,
) -> Result<R, DecodeError> {
    let bad = |what: String| DecodeError::Picture(what);
    let caps = sample
        .caps()
        .ok_or_else(|| bad("a picture without caps".into()))?;
    let info = gst_video::VideoInfo::from_caps(caps).map_err(|e| bad(e.to_string()))?;
    if info.format() != gst_video::VideoFormat::Bgr {
        return Err(bad(format!(
            "expected BGR pictures, got {:?}",
            info.format()
        )));
    }
    let buffer = sample
        .buffer()
        .ok_or_else(|| bad("a picture without a buffer".into()))?;
    let map = buffer.map_readable().map_err(|e| bad(e.to_string()))?;
    let picture = Picture {
        data: map.as_slice(),
        width: info.width() as usize,
        height: info.height() as usize,
        stride: info.stride()[0] as usize,
    };
    Ok(f(&picture))
}

/// Decodes an image file (PNG, JPEG ...) and scales it as the decode branch scales camera
/// pictures: for tests, and for checking a model on a known picture.
pub fn load_still(path: &Path, fit: (usize, usize)) -> Result<gst::Sample, DecodeError> {
    let still = |what: &str| DecodeError::Still {
        path: path.to_owned(),
        what: what.to_owned(),
    };
    if !path.is_file() {
        return Err(still("no such file"));
    }
    let pipeline = gst::Pipeline::with_name("still");
    let source = make("filesrc")?;
    source.set_property("location", path.to_string_lossy().as_ref());
    let decode = make("decodebin")?;
    pipeline.add_many([&source, &decode])?;
    source.link(&decode)?;
    let (first, last) = add_scaler(&pipeline, None, fit)?;
    let appsink = add_appsink(&pipeline, &last, None)?;
    decode.connect_pad_added(move |_, pad| {
        if let Some(sink) = first.static_pad("sink")
            && !sink.is_linked()
        {
            let _ = pad.link(&sink);
        }
    });
    let result = pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| still(&format!("cannot decode: {e}")))
        .and_then(|_| {
            appsink
                .try_pull_preroll(gst::ClockTime::from_seconds(10))
                .ok_or_else(|| still("no picture decoded"))
        });
    let _ = pipeline.set_state(gst::State::Null);
    result
}
