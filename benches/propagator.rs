//! DEVA propagator speed at 854×480 on the CPU (synthetic formula weights, default memory
//! settings): milliseconds per frame of a VOS step (propagate, then update, memorising every
//! `mem_every` frames) for 1, 2 and 5 objects.
//!
//! `cargo bench --bench propagator` runs the timing. With `DEVA_BENCH_RSS_FRAMES=N` set, it
//! instead tracks 2 objects through N frames and prints the resident set (VmRSS) and its
//! peak (VmHWM) every 50 frames, to show that memory stays bounded; `DEVA_BENCH_RSS_SIZE=WxH`
//! sets the frame size of that run (default 854x480). With `DEVA_BENCH_STEPS=N` it times the
//! steps of frames 1 … N of the `DEVA_BENCH_OBJECTS`-object tracker (default 2) one by one
//! and prints their median as `TIME_MS`, the statistic `scripts/bench_ref/deva_step.py`
//! prints for the official step (criterion's estimate is a mean, which the memory frames
//! raise). Under `cargo test` it only runs a few small frames as a smoke test.

use std::time::Instant;

use candle_core::Device;
use criterion::{Criterion, SamplingMode};
use deva::config::MemoryConfig;
use deva::mask::{IdMap, ObjectId, ObjectProbs};
use deva::propagator::deva::DevaPropagator;
use deva::propagator::Propagator;
use deva::video::Frame;

/// Frame size of the timing.
const SIZE: Size = Size {
    width: 854,
    height: 480,
};
/// Frame size of the smoke test under `cargo test`.
const SMOKE_SIZE: Size = Size {
    width: 96,
    height: 64,
};

#[derive(Debug, Clone, Copy)]
struct Size {
    width: usize,
    height: usize,
}

/// Where object `i` of `n` is on frame `t` (x, y, side).
fn object_box(i: usize, n: usize, t: usize, s: Size) -> (usize, usize, usize) {
    let side = s.height / 8;
    let x = (40 + i * (s.width - 2 * side) / n.max(1) + 3 * t) % (s.width - side);
    let y = (60 + 70 * i + 2 * t) % (s.height - side);
    (x, y, side)
}

/// A textured frame with `n` moving squares.
fn frame(t: usize, n: usize, s: Size) -> Frame {
    let boxes: Vec<_> = (0..n).map(|i| object_box(i, n, t, s)).collect();
    let image = image::RgbImage::from_fn(s.width as u32, s.height as u32, |x, y| {
        let (x, y) = (x as usize, y as usize);
        for (i, &(bx, by, s)) in boxes.iter().enumerate() {
            if x >= bx && x < bx + s && y >= by && y < by + s {
                return image::Rgb([200, (50 * i) as u8, 255 - (40 * i) as u8]);
            }
        }
        image::Rgb([
            (x * 7 % 256) as u8,
            (y * 5 % 256) as u8,
            ((x + y) % 256) as u8,
        ])
    });
    Frame {
        index: t,
        name: format!("{t:05}"),
        image: image.into(),
    }
}

/// One-hot masks of the squares of frame 0.
fn first_masks(n: usize, s: Size) -> ObjectProbs {
    let mut map = vec![0 as ObjectId; s.width * s.height];
    for i in 0..n {
        let (bx, by, side) = object_box(i, n, 0, s);
        for y in by..by + side {
            for x in bx..bx + side {
                map[y * s.width + x] = i as ObjectId + 1;
            }
        }
    }
    let ids: Vec<ObjectId> = (1..=n as ObjectId).collect();
    let map = IdMap::from_vec(s.width, s.height, map).expect("sizes agree");
    ObjectProbs::one_hot(&map, &ids).expect("valid ids")
}

/// A propagator tracking `n` objects from frame 0, and a step function for frames 1, 2, …
fn tracker(n: usize, s: Size) -> (DevaPropagator, impl FnMut(&mut DevaPropagator)) {
    let config = MemoryConfig::default();
    let mut p = DevaPropagator::synthetic(0, &config, &Device::Cpu).expect("synthetic weights");
    let f0 = frame(0, n, s);
    p.update(&f0, &first_masks(n, s), true)
        .expect("first frame");
    p.release_frame(0);
    let mut t = 0;
    let step = move |p: &mut DevaPropagator| {
        t += 1;
        let f = frame(t, n, s);
        let probs = p.propagate(&f).expect("propagate");
        p.update(
            &f,
            &probs,
            t % deva::config::TrackerConfig::default().mem_every == 0,
        )
        .expect("update");
        p.release_frame(t);
    };
    (p, step)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("deva_propagator_854x480");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(std::time::Duration::from_millis(1));
    group.measurement_time(std::time::Duration::from_secs(20));
    // `DEVA_BENCH_OBJECTS=N` builds only the N-object tracker (so the process's peak memory
    // is that of one tracker, as `scripts/bench_vs_reference.sh` reports it).
    let only: Option<usize> = std::env::var("DEVA_BENCH_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok());
    for n in [1, 2, 5]
        .into_iter()
        .filter(|&n| only.is_none_or(|o| o == n))
    {
        let (mut p, mut step) = tracker(n, SIZE);
        group.bench_function(format!("{n}_objects"), |b| b.iter(|| step(&mut p)));
    }
    group.finish();
}

/// `VmRSS` and `VmHWM` of this process in MiB.
fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time (user + system) of this process in seconds (clock ticks of 1/100 s).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / 100.0
}

/// The frame size of the RSS run: `DEVA_BENCH_RSS_SIZE=WxH`, else [`SIZE`].
fn rss_size() -> Size {
    let Ok(text) = std::env::var("DEVA_BENCH_RSS_SIZE") else {
        return SIZE;
    };
    let parsed = text
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)));
    match parsed {
        Some((width, height)) if width >= 64 && height >= 64 => Size { width, height },
        _ => panic!("DEVA_BENCH_RSS_SIZE={text}: expected WxH, both at least 64"),
    }
}

fn rss_run(frames: usize) {
    let size = rss_size();
    println!(
        "{frames} frames of {}x{}, 2 objects",
        size.width, size.height
    );
    let (mut p, mut step) = tracker(2, size);
    let start = Instant::now();
    let (mut last, mut last_cpu, mut last_t) = (Instant::now(), cpu_seconds(), 0);
    for t in 1..frames {
        step(&mut p);
        if t % 50 == 0 || t + 1 == frames {
            let (rss, hwm) = rss_mib();
            let lt: usize = p.memory().sizes().iter().map(|s| s.long_term).sum();
            let n = (t - last_t) as f64;
            println!(
                "frame {t:5}: {:.2} s/frame ({:.2} CPU s/frame), VmRSS {rss:.0} MiB, \
                 VmHWM {hwm:.0} MiB, long-term tokens {lt}",
                last.elapsed().as_secs_f64() / n,
                (cpu_seconds() - last_cpu) / n
            );
            (last, last_cpu, last_t) = (Instant::now(), cpu_seconds(), t);
        }
    }
    let (_, hwm) = rss_mib();
    println!(
        "{frames} frames in {:.0} s; peak RSS (VmHWM) {hwm:.0} MiB",
        start.elapsed().as_secs_f64()
    );
}

/// Times steps 1 … `steps` of an `objects`-object tracker; prints their median in ms.
fn steps_run(objects: usize, steps: usize) {
    let (mut p, mut step) = tracker(objects, SIZE);
    let mut ms: Vec<f64> = (0..steps)
        .map(|_| {
            let start = Instant::now();
            step(&mut p);
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let median = if n % 2 == 1 {
        ms[n / 2]
    } else {
        (ms[n / 2 - 1] + ms[n / 2]) / 2.0
    };
    println!("steps (ms): {ms:.0?}");
    println!("TIME_MS {median:.1}");
}

fn main() {
    // The allocator settings of the `deva` command (see `deva::heap`), before any thread
    // exists, for every mode: the step timings and the memory runs too.
    deva::heap::keep_freed_memory();
    if let Some(n) = std::env::var("DEVA_BENCH_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        let objects = std::env::var("DEVA_BENCH_OBJECTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2);
        steps_run(objects, n);
        return;
    }
    if let Some(n) = std::env::var("DEVA_BENCH_RSS_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        rss_run(n);
        return;
    }
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test`: check that the benchmark runs, on small frames.
        let (mut p, mut step) = tracker(2, SMOKE_SIZE);
        for _ in 0..3 {
            step(&mut p);
        }
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
