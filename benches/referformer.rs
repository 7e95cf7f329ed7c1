//! Speed of one ReferFormer key-frame forward pass on the CPU at the real size (synthetic
//! weights, so no checkpoint is needed): ResNet-50, RoBERTa-base (12 layers, width 768), a
//! width-256 deformable transformer with 4 encoder and 4 decoder layers, 5 queries, the
//! cross-modal FPN and the dynamic mask head, on a 360 × 640 input (the official
//! `Resize(360)` of a 854 × 480 DAVIS frame) and a 10-token expression.
//! `cargo bench --bench referformer -- --quick` times it; under `cargo test` a tiny
//! configuration runs once as a smoke test.

use candle_core::{Device, Tensor};
use criterion::Criterion;
use deva::nn::weights::Weights;
use deva::segmenter::grounded::BertConfig;
use deva::segmenter::referformer::{ReferFormer, ReferFormerConfig, VisualBackbone};
use std::time::Duration;

/// The official Ref-YouTube-VOS ResNet-50 sizes, or tiny ones for the smoke test.
fn config(tiny: bool) -> ReferFormerConfig {
    let (d, layers, ffn, text_layers, text_ffn, vocab) = if tiny {
        (32, 1, 64, 1, 64, 100)
    } else {
        (256, 4, 2048, 12, 3072, 50265)
    };
    ReferFormerConfig {
        hidden_dim: d,
        num_queries: 5,
        num_classes: 65,
        enc_layers: layers,
        dec_layers: layers,
        dim_feedforward: ffn,
        num_feature_levels: 4,
        n_points: 4,
        mask_dim: if tiny { 8 } else { 256 },
        dynamic_mask_channels: 8,
        controller_layers: 3,
        backbone: VisualBackbone::ResNet {
            blocks: if tiny { [1, 1, 1, 1] } else { [3, 4, 6, 3] },
        },
        box_refine: true,
        text: BertConfig {
            hidden_size: 768,
            num_hidden_layers: text_layers,
            num_attention_heads: 12,
            intermediate_size: text_ffn,
            vocab_size: vocab,
            max_position_embeddings: 514,
            type_vocab_size: 1,
            layer_norm_eps: 1e-5,
        },
    }
}

fn model(tiny: bool) -> ReferFormer {
    let c = config(tiny);
    Weights::synthetic(0, &Device::Cpu, |vb| ReferFormer::new(c.clone(), vb)).unwrap()
}

/// `<s>`, eight word pieces, `</s>`.
const IDS: [i64; 10] = [0, 10, 20, 30, 40, 50, 60, 70, 80, 2];

fn main() {
    // The allocator settings of the `deva` command (see `deva::heap`).
    deva::heap::keep_freed_memory();
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test`: one tiny forward.
        let input = Tensor::randn(0f32, 1.0, (1, 3, 64, 96), &Device::Cpu).unwrap();
        let out = model(true).forward(&input, &IDS).unwrap();
        assert_eq!(out.pred_masks.dims(), &[5, 16, 24]);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("referformer");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1));
    let input = Tensor::randn(0f32, 1.0, (1, 3, 360, 640), &Device::Cpu).unwrap();
    let m = model(false);
    g.bench_function("key_frame_forward_r50_360x640", |b| {
        b.iter(|| m.forward(&input, &IDS).unwrap())
    });
    g.finish();
    c.final_summary();
}
