//! Soak: resident memory over long videos. Objects come and go through generated frames
//! (textured background, moving squares that appear and disappear on a schedule), with a
//! segmenter that reports the visible squares; the tracker runs its default semi-online
//! schedule (detections merged every 5 frames).
//!
//! `DEVA_SOAK_FRAMES=N cargo bench --bench soak` runs two soaks and reports the resident set
//! (`VmRSS`) and its anonymous part (`RssAnon`: heap and stacks, no file pages), both read
//! after every frame, every 100 frames as the largest value of those 100 frames, which follows
//! the working set without the noise of when the allocator returns memory:
//! 1. N frames of 160×96 with the optical-flow propagator;
//! 2. N / 5 frames of 427×240 with the DEVA propagator (synthetic formula weights, as
//!    `benches/propagator.rs` uses; default memory settings).
//!
//! Each prints its curves and the largest deviation from the value at the reference frame
//! (frame 1000, or a tenth of the run if shorter); the process exits non-zero when `RssAnon`
//! drifts by more than 10 %. The criterion is on `RssAnon` because `VmRSS` also counts the
//! binary's and libraries' file pages, which the kernel drops and reloads at will (proactive
//! reclaim), so `VmRSS` dips without any change in what the program holds.
//! `DEVA_SOAK_ONLY=flow|deva` runs one of them. Under `cargo test` (no `--bench` argument) a
//! few small frames of each run as a smoke test.

use candle_core::Device;
use deva::config::Config;
use deva::mask::{BinaryMask, IdMap, ObjectId, Segmentation};
use deva::propagator::deva::DevaPropagator;
use deva::propagator::deva::MemoryConfig;
use deva::propagator::flow::FlowConfig;
use deva::propagator::flow::FlowPropagator;
use deva::propagator::Propagator;
use deva::segmenter::{ImageSegmenter, SegmenterKind};
use deva::tracker::Tracker;
use deva::video::Frame;
use deva::Result;
use std::time::Instant;

/// Squares that take turns being in view.
const SLOTS: usize = 6;

/// RSS is sampled every this many frames.
const SAMPLE_EVERY: usize = 100;

/// Largest accepted deviation from the reference RSS.
const TOLERANCE: f64 = 0.10;

/// Whether square `i` is in view on frame `t`: in view for 300 frames, away for 150, each
/// square on its own phase, so objects keep appearing and disappearing.
fn visible(i: usize, t: usize) -> bool {
    (t + 97 * i) % 450 < 300
}

/// Top-left corner and side of square `i` on frame `t` in a `w × h` frame (bouncing motion).
fn square(i: usize, t: usize, w: usize, h: usize) -> (usize, usize, usize) {
    let side = h / 6;
    let bounce = |p: usize, span: usize| {
        let q = p % (2 * span);
        if q < span {
            q
        } else {
            2 * span - q
        }
    };
    let x = bounce(13 * i + (i + 1) * t, w - side);
    let y = bounce(29 * i + (2 + i % 3) * t / 2, h - side);
    (x, y, side)
}

/// The id map of the visible squares on frame `t` (id = slot + 1; later slots on top).
fn squares_map(t: usize, w: usize, h: usize) -> IdMap {
    let mut map = IdMap::new(w, h);
    for i in (0..SLOTS).filter(|&i| visible(i, t)) {
        let (x0, y0, s) = square(i, t, w, h);
        for y in y0..y0 + s {
            for x in x0..x0 + s {
                map.set(x, y, i as ObjectId + 1);
            }
        }
    }
    map
}

/// Frame `t`: a static texture with the visible squares in their colours.
fn frame(t: usize, w: usize, h: usize) -> Frame {
    let map = squares_map(t, w, h);
    let image = image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let id = map.get(x as usize, y as usize);
        if id > 0 {
            image::Rgb([60 + 30 * id as u8, 220 - 25 * id as u8, 40 * (id as u8 % 4)])
        } else {
            let (x, y) = (x as usize, y as usize);
            image::Rgb([
                (x * 7 % 256) as u8,
                (y * 5 % 256) as u8,
                ((x * y / 7 + x + y) % 256) as u8,
            ])
        }
    });
    Frame {
        index: t,
        name: format!("{t:05}"),
        image: image.into(),
    }
}

/// Reports the squares that are in view.
struct Squares;

impl ImageSegmenter for Squares {
    fn name(&self) -> &str {
        "squares"
    }
    fn kind(&self) -> SegmenterKind {
        SegmenterKind::Proposals
    }
    fn segment(
        &mut self,
        frame: &Frame,
        _tracked: Option<&BinaryMask>,
    ) -> Result<Option<Segmentation>> {
        let map = squares_map(frame.index, frame.width(), frame.height());
        Ok(Some(Segmentation::from_map(map)))
    }
}

/// Resident memory of this process in MiB: (`VmRSS`, `RssAnon`).
fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("RssAnon:"))
}

/// One sample: the frame it ends, and the largest `VmRSS` and `RssAnon` (MiB) of its frames.
#[derive(Clone, Copy)]
struct Sample {
    frame: usize,
    rss: f64,
    anon: f64,
}

/// Tracks through `frames` generated frames of `w × h`; prints the largest RSS of every
/// [`SAMPLE_EVERY`] frames when `report`. Returns the samples.
fn soak(
    label: &str,
    propagator: Box<dyn Propagator>,
    frames: usize,
    (w, h): (usize, usize),
    report: bool,
) -> Vec<Sample> {
    let mut config = Config::default();
    config.input.size = -1;
    let mut tracker = Tracker::new(&config, Box::new(Squares), Some(propagator)).unwrap();
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut objects = 0;
    let (mut rss, mut anon) = (0.0f64, 0.0f64);
    for t in 0..frames {
        for out in tracker.step(frame(t, w, h)).unwrap() {
            objects = out.segmentation().map.ids().len();
        }
        let (r, a) = rss_mib();
        (rss, anon) = (rss.max(r), anon.max(a));
        if (t + 1) % SAMPLE_EVERY == 0 || t + 1 == frames {
            let (rss, anon) = (std::mem::take(&mut rss), std::mem::take(&mut anon));
            samples.push(Sample {
                frame: t + 1,
                rss,
                anon,
            });
            if report {
                println!(
                    "{label}: frame {:6}  RSS {rss:7.1} MiB  RssAnon {anon:7.1} MiB  objects in view {objects}  {:.1} ms/frame",
                    t + 1,
                    start.elapsed().as_secs_f64() * 1000.0 / (t + 1) as f64
                );
            }
        }
    }
    tracker.finish().unwrap();
    samples
}

/// The largest relative deviation of `value` from its value at the reference frame (frame
/// 1000, or a tenth of the run), over the samples from there on: (reference frame, value
/// there, deviation); `None` without samples.
fn drift(samples: &[Sample], value: fn(&Sample) -> f64) -> Option<(usize, f64, f64)> {
    let last = samples.last()?.frame;
    let reference = 1000.min(last / 10).max(1);
    let first = samples.iter().find(|s| s.frame >= reference)?;
    let base = value(first);
    let worst = samples
        .iter()
        .filter(|s| s.frame >= first.frame)
        .map(|s| (value(s) - base) / base)
        .fold(0.0f64, |a, d| if d.abs() > a.abs() { d } else { a });
    Some((first.frame, base, worst))
}

/// A measure of a sample: its name, how to read it, whether the ±10 % criterion applies.
type Measure = (&'static str, fn(&Sample) -> f64, bool);

/// One soak: label, propagator, frame count, frame size.
type Run = (
    &'static str,
    fn() -> Box<dyn Propagator>,
    usize,
    (usize, usize),
);

fn flow_propagator() -> Box<dyn Propagator> {
    Box::new(FlowPropagator::new(FlowConfig::default()).unwrap())
}

fn deva_propagator() -> Box<dyn Propagator> {
    Box::new(DevaPropagator::synthetic(0, &MemoryConfig::default(), &Device::Cpu).unwrap())
}

fn main() {
    let Some(frames) = std::env::var("DEVA_SOAK_FRAMES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        if !std::env::args().any(|a| a == "--bench") {
            // `cargo test`: both soaks run a few small frames.
            soak("flow", flow_propagator(), 12, (64, 40), false);
            soak("deva", deva_propagator(), 6, (64, 40), false);
        } else {
            println!("set DEVA_SOAK_FRAMES=N (e.g. 10000) to run the soak");
        }
        return;
    };
    let only = std::env::var("DEVA_SOAK_ONLY").ok();
    let runs: [Run; 2] = [
        ("flow", flow_propagator, frames, (160, 96)),
        ("deva", deva_propagator, frames / 5, (427, 240)),
    ];
    let mut failed = false;
    for (label, make, n, size) in runs {
        if only.as_deref().is_some_and(|o| o != label) {
            continue;
        }
        println!("{label}: {n} frames of {}x{}", size.0, size.1);
        let samples = soak(label, make(), n, size, true);
        let measures: [Measure; 2] = [("RSS", |s| s.rss, false), ("RssAnon", |s| s.anon, true)];
        for (name, value, criterion) in measures {
            if let Some((at, base, worst)) = drift(&samples, value) {
                let ok = worst.abs() <= TOLERANCE;
                failed |= criterion && !ok;
                println!(
                    "{label}: {name} {base:.1} MiB at frame {at}; largest deviation after it {:+.1} % ({}{})",
                    100.0 * worst,
                    if ok { "within ±10 %" } else { "OUT OF BOUNDS" },
                    if criterion { "" } else { ", for information" }
                );
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
