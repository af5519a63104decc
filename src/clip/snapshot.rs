//! Snapshots: the frame nearest a trigger, decoded from the ring on demand and encoded as a
//! JPEG small enough to publish in one message.
//!
//! Only this path decodes video, and only when an event asks for it: from the last keyframe at
//! or before the trigger up to the frame nearest it. The picture is scaled to at most 1280
//! pixels wide, and made smaller or more compressed until it fits the size given.

use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::clock::MonoNs;
use crate::detect::Detection;
use crate::elements::{MissingElement, make};
use crate::ingest::camera::{CameraFeed, codec_name};
use crate::ingest::ring::Frame;

/// Widths and JPEG qualities tried in turn until the picture fits.
const ATTEMPTS: [(i32, i32); 5] = [(1280, 85), (1280, 70), (960, 70), (640, 60), (480, 50)];
/// How long decoding or encoding may take before the snapshot is given up.
const STAGE_TIMEOUT: Duration = Duration::from_secs(20);

/// Why no snapshot could be made.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The ring holds no frame of this camera.
    #[error("no video buffered")]
    NoVideo,
    /// A GStreamer element is not installed.
    #[error(transparent)]
    MissingElement(#[from] MissingElement),
    /// Decoding or encoding failed.
    #[error("{0}")]
    Pipeline(String),
    /// Delivery could not take it.
    #[error("cannot spool the snapshot: {0}")]
    Spool(#[source] std::io::Error),
    /// Even the smallest picture is larger than allowed.
    #[error("even a {0}-byte JPEG is over the {1}-byte limit")]
    TooLarge(usize, usize),
}

/// A JPEG of the frame nearest `at`, at most `max_bytes` long, with `detections` drawn on it.
/// Blocking: call it off the async runtime.
pub fn capture(
    feed: &CameraFeed,
    at: MonoNs,
    max_bytes: usize,
    detections: &[Detection],
) -> Result<Vec<u8>, SnapshotError> {
    let (caps, frames) = frames_up_to(feed, at).ok_or(SnapshotError::NoVideo)?;
    let mut raw = decode_last(&caps, &frames)?;
    if !detections.is_empty() {
        // A snapshot without boxes is better than none.
        match crate::clip::annotate::draw(&raw, detections) {
            Ok(drawn) => raw = drawn,
            Err(error) => tracing::warn!(%error, "detections not drawn on the snapshot"),
        }
    }
    let (width, height) = raw
        .caps()
        .and_then(|c| {
            c.structure(0)
                .and_then(|s| Some((s.get::<i32>("width").ok()?, s.get::<i32>("height").ok()?)))
        })
        .ok_or_else(|| SnapshotError::Pipeline("decoded picture without a size".into()))?;
    let mut smallest = usize::MAX;
    for (max_width, quality) in ATTEMPTS {
        let scaled_width = width.min(max_width);
        // Even dimensions, as JPEG's chroma subsampling wants.
        let scaled_height =
            ((height as i64 * scaled_width as i64 / width.max(1) as i64) as i32 / 2 * 2).max(2);
        let jpeg = encode(&raw, scaled_width / 2 * 2, scaled_height, quality)?;
        if jpeg.len() <= max_bytes {
            return Ok(jpeg);
        }
        smallest = smallest.min(jpeg.len());
    }
    Err(SnapshotError::TooLarge(smallest, max_bytes))
}

/// The caps and frames from the last keyframe at or before `at` through the last frame not
/// after it (or, when the camera only started after `at`, its first keyframe).
fn frames_up_to(feed: &CameraFeed, at: MonoNs) -> Option<(gst::Caps, Vec<Frame>)> {
    let ring = feed.ring();
    let cut = ring.start_cut(at, at)?;
    let mut frames = Vec::new();
    let mut cursor = cut.cursor;
    ring.read(&mut cursor, at, &mut frames);
    if frames.is_empty() {
        let mut cursor = cut.cursor;
        ring.read(&mut cursor, MonoNs::MAX, &mut frames);
        frames.truncate(1);
    }
    (!frames.is_empty()).then_some((cut.caps, frames))
}

/// Decodes the frames and returns the last picture, raw.
fn decode_last(caps: &gst::Caps, frames: &[Frame]) -> Result<gst::Sample, SnapshotError> {
    let decoder = match codec_name(caps) {
        Some("h265") => "avdec_h265",
        _ => "avdec_h264",
    };
    let pipeline = gst::Pipeline::new();
    let src = gst_app::AppSrc::builder()
        .caps(caps)
        .format(gst::Format::Time)
        .build();
    let decode = make(decoder)?;
    let convert = make("videoconvert")?;
    // Only the last picture is wanted: the sink keeps one and drops the rest.
    let sink = gst_app::AppSink::builder()
        .caps(
            &gst::Caps::builder("video/x-raw")
                .field("format", "I420")
                .build(),
        )
        .sync(false)
        .max_buffers(1)
        .drop(true)
        // Otherwise the end of stream waits for the kept picture to be pulled.
        .wait_on_eos(false)
        .build();
    add_and_link(
        &pipeline,
        &[src.upcast_ref(), &decode, &convert, sink.upcast_ref()],
    )?;
    let origin = frames[0].time;
    run(&pipeline, || {
        for frame in frames {
            let mut buffer = frame.buffer.clone();
            buffer.make_mut().set_pts(gst::ClockTime::from_nseconds(
                frame.time.saturating_sub(origin),
            ));
            src.push_buffer(buffer)
                .map_err(|e| SnapshotError::Pipeline(format!("decoder refused a frame: {e:?}")))?;
        }
        let _ = src.end_of_stream();
        Ok(())
    })?;
    let sample = sink
        .try_pull_sample(gst::ClockTime::ZERO)
        .or_else(|| sink.try_pull_preroll(gst::ClockTime::ZERO));
    let _ = pipeline.set_state(gst::State::Null);
    sample.ok_or_else(|| SnapshotError::Pipeline("the decoder produced no picture".into()))
}

/// Scales and encodes one raw picture.
fn encode(
    raw: &gst::Sample,
    width: i32,
    height: i32,
    quality: i32,
) -> Result<Vec<u8>, SnapshotError> {
    let caps = raw
        .caps_owned()
        .ok_or_else(|| SnapshotError::Pipeline("picture without caps".into()))?;
    let buffer = raw
        .buffer_owned()
        .ok_or_else(|| SnapshotError::Pipeline("picture without data".into()))?;
    let pipeline = gst::Pipeline::new();
    let src = gst_app::AppSrc::builder()
        .caps(&caps)
        .format(gst::Format::Time)
        .build();
    let scale = make("videoscale")?;
    let size = make("capsfilter")?;
    size.set_property(
        "caps",
        gst::Caps::builder("video/x-raw")
            .field("width", width)
            .field("height", height)
            .build(),
    );
    let jpeg = make("jpegenc")?;
    jpeg.set_property("quality", quality);
    let sink = gst_app::AppSink::builder()
        .sync(false)
        .wait_on_eos(false)
        .build();
    add_and_link(
        &pipeline,
        &[src.upcast_ref(), &scale, &size, &jpeg, sink.upcast_ref()],
    )?;
    run(&pipeline, || {
        src.push_buffer(buffer)
            .map_err(|e| SnapshotError::Pipeline(format!("encoder refused the picture: {e:?}")))?;
        let _ = src.end_of_stream();
        Ok(())
    })?;
    let sample = sink
        .try_pull_sample(gst::ClockTime::ZERO)
        .or_else(|| sink.try_pull_preroll(gst::ClockTime::ZERO));
    let _ = pipeline.set_state(gst::State::Null);
    let sample =
        sample.ok_or_else(|| SnapshotError::Pipeline("the encoder produced no JPEG".into()))?;
    let buffer = sample
        .buffer()
        .ok_or_else(|| SnapshotError::Pipeline("JPEG without data".into()))?;
    let map = buffer
        .map_readable()
        .map_err(|e| SnapshotError::Pipeline(e.to_string()))?;
    Ok(map.as_slice().to_vec())
}

fn add_and_link(pipeline: &gst::Pipeline, elements: &[&gst::Element]) -> Result<(), SnapshotError> {
    pipeline
        .add_many(elements.iter().copied())
        .map_err(|e| SnapshotError::Pipeline(e.to_string()))?;
    gst::Element::link_many(elements.iter().copied())
        .map_err(|e| SnapshotError::Pipeline(e.to_string()))
}

/// Plays a pipeline, feeds it, and waits for its end of stream.
fn run(
    pipeline: &gst::Pipeline,
    feed: impl FnOnce() -> Result<(), SnapshotError>,
) -> Result<(), SnapshotError> {
    let fail = |pipeline: &gst::Pipeline, message: String| {
        let _ = pipeline.set_state(gst::State::Null);
        SnapshotError::Pipeline(message)
    };
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| fail(pipeline, e.to_string()))?;
    if let Err(error) = feed() {
        let _ = pipeline.set_state(gst::State::Null);
        return Err(error);
    }
    let bus = pipeline
        .bus()
        .ok_or_else(|| fail(pipeline, "pipeline without a bus".into()))?;
    let timeout = gst::ClockTime::from_nseconds(STAGE_TIMEOUT.as_nanos() as u64);
    match bus.timed_pop_filtered(timeout, &[gst::MessageType::Eos, gst::MessageType::Error]) {
        Some(message) => match message.view() {
            gst::MessageView::Error(e) => Err(fail(pipeline, e.error().to_string())),
            _ => Ok(()),
        },
        None => Err(fail(
            pipeline,
            format!("no result within {STAGE_TIMEOUT:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::ring::FrameRing;

    /// A feed holding `seconds` of a real encoded stream (320x240, 15 fps, a keyframe a
    /// second), timed from 0.
    fn feed_with_video(seconds: u32, width: i32) -> CameraFeed {
        gst::init().unwrap();
        let frames = seconds * 15;
        let pipeline = gst::parse::launch(&format!(
            "videotestsrc num-buffers={frames} pattern=ball ! video/x-raw,width={width},height={},framerate=15/1 \
             ! x264enc tune=zerolatency key-int-max=15 ! h264parse ! video/x-h264,stream-format=avc,alignment=au \
             ! appsink name=sink sync=false",
            width * 3 / 4
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let sink = pipeline
            .by_name("sink")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let feed = CameraFeed::new(FrameRing::new(Duration::from_secs(60), usize::MAX));
        while let Ok(sample) = sink.pull_sample() {
            let buffer = sample.buffer_owned().unwrap();
            let time = buffer.pts().unwrap().nseconds();
            let frame = Frame {
                time,
                keyframe: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
                buffer,
            };
            feed.push(frame, &sample.caps_owned().unwrap(), false, time);
        }
        pipeline.set_state(gst::State::Null).unwrap();
        feed
    }

    fn jpeg_size(jpeg: &[u8]) -> (i32, i32) {
        let pipeline = gst::parse::launch("appsrc name=src ! jpegdec ! appsink name=sink")
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
        let src = pipeline
            .by_name("src")
            .unwrap()
            .downcast::<gst_app::AppSrc>()
            .unwrap();
        src.set_caps(Some(&gst::Caps::builder("image/jpeg").build()));
        let sink = pipeline
            .by_name("sink")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        src.push_buffer(gst::Buffer::from_slice(jpeg.to_vec()))
            .unwrap();
        src.end_of_stream().unwrap();
        let sample = sink.pull_sample().unwrap();
        pipeline.set_state(gst::State::Null).unwrap();
        let s = sample.caps().unwrap().structure(0).unwrap();
        (s.get("width").unwrap(), s.get("height").unwrap())
    }

    #[test]
    fn snapshot_of_a_buffered_moment_is_a_jpeg_of_the_camera_picture() {
        let feed = feed_with_video(3, 320);
        let jpeg = capture(&feed, 1_500_000_000, 1 << 20, &[]).unwrap();
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
        assert_eq!(jpeg_size(&jpeg), (320, 240));
    }

    #[test]
    fn large_pictures_are_scaled_and_squeezed_to_fit() {
        let feed = feed_with_video(1, 1920);
        let jpeg = capture(&feed, 900_000_000, 1 << 20, &[]).unwrap();
        assert_eq!(jpeg_size(&jpeg), (1280, 960));
        let small = capture(&feed, 900_000_000, 12_000, &[]).unwrap();
        assert!(small.len() <= 12_000, "{}", small.len());
        let (w, _) = jpeg_size(&small);
        assert!(w < 1280);
        assert!(matches!(
            capture(&feed, 900_000_000, 100, &[]),
            Err(SnapshotError::TooLarge(_, 100))
        ));
    }

    #[test]
    fn an_empty_ring_has_no_snapshot() {
        gst::init().unwrap();
        let feed = CameraFeed::new(FrameRing::new(Duration::from_secs(1), 1 << 20));
        assert!(matches!(
            capture(&feed, 1, 1 << 20, &[]),
            Err(SnapshotError::NoVideo)
        ));
    }
}
