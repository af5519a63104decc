//! A bare RTSP client on the `retina` crate, the floor the ingest benchmark holds alertclip's
//! ingest against: each URL read over TCP into demuxed frames, the last `--keep` seconds of
//! them kept in a `VecDeque`, nothing else (no status, no clips, no reconnects).
//!
//! `cargo build --release --example retina_client`, then
//! `target/release/examples/retina_client [--keep SECONDS] URL...`; it runs until killed.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use retina::client::{PlayOptions, Session, SessionOptions, SetupOptions, Transport};
use retina::codec::{CodecItem, FrameFormat};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut keep = Duration::from_secs(30);
    let mut urls = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--keep" => {
                let seconds: u64 = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--keep SECONDS"))?
                    .parse()?;
                keep = Duration::from_secs(seconds);
            }
            url => urls.push(url::Url::parse(url)?),
        }
    }
    anyhow::ensure!(
        !urls.is_empty(),
        "usage: retina_client [--keep SECONDS] URL..."
    );
    let readers: Vec<_> = urls
        .into_iter()
        .map(|url| tokio::spawn(read(url, keep)))
        .collect();
    for reader in readers {
        reader.await??;
    }
    Ok(())
}

/// Reads one stream, keeping `keep` of its frames, until it ends.
async fn read(url: url::Url, keep: Duration) -> anyhow::Result<()> {
    let mut session = Session::describe(url, SessionOptions::default()).await?;
    let video = session
        .streams()
        .iter()
        .position(|s| s.media() == "video")
        .ok_or_else(|| anyhow::anyhow!("no video stream"))?;
    session
        .setup(
            video,
            SetupOptions::default()
                .transport(Transport::default())
                .frame_format(FrameFormat::MP4),
        )
        .await?;
    let mut frames = session.play(PlayOptions::default()).await?.demuxed()?;
    let mut kept: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    while let Some(item) = frames.next().await {
        if let CodecItem::VideoFrame(frame) = item? {
            let now = Instant::now();
            kept.push_back((now, frame.into_data()));
            while kept
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > keep)
            {
                kept.pop_front();
            }
        }
    }
    Ok(())
}
