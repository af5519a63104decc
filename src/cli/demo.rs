//! `alertclip demo`: the whole path on this machine, with a simulated camera.

use std::path::PathBuf;
use std::time::Duration;

use alertclip::demo::teststream::TestCodec;
use alertclip::demo::{self, DemoOptions};

use super::{Codec, Failure, Outcome};

/// Runs the demo into `out`.
pub async fn demo(out: PathBuf, pre_roll: Duration, post_roll: Duration, codec: Codec) -> Outcome {
    let codec = match codec {
        Codec::H264 => TestCodec::H264,
        Codec::H265 => TestCodec::H265,
    };
    demo::run(DemoOptions {
        out,
        pre_roll,
        post_roll,
        codec,
    })
    .await
    .map_err(|error| Failure::failed(format!("{error:#}")))
}
