//! The restricted pickle reader: the input is `data.pkl` of an otherwise valid zip `.pth`
//! (with one float storage `data/0`), loaded through the checkpoint reader.
#![no_main]
mod common;

use libfuzzer_sys::fuzz_target;
use std::io::Write;

fuzz_target!(|data: &[u8]| {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        z.start_file("archive/data.pkl", opts).unwrap();
        z.write_all(data).unwrap();
        z.start_file("archive/data/0", opts).unwrap();
        z.write_all(&[0u8; 64]).unwrap();
        z.finish().unwrap();
    }
    let path = common::file("fuzz.pth", buf.get_ref());
    let _ = deva::nn::checkpoint::load(&path, &[]);
});
