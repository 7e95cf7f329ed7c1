//! Parity of the ReferFormer port with the official code on the fixtures in
//! `$DEVA_FIXTURES/referformer` (and any `referformer_*` sibling made with another seed; see
//! `tests/oracle/referformer/`): token ids, RoBERTa, backbone, fusion, transformer, heads,
//! mask logits and the selected mask; strict loading of the official key layout. A set made
//! with `--backbone swin` (e.g. `referformer_swin`) runs the Swin backbone in the original key
//! layout through the same checks, and one made with `--backbone video_swin` (e.g.
//! `referformer_vswin`) ReferFormer's Video-Swin on one frame.

mod common;

use candle_core::{DType, Device, Tensor};
use common::tensors::{max_abs, max_abs_diff};
use deva::nn::checkpoint;
use deva::nn::weights::Weights;
use deva::segmenter::grounded::{preprocess, ResizeRule, TextTokenizer};
use deva::segmenter::referformer::segmenter::select;
use deva::segmenter::referformer::{ReferFormer, VisualBackbone};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Relative tolerances (max |ours − torch| / max |torch|). Measured on seeds 0 and 1 (float32,
/// CPU): text ≤ 6.6e-7, backbone ≤ 2.2e-6, fusion / memory / decoder ≤ 8.7e-6, heads and mask
/// logits ≤ 4.5e-6; 0 pixels of the selected masks differ. The Swin sets (seed 0 DAVIS, seed 1
/// procedural): text ≤ 8.1e-7, backbone ≤ 1.4e-6, transformer ≤ 2.5e-6, heads ≤ 7.4e-6,
/// 0 selected-mask pixels differ. The Video-Swin sets (seeds 0 and 1): text ≤ 8.1e-7, backbone
/// ≤ 9.3e-7, transformer ≤ 2.7e-6, heads ≤ 3.6e-6, 0 selected-mask pixels differ.
const TEXT_TOL: f32 = 1e-5;
const BACKBONE_TOL: f32 = 2e-5;
const TRANSFORMER_TOL: f32 = 5e-5;
const HEAD_TOL: f32 = 5e-5;
/// Fraction of pixels of the selected mask that may differ (logits right at the threshold).
const MASK_PIXEL_TOL: f64 = 1e-3;
/// Largest difference of our resize of the original frame from torchvision's, in grey levels.
const RESIZE_TOL: i32 = 1;

struct Fixture {
    dir: PathBuf,
    tensors: HashMap<String, Tensor>,
    cases: serde_json::Map<String, serde_json::Value>,
    config: serde_json::Value,
}

fn fixture_dirs() -> Vec<PathBuf> {
    let Some(main) =
        common::oracle_fixtures("referformer", "tests/oracle/referformer/make_fixture.py")
    else {
        return Vec::new();
    };
    let mut dirs = vec![main.clone()];
    let root = main.parent().expect("fixture root");
    let mut extra: Vec<PathBuf> = std::fs::read_dir(root)
        .expect("fixture root is readable")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("referformer_"))
        })
        .collect();
    extra.sort();
    dirs.extend(extra);
    dirs
}

fn load_fixture(dir: &Path) -> Fixture {
    let (tensors, json) = common::safetensors_cases(dir);
    let meta: serde_json::Value = serde_json::from_str(&json).expect("cases_json is JSON");
    Fixture {
        dir: dir.to_path_buf(),
        tensors,
        cases: meta["cases"].as_object().expect("cases").clone(),
        config: common::json_file(dir, "config.json"),
    }
}

impl Fixture {
    fn get(&self, case: &str, name: &str) -> &Tensor {
        let key = format!("{case}.{name}");
        self.tensors
            .get(&key)
            .unwrap_or_else(|| panic!("cases.safetensors has no {key}"))
    }
}

fn rel_err(got: &Tensor, want: &Tensor) -> f32 {
    max_abs_diff(got, want) / (max_abs(want) + 1e-6)
}

fn check(what: &str, got: &Tensor, want: &Tensor, tol: f32) {
    let e = rel_err(got, want);
    eprintln!("{what}: relative error {e:.2e}");
    assert!(e <= tol, "{what}: relative error {e:.3e} > {tol:.0e}");
}

/// `[c, h, w]` maps of the fixture against our `[1, c, h, w]`; sequences `[hw, d]` against
/// `[1, d, h, w]` maps.
fn check_map(what: &str, got: &Tensor, want: &Tensor, tol: f32) {
    let got = got.squeeze(0).unwrap();
    let got = if want.rank() == 2 {
        got.flatten_from(1).unwrap().t().unwrap()
    } else {
        got
    };
    check(what, &got, want, tol);
}

#[test]
fn referformer_matches_the_official_code() {
    for dir in fixture_dirs() {
        let fx = load_fixture(&dir);
        let dev = Device::Cpu;
        let model = ReferFormer::load(&fx.dir.join("weights.pth"), &dev).expect("weights.pth");
        let c = model.config();
        assert_eq!(
            c.hidden_dim as u64,
            fx.config["hidden_dim"].as_u64().unwrap()
        );
        assert_eq!(
            c.num_queries as u64,
            fx.config["num_queries"].as_u64().unwrap()
        );
        assert_eq!(
            c.enc_layers as u64,
            fx.config["enc_layers"].as_u64().unwrap()
        );
        assert_eq!(
            c.dec_layers as u64,
            fx.config["dec_layers"].as_u64().unwrap()
        );
        assert_eq!(
            c.dynamic_mask_channels as u64,
            fx.config["dynamic_mask_channels"].as_u64().unwrap()
        );
        // The backbone read from the checkpoint's keys is the oracle's.
        let (swin, video) = (fx.config.get("swin"), fx.config.get("video_swin"));
        match (&c.backbone, swin.or(video)) {
            (VisualBackbone::Swin(s), Some(want)) | (VisualBackbone::VideoSwin(s), Some(want)) => {
                assert_eq!(
                    matches!(c.backbone, VisualBackbone::VideoSwin(_)),
                    video.is_some()
                );
                let n = |v: &serde_json::Value| v.as_u64().unwrap() as usize;
                let list =
                    |k: &str| -> Vec<usize> { want[k].as_array().unwrap().iter().map(n).collect() };
                assert_eq!(s.embed_dim, n(&want["embed_dim"]));
                assert_eq!(s.depths, list("depths"));
                assert_eq!(s.num_heads, list("num_heads"));
                if video.is_some() {
                    // `[frames, side, side]` windows and `[1, p, p]` patches.
                    let (window, patch) = (list("window_size"), list("patch_size"));
                    assert_eq!(window, [s.window_frames, s.window_size, s.window_size]);
                    assert_eq!(patch, [1, s.patch_size, s.patch_size]);
                } else {
                    assert_eq!(s.window_size, n(&want["window_size"]));
                }
            }
            (VisualBackbone::ResNet { .. }, None) => {}
            (got, want) => panic!("backbone {got:?}, oracle's swin config {want:?}"),
        }
        let tokenizer = TextTokenizer::from_file(&fx.dir.join("tokenizer.json")).unwrap();
        let size = fx.config["size"].as_u64().unwrap() as usize;
        for (case, meta) in &fx.cases {
            eprintln!("{} {case}", dir.display());
            let expr = meta["expression"].as_str().unwrap();
            let ids = tokenizer.encode_batch(&[expr]).unwrap().ids.remove(0);
            let want_ids = fx.get(case, "input_ids").to_vec1::<i64>().unwrap();
            assert_eq!(ids, want_ids, "{case}: token ids of '{expr}'");

            // Preprocessing of the original frame: resize within one grey level, and the
            // normalisation of the stored resized image.
            let image = fx.get(case, "image");
            let (h, w, _) = image.dims3().unwrap();
            let rgb = image::RgbImage::from_raw(
                w as u32,
                h as u32,
                image.flatten_all().unwrap().to_vec1::<u8>().unwrap(),
            )
            .unwrap();
            let rule = ResizeRule {
                shortest_edge: size,
                longest_edge: usize::MAX,
            };
            let ours = deva::segmenter::grounded::preprocess::resize(&rgb, &rule);
            let theirs = fx.get(case, "input_image");
            let (ih, iw, _) = theirs.dims3().unwrap();
            assert_eq!((ours.height() as usize, ours.width() as usize), (ih, iw));
            let t = theirs.flatten_all().unwrap().to_vec1::<u8>().unwrap();
            let worst = ours
                .as_raw()
                .iter()
                .zip(&t)
                .map(|(a, b)| (*a as i32 - *b as i32).abs())
                .max()
                .unwrap();
            assert!(worst <= RESIZE_TOL, "{case}: resize differs by {worst}");
            let resized = image::RgbImage::from_raw(iw as u32, ih as u32, t).unwrap();
            let input = preprocess(&[resized], &rule, &dev).unwrap().pixel_values;
            check(
                "input",
                &input.squeeze(0).unwrap(),
                fx.get(case, "input"),
                1e-6,
            );

            let input = fx.get(case, "input").unsqueeze(0).unwrap();
            let out = model.forward(&input, &ids).unwrap();
            let sq = |t: &Tensor| t.squeeze(0).unwrap();
            check(
                "text_hidden",
                &sq(&out.text_hidden),
                fx.get(case, "text_hidden"),
                TEXT_TOL,
            );
            check(
                "text_pooled",
                &sq(&out.text_pooled),
                fx.get(case, "text_pooled"),
                TEXT_TOL,
            );
            check(
                "text_features",
                &sq(&out.text_features),
                fx.get(case, "text_features"),
                TEXT_TOL,
            );
            check(
                "text_sentence",
                &sq(&out.text_sentence),
                fx.get(case, "text_sentence"),
                TEXT_TOL,
            );
            for (i, (b, p)) in out.backbone.iter().zip(&out.pos).enumerate() {
                let n = i + 2;
                check_map(
                    &format!("res{n}"),
                    b,
                    fx.get(case, &format!("backbone.res{n}")),
                    BACKBONE_TOL,
                );
                check_map(
                    &format!("pos{n}"),
                    p,
                    fx.get(case, &format!("pos.res{n}")),
                    1e-5,
                );
            }
            for (i, f) in out.fused.iter().enumerate() {
                check_map(
                    &format!("fused.{i}"),
                    f,
                    fx.get(case, &format!("fused.{i}")),
                    TRANSFORMER_TOL,
                );
            }
            for (i, m) in out.memory.iter().enumerate() {
                check_map(
                    &format!("memory.{i}"),
                    m,
                    fx.get(case, &format!("memory.{i}")),
                    TRANSFORMER_TOL,
                );
            }
            let hs = Tensor::cat(&out.hs, 0).unwrap();
            check("hs", &hs, fx.get(case, "hs"), TRANSFORMER_TOL);
            check(
                "init_reference",
                &sq(&out.init_reference),
                fx.get(case, "init_reference"),
                TRANSFORMER_TOL,
            );
            let refs = Tensor::cat(&out.inter_references, 0).unwrap();
            check(
                "inter_references",
                &refs,
                fx.get(case, "inter_references"),
                TRANSFORMER_TOL,
            );
            check(
                "mask_features",
                &sq(&out.mask_features),
                fx.get(case, "mask_features"),
                HEAD_TOL,
            );
            check(
                "pred_logits",
                &out.pred_logits,
                fx.get(case, "pred_logits"),
                HEAD_TOL,
            );
            check(
                "pred_boxes",
                &out.pred_boxes,
                fx.get(case, "pred_boxes"),
                HEAD_TOL,
            );
            check(
                "pred_masks",
                &out.pred_masks,
                fx.get(case, "pred_masks"),
                HEAD_TOL,
            );

            let (oh, ow) = fx.get(case, "selected_mask").dims2().unwrap();
            let sel = select(&out.pred_logits, &out.pred_masks, ow, oh, 0.0).unwrap();
            let best = fx.get(case, "best_query").to_scalar::<i64>().unwrap();
            assert_eq!(sel.query as i64, best, "{case}: best query");
            let want = fx
                .get(case, "selected_mask")
                .flatten_all()
                .unwrap()
                .to_vec1::<u8>()
                .unwrap();
            let differ = sel
                .mask
                .data()
                .iter()
                .zip(&want)
                .filter(|(a, b)| **a != (**b != 0))
                .count();
            let frac = differ as f64 / want.len() as f64;
            eprintln!("selected mask: {differ} of {} pixels differ", want.len());
            assert!(
                frac <= MASK_PIXEL_TOL,
                "{case}: {differ} mask pixels differ"
            );
        }
    }
}

/// The official checkpoint's tensors, by key.
fn official_tensors(dir: &Path) -> Vec<(String, Tensor)> {
    let dict = checkpoint::load(dir.join("weights.pth"), &["model"]).expect("weights.pth");
    let w = Weights::from_state_dict(dict).unwrap();
    let mut t: Vec<_> = w.tensors().unwrap().into_iter().collect();
    t.sort_by(|a, b| a.0.cmp(&b.0));
    t
}

fn build(named: Vec<(String, Tensor)>) -> deva::Result<ReferFormer> {
    let w = Weights::from_tensors("edited.pth", named)?;
    ReferFormer::from_weights(&w, &Device::Cpu)
}

/// Dropping any of `keys` from the fixture's checkpoint is an error naming it.
fn check_missing(all: &[(String, Tensor)], keys: &[String]) {
    for key in keys {
        let kept: Vec<_> = all.iter().filter(|(k, _)| k != key).cloned().collect();
        assert_eq!(kept.len() + 1, all.len(), "the fixture has {key}");
        let err = build(kept)
            .expect_err("a missing key must fail")
            .to_string();
        assert!(
            err.contains(key.as_str()),
            "error for missing {key} does not name it: {err}"
        );
    }
}

/// Every fixture whose backbone is the Swin variant `config_key` of its `config.json`
/// ("swin" or "video_swin"), with the key prefix of the backbone, the index of the last stage
/// and of that stage's last block.
fn swin_fixtures(config_key: &str) -> Vec<(PathBuf, String, usize, u64)> {
    let mut found = Vec::new();
    for dir in fixture_dirs() {
        let fx = load_fixture(&dir);
        let Some(swin) = fx.config.get(config_key) else {
            continue;
        };
        let depths = swin["depths"].as_array().unwrap();
        let n = depths.len() - 1;
        let last = depths[n].as_u64().unwrap() - 1;
        found.push((dir, "backbone.0.body".to_string(), n, last));
    }
    found
}

#[test]
fn a_missing_swin_key_is_an_error_naming_it() {
    for (dir, b, n, last) in swin_fixtures("swin") {
        let all = official_tensors(&dir);
        check_missing(
            &all,
            &[
                format!("{b}.layers.{n}.blocks.{last}.attn.qkv.weight"),
                format!("{b}.layers.{n}.blocks.{last}.attn.relative_position_bias_table"),
                format!("{b}.layers.0.downsample.norm.weight"),
                format!("{b}.patch_embed.norm.bias"),
                format!("{b}.norm{n}.weight"),
            ],
        );
        // The unchanged checkpoint loads (its derived index buffers are not unused keys).
        build(all).expect("the swin fixture loads");
    }
}

#[test]
fn a_missing_video_swin_key_is_an_error_naming_it() {
    for (dir, b, n, last) in swin_fixtures("video_swin") {
        let all = official_tensors(&dir);
        check_missing(
            &all,
            &[
                format!("{b}.layers.{n}.blocks.{last}.attn.qkv.weight"),
                format!("{b}.layers.{n}.blocks.{last}.mlp.fc2.bias"),
                format!("{b}.layers.0.blocks.0.attn.relative_position_index"),
                format!("{b}.downsamples.{}.reduction.weight", n - 1),
                format!("{b}.patch_embed.norm.bias"),
            ],
        );
        build(all).expect("the video-swin fixture loads");
    }
}

#[test]
fn a_missing_or_unexpected_key_is_an_error_naming_it() {
    let Some(dir) = fixture_dirs().into_iter().next() else {
        return;
    };
    let all = official_tensors(&dir);
    check_missing(
        &all,
        &[
            "pixel_decoder.cross_attn_2.linear1.weight".into(),
            "text_encoder.pooler.dense.bias".into(),
            "transformer.decoder.bbox_embed.1.layers.2.bias".into(),
            "backbone.0.body.layer3.2.bn2.running_var".into(),
        ],
    );
    let mut extra = all.clone();
    extra.push((
        "controller.layers.9.weight".into(),
        Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap(),
    ));
    let err = build(extra)
        .expect_err("an unused key must fail")
        .to_string();
    assert!(err.contains("controller.layers.9.weight"), "{err}");
}
