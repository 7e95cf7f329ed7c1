//! Milliseconds per frame of the saliency segmenters (preprocessing, network, thresholding) on
//! an 854×480 DAVIS frame, for every model fetched into the models folder
//! (`deva models fetch u2netp u2net isnet`). Run with `cargo bench --bench saliency`.

use candle_core::Device;
use criterion::{criterion_group, criterion_main, Criterion};
use deva::segmenter::saliency::{SaliencyConfig, SaliencyModel, SaliencySegmenter};
use deva::segmenter::ImageSegmenter;
use deva::video::Frame;
use std::path::PathBuf;
use std::time::Duration;

/// A real frame from `$DEVA_DATA` (default `../shared/data`), or a synthetic one without it.
fn frame() -> Frame {
    let root = std::env::var_os("DEVA_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    let path = root.join("davis16/JPEGImages/480p/blackswan/00000.jpg");
    let image = deva::imageio::read_rgb(&path).unwrap_or_else(|_| {
        eprintln!("{} not found: using a synthetic frame", path.display());
        image::RgbImage::from_fn(854, 480, |x, y| {
            let inside = (x as i32 - 427).pow(2) + (y as i32 - 240).pow(2) < 120 * 120;
            if inside {
                image::Rgb([220, 60, 40])
            } else {
                image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
            }
        })
    });
    Frame {
        index: 0,
        name: "00000".into(),
        image: image.into(),
    }
}

fn saliency(c: &mut Criterion) {
    // The allocator settings of the `deva` command (see `deva::heap`).
    deva::heap::keep_freed_memory();
    let store = deva::models::ModelStore::default_location().expect("a models folder");
    let frame = frame();
    let mut group = c.benchmark_group("saliency_frame_854x480");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(20));
    for model in [
        SaliencyModel::U2netp,
        SaliencyModel::U2net,
        SaliencyModel::Isnet,
    ] {
        let config = SaliencyConfig {
            model,
            ..SaliencyConfig::default()
        };
        let mut seg = match SaliencySegmenter::from_store(&config, &store, &Device::Cpu) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("skipped {}: {e}", model.manifest_name());
                continue;
            }
        };
        group.bench_function(model.manifest_name(), |b| {
            b.iter(|| seg.segment(&frame, None).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, saliency);
criterion_main!(benches);
