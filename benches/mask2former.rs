//! Speed of one Mask2Former forward pass on the CPU at the real sizes (random weights, so no
//! checkpoint is needed): the ResNet-50 and Swin-T COCO-panoptic configurations (256-channel
//! pixel decoder with 6 deformable layers, 9 masked-attention layers, 100 queries, 133
//! classes) on a 480 × 864 input (shorter side 480, 854 padded to a multiple of 32).
//! `cargo bench --bench mask2former -- --quick` times one iteration of each; under
//! `cargo test` a tiny configuration runs once as a smoke test.

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use criterion::Criterion;
use deva::segmenter::mask2former::{Mask2Former, Mask2FormerConfig};
use std::time::Duration;

/// Random weights: N(0, 0.02), BatchNorm variances 1.
struct RandomStore;

impl SimpleBackend for RandomStore {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        if name.ends_with("running_var") {
            return Tensor::ones(s, dtype, dev);
        }
        Tensor::randn(0f32, 0.02, s, dev)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("random weights need a shape for {name}")
    }

    /// Every weight but the BatchNorm step counters, which random weights do not carry.
    fn contains_tensor(&self, name: &str) -> bool {
        !name.ends_with("num_batches_tracked")
    }
}

/// A `config.json` with the real decoder sizes (or tiny ones for the smoke test).
fn config(backbone: &str, tiny: bool) -> Mask2FormerConfig {
    let (d, enc, dec, ff, q, labels) = if tiny {
        (32, 1, 2, 64, 10, 5)
    } else {
        (256, 6, 10, 2048, 100, 133)
    };
    let id2label: serde_json::Map<String, serde_json::Value> = (0..labels)
        .map(|i| (i.to_string(), format!("class{i}").into()))
        .collect();
    let bc = match backbone {
        "swin_t" => serde_json::json!({
            "model_type": "swin", "embed_dim": if tiny { 16 } else { 96 },
            "depths": if tiny { vec![1, 1, 1, 1] } else { vec![2, 2, 6, 2] },
            "num_heads": if tiny { vec![1, 2, 4, 8] } else { vec![3, 6, 12, 24] },
            "window_size": 7, "out_features": ["stage1", "stage2", "stage3", "stage4"]
        }),
        _ => serde_json::json!({
            "model_type": "resnet",
            "depths": if tiny { vec![1, 1, 1, 1] } else { vec![3, 4, 6, 3] }
        }),
    };
    let cfg = serde_json::json!({
        "backbone_config": bc, "feature_size": d, "mask_feature_size": d, "hidden_dim": d,
        "encoder_layers": enc, "encoder_feedforward_dim": 4 * d, "decoder_layers": dec,
        "dim_feedforward": ff, "num_attention_heads": 8, "num_queries": q,
        "id2label": id2label
    });
    Mask2FormerConfig::from_json(&cfg.to_string()).unwrap()
}

fn model(backbone: &str, tiny: bool) -> Mask2Former {
    let vb = VarBuilder::from_backend(Box::new(RandomStore), DType::F32, Device::Cpu);
    Mask2Former::new(&config(backbone, tiny), vb).unwrap()
}

const BACKBONES: [&str; 2] = ["swin_t", "r50"];

fn bench(c: &mut Criterion) {
    // The allocator settings of the `deva` command (see `deva::heap`).
    deva::heap::keep_freed_memory();
    let mut g = c.benchmark_group("mask2former");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1));
    let input = Tensor::randn(0f32, 1.0, (1, 3, 480, 864), &Device::Cpu).unwrap();
    for b in BACKBONES {
        let m = model(b, false);
        g.bench_function(format!("forward_{b}_480x864"), |bn| {
            bn.iter(|| m.forward(&input).unwrap())
        });
    }
    g.finish();
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test`: one tiny forward per backbone.
        let input = Tensor::randn(0f32, 1.0, (1, 3, 64, 96), &Device::Cpu).unwrap();
        for b in BACKBONES {
            let out = model(b, true).forward(&input).unwrap();
            assert_eq!(out.masks_queries_logits().dims(), &[1, 10, 16, 24]);
        }
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
