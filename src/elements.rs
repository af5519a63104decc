//! GStreamer elements, made in one way: an element that is not installed is one error that
//! says which plugin set to install, wherever the pipeline is built (ingest, muxing,
//! snapshots, the detector's decode branch).

use gstreamer as gst;

/// A GStreamer element is not installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("GStreamer element `{0}` is missing: run scripts/setup.sh to install the plugins")]
pub struct MissingElement(pub &'static str);

/// Makes an element of `factory` with its defaults; the caller sets its properties.
pub fn make(factory: &'static str) -> Result<gst::Element, MissingElement> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|_| MissingElement(factory))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_element_is_named_with_the_remedy() {
        gst::init().unwrap();
        assert!(make("fakesink").is_ok());
        let error = make("alertclip-no-such-element").unwrap_err();
        assert_eq!(error, MissingElement("alertclip-no-such-element"));
        assert!(error.to_string().contains("scripts/setup.sh"), "{error}");
    }
}
