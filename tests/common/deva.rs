//! Helpers of the DEVA network tests (`tests/deva_net_*.rs`): fixture files of
//! `$DEVA_FIXTURES/deva_net`, tolerances of its README, the fixture network and small
//! synthetic videos.

use std::path::Path;

use candle_core::{Device, Tensor};
use deva::config::{MemoryConfig, UsageCounting};
use deva::mask::{IdMap, ObjectId, ObjectProbs};
use deva::nn::checkpoint::{self, StateDict, TensorDType};
use deva::nn::synthetic::{self, TensorSpec};
use deva::nn::Weights;
use deva::propagator::deva::network::DevaNet;
use deva::video::Frame;

/// The `state_dict_keys.json` layout: (seed, every key with shape and dtype in order).
pub fn fixture_layout(dir: &Path) -> (u64, Vec<TensorSpec>) {
    let text = std::fs::read_to_string(dir.join("state_dict_keys.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let seed = v["seed"].as_u64().unwrap();
    let keys = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| TensorSpec {
            name: e[0].as_str().unwrap().to_string(),
            shape: e[1]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect(),
            dtype: match e[2].as_str().unwrap() {
                "float32" => TensorDType::F32,
                "int64" => TensorDType::I64,
                other => panic!("unexpected dtype {other} in state_dict_keys.json"),
            },
        })
        .collect();
    (seed, keys)
}

/// The size tags `s<H>x<W>` used as name prefixes in a fixture file.
pub fn size_tags(sd: &StateDict) -> Vec<String> {
    let mut tags: Vec<String> = sd
        .names()
        .filter_map(|n| n.split('.').next())
        .filter(|t| {
            t.strip_prefix('s')
                .and_then(|r| r.split_once('x'))
                .is_some_and(|(h, w)| h.parse::<usize>().is_ok() && w.parse::<usize>().is_ok())
        })
        .map(str::to_string)
        .collect();
    tags.sort();
    tags.dedup();
    assert!(
        !tags.is_empty(),
        "no size tags in {}",
        sd.source().display()
    );
    tags
}

/// A fixture tensor as f32 values with its shape.
pub fn values(sd: &StateDict, name: &str) -> (Vec<f32>, Vec<usize>) {
    let t = sd
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing from {}", sd.source().display()));
    let v = t
        .to_f32()
        .or_else(|| {
            t.to_i64()
                .map(|v| v.into_iter().map(|x| x as f32).collect())
        })
        .unwrap();
    (v, t.shape().to_vec())
}

pub fn tensor(sd: &StateDict, name: &str) -> Tensor {
    let (v, shape) = values(sd, name);
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

pub fn host(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The README's suggested tolerance from `checks.json`: max(1e-4·max(1, scale), 10·f32-vs-f64
/// error), rounded up to one significant digit.
pub struct Tolerances(serde_json::Value);

impl Tolerances {
    pub fn load(dir: &Path) -> Self {
        let text = std::fs::read_to_string(dir.join("checks.json")).unwrap();
        Tolerances(serde_json::from_str(&text).unwrap())
    }

    pub fn atol(&self, tag: &str, output: &str) -> f32 {
        let e = &self.0["precision"][format!("cases/{tag}")][output];
        let scale = e["scale"]
            .as_f64()
            .unwrap_or_else(|| panic!("checks.json has no precision for {tag}/{output}"));
        let raw = (1e-4 * scale.max(1.0)).max(10.0 * e["max_abs"].as_f64().unwrap());
        let unit = 10f64.powf(raw.log10().floor());
        ((raw / unit).ceil() * unit) as f32
    }

    /// The reference's own float32-vs-float64 deviation of engine run `key` (`size.variant`)
    /// at frame `t` (`prob_max_abs_per_frame`).
    pub fn engine_deviation(&self, key: &str, t: usize) -> f32 {
        let run = format!("engine/{}", key.replacen('.', "/", 1));
        self.0["precision"][&run]["prob_max_abs_per_frame"][t]
            .as_f64()
            .unwrap_or_else(|| panic!("checks.json has no prob_max_abs_per_frame[{t}] for {run}"))
            as f32
    }
}

/// Compares `ours` with fixture `{tag}.{name}` within the tolerance of that output.
pub fn check(sd: &StateDict, tol: &Tolerances, tag: &str, name: &str, ours: &[f32]) {
    check_as(sd, tol, tag, name, ours, name);
}

/// Compares `ours` with fixture `{tag}.{name}` within the tolerance of `output`.
pub fn check_as(
    sd: &StateDict,
    tol: &Tolerances,
    tag: &str,
    name: &str,
    ours: &[f32],
    output: &str,
) {
    let (want, _) = values(sd, &format!("{tag}.{name}"));
    let d = max_abs_diff(ours, &want);
    let atol = tol.atol(tag, output);
    assert!(d <= atol, "{tag}.{name}: max abs diff {d} > {atol}");
    eprintln!("{tag}.{name}: max abs diff {d:.2e} (atol {atol:.0e})");
}

/// `[C][N]` (channel-major) to `[N][C]` (token-major).
pub fn tokens(v: &[f32], channels: usize) -> Vec<f32> {
    let n = v.len() / channels;
    let mut t = vec![0.0; v.len()];
    for c in 0..channels {
        for i in 0..n {
            t[i * channels + c] = v[c * n + i];
        }
    }
    t
}

/// The network with the fixture formula weights, loaded strictly through a state dict.
pub fn fixture_net(dir: &Path) -> DevaNet {
    let (seed, layout) = fixture_layout(dir);
    let dict = synthetic::state_dict(&layout, seed).unwrap();
    Weights::from_state_dict(dict)
        .unwrap()
        .build(&Device::Cpu, &[], DevaNet::load)
        .unwrap()
}

/// An 8-bit frame from a `[3, H, W]` float image in [0, 1] (values are multiples of 1/255).
pub fn frame_from(v: &[f32], width: usize, height: usize, index: usize) -> Frame {
    let plane = width * height;
    let image = image::RgbImage::from_fn(width as u32, height as u32, |x, y| {
        let p = y as usize * width + x as usize;
        image::Rgb([0, 1, 2].map(|c| (v[c * plane + p] * 255.0).round() as u8))
    });
    Frame {
        index,
        name: format!("{index:05}"),
        image: image.into(),
    }
}

/// The memory settings of an engine variant (`engine_variants_config.json`).
pub fn variant_config(v: &serde_json::Value) -> MemoryConfig {
    let u = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} missing")) as usize;
    MemoryConfig {
        top_k: u("top_k"),
        max_mid_term_frames: u("max_mid_term_frames"),
        min_mid_term_frames: u("min_mid_term_frames"),
        max_long_term_elements: u("max_long_term_elements"),
        num_prototypes: u("num_prototypes"),
        enable_long_term: v["enable_long_term"].as_bool().unwrap(),
        long_term_usage: if v["enable_long_term_count_usage"].as_bool().unwrap() {
            UsageCounting::On
        } else {
            UsageCounting::Off
        },
        chunk_size: v["chunk_size"].as_i64().unwrap(),
    }
}

/// One engine run: images, first mask and object ids of a size tag.
pub struct EngineVideo {
    pub frames: Vec<Frame>,
    pub first: IdMap,
    pub objects: Vec<ObjectId>,
}

pub fn engine_video(sd: &StateDict, tag: &str) -> EngineVideo {
    let (images, shape) = values(sd, &format!("{tag}.images"));
    let (t, h, w) = (shape[0], shape[2], shape[3]);
    let frames = (0..t)
        .map(|i| frame_from(&images[i * 3 * h * w..(i + 1) * 3 * h * w], w, h, i))
        .collect();
    let (first, _) = values(sd, &format!("{tag}.first_mask"));
    let first = IdMap::from_vec(w, h, first.iter().map(|&v| v as ObjectId).collect()).unwrap();
    let (objects, _) = values(sd, &format!("{tag}.objects"));
    EngineVideo {
        frames,
        first,
        objects: objects.iter().map(|&v| v as ObjectId).collect(),
    }
}

/// Checks one frame's probabilities against the reference (fixture README, "Tolerances"): with
/// `d` the reference's own float32-vs-float64 deviation on this run and frame, max abs
/// ≤ max(5e-4, 2d), argmax equal on ≥ 99.9 % of the pixels and only where the reference's
/// top-2 gap is below max(1e-3, 2d).
pub fn check_engine_frame(
    sd: &StateDict,
    tol: &Tolerances,
    key: &str,
    t: usize,
    probs: &ObjectProbs,
) {
    let dev = tol.engine_deviation(key, t);
    let (atol, gap) = (5e-4f32.max(2.0 * dev), 1e-3f32.max(2.0 * dev));
    let (want, shape) = values(sd, &format!("{key}.prob"));
    let plane = shape[2] * shape[3];
    let frame_len = shape[1] * plane;
    let want = &want[t * frame_len..(t + 1) * frame_len];
    assert_eq!(
        probs.num_channels(),
        shape[1],
        "{key} frame {t}: channel count"
    );
    let d = max_abs_diff(probs.data(), want);
    assert!(d <= atol, "{key} frame {t}: max abs prob diff {d} > {atol}");
    let (ref_arg, _) = values(sd, &format!("{key}.argmax"));
    let ref_arg = &ref_arg[t * plane..(t + 1) * plane];
    let ours = probs.argmax();
    let channel_of = |id: ObjectId| -> f32 {
        probs
            .ids()
            .iter()
            .position(|&i| i == id)
            .map_or(0.0, |c| (c + 1) as f32)
    };
    let mut mismatched = 0;
    for p in 0..plane {
        if channel_of(ours.data()[p]) != ref_arg[p] {
            mismatched += 1;
            let mut col: Vec<f32> = (0..shape[1]).map(|c| want[c * plane + p]).collect();
            col.sort_by(|a, b| b.total_cmp(a));
            assert!(
                col[0] - col[1] < gap,
                "{key} frame {t}: argmax differs at pixel {p}"
            );
        }
    }
    assert!(
        mismatched as f64 <= 1e-3 * plane as f64,
        "{key} frame {t}: {mismatched} pixels differ"
    );
    eprintln!("{key} frame {t}: max abs {d:.2e} (atol {atol:.1e}), {mismatched} argmax mismatches");
}

/// Calls `run(fixture, tolerances, "tag.variant", video, variant config, network)` for every size tag of
/// `engine.safetensors` and every variant of `engine_variants_config.json`, with the fixture
/// network; `false` when fixtures are not available.
pub fn each_engine_run(
    mut run: impl FnMut(&StateDict, &Tolerances, &str, &EngineVideo, &serde_json::Value, &DevaNet),
) -> bool {
    let Some(dir) = super::fixtures("deva_net") else {
        return false;
    };
    let sd = checkpoint::load(dir.join("engine.safetensors"), &[]).unwrap();
    let text = std::fs::read_to_string(dir.join("engine_variants_config.json")).unwrap();
    let variants: serde_json::Value = serde_json::from_str(&text).unwrap();
    let net = fixture_net(&dir);
    let tol = Tolerances::load(&dir);
    for tag in size_tags(&sd) {
        let video = engine_video(&sd, &tag);
        for (name, v) in variants.as_object().unwrap() {
            run(&sd, &tol, &format!("{tag}.{name}"), &video, v, &net);
        }
    }
    true
}

/// A synthetic video frame: a gradient with two squares moving in opposite directions.
pub fn moving_squares(index: usize, size: usize) -> Frame {
    let s = size as i64;
    let side = s / 4;
    let t = index as i64;
    let a = ((t * 3) % (s - side), s / 4);
    let b = (s / 2, (s - side) - (t * 2) % (s - side));
    let image = image::RgbImage::from_fn(size as u32, size as u32, |x, y| {
        let (x, y) = (x as i64, y as i64);
        let inside = |(x0, y0): (i64, i64)| x >= x0 && x < x0 + side && y >= y0 && y < y0 + side;
        if inside(a) {
            image::Rgb([230, 40, 40])
        } else if inside(b) {
            image::Rgb([40, 40, 230])
        } else {
            image::Rgb([(x * 3 % 256) as u8, (y * 2 % 256) as u8, 90])
        }
    });
    Frame {
        index,
        name: format!("{index:05}"),
        image: image.into(),
    }
}

/// Hard masks of the two squares of frame 0 (ids 1 and 2).
pub fn square_masks(frame: &Frame) -> ObjectProbs {
    let (w, h) = (frame.width(), frame.height());
    let ids: Vec<ObjectId> = frame
        .image
        .pixels()
        .map(|p| match p.0 {
            [230, 40, 40] => 1,
            [40, 40, 230] => 2,
            _ => 0,
        })
        .collect();
    ObjectProbs::one_hot(&IdMap::from_vec(w, h, ids).unwrap(), &[1, 2]).unwrap()
}
