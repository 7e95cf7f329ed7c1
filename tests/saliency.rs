//! Saliency segmenters against onnxruntime (fixtures in `$DEVA_FIXTURES/saliency`, made with
//! onnxruntime 1.31.1 from the same ONNX files; see its README for the tolerances).
//!
//! U²-Netp is loaded from the models folder (`deva models fetch u2netp`, run by
//! `scripts/test.sh`); U²-Net and IS-Net run when they have been fetched.

mod common;

use candle_core::{Device, Tensor};
use deva::models::{self, Manifest};
use deva::segmenter::saliency::mask::MaskRule;
use deva::segmenter::saliency::network::SaliencyMaps;
use deva::segmenter::saliency::preprocess;
use deva::segmenter::saliency::{
    SaliencyConfig, SaliencyModel, SaliencyNetwork, SaliencySegmenter,
};
use deva::segmenter::ImageSegmenter;
use image::RgbImage;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

struct Fixture {
    dir: PathBuf,
    tensors: HashMap<String, Tensor>,
    metadata: HashMap<String, String>,
}

fn fixture() -> Option<Fixture> {
    let dir = common::fixtures("saliency")?;
    let path = dir.join("cases.safetensors");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let metadata = meta.metadata().clone().unwrap_or_default();
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap();
    Some(Fixture {
        dir,
        tensors,
        metadata,
    })
}

impl Fixture {
    fn get(&self, key: &str) -> &Tensor {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("cases.safetensors has no tensor {key}"))
    }

    /// An HWC uint8 tensor as an image.
    fn image(&self, key: &str) -> RgbImage {
        common::tensors::rgb_image(self.get(key), key)
    }

    fn values(&self, key: &str) -> Vec<f32> {
        self.get(key)
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    }

    /// Keys `MODEL.IMAGE.OUTPUT` of one model, grouped by image.
    fn cases(&self, model: &str) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for key in self.tensors.keys() {
            let parts: Vec<&str> = key.split('.').collect();
            if parts.len() == 3 && parts[0] == model {
                out.entry(parts[1].to_string())
                    .or_default()
                    .push(parts[2].to_string());
            }
        }
        out.values_mut().for_each(|v| v.sort());
        out
    }
}

/// The model file in the models folder, or `None` (with a "skipped" line) when not fetched.
fn fetched(model: SaliencyModel) -> Option<PathBuf> {
    let dir = models::default_dir().unwrap();
    let entry = Manifest::builtin()
        .unwrap()
        .get(model.manifest_name())
        .unwrap()
        .clone();
    if entry.path_in(&dir).is_file() {
        Some(entry.locate(&dir).unwrap())
    } else {
        eprintln!(
            "skipped: run deva models fetch {} (looked in {})",
            model.manifest_name(),
            dir.display()
        );
        None
    }
}

/// U²-Netp, which the tests require (fetched by `scripts/test.sh`).
fn required_u2netp() -> PathBuf {
    fetched(SaliencyModel::U2netp)
        .expect("U²-Netp is required: run `deva models fetch u2netp` (scripts/test.sh does)")
}

fn sha256_file(path: &Path) -> String {
    common::sha256_hex(&std::fs::read(path).unwrap())
}

/// Max and mean absolute difference.
fn diff(a: &[f32], b: &[f32]) -> (f32, f64) {
    assert_eq!(a.len(), b.len());
    let mut max = 0f32;
    let mut sum = 0f64;
    for (x, y) in a.iter().zip(b) {
        let d = (x - y).abs();
        assert!(d.is_finite(), "non-finite output");
        max = max.max(d);
        sum += f64::from(d);
    }
    (max, sum / a.len() as f64)
}

fn assert_close(what: &str, ours: &[f32], reference: &[f32], max_tol: f32, mean_tol: f64) {
    let (max, mean) = diff(ours, reference);
    eprintln!("{what}: max |diff| {max:.3e}, mean {mean:.3e}");
    assert!(
        max <= max_tol && mean <= mean_tol,
        "{what}: max |diff| {max:.3e} (limit {max_tol:.0e}), mean {mean:.3e} (limit {mean_tol:.0e})"
    );
}

/// The output `name` (d0 = fused, dK = side K) of a forward pass.
fn output<'a>(maps: &'a SaliencyMaps, name: &str) -> &'a Tensor {
    let k: usize = name
        .strip_prefix('d')
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output name {name}"));
    if k == 0 {
        maps.fused.as_ref().expect("U²-Net has a fused output")
    } else {
        &maps.sides[k - 1]
    }
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn pillow_lanczos_and_imgly_bilinear_ports_are_bit_exact() {
    let Some(f) = fixture() else { return };
    let mut checked = 0;
    for key in f.tensors.keys().filter(|k| k.ends_with(".rgb")) {
        let stem = key.trim_end_matches(".rgb");
        let rgb = f.image(key);
        for (suffix, resize) in [
            (
                "rembg_resized",
                preprocess::resize_lanczos as fn(&RgbImage, usize, usize) -> RgbImage,
            ),
            ("imgly_resized", preprocess::resize_bilinear_imgly),
        ] {
            let target = format!("{stem}.{suffix}");
            if !f.tensors.contains_key(&target) {
                continue;
            }
            let expected = f.image(&target);
            let ours = resize(&rgb, expected.width() as usize, expected.height() as usize);
            let differing = ours
                .as_raw()
                .iter()
                .zip(expected.as_raw())
                .filter(|(a, b)| a != b)
                .count();
            assert_eq!(differing, 0, "{target}: {differing} values differ");
            checked += 1;
        }
    }
    assert!(checked > 0, "no resized images in the fixture");
}

#[test]
fn manifest_and_fetched_u2netp_agree_with_the_fixture() {
    let Some(f) = fixture() else { return };
    let manifest = Manifest::builtin().unwrap();
    for (name, meta_key) in [
        ("u2netp", "u2netp_onnx_sha256"),
        ("u2net", "u2net_onnx_sha256"),
        ("isnet", "isnet_fp16_onnx_sha256"),
    ] {
        let listed = manifest.get(name).unwrap().sha256.clone();
        let recorded = f.metadata.get(meta_key).cloned();
        assert_eq!(
            listed, recorded,
            "{name}: manifest vs fixture metadata {meta_key}"
        );
    }
    // The file `deva models fetch u2netp` installed is byte-identical to the fixture's copy.
    let fetched = fetched(SaliencyModel::U2netp)
        .expect("U²-Netp is required: run `deva models fetch u2netp` (scripts/test.sh does)");
    assert_eq!(
        sha256_file(&fetched),
        sha256_file(&f.dir.join("u2netp.onnx"))
    );
}

#[test]
fn onnx_reader_decodes_a_closed_graph_with_well_formed_weights() {
    let Some(f) = fixture() else { return };
    let path = f.dir.join("u2netp.onnx");
    let bytes = std::fs::read(&path).unwrap();
    let model = deva::nn::onnx::Model::parse(&bytes, &path).unwrap();
    assert!(model.opset().is_some());
    let g = &model.graph;
    assert!(!g.nodes.is_empty() && !g.initializers.is_empty());
    // Every node input is a graph input, an initializer, an earlier node's output or omitted.
    let mut known: std::collections::HashSet<&str> = g.inputs.iter().copied().collect();
    known.extend(g.initializers.iter().map(|t| t.name));
    known.insert("");
    for (i, n) in g.nodes.iter().enumerate() {
        for input in &n.inputs {
            assert!(
                known.contains(input),
                "node {i} ({}) reads unknown {input:?}",
                n.op_type
            );
        }
        known.extend(n.outputs.iter().copied());
    }
    for o in &g.outputs {
        assert!(known.contains(o), "graph output {o:?} is never produced");
    }
    for t in &g.initializers {
        let v = t.to_f32().unwrap();
        assert_eq!(v.len(), t.numel(), "{}", t.name);
        assert!(v.iter().all(|x| x.is_finite()), "{}", t.name);
    }
}

/// Runs `model` on every image of the fixture that has outputs for it (formula R or I from
/// the stored resized image) and compares each stored output.
fn check_u2(model: SaliencyModel, path: &Path, f: &Fixture) {
    let net = SaliencyNetwork::load(model, path, &Device::Cpu).unwrap();
    let cases = f.cases(model.manifest_name());
    assert!(!cases.is_empty(), "no {} cases", model.manifest_name());
    for (img, outputs) in cases {
        let resized = f.image(&format!("{img}.rembg_resized"));
        let input = preprocess::rembg_tensor(&resized, &Device::Cpu).unwrap();
        let maps = net.forward(&input).unwrap();
        for out in outputs {
            let key = format!("{}.{img}.{out}", model.manifest_name());
            assert_close(
                &key,
                &flat(output(&maps, &out)),
                &f.values(&key),
                3e-4,
                3e-6,
            );
        }
    }
}

#[test]
fn u2netp_matches_onnxruntime() {
    let Some(f) = fixture() else { return };
    check_u2(SaliencyModel::U2netp, &required_u2netp(), &f);
}

#[test]
fn u2net_matches_onnxruntime() {
    let Some(f) = fixture() else { return };
    let Some(path) = fetched(SaliencyModel::U2net) else {
        return;
    };
    check_u2(SaliencyModel::U2net, &path, &f);
}

#[test]
fn isnet_matches_onnxruntime() {
    let Some(f) = fixture() else { return };
    let Some(path) = fetched(SaliencyModel::Isnet) else {
        return;
    };
    let net = SaliencyNetwork::load(SaliencyModel::Isnet, &path, &Device::Cpu).unwrap();
    for (img, outputs) in f.cases("isnet") {
        let resized = f.image(&format!("{img}.imgly_resized"));
        let input = preprocess::imgly_tensor(&resized, &Device::Cpu).unwrap();
        let maps = net.forward(&input).unwrap();
        assert!(maps.fused.is_none(), "IS-Net has no fusion layer");
        let ours = flat(maps.primary());
        for out in outputs {
            let key = format!("isnet.{img}.{out}");
            let reference = f.values(&key);
            match out.as_str() {
                "output_fp32graph" => assert_close(&key, &ours, &reference, 5e-5, 1e-6),
                "output_fp16graph" => {
                    assert_close(&key, &ours, &reference, 3e-3, 3e-5);
                    let (mut inter, mut union) = (0usize, 0usize);
                    for (a, b) in ours.iter().zip(&reference) {
                        inter += usize::from(*a > 0.5 && *b > 0.5);
                        union += usize::from(*a > 0.5 || *b > 0.5);
                    }
                    let iou = inter as f64 / union.max(1) as f64;
                    assert!(iou >= 0.999, "{key}: mask IoU {iou}");
                }
                other => panic!("unexpected IS-Net output {other}"),
            }
        }
    }
}

#[test]
fn segmenter_thresholds_the_network_map_at_frame_size() {
    let Some(f) = fixture() else { return };
    let config = SaliencyConfig::default();
    assert_eq!(config.model, SaliencyModel::U2netp);
    let network =
        SaliencyNetwork::load(SaliencyModel::U2netp, &required_u2netp(), &Device::Cpu).unwrap();
    let mut seg = SaliencySegmenter::new(network, &config).unwrap();
    let rule = MaskRule {
        threshold: config.threshold,
        min_blob_fraction: config.min_blob_fraction,
        keep_largest: config.keep_largest,
    };
    for (img, outputs) in f.cases("u2netp") {
        assert!(outputs.iter().any(|o| o == "d0"));
        let frame = deva::video::Frame {
            index: 0,
            name: img.clone(),
            image: f.image(&format!("{img}.rgb")).into(),
        };
        let ours = seg.segment(&frame, None).unwrap().expect("a segmentation");
        ours.validate().unwrap();
        assert_eq!(
            (ours.map.width(), ours.map.height()),
            (frame.width(), frame.height())
        );
        // The same rule applied to onnxruntime's d0 map: masks agree up to pixels whose
        // saliency sits within the parity tolerance of the threshold.
        let reference_map = f.values(&format!("u2netp.{img}.d0"));
        let (_, _, mh, mw) = f.get(&format!("u2netp.{img}.d0")).dims4().unwrap();
        let reference = rule.segment(&reference_map, mw, mh, frame.width(), frame.height());
        assert_eq!(ours.segments.len(), reference.segments.len(), "{img}");
        if let (Some(a), Some(b)) = (ours.segments.first(), reference.segments.first()) {
            assert_eq!((a.id, b.id), (1, 1));
            let iou = ours.map.mask(1).iou(&reference.map.mask(1)).unwrap();
            assert!(iou > 0.995, "{img}: IoU {iou} with the reference mask");
            assert!((a.score.unwrap() - b.score.unwrap()).abs() < 1e-3);
        }
    }
}

/// The ONNX model's initializers load through the strict weight backend: each with its own
/// shape, none left unused; a wrong shape is an error naming the key and the file.
#[test]
fn onnx_initializers_load_through_the_strict_weight_backend() {
    let Some(dir) = common::fixtures("saliency") else {
        return;
    };
    let path = dir.join("u2netp.onnx");
    let w = deva::nn::Weights::open(&path).unwrap();
    let keys = w.keys();
    assert!(keys.len() > 10, "{} initializers", keys.len());
    let dims: Vec<Vec<usize>> = keys.iter().map(|k| w.dims(k).unwrap()).collect();
    let cpu = candle_core::Device::Cpu;
    w.build(&cpu, &[], |vb| {
        for (k, d) in keys.iter().zip(&dims) {
            vb.get(d.as_slice(), k)?;
        }
        Ok(())
    })
    .unwrap();
    let wrong = dims[0].iter().product::<usize>() + 1;
    let e = deva::nn::Weights::open(&path)
        .unwrap()
        .build(&cpu, &[], |vb| Ok(vb.get(wrong, &keys[0])?))
        .unwrap_err()
        .to_string();
    assert!(e.contains(&keys[0]) && e.contains("u2netp.onnx"), "{e}");
}
