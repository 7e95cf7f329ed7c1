//! Speed of the optical-flow propagator at 854×480 (DAVIS frames): one DIS flow between a
//! frame pair, and one `propagate()` (two flows, warping, filling, colour model, guided
//! filter) with 1 and 5 objects.

#[path = "../tests/common/mod.rs"]
mod common;

use criterion::{criterion_group, criterion_main, Criterion};
use deva::config::FlowConfig;
use deva::mask::{IdMap, ObjectProbs};
use deva::propagator::flow::{coarsest_level, dis_flow, Pyramid};
use deva::propagator::{FlowPropagator, Propagator};
use deva::video::Frame;
use std::time::{Duration, Instant};

fn frames() -> Option<(Frame, Frame)> {
    let dir = common::data("davis16")?.join("JPEGImages/480p/blackswan");
    let read = |i: usize| Frame {
        index: i,
        name: format!("{i:05}"),
        image: deva::imageio::read_rgb(&dir.join(format!("{i:05}.jpg")))
            .expect("DAVIS frame")
            .into(),
    };
    Some((read(0), read(1)))
}

/// `n` objects: the cells of a grid over the middle of the frame.
fn objects(w: usize, h: usize, n: u32) -> ObjectProbs {
    let map = IdMap::from_vec(
        w,
        h,
        (0..w * h)
            .map(|i| {
                let (x, y) = (i % w, i / w);
                if y < h / 4 || y >= 3 * h / 4 || x < w / 8 || x >= 7 * w / 8 {
                    0
                } else {
                    1 + ((x - w / 8) * n as usize / (3 * w / 4)) as u32
                }
            })
            .collect(),
    )
    .expect("sizes agree");
    ObjectProbs::one_hot(&map, &(1..=n).collect::<Vec<_>>()).expect("valid ids")
}

fn bench(c: &mut Criterion) {
    // The allocator settings of the `deva` command (see `deva::heap`).
    deva::heap::keep_freed_memory();
    let Some((f0, f1)) = frames() else {
        return;
    };
    let config = FlowConfig::default();
    let (w, h) = (f0.width(), f0.height());
    let levels = coarsest_level(&config, w, h) + 1;
    let mut group = c.benchmark_group("flow");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    group.bench_function("dis_flow_854x480_with_pyramids", |b| {
        b.iter(|| {
            let (p0, p1) = (
                Pyramid::new(&f0.image, levels),
                Pyramid::new(&f1.image, levels),
            );
            dis_flow(&p0, &p1, &config)
        })
    });
    for n in [1, 5] {
        let masks = objects(w, h, n);
        group.bench_function(format!("propagate_854x480_{n}_objects"), |b| {
            let mut prop = FlowPropagator::new(config.clone()).expect("valid config");
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    prop.update(&f0, &masks, true).expect("update");
                    // The new frame's pyramid is part of the work (as in a video).
                    prop.release_frame(f1.index);
                    let start = Instant::now();
                    let out = prop.propagate(&f1).expect("propagate");
                    total += start.elapsed();
                    std::hint::black_box(out);
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
