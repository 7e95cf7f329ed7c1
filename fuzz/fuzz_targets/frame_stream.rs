//! ffmpeg's side of video decoding: the ffprobe JSON and the raw RGB frame stream (bytes in
//! place of the pipe). Input: width and height (one byte each), then the stream; or, when
//! the first byte is `{`, ffprobe JSON.
#![no_main]

use deva::video::ffmpeg::{parse_probe, RawFrames, RawRead};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.mp4");
    if data.first() == Some(&b'{') {
        let _ = parse_probe(path, data);
        return;
    }
    let [w, h, stream @ ..] = data else {
        return;
    };
    let Ok(mut frames) = RawFrames::new(stream, *w as usize, *h as usize, path) else {
        return;
    };
    let frame_bytes = *w as usize * *h as usize * 3;
    let mut total = 0;
    loop {
        match frames.read().expect("reading a slice does not fail") {
            RawRead::Frame(img) => {
                assert_eq!(img.as_raw().len(), frame_bytes);
                total += frame_bytes;
            }
            RawRead::Truncated { bytes, expected } => {
                assert_eq!(expected, frame_bytes);
                assert_eq!(total + bytes, stream.len());
                break;
            }
            RawRead::End => {
                assert_eq!(total, stream.len());
                break;
            }
        }
    }
});
