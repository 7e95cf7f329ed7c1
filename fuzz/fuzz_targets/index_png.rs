//! Index / grayscale / RGB-id PNG masks: the reader, the binary convention and the
//! anti-aliasing check.
#![no_main]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::file("mask.png", data);
    if let Ok(png) = deva::imageio::read_index_png(&path) {
        let _ = png.binary_foreground();
        let _ = deva::mask::sliver_ids(&png.map);
    }
    // The same bytes as a frame.
    let _ = deva::imageio::read_rgb(&path);
});
