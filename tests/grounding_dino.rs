//! Parity of the Grounding-DINO port with Hugging Face `transformers` on the fixtures in
//! `$DEVA_FIXTURES/grounding_dino` (see its README): tokenizer and text masks, BERT, Swin
//! backbone, encoder, two-stage selection, decoder, heads and post-processing.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use deva::nn::swin::{SwinBackbone, SwinConfig};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

struct Fixture {
    dir: PathBuf,
    tensors: HashMap<String, Tensor>,
    /// `cases_json` metadata.
    meta: serde_json::Value,
    config: serde_json::Value,
}

fn load_fixture(dir: &Path) -> Fixture {
    let path = dir.join("cases.safetensors");
    let bytes = std::fs::read(&path).expect("cases.safetensors");
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("cases_json"))
        .expect("cases_json metadata")
        .clone();
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap();
    let config = serde_json::from_str(
        &std::fs::read_to_string(dir.join("config.json")).expect("config.json"),
    )
    .expect("config.json is JSON");
    Fixture {
        dir: dir.to_path_buf(),
        tensors,
        meta: serde_json::from_str(&json).expect("cases_json is JSON"),
        config,
    }
}

impl Fixture {
    /// Case names (`case0`, ...) from the metadata.
    fn cases(&self) -> Vec<String> {
        let cases = self.meta["cases"].as_object().expect("cases object");
        assert!(!cases.is_empty(), "no cases in cases_json");
        cases.keys().cloned().collect()
    }

    fn get(&self, case: &str, name: &str) -> &Tensor {
        let key = format!("{case}.{name}");
        self.tensors
            .get(&key)
            .unwrap_or_else(|| panic!("cases.safetensors has no {key}"))
    }

    fn opt(&self, case: &str, name: &str) -> Option<&Tensor> {
        self.tensors.get(&format!("{case}.{name}"))
    }

    fn weights(&self) -> VarBuilder<'static> {
        unsafe {
            VarBuilder::from_mmaped_safetensors(
                &[self.dir.join("model.safetensors")],
                DType::F32,
                &Device::Cpu,
            )
            .expect("model.safetensors")
        }
    }
}

/// Largest `|a - b|` over finite reference entries; infinite entries must match exactly.
fn max_diff(name: &str, got: &Tensor, want: &Tensor) -> f32 {
    assert_eq!(got.dims(), want.dims(), "{name}: shapes differ");
    let g = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let w = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mut d = 0f32;
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        if b.is_finite() {
            assert!(a.is_finite(), "{name}[{i}]: got {a}, want {b}");
            d = d.max((a - b).abs());
        } else {
            assert_eq!(a, b, "{name}[{i}]: infinite entries differ");
        }
    }
    d
}

/// The README's float rule: `|port - ref| <= 1e-4 · max(1, max |ref|)` over finite entries.
fn assert_close(name: &str, got: &Tensor, want: &Tensor) {
    let w = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = w
        .iter()
        .filter(|v| v.is_finite())
        .fold(1f32, |m, v| m.max(v.abs()));
    let tol = 1e-4 * scale;
    let d = max_diff(name, got, want);
    assert!(d <= tol, "{name}: max |port - ref| = {d:e} > {tol:e}");
    eprintln!("{name}: max diff {d:.3e} (tol {tol:.1e})");
}

#[test]
fn swin_backbone_matches_reference() {
    let Some(dir) = common::fixtures("grounding_dino") else {
        return;
    };
    let fx = load_fixture(&dir);
    let config: SwinConfig =
        serde_json::from_value(fx.config["backbone_config"].clone()).expect("backbone_config");
    let swin = SwinBackbone::new(
        &config,
        fx.weights().pp("model.backbone.conv_encoder.model"),
    )
    .expect("swin weights");
    let mut checked = 0;
    for case in fx.cases() {
        if fx.opt(&case, "backbone.feature_map.0").is_none() {
            continue;
        }
        let maps = swin.forward(fx.get(&case, "pixel_values")).unwrap();
        assert_eq!(maps.len(), config.out_features.len());
        for (i, m) in maps.iter().enumerate() {
            let name = format!("backbone.feature_map.{i}");
            assert_close(&format!("{case}.{name}"), m, fx.get(&case, &name));
            checked += 1;
        }
    }
    assert!(checked > 0, "no case has backbone feature maps");
}
