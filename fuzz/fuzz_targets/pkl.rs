//! Pickled dicts of numpy arrays (detectron2 `.pkl`), read through the safe pickle reader and
//! turned into tensors, whole and below a key path.
#![no_main]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::file("fuzz.pkl", data);
    if let Ok(dict) = deva::nn::checkpoint::load_pkl(&path, &[]) {
        for (_, t) in dict.iter() {
            let _ = t.to_f32();
        }
    }
    let _ = deva::nn::checkpoint::load_pkl(&path, &["model"]);
});
