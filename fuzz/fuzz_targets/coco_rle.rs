//! COCO RLE strings: parse, decode, box, re-encode. Input: height and width (one byte each),
//! then the compressed counts string.
#![no_main]

use deva::mask::Rle;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [h, w, rest @ ..] = data else {
        return;
    };
    let Ok(s) = std::str::from_utf8(rest) else {
        return;
    };
    let Ok(rle) = Rle::from_compressed(*h as usize, *w as usize, s) else {
        return;
    };
    let _ = rle.bbox();
    let _ = rle.area();
    let mask = rle.decode().expect("a parsed RLE decodes");
    assert_eq!(Rle::encode(&mask).area(), rle.area());
});
