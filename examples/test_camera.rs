//! Serves a simulated camera over RTSP on 127.0.0.1 until interrupted, printing its URL.
//!
//! `cargo run --release --example test_camera -- [--codec h264|h265] [--size 1920x1080]
//! [--fps 15] [--gop 30] [--kbps 3000] [--bframes 0] [--pattern smpte] [--clock]`

use alertclip::demo::teststream::{TestCodec, TestServer, TestStream};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut stream = TestStream::h264("/cam");
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--codec" => {
                stream.codec = match value()?.as_str() {
                    "h264" => TestCodec::H264,
                    "h265" => TestCodec::H265,
                    other => return Err(format!("unknown codec {other}").into()),
                }
            }
            "--size" => {
                let size = value()?;
                let (w, h) = size.split_once('x').ok_or("--size takes WxH")?;
                (stream.width, stream.height) = (w.parse()?, h.parse()?);
            }
            "--fps" => stream.fps = value()?.parse()?,
            "--gop" => stream.gop_frames = value()?.parse()?,
            "--kbps" => stream.bitrate_kbps = value()?.parse()?,
            "--bframes" => stream.bframes = value()?.parse()?,
            "--pattern" => stream.pattern = value()?,
            "--clock" => stream.clock_overlay = true,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let server = TestServer::start(std::slice::from_ref(&stream))?;
    println!("{}", server.url("/cam"));
    loop {
        std::thread::park();
    }
}
