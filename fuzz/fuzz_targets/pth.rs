//! Whole checkpoint files (zip `.pth`, pickles, safetensors, anything), chosen by content.
#![no_main]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::file("any.pth", data);
    let _ = deva::nn::checkpoint::load(&path, &[]);
    let _ = deva::nn::checkpoint::load(&path, &["state_dict"]);
});
