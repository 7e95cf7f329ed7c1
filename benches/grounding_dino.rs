//! Speed of one Grounding-DINO forward on the CPU at the real Swin-T size (the
//! `groundingdino_swint_ogc` / `grounding-dino-tiny` configuration: Swin-T, BERT-base, 6 + 6
//! layers, 900 queries; synthetic weights, so no checkpoint is needed) on an 800 × 1333 input
//! with a three-phrase prompt.
//!
//! `cargo bench --bench grounding_dino` runs the timing (`-- --quick` for one iteration).
//! Under `cargo test` it only checks that a forward runs, on a tiny configuration.

use candle_core::{DType, Device, Tensor};
use criterion::Criterion;
use deva::nn::Weights;
use deva::segmenter::grounded::weights::official_config;
use deva::segmenter::grounded::{GroundingDino, GroundingDinoConfig, TokenBatch};
use std::time::Duration;

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

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test`: check that a forward runs, on a tiny model and input.
        let m = model(&tiny());
        let (p, mask, t) = input(64, 96);
        let out = m.forward(&p, &mask, &t).unwrap();
        assert_eq!(out.pred_boxes.dims(), &[1, 10, 4]);
        return;
    }
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
