//! Parity of the Grounding-DINO port with Hugging Face `transformers` on the fixtures in
//! `$DEVA_FIXTURES/grounding_dino` (see its README): tokenizer and text masks, BERT, Swin
//! backbone, encoder, two-stage selection, decoder, heads and post-processing. `official`:
//! the original checkpoint layout; `text_mode`: DEVA's text mode and the default detector.

#[path = "../common/mod.rs"]
mod common;
mod official;
mod text_mode;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use deva::nn::swin::{SwinBackbone, SwinConfig};
use deva::segmenter::grounded::weights::{official_table, official_tied, OfficialSource};
use deva::segmenter::grounded::{
    phrase_masks, post_process, preprocess, split_prompt, BertMaskMode, Caption, Detection,
    GroundedSam, GroundingDino, GroundingDinoConfig, GroundingDinoOutput, ResizeRule,
    TextModeConfig, TextTokenizer, TokenBatch,
};
use image::RgbImage;
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
    let (tensors, json) = common::safetensors_cases(dir);
    Fixture {
        dir: dir.to_path_buf(),
        tensors,
        meta: serde_json::from_str(&json).expect("cases_json is JSON"),
        config: common::json_file(dir, "config.json"),
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

impl Fixture {
    /// Image `k` of the metadata: the `image` tensor of the single-image case showing it.
    fn image(&self, k: u64) -> RgbImage {
        let case = self
            .cases()
            .into_iter()
            .find(|c| self.meta["cases"][c]["images"] == serde_json::json!([k]))
            .unwrap_or_else(|| panic!("no single-image case with image {k}"));
        let t = self.get(&case, "image");
        let (h, w, _) = t.dims3().unwrap();
        let data = t.flatten_all().unwrap().to_vec1::<u8>().unwrap();
        RgbImage::from_raw(w as u32, h as u32, data).unwrap()
    }

    fn prompts(&self, case: &str) -> Vec<String> {
        self.meta["cases"][case]["prompts"]
            .as_array()
            .expect("prompts")
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect()
    }

    fn rule(&self, case: &str) -> ResizeRule {
        let s = &self.meta["cases"][case]["size"];
        ResizeRule {
            shortest_edge: s["shortest_edge"].as_u64().unwrap() as usize,
            longest_edge: s["longest_edge"].as_u64().unwrap() as usize,
        }
    }

    fn ints(&self, case: &str, name: &str) -> Vec<Vec<i64>> {
        self.get(case, name)
            .to_dtype(DType::I64)
            .unwrap()
            .to_vec2::<i64>()
            .unwrap()
    }

    /// The tokenizer output stored for a case.
    fn tokens(&self, case: &str) -> TokenBatch {
        TokenBatch {
            ids: self.ints(case, "input_ids"),
            attention_mask: self.ints(case, "attention_mask"),
        }
    }

    fn tokenizer(&self) -> TextTokenizer {
        TextTokenizer::from_file(&self.dir.join("tokenizer.json")).expect("tokenizer.json")
    }

    /// The fixture configuration, with BERT masking as `transformers` 5.x's eager attention
    /// applies it (the reference implementation of the fixture adds the boolean phrase mask
    /// to the attention scores instead of blocking).
    fn config(&self) -> GroundingDinoConfig {
        let mut c = GroundingDinoConfig::from_file(&self.dir.join("config.json")).unwrap();
        c.bert_mask = BertMaskMode::AddAsScores;
        c
    }

    fn model(&self) -> GroundingDino {
        GroundingDino::load_hf(
            &self.config(),
            &self.dir.join("model.safetensors"),
            &Device::Cpu,
        )
        .expect("fixture model loads")
    }

    /// Runs the model on the stored processor outputs of a case.
    fn run(&self, model: &GroundingDino, case: &str) -> GroundingDinoOutput {
        model
            .forward(
                self.get(case, "pixel_values"),
                self.get(case, "pixel_mask"),
                &self.tokens(case),
            )
            .unwrap()
    }
}

fn assert_exact(name: &str, got: &Tensor, want: &Tensor) {
    let g = got.to_dtype(DType::I64).unwrap();
    let w = want.to_dtype(DType::I64).unwrap();
    assert_eq!(g.dims(), w.dims(), "{name}: shapes differ");
    let g = g.flatten_all().unwrap().to_vec1::<i64>().unwrap();
    let w = w.flatten_all().unwrap().to_vec1::<i64>().unwrap();
    assert_eq!(g, w, "{name} differs");
}

#[test]
fn tokenizer_and_text_masks_match_reference() {
    let Some(dir) = common::fixtures("grounding_dino") else {
        return;
    };
    let fx = load_fixture(&dir);
    let tok = fx.tokenizer();
    for case in fx.cases() {
        let prompts = fx.prompts(&case);
        let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
        let got = tok.encode_batch(&refs).unwrap();
        assert_eq!(got, fx.tokens(&case), "{case}: tokens");
        let pos = fx.ints(&case, "text_position_ids");
        let masks = fx
            .get(&case, "text_self_attention_mask")
            .to_dtype(DType::I64)
            .unwrap();
        for (b, row) in got.ids.iter().enumerate() {
            let (m, p) = phrase_masks(row, row.len());
            let want: Vec<bool> = masks
                .get(b)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<i64>()
                .unwrap()
                .iter()
                .map(|&v| v == 1)
                .collect();
            assert_eq!(m, want, "{case}[{b}]: self-attention mask");
            assert_eq!(p, pos[b], "{case}[{b}]: position ids");
        }
        assert!(
            fx.ints(&case, "token_type_ids")
                .iter()
                .flatten()
                .all(|&t| t == 0),
            "{case}: token types are all 0"
        );
    }
}

#[test]
fn preprocessing_matches_reference() {
    let Some(dir) = common::fixtures("grounding_dino") else {
        return;
    };
    let fx = load_fixture(&dir);
    let mean = [0.485f32, 0.456, 0.406].map(|m| m * 255.0);
    let std = [0.229f32, 0.224, 0.225].map(|s| s * 255.0);
    for case in fx.cases() {
        let images: Vec<RgbImage> = fx.meta["cases"][&case]["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| fx.image(k.as_u64().unwrap()))
            .collect();
        let got = preprocess(&images, &fx.rule(&case), &Device::Cpu).unwrap();
        let want = fx.get(&case, "pixel_values");
        assert_eq!(
            got.pixel_values.dims(),
            want.dims(),
            "{case}: pixel_values shape"
        );
        assert_exact(
            &format!("{case}.pixel_mask"),
            &got.pixel_mask,
            fx.get(&case, "pixel_mask"),
        );
        // Compare the uint8 images behind the normalised values.
        let (_, _, h, w) = want.dims4().unwrap();
        let to_u8 = |t: &Tensor| -> Vec<i32> {
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            v.iter()
                .enumerate()
                .map(|(i, &x)| {
                    let c = (i / (h * w)) % 3;
                    (x * std[c] + mean[c]).round() as i32
                })
                .collect()
        };
        let (g, r) = (to_u8(&got.pixel_values), to_u8(want));
        let worst = g.iter().zip(&r).map(|(a, b)| (a - b).abs()).max().unwrap();
        let same = g.iter().zip(&r).filter(|(a, b)| a == b).count();
        let frac = same as f64 / g.len() as f64;
        eprintln!(
            "{case}: resized uint8 max |d| {worst}, identical {:.4}",
            frac
        );
        assert!(worst <= 1, "{case}: resized values differ by {worst}");
        assert!(
            frac >= 0.99,
            "{case}: only {frac:.4} of the resized values identical"
        );
    }
}

/// Checks every tensor of a forward pass that the fixture lists for `case`.
fn check_forward(fx: &Fixture, case: &str, out: &GroundingDinoOutput) {
    let n = |s: &str| format!("{case}.{s}");
    assert_exact(
        &n("text_self_attention_mask"),
        &out.text_self_attention_mask,
        fx.get(case, "text_self_attention_mask"),
    );
    assert_exact(
        &n("text_position_ids"),
        &out.text_position_ids,
        fx.get(case, "text_position_ids"),
    );
    assert_close(
        &n("text.bert_last_hidden_state"),
        &out.text_bert,
        fx.get(case, "text.bert_last_hidden_state"),
    );
    assert_close(
        &n("text.projected"),
        &out.text_projected,
        fx.get(case, "text.projected"),
    );
    for (i, m) in out.backbone_maps.iter().enumerate() {
        if let Some(want) = fx.opt(case, &format!("backbone.feature_map.{i}")) {
            assert_close(&n(&format!("backbone.feature_map.{i}")), m, want);
        }
    }
    assert_exact(
        &n("encoder_input.mask_flatten"),
        &out.mask_flatten,
        fx.get(case, "encoder_input.mask_flatten"),
    );
    if let Some(want) = fx.opt(case, "encoder_input.vision_features") {
        assert_close(
            &n("encoder_input.vision_features"),
            &out.vision_features,
            want,
        );
    }
    let shapes: Vec<Vec<i64>> = out
        .spatial_shapes
        .iter()
        .map(|&(h, w)| vec![h as i64, w as i64])
        .collect();
    assert_eq!(
        shapes,
        fx.ints(case, "spatial_shapes"),
        "{case}: spatial shapes"
    );
    let starts: Vec<i64> = out
        .spatial_shapes
        .iter()
        .scan(0i64, |acc, &(h, w)| {
            let s = *acc;
            *acc += (h * w) as i64;
            Some(s)
        })
        .collect();
    let want_starts = fx
        .get(case, "level_start_index")
        .to_dtype(DType::I64)
        .unwrap()
        .to_vec1::<i64>()
        .unwrap();
    assert_eq!(starts, want_starts, "{case}: level start index");
    assert_close(
        &n("valid_ratios"),
        &out.valid_ratios,
        fx.get(case, "valid_ratios"),
    );
    assert_close(
        &n("encoder.last_hidden_state_text"),
        &out.encoder_text,
        fx.get(case, "encoder.last_hidden_state_text"),
    );
    if let Some(want) = fx.opt(case, "encoder.last_hidden_state_vision") {
        assert_close(
            &n("encoder.last_hidden_state_vision"),
            &out.encoder_vision,
            want,
        );
    }
    assert_close(
        &n("two_stage.output_proposals"),
        &out.output_proposals,
        fx.get(case, "two_stage.output_proposals"),
    );
    assert_close(
        &n("two_stage.enc_outputs_class"),
        &out.enc_outputs_class,
        fx.get(case, "two_stage.enc_outputs_class"),
    );
    assert_close(
        &n("two_stage.enc_outputs_coord_logits"),
        &out.enc_outputs_coord_logits,
        fx.get(case, "two_stage.enc_outputs_coord_logits"),
    );
    let topk: Vec<Vec<i64>> = out
        .topk_indices
        .iter()
        .map(|r| r.iter().map(|&i| i as i64).collect())
        .collect();
    assert_eq!(
        topk,
        fx.ints(case, "two_stage.topk_indices"),
        "{case}: top-k proposals"
    );
    assert_close(
        &n("two_stage.encoder_logits"),
        &out.encoder_logits,
        fx.get(case, "two_stage.encoder_logits"),
    );
    assert_close(
        &n("decoder.init_reference_points"),
        &out.init_reference_points,
        fx.get(case, "decoder.init_reference_points"),
    );
    assert_close(
        &n("decoder.intermediate_hidden_states"),
        &out.intermediate_hidden_states,
        fx.get(case, "decoder.intermediate_hidden_states"),
    );
    assert_close(
        &n("decoder.intermediate_reference_points"),
        &out.intermediate_reference_points,
        fx.get(case, "decoder.intermediate_reference_points"),
    );
    assert_close(
        &n("decoder.last_hidden_state"),
        &out.last_hidden_state,
        fx.get(case, "decoder.last_hidden_state"),
    );
    assert_close(&n("logits"), &out.logits, fx.get(case, "logits"));
    assert_close(
        &n("pred_boxes"),
        &out.pred_boxes,
        fx.get(case, "pred_boxes"),
    );
}

/// Checks the post-processed detections of `case` at every stored threshold.
fn check_postprocess(fx: &Fixture, tok: &TextTokenizer, case: &str, out: &GroundingDinoOutput) {
    let tokens = fx.tokens(case);
    let sizes: Vec<(usize, usize)> = fx
        .ints(case, "target_sizes")
        .iter()
        .map(|r| (r[0] as usize, r[1] as usize))
        .collect();
    let post = fx.meta["cases"][case]["postprocess"]
        .as_object()
        .expect("postprocess");
    assert!(!post.is_empty());
    for (tag, per_image) in post {
        let thr: f32 = format!("0.{}", tag.trim_start_matches("t0"))
            .parse()
            .unwrap();
        let dets =
            post_process(&out.logits, &out.pred_boxes, tokens.len(), &sizes, thr, thr).unwrap();
        for (b, want) in per_image.as_array().unwrap().iter().enumerate() {
            let key = |s: &str| format!("post_{tag}.b{b}.{s}");
            let d = &dets[b];
            let q: Vec<i64> = d.iter().map(|d| d.query as i64).collect();
            let want_q = fx
                .get(case, &key("query_index"))
                .to_dtype(DType::I64)
                .unwrap()
                .to_vec1::<i64>()
                .unwrap();
            assert_eq!(q, want_q, "{case} {tag} b{b}: kept queries");
            if d.is_empty() {
                continue;
            }
            let l = tokens.len();
            let mask: Vec<u8> = d
                .iter()
                .flat_map(|d| d.token_mask.iter().map(|&m| u8::from(m)))
                .collect();
            let mask = Tensor::from_vec(mask, (d.len(), l), &Device::Cpu).unwrap();
            assert_exact(
                &format!("{case}.{}", key("token_mask")),
                &mask,
                fx.get(case, &key("token_mask")),
            );
            let boxes: Vec<f32> = d.iter().flat_map(|d| d.bbox).collect();
            let boxes = Tensor::from_vec(boxes, (d.len(), 4), &Device::Cpu).unwrap();
            assert_close(
                &format!("{case}.{}", key("boxes")),
                &boxes,
                fx.get(case, &key("boxes")),
            );
            let scores =
                Tensor::new(d.iter().map(|d| d.score).collect::<Vec<_>>(), &Device::Cpu).unwrap();
            assert_close(
                &format!("{case}.{}", key("scores")),
                &scores,
                fx.get(case, &key("scores")),
            );
            let labels: Vec<String> = d
                .iter()
                .map(|d| {
                    let ids: Vec<i64> = tokens.ids[b]
                        .iter()
                        .zip(&d.token_mask)
                        .filter(|(_, &m)| m)
                        .map(|(&i, _)| i)
                        .collect();
                    tok.decode(&ids).unwrap()
                })
                .collect();
            let want_labels: Vec<String> = want["text_labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            assert_eq!(labels, want_labels, "{case} {tag} b{b}: labels");
            for (s, w) in d.iter().zip(want["scores"].as_array().unwrap()) {
                let w = w.as_f64().unwrap() as f32;
                assert!(
                    (s.score - w).abs() <= 1e-4,
                    "{case} {tag} b{b}: score {} vs {w}",
                    s.score
                );
            }
        }
    }
}

#[test]
fn detector_matches_reference_on_every_case() {
    let Some(dir) = common::fixtures("grounding_dino") else {
        return;
    };
    let fx = load_fixture(&dir);
    let model = fx.model();
    let tok = fx.tokenizer();
    for case in fx.cases() {
        let out = fx.run(&model, &case);
        check_forward(&fx, &case, &out);
        check_postprocess(&fx, &tok, &case, &out);
    }
}
