//! Speed of the evaluators. The boundary measure (F) is the costly part of DAVIS; the
//! synthetic benchmark times one 854x480 object pair. With `cargo bench` and `DEVA_FIXTURES`
//! set, every DAVIS fixture case is also evaluated end to end (PNG decoding included).

use criterion::{criterion_group, criterion_main, Criterion};
use deva::eval::bitimage::BitImage;
use deva::eval::boundary::{f_measure, tolerance_radius, Boundary};
use deva::eval::davis::{self, DavisOptions, GtFormat};
use std::hint::black_box;
use std::path::PathBuf;

/// An ellipse-with-notches mask, roughly the size of a DAVIS object.
fn blob(w: usize, h: usize, cx: f64, cy: f64) -> BitImage {
    BitImage::from_fn(w, h, |x, y| {
        let (dx, dy) = ((x as f64 - cx) / 180.0, (y as f64 - cy) / 120.0);
        dx * dx + dy * dy <= 1.0 && (x / 7 + y / 5) % 9 != 0
    })
}

fn boundary_f(c: &mut Criterion) {
    let (w, h) = (854, 480);
    let r = tolerance_radius(w, h);
    let gt = blob(w, h, 420.0, 240.0);
    let pred = blob(w, h, 428.0, 236.0);
    c.bench_function("davis_f_measure_854x480_pair", |b| {
        b.iter(|| {
            let (pb, gb) = (Boundary::new(&pred, r), Boundary::new(&gt, r));
            black_box(f_measure(&pb, &gb))
        })
    });
}

fn davis_fixtures(c: &mut Criterion) {
    // Whole fixture cases only under `cargo bench` (not when `cargo test` runs this target).
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let Some(root) = std::env::var_os("DEVA_FIXTURES").map(|r| PathBuf::from(r).join("eval/davis"))
    else {
        return;
    };
    if !benchmarking || !root.is_dir() {
        return;
    }
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("DAVIS fixture folder")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    let mut group = c.benchmark_group("davis_case");
    group.sample_size(10);
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let task = if name.starts_with("unsup") {
            "unsup"
        } else {
            "semi"
        };
        let options = DavisOptions {
            task: task.parse().unwrap(),
            gt_format: GtFormat::Auto,
            sequences: None,
        };
        group.bench_function(&name, |b| {
            b.iter(|| {
                davis::evaluate(&case.join("gt"), &case.join("pred"), &options, &|_| {}).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, boundary_f, davis_fixtures);
criterion_main!(benches);
