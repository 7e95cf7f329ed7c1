//! The VIPSeg evaluator's JSON inputs: ground truth and `pred.json`, split at `\0PRED\0`
//! (without a separator the input is both), over one tiny video `v` with frame `0.png`.
#![no_main]
mod common;

use deva::imageio::write_rgb_id_png;
use deva::mask::IdMap;
use libfuzzer_sys::fuzz_target;
use std::sync::Once;

fuzz_target!(|data: &[u8]| {
    static PNGS: Once = Once::new();
    let dir = common::scratch().join("vipseg");
    PNGS.call_once(|| {
        let map = IdMap::from_vec(3, 2, vec![0, 1, 1, 2, 2, 0]).unwrap();
        for sub in ["gt/v", "pred/pan_pred/v"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
            write_rgb_id_png(&dir.join(sub).join("0.png"), &map).unwrap();
        }
    });
    let (gt, pred) = common::split(data, b"\0PRED\0");
    let pred = if pred.is_empty() { gt } else { pred };
    let gt = common::file("vipseg/gt.json", gt);
    common::file("vipseg/pred/pred.json", pred);
    let _ = deva::eval::vipseg::evaluate(&gt, &dir.join("gt"), &dir.join("pred"), &|_| {});
});
