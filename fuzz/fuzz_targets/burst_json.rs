//! The BURST evaluator's JSON inputs: ground truth (`all_classes.json`) and prediction, split
//! at `\0PRED\0`. Without a separator the input is both.
#![no_main]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (gt, pred) = common::split(data, b"\0PRED\0");
    let pred = if pred.is_empty() { gt } else { pred };
    let dir = common::scratch().join("burst");
    let _ = std::fs::remove_dir_all(&dir);
    common::file("burst/gt/all_classes.json", gt);
    let pred = common::file("burst/pred.json", pred);
    let _ = deva::eval::burst::evaluate(&dir.join("gt"), &pred, &|_| {});
});
