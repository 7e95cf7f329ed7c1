//! Configuration files: TOML parsing and validation.
#![no_main]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::file("config.toml", data);
    let _ = deva::Config::from_toml_file(&path);
});
