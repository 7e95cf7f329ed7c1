//! Parity of the SAM port with the official `segment-anything` package on the fixtures in
//! `$DEVA_FIXTURES/sam` (see its README): preprocessing, image encoder, prompted predictor,
//! automatic mask generator.

mod common;

use candle_core::{DType, Device, Tensor};
use deva::segmenter::sam::transform::{apply_coords, resize_longest_side};
use deva::segmenter::sam::{ImageEmbedding, PointPrompt, Prompt, SamModel};
use image::RgbImage;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

struct Fixture {
    cases: HashMap<String, Tensor>,
    checks: serde_json::Value,
}

fn load_fixture(dir: &Path) -> Fixture {
    let cases = candle_core::safetensors::load(dir.join("cases.safetensors"), &Device::Cpu)
        .expect("cases.safetensors");
    let checks: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("checks.json")).expect("checks.json"),
    )
    .expect("checks.json is JSON");
    Fixture { cases, checks }
}

impl Fixture {
    fn get(&self, key: &str) -> &Tensor {
        self.cases
            .get(key)
            .unwrap_or_else(|| panic!("cases.safetensors has no {key}"))
    }

    /// The suggested absolute tolerance of the README: max(1e-4·max(1, scale),
    /// 10·(float32 vs float64 deviation)), rounded up to one significant digit, with scale and
    /// deviation read from checks.json (`path` = keys under "precision").
    fn atol(&self, path: &[&str]) -> f32 {
        let mut v = &self.checks["precision"];
        for p in path {
            v = &v[*p];
        }
        let scale = v["scale"]
            .as_f64()
            .unwrap_or_else(|| panic!("no scale for {path:?}"));
        let dev = v["max_abs"]
            .as_f64()
            .unwrap_or_else(|| panic!("no max_abs for {path:?}"));
        let t = (1e-4 * scale.max(1.0)).max(10.0 * dev);
        let unit = 10f64.powf(t.log10().floor());
        ((t / unit).ceil() * unit) as f32
    }

    fn pair(&self, key: &str) -> (usize, usize) {
        let v = self
            .get(key)
            .to_dtype(DType::I64)
            .unwrap()
            .to_vec1::<i64>()
            .unwrap();
        (v[0] as usize, v[1] as usize)
    }

    fn image(&self, key: &str) -> RgbImage {
        let t = self.get(key);
        let (h, w, _) = t.dims3().unwrap();
        let data = t.flatten_all().unwrap().to_vec1::<u8>().unwrap();
        RgbImage::from_raw(w as u32, h as u32, data).unwrap()
    }

    /// Case names: key prefixes (before the first '.') that have predictor outputs.
    fn predictor_cases(&self) -> Vec<String> {
        let names: BTreeSet<String> = self
            .cases
            .keys()
            .filter(|k| k.ends_with(".iou_predictions"))
            .map(|k| k.split('.').next().unwrap().to_string())
            .collect();
        names.into_iter().collect()
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn assert_close(name: &str, got: &Tensor, want: &Tensor, atol: f32) {
    let d = max_abs_diff(got, want);
    assert!(d <= atol, "{name}: max |port - ref| = {d:e} > {atol:e}");
    eprintln!("{name}: max diff {d:.3e} (atol {atol:.0e})");
}

fn model(dir: &Path) -> SamModel {
    SamModel::load(&dir.join("weights.pth"), &Device::Cpu).expect("weights.pth loads")
}

#[test]
fn preprocessing_resizes_like_pillow() {
    let Some(dir) = common::fixtures("sam") else {
        return;
    };
    let fx = load_fixture(&dir);
    let image = fx.image("image_u8");
    let expected = fx.image("image_resized_u8");
    let (oh, ow) = fx.pair("original_size");
    let (ih, iw) = fx.pair("input_size");
    assert_eq!((image.height() as usize, image.width() as usize), (oh, ow));
    let resized = resize_longest_side(&image, 1024);
    assert_eq!(
        (resized.height() as usize, resized.width() as usize),
        (ih, iw)
    );
    let differing = resized
        .as_raw()
        .iter()
        .zip(expected.as_raw())
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(
        differing, 0,
        "resized image differs from Pillow's in {differing} bytes"
    );
}

#[test]
fn image_encoder_matches_reference() {
    let Some(dir) = common::fixtures("sam") else {
        return;
    };
    let fx = load_fixture(&dir);
    let sam = model(&dir);
    let input = sam.input_tensor(&fx.image("image_resized_u8")).unwrap();
    let mut trace = Vec::new();
    let emb = sam.encode(&input, Some(&mut trace)).unwrap();
    let first = "enc.patch_embed_plus_pos";
    assert_close(first, &trace[0], fx.get(first), fx.atol(&[first]));
    let blocks: BTreeSet<usize> = fx
        .cases
        .keys()
        .filter_map(|k| k.strip_prefix("enc.block")?.parse().ok())
        .collect();
    assert!(!blocks.is_empty(), "no enc.block<i> in the fixture");
    for i in blocks {
        let key = format!("enc.block{i}");
        assert_close(&key, &trace[i + 1], fx.get(&key), fx.atol(&[&key]));
    }
    assert_close(
        "image_embeddings",
        &emb,
        fx.get("image_embeddings"),
        fx.atol(&["image_embeddings"]),
    );
}

/// The prompt of a case, in original-image pixels, read from the fixture.
fn case_prompt(fx: &Fixture, case: &str) -> Prompt {
    let key = |s: &str| format!("{case}.{s}");
    let points = match fx.cases.get(&key("point_coords")) {
        Some(c) => {
            let c = c.to_vec2::<f32>().unwrap();
            let l = fx
                .get(&key("point_labels"))
                .to_dtype(DType::I64)
                .unwrap()
                .to_vec1::<i64>()
                .unwrap();
            c.iter()
                .zip(&l)
                .map(|(p, &l)| PointPrompt {
                    x: p[0] as f64,
                    y: p[1] as f64,
                    positive: l == 1,
                })
                .collect()
        }
        None => Vec::new(),
    };
    let bbox = fx.cases.get(&key("box")).map(|b| {
        let v = b.to_vec1::<f32>().unwrap();
        [v[0] as f64, v[1] as f64, v[2] as f64, v[3] as f64]
    });
    Prompt {
        points,
        bbox,
        mask_input: fx.cases.get(&key("mask_input")).cloned(),
    }
}

/// Checks one predictor case against the fixture, from the given image embedding.
fn check_case(fx: &Fixture, sam: &SamModel, emb: &ImageEmbedding, case: &str) {
    let key = |s: &str| format!("{case}.{s}");
    let prompt = case_prompt(fx, case);
    // Prompt coordinates mapped into the resized frame.
    if let Some(want) = fx.cases.get(&key("point_coords_transformed")) {
        let got: Vec<f32> = prompt
            .points
            .iter()
            .flat_map(|p| {
                let (x, y) = apply_coords((p.x, p.y), emb.original_size, emb.input_size);
                [x, y]
            })
            .collect();
        let got = Tensor::from_vec(got, want.dims(), &Device::Cpu).unwrap();
        assert_close(&key("point_coords_transformed"), &got, want, 1e-4);
    }
    if let (Some(want), Some([x0, y0, x1, y1])) =
        (fx.cases.get(&key("box_transformed")), prompt.bbox)
    {
        let (a, b) = apply_coords((x0, y0), emb.original_size, emb.input_size);
        let (c, d) = apply_coords((x1, y1), emb.original_size, emb.input_size);
        let got = Tensor::new(&[a, b, c, d], &Device::Cpu).unwrap();
        assert_close(&key("box_transformed"), &got, want, 1e-4);
    }
    let pe = sam.prompt_embeddings(emb, &prompt).unwrap();
    assert_close(
        &key("sparse_embeddings"),
        &pe.sparse,
        fx.get(&key("sparse_embeddings")),
        fx.atol(&[case, "sparse_embeddings"]),
    );
    let n_out = fx.get(&key("iou_predictions")).dim(0).unwrap();
    let pred = sam.predict(emb, &prompt, n_out > 1).unwrap();
    let iou = Tensor::new(pred.iou.as_slice(), &Device::Cpu).unwrap();
    assert_close(
        &key("iou_predictions"),
        &iou,
        fx.get(&key("iou_predictions")),
        fx.atol(&[case, "iou_predictions"]),
    );
    assert_close(
        &key("low_res_logits"),
        &pred.low_res,
        fx.get(&key("low_res_logits")),
        fx.atol(&[case, "low_res_logits"]),
    );
    let want_logits = fx.get(&key("masks_logits"));
    let logits = Tensor::from_vec(pred.logits.concat(), want_logits.dims(), &Device::Cpu).unwrap();
    assert_close(
        &key("masks_logits"),
        &logits,
        want_logits,
        fx.atol(&[case, "masks_logits"]),
    );
    // Binary masks: equal except where the reference logit is within 1e-3 of the threshold.
    let want_masks = fx
        .get(&key("masks"))
        .flatten_all()
        .unwrap()
        .to_vec1::<u8>()
        .unwrap();
    let ref_logits = want_logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let got: Vec<bool> = (0..n_out)
        .flat_map(|i| pred.mask(i).data().to_vec())
        .collect();
    let bad = got
        .iter()
        .zip(&want_masks)
        .zip(&ref_logits)
        .filter(|((g, w), l)| (**g != (**w != 0)) && l.abs() >= 1e-3)
        .count();
    assert_eq!(
        bad, 0,
        "{case}: {bad} mask pixels differ away from the threshold"
    );
}

#[test]
fn predictor_matches_reference_on_every_case() {
    let Some(dir) = common::fixtures("sam") else {
        return;
    };
    let fx = load_fixture(&dir);
    let sam = model(&dir);
    let cases = fx.predictor_cases();
    assert!(!cases.is_empty(), "no predictor cases in cases.safetensors");
    // Decoder parity from the reference image embedding (isolates the prompt path) ...
    let reference = ImageEmbedding {
        features: fx.get("image_embeddings").clone(),
        original_size: fx.pair("original_size"),
        input_size: fx.pair("input_size"),
    };
    for case in &cases {
        check_case(&fx, &sam, &reference, case);
    }
    // ... and end to end from the original image.
    let ours = sam.embed_image(&fx.image("image_u8")).unwrap();
    assert_eq!(ours.input_size, reference.input_size);
    for case in &cases {
        check_case(&fx, &sam, &ours, case);
    }
}
