//! safetensors files: an 8-byte header length, the JSON header, the tensor bytes. The input
//! is the JSON header (the length prefix is computed) followed by `\0DATA\0` and the data.
#![no_main]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (header, body) = common::split(data, b"\0DATA\0");
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header);
    file.extend_from_slice(body);
    let path = common::file("w.safetensors", &file);
    let _ = deva::nn::checkpoint::load_safetensors(&path);
    // And the raw input as a whole file.
    let path = common::file("raw.safetensors", data);
    let _ = deva::nn::checkpoint::load_safetensors(&path);
});
