//! Detections in DEVA's input format: an id-mask PNG and its JSON side file, read by the
//! detection segmenter for one frame. Input: PNG bytes, the separator `\0JSON\0`, JSON bytes.
#![no_main]
mod common;

use deva::segmenter::detections::DetectionSegmenter;
use deva::segmenter::ImageSegmenter;
use deva::video::Frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (png, json) = common::split(data, b"\0JSON\0");
    let dir = common::scratch().join("detections");
    let _ = std::fs::remove_dir_all(&dir);
    common::file("detections/00000.png", png);
    if !json.is_empty() {
        common::file("detections/00000.json", json);
    }
    let Ok(mut seg) = DetectionSegmenter::open(&dir, true) else {
        return;
    };
    let frame = Frame {
        index: 0,
        name: "00000".into(),
        image: image::RgbImage::new(8, 6).into(),
    };
    let _ = seg.segment(&frame, None);
});
