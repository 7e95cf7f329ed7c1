//! Speed of one EntitySeg forward pass on the CPU at the real R50 size (the published
//! `entity_r50` configuration, synthetic weights so no checkpoint is needed) on a DAVIS-sized
//! frame: 854 × 480 resized to shorter side 800 (longer at most 1333: 1333 × 749), padded to
//! 1344 × 768. Includes proposals, the dynamic mask head and the post-processing back to
//! 854 × 480. `cargo bench --bench entityseg -- --quick`; under `cargo test` a narrow
//! configuration runs once as a smoke test.

use candle_core::{Device, Tensor};
use criterion::Criterion;
use deva::nn::Weights;
use deva::segmenter::entityseg::{EntitySeg, EntitySegConfig};
use std::time::Duration;

/// The frame size the benchmark segments (DAVIS 480p).
const FRAME: (usize, usize) = (480, 854);

fn model(cfg: &EntitySegConfig) -> EntitySeg {
    Weights::synthetic(0, &Device::Cpu, |vb| EntitySeg::new(cfg, vb)).unwrap()
}

fn input(m: &EntitySeg) -> (Tensor, (usize, usize)) {
    let (h, w) = m.resized_size(FRAME.0, FRAME.1);
    let img = image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    });
    (m.input(&img, &Device::Cpu).unwrap(), (h, w))
}

fn bench(c: &mut Criterion) {
    // The allocator settings of the `deva` command (see `deva::heap`).
    deva::heap::keep_freed_memory();
    let mut g = c.benchmark_group("entityseg");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1));
    let m = model(&EntitySegConfig::default());
    let (x, resized) = input(&m);
    let (_, _, ph, pw) = x.dims4().unwrap();
    g.bench_function(format!("forward_r50_{pw}x{ph}"), |b| {
        b.iter(|| m.predict(&x, resized, FRAME).unwrap())
    });
    g.finish();
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test`: one narrow forward at a small size.
        let mut cfg = EntitySegConfig::default();
        cfg.resnet.stem_out_channels = 8;
        cfg.resnet.res2_out_channels = 32;
        cfg.resnet.width_per_group = 8;
        cfg.fpn_out_channels = 32;
        cfg.kernel_head.convs_dim = 32;
        cfg.fcos.num_cls_convs = 1;
        cfg.fcos.num_box_convs = 1;
        cfg.mask_branch.channels = 16;
        cfg.min_size_test = 64;
        cfg.max_size_test = 128;
        let m = model(&cfg);
        let (x, resized) = input(&m);
        let out = m.predict(&x, resized, FRAME).unwrap();
        assert_eq!((out.height, out.width), FRAME);
        assert_eq!(out.map.len(), FRAME.0 * FRAME.1);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
