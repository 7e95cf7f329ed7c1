//! Speed of SAM on the CPU with a ViT-B-sized encoder (768 dims, depth 12, 12 heads; synthetic
//! weights, so no checkpoint is needed): one image embedding at 1024², and one automatic
//! mask-generator pass with a 32 × 32 point grid (embedding included) on an 854 × 480 frame.
//! Each iteration takes seconds to minutes: `cargo bench --bench sam -- --quick` times one
//! iteration of each; without `--quick` criterion's minimum of 10 samples is taken.

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use deva::config::SamConfig;
use deva::segmenter::sam::{amg, SamArch, SamModel, VitConfig};
use image::RgbImage;
use std::time::Duration;

fn vit_b() -> SamModel {
    SamModel::synthetic(&SamArch::with_vit(VitConfig::vit_b()), 1, &Device::Cpu).unwrap()
}

/// A frame with smooth colour gradients and a few rectangles.
fn frame(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let inside = (x / 120 + y / 90) % 3 == 0;
        let base = [
            (x * 255 / w) as u8,
            (y * 255 / h) as u8,
            ((x + y) % 256) as u8,
        ];
        image::Rgb(if inside { base.map(|v| 255 - v) } else { base })
    })
}

fn sam_bench(c: &mut Criterion) {
    // The allocator settings of the `deva` command (see `deva::heap`).
    deva::heap::keep_freed_memory();
    let sam = vit_b();
    let mut g = c.benchmark_group("sam");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1));
    let s = sam.arch().img_size;
    let input = Tensor::randn(0f32, 1.0, (1, 3, s, s), &Device::Cpu).unwrap();
    g.bench_function("embedding_vit_b_1024", |b| {
        b.iter(|| sam.encode(&input, None).unwrap())
    });
    let image = frame(854, 480);
    let config = SamConfig {
        points_per_side: 32,
        ..Default::default()
    };
    g.bench_function("automatic_32x32_vit_b_854x480", |b| {
        b.iter(|| amg::generate(&sam, &image, &config, None).unwrap())
    });
    g.finish();
}

criterion_group!(benches, sam_bench);
criterion_main!(benches);
