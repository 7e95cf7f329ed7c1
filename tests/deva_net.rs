//! DEVA propagation network: checkpoint reading, module parity, engine parity and memory bounds.
//!
//! Expected values come from the official implementation's fixtures (`$DEVA_FIXTURES/deva_net`,
//! see its README); sizes and case lists are read from the fixture files.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use deva::config::{MemoryConfig, UsageCounting};
use deva::mask::{IdMap, ObjectId, ObjectProbs};
use deva::nn::checkpoint::{self, StateDict, TensorDType};
use deva::nn::synthetic::{self, TensorSpec};
use deva::nn::Weights;
use deva::propagator::deva::input::{normalized_padded, Padding};
use deva::propagator::deva::memory::{FrameKeys, Memory, MemorySettings};
use deva::propagator::deva::network::{DevaNet, KEY_DIM, VALUE_DIM};
use deva::propagator::deva::readout::{similarity, KeySet, Query, TopK};
use deva::propagator::deva::DevaPropagator;
use deva::propagator::Propagator;
use deva::segmenter::{ImageSegmenter, SegmenterKind};
use deva::tracker::Tracker;
use deva::video::Frame;

/// The `state_dict_keys.json` layout: (seed, every key with shape and dtype in order).
fn fixture_layout(dir: &Path) -> (u64, Vec<TensorSpec>) {
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

/// Writes a zip archive holding `records` (name, bytes) at `path`.
fn write_zip(path: &Path, records: &[(String, Vec<u8>)]) {
    let f = std::fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in records {
        z.start_file(name.as_str(), opts).unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap();
}

/// All records of a zip archive, in order.
fn read_zip(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut z = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).unwrap();
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut f, &mut b).unwrap();
            (f.name().unwrap().into_owned(), b)
        })
        .collect()
}

/// Copies the zip `src` to `dst` with its `data.pkl` replaced by `edit(data.pkl)`.
fn rewrite_pickle(src: &Path, dst: &Path, edit: impl Fn(&[u8]) -> Vec<u8>) {
    let records: Vec<(String, Vec<u8>)> = read_zip(src)
        .into_iter()
        .map(|(n, b)| {
            let b = if n.ends_with("data.pkl") { edit(&b) } else { b };
            (n, b)
        })
        .collect();
    write_zip(dst, &records);
}

#[test]
fn pth_subset_equals_the_weight_formula() {
    let Some(dir) = common::fixtures("deva_net") else {
        return;
    };
    let (seed, layout) = fixture_layout(&dir);
    let formula = synthetic::state_dict(&layout, seed).unwrap();
    let sd = checkpoint::load(dir.join("weights_subset.pth"), &[]).unwrap();
    assert!(
        sd.len() >= 5,
        "weights_subset.pth holds only {} tensors",
        sd.len()
    );
    for (name, t) in sd.iter() {
        let want = formula
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not a key of state_dict_keys.json"));
        assert_eq!(t.shape(), want.shape(), "{name}");
        assert_eq!(t.dtype(), want.dtype(), "{name}");
        // Bit-exact: both are the formula rounded once to float32 (or int64 zeros).
        assert_eq!(t.bytes(), want.bytes(), "{name}");
    }

    // Strict access through `Weights`: every key with its expected shape loads.
    let mut w = Weights::from_state_dict(sd.clone(), &candle_core::Device::Cpu);
    for spec in layout.iter().filter(|s| sd.get(&s.name).is_some()) {
        if spec.dtype == TensorDType::F32 {
            w.values(&spec.name, &spec.shape).unwrap();
        } else {
            let p = spec.name.trim_end_matches(".num_batches_tracked");
            let c = layout
                .iter()
                .find(|s| s.name == format!("{p}.weight"))
                .unwrap();
            w.batch_norm(p, c.shape[0]).unwrap();
        }
    }
}

#[test]
fn damaged_pth_files_give_errors_naming_them() {
    let Some(dir) = common::fixtures("deva_net") else {
        return;
    };
    let src = dir.join("weights_subset.pth");
    let tmp = tempfile::tempdir().unwrap();

    // Truncated copy.
    let bytes = std::fs::read(&src).unwrap();
    let cut = tmp.path().join("truncated.pth");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let e = checkpoint::load(&cut, &[]).unwrap_err().to_string();
    assert!(
        e.contains("truncated.pth") && e.contains("truncated"),
        "{e}"
    );

    // A renamed key (same length, so the pickle stays valid): strict loading names both.
    let sd = checkpoint::load(&src, &[]).unwrap();
    let (victim, t) = sd
        .iter()
        .next()
        .map(|(k, t)| (k.to_string(), t.clone()))
        .unwrap();
    let renamed = format!("{}X", &victim[..victim.len() - 1]);
    let bad = tmp.path().join("renamed.pth");
    rewrite_pickle(&src, &bad, |b| {
        let pos = b
            .windows(victim.len())
            .position(|w| w == victim.as_bytes())
            .unwrap();
        let mut b = b.to_vec();
        b[pos..pos + victim.len()].copy_from_slice(renamed.as_bytes());
        b
    });
    let sd2 = checkpoint::load(&bad, &[]).unwrap();
    let mut w = Weights::from_state_dict(sd2.clone(), &candle_core::Device::Cpu);
    let e = w.values(&victim, t.shape()).unwrap_err().to_string();
    assert!(e.contains(&victim) && e.contains("renamed.pth"), "{e}");
    let w = Weights::from_state_dict(sd2, &candle_core::Device::Cpu);
    let e = w.finish().unwrap_err().to_string();
    assert!(e.contains("unexpected key"), "{e}");

    // Nested dicts are reached by explicit key path only.
    let wrapped = tmp.path().join("wrapped.pth");
    rewrite_pickle(&src, &wrapped, |b| {
        // {'model': <state dict>}: wrap the top-level dict.
        let mut p = b"\x80\x02}X\x05\x00\x00\x00model".to_vec();
        p.extend_from_slice(&b[2..b.len() - 1]);
        p.extend_from_slice(b"s.");
        p
    });
    let inner = checkpoint::load(&wrapped, &["model"]).unwrap();
    assert_eq!(inner.len(), sd.len());
    let flat = checkpoint::load(&wrapped, &[]).unwrap();
    assert!(flat.names().all(|n| n.starts_with("model.")));
    let e = checkpoint::load(&wrapped, &["state_dict"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("state_dict") && e.contains("'model'"), "{e}");
}

#[test]
fn code_carrying_pickles_are_refused_without_running_them() {
    let tmp = tempfile::tempdir().unwrap();
    let marker: PathBuf = tmp.path().join("pwned");
    let cmd = format!("touch {}", marker.display());
    // GLOBAL 'os system', the command string, TUPLE1, REDUCE, STOP.
    let mut pkl = b"\x80\x02cos\nsystem\nX".to_vec();
    pkl.extend_from_slice(&(cmd.len() as u32).to_le_bytes());
    pkl.extend_from_slice(cmd.as_bytes());
    pkl.extend_from_slice(b"\x85R.");
    let path = tmp.path().join("evil.pth");
    write_zip(
        &path,
        &[
            ("evil/data.pkl".to_string(), pkl),
            ("evil/version".to_string(), b"3\n".to_vec()),
        ],
    );
    let e = checkpoint::load(&path, &[]).unwrap_err().to_string();
    assert!(e.contains("os.system") && e.contains("evil.pth"), "{e}");
    assert!(!marker.exists(), "the payload ran");

    // builtins.eval through STACK_GLOBAL (protocol 4) is refused too.
    let pkl = b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93X\x01\x00\x00\x001\x85R.".to_vec();
    write_zip(&path, &[("evil/data.pkl".to_string(), pkl)]);
    let e = checkpoint::load(&path, &[]).unwrap_err().to_string();
    assert!(e.contains("builtins.eval"), "{e}");
}

#[test]
fn safetensors_files_load_with_their_dtypes() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("w.safetensors");
    let a: Vec<u8> = [1.0f32, -2.5]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let b: Vec<u8> = [7i64].iter().flat_map(|v| v.to_le_bytes()).collect();
    let views = vec![
        (
            "a.weight",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &a).unwrap(),
        ),
        (
            "a.count",
            safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![], &b).unwrap(),
        ),
    ];
    safetensors::serialize_to_file(views, None, &path).unwrap();
    let sd = checkpoint::load(&path, &[]).unwrap();
    assert_eq!(
        sd.get("a.weight").unwrap().to_f32().unwrap(),
        vec![1.0, -2.5]
    );
    assert_eq!(sd.get("a.count").unwrap().to_i64().unwrap(), vec![7]);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    let e = checkpoint::load(&path, &[]).unwrap_err().to_string();
    assert!(e.contains("w.safetensors"), "{e}");
}

/// The size tags `s<H>x<W>` used as name prefixes in a fixture file.
fn size_tags(sd: &StateDict) -> Vec<String> {
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
fn values(sd: &StateDict, name: &str) -> (Vec<f32>, Vec<usize>) {
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

fn tensor(sd: &StateDict, name: &str) -> Tensor {
    let (v, shape) = values(sd, name);
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn host(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The README's suggested tolerance from `checks.json`: max(1e-4·max(1, scale), 10·f32-vs-f64
/// error), rounded up to one significant digit.
struct Tolerances(serde_json::Value);

impl Tolerances {
    fn load(dir: &Path) -> Self {
        let text = std::fs::read_to_string(dir.join("checks.json")).unwrap();
        Tolerances(serde_json::from_str(&text).unwrap())
    }

    fn atol(&self, tag: &str, output: &str) -> f32 {
        let e = &self.0["precision"][format!("cases/{tag}")][output];
        let scale = e["scale"]
            .as_f64()
            .unwrap_or_else(|| panic!("checks.json has no precision for {tag}/{output}"));
        let raw = (1e-4 * scale.max(1.0)).max(10.0 * e["max_abs"].as_f64().unwrap());
        let unit = 10f64.powf(raw.log10().floor());
        ((raw / unit).ceil() * unit) as f32
    }
}

/// Compares `ours` with fixture `{tag}.{name}` within the tolerance of that output.
fn check(sd: &StateDict, tol: &Tolerances, tag: &str, name: &str, ours: &[f32]) {
    check_as(sd, tol, tag, name, ours, name);
}

/// Compares `ours` with fixture `{tag}.{name}` within the tolerance of `output`.
fn check_as(sd: &StateDict, tol: &Tolerances, tag: &str, name: &str, ours: &[f32], output: &str) {
    let (want, _) = values(sd, &format!("{tag}.{name}"));
    let d = max_abs_diff(ours, &want);
    let atol = tol.atol(tag, output);
    assert!(d <= atol, "{tag}.{name}: max abs diff {d} > {atol}");
    eprintln!("{tag}.{name}: max abs diff {d:.2e} (atol {atol:.0e})");
}

/// `[C][N]` (channel-major) to `[N][C]` (token-major).
fn tokens(v: &[f32], channels: usize) -> Vec<f32> {
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
fn fixture_net(dir: &Path) -> DevaNet {
    let (seed, layout) = fixture_layout(dir);
    let mut w =
        Weights::from_state_dict(synthetic::state_dict(&layout, seed).unwrap(), &Device::Cpu);
    let net = DevaNet::load(&mut w).unwrap();
    w.finish().unwrap();
    net
}

/// An 8-bit frame from a `[3, H, W]` float image in [0, 1] (values are multiples of 1/255).
fn frame_from(v: &[f32], width: usize, height: usize, index: usize) -> Frame {
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

#[test]
fn network_layout_equals_the_official_state_dict() {
    let Some(dir) = common::fixtures("deva_net") else {
        return;
    };
    let (seed, layout) = fixture_layout(&dir);
    let mut w = Weights::synthetic(seed, &Device::Cpu);
    DevaNet::load(&mut w).unwrap();
    let ours = w.finish().unwrap();
    assert_eq!(ours.len(), layout.len());
    for (a, b) in ours.iter().zip(&layout) {
        assert_eq!(a, b);
    }
    // The formula state dict loads strictly; a renamed or mis-shaped key is named.
    let mut sd = synthetic::state_dict(&layout, seed).unwrap();
    let victim = &layout[layout.len() / 2];
    let t = sd.get(&victim.name).unwrap().clone();
    let mut renamed = StateDict::new("renamed.pth");
    for (k, v) in sd.iter() {
        let k = if k == victim.name {
            format!("{k}_x")
        } else {
            k.to_string()
        };
        renamed.insert(k, v.clone());
    }
    let mut w = Weights::from_state_dict(renamed, &Device::Cpu);
    let e = DevaNet::load(&mut w).unwrap_err().to_string();
    assert!(e.contains(&victim.name) && e.contains("renamed.pth"), "{e}");
    let bad = checkpoint::RawTensor::from_f32(vec![t.numel()], &t.to_f32().unwrap()).unwrap();
    sd.insert(victim.name.clone(), bad);
    let mut w = Weights::from_state_dict(sd, &Device::Cpu);
    let e = DevaNet::load(&mut w).unwrap_err().to_string();
    assert!(e.contains(&victim.name) && e.contains("shape"), "{e}");
}

#[test]
fn modules_match_the_reference() {
    let Some(dir) = common::fixtures("deva_net") else {
        return;
    };
    let cases = checkpoint::load(dir.join("cases.safetensors"), &[]).unwrap();
    let tol = Tolerances::load(&dir);
    let net = fixture_net(&dir);
    for tag in size_tags(&cases) {
        let get = |n: &str| tensor(&cases, &format!("{tag}.{n}"));

        // Input: normalisation and padding.
        let (_, shape) = values(&cases, &format!("{tag}.image"));
        let (h, w) = (shape[2], shape[3]);
        let pad = Padding::new(w, h);
        let (want_pad, _) = values(&cases, &format!("{tag}.pad"));
        let ours_pad = [
            pad.left,
            pad.padded_width - w - pad.left,
            pad.top,
            pad.padded_height - h - pad.top,
        ];
        assert_eq!(
            ours_pad.map(|p| p as f32).to_vec(),
            want_pad,
            "{tag} padding"
        );
        let frame = frame_from(&values(&cases, &format!("{tag}.image")).0, w, h, 0);
        let norm = normalized_padded(&frame.image, &pad);
        let (want, _) = values(&cases, &format!("{tag}.image_norm_padded"));
        assert!(max_abs_diff(&norm, &want) <= 1e-6, "{tag} normalisation");

        // Pixel encoder and key projection.
        let f = net.encode_image(&get("image_norm_padded")).unwrap();
        let k = net.transform_key(&get("enc.key_feat")).unwrap();
        for (name, t) in [
            ("enc.f16", &f.f16),
            ("enc.f8", &f.f8),
            ("enc.f4", &f.f4),
            ("enc.key_feat", &f.key_feat),
            ("enc.key", &k.key),
            ("enc.shrinkage", &k.shrinkage),
            ("enc.selection", &k.selection),
        ] {
            check(&cases, &tol, &tag, name, &host(t));
        }

        // Mask encoder (values and deep sensory update) of both memory frames.
        for m in ["mem0", "mem1"] {
            let mf = net
                .encode_image(&get(&format!("{m}.image_norm_padded")))
                .unwrap();
            check(&cases, &tol, &tag, &format!("{m}.f16"), &host(&mf.f16));
            let masks = get(&format!("{m}.masks_padded"));
            let (_, n, hp, wp) = masks.dims4().unwrap();
            let masks = masks.reshape((n, 1, hp, wp)).unwrap();
            let sensory = get(&format!("{m}.sensory_in")).squeeze(0).unwrap();
            let (value, sensory) = net
                .encode_mask(
                    &get(&format!("{m}.image_norm_padded")),
                    &get(&format!("{m}.f16")),
                    &sensory,
                    &masks,
                    0,
                )
                .unwrap();
            check(&cases, &tol, &tag, &format!("{m}.value"), &host(&value));
            check(
                &cases,
                &tol,
                &tag,
                &format!("{m}.sensory_out"),
                &host(&sensory),
            );
            // Chunked encoding gives the same numbers.
            let (value1, _) = net
                .encode_mask(
                    &get(&format!("{m}.image_norm_padded")),
                    &get(&format!("{m}.f16")),
                    &get(&format!("{m}.sensory_in")).squeeze(0).unwrap(),
                    &masks,
                    1,
                )
                .unwrap();
            assert!(max_abs_diff(&host(&value1), &host(&value)) < 1e-4);
        }

        // Memory read: similarity, top-k affinity, readout through the memory store.
        let (mk, mk_shape) = values(&cases, &format!("{tag}.readout.memory_key"));
        let n_mem = mk_shape[1];
        let (ms, _) = values(&cases, &format!("{tag}.readout.memory_shrinkage"));
        let qk = tokens(
            &values(&cases, &format!("{tag}.readout.query_key")).0,
            KEY_DIM,
        );
        let qe = tokens(
            &values(&cases, &format!("{tag}.readout.query_selection")).0,
            KEY_DIM,
        );
        let hw = qk.len() / KEY_DIM;
        let mk_t = tokens(&mk, KEY_DIM);
        let set = KeySet {
            key: &mk_t,
            shrinkage: &ms,
        };
        let query = Query::new(&qk, &qe);
        let sim = similarity(&query, &[set]);
        check(&cases, &tol, &tag, "readout.similarity", &tokens(&sim, hw));
        let top = TopK::compute(&query, &[set], 30);
        check(&cases, &tol, &tag, "readout.affinity", &top.dense());

        let mut memory = Memory::new(MemorySettings {
            top_k: 30,
            max_frames: 10,
            min_frames: 5,
            max_long_term: 10000,
            prototypes: 128,
            long_term: true,
            count_long_term_usage: false,
        });
        for m in ["mem0", "mem1"] {
            let key = tokens(&values(&cases, &format!("{tag}.{m}.key")).0, KEY_DIM);
            let selection = tokens(&values(&cases, &format!("{tag}.{m}.selection")).0, KEY_DIM);
            let (shrinkage, _) = values(&cases, &format!("{tag}.{m}.shrinkage"));
            let (v, _) = values(&cases, &format!("{tag}.{m}.value"));
            let plane = VALUE_DIM * hw;
            let vals: Vec<(ObjectId, Vec<f32>)> = (0..v.len() / plane)
                .map(|i| (i as ObjectId + 1, v[i * plane..(i + 1) * plane].to_vec()))
                .collect();
            memory.add(
                &FrameKeys {
                    key,
                    shrinkage,
                    selection,
                },
                &vals,
            );
        }
        let stored = memory.working_keys(0).unwrap();
        assert_eq!(tokens(&mk, KEY_DIM), stored.key, "{tag} memory keys");
        let (mv, _) = values(&cases, &format!("{tag}.readout.memory_value"));
        let stored_v = memory.working_values(1).unwrap();
        assert_eq!(
            tokens(&mv[..VALUE_DIM * n_mem], VALUE_DIM),
            stored_v,
            "{tag} memory values"
        );
        let out: Vec<f32> = memory
            .read(&qk, &qe)
            .into_iter()
            .flat_map(|(_, r)| r)
            .collect();
        check(&cases, &tol, &tag, "readout.out", &out);

        // Decoder and segmentation head.
        let readout = get("readout.out").squeeze(0).unwrap();
        let sensory = get("seg.sensory_in").squeeze(0).unwrap();
        let mask16 = get("seg.last_mask16").squeeze(0).unwrap();
        let last = get("seg.last_mask");
        let (_, n, hp, wp) = last.dims4().unwrap();
        let last = last.reshape((n, 1, hp, wp)).unwrap();
        let skips = net.decoder_skips(&f).unwrap();
        let f16 = get("enc.f16");
        let d = net
            .decode(&f16, &skips, &readout, &sensory, &mask16, true, 0)
            .unwrap();
        check(&cases, &tol, &tag, "seg.decoder_logits", &host(&d.logits));
        check(
            &cases,
            &tol,
            &tag,
            "seg.sensory_out",
            &host(&d.sensory.unwrap()),
        );
        let (logits, prob, _) = net
            .segment(&f16, &skips, &readout, &sensory, &last, false, 1)
            .unwrap();
        check(&cases, &tol, &tag, "seg.logits", &host(&logits));
        let prob = host(&prob);
        check(&cases, &tol, &tag, "seg.prob", &prob);
        let unpadded: Vec<f32> = prob
            .chunks(pad.padded_len())
            .flat_map(|c| pad.unpad(c))
            .collect();
        check_as(
            &cases,
            &tol,
            &tag,
            "seg.prob_unpadded",
            &unpadded,
            "seg.prob",
        );
    }
}

/// The memory settings of an engine variant (`engine_variants_config.json`).
fn variant_config(v: &serde_json::Value) -> MemoryConfig {
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
struct EngineVideo {
    frames: Vec<Frame>,
    first: IdMap,
    objects: Vec<ObjectId>,
}

fn engine_video(sd: &StateDict, tag: &str) -> EngineVideo {
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

/// Checks one frame's probabilities against the reference: max abs ≤ 5e-4, argmax equal on
/// ≥ 99.9 % of the pixels and only where the reference's top-2 gap is below 1e-3.
fn check_engine_frame(sd: &StateDict, key: &str, t: usize, probs: &ObjectProbs) {
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
    assert!(d <= 5e-4, "{key} frame {t}: max abs prob diff {d}");
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
                col[0] - col[1] < 1e-3,
                "{key} frame {t}: argmax differs at pixel {p}"
            );
        }
    }
    assert!(
        mismatched as f64 <= 1e-3 * plane as f64,
        "{key} frame {t}: {mismatched} pixels differ"
    );
    eprintln!("{key} frame {t}: max abs {d:.2e}, {mismatched} argmax mismatches");
}

/// Calls `run(fixture, "tag.variant", video, variant config)` for every size tag of
/// `engine.safetensors` and every variant of `engine_variants_config.json`, with the fixture
/// network; `false` when fixtures are not available.
fn each_engine_run(
    mut run: impl FnMut(&StateDict, &str, &EngineVideo, &serde_json::Value, &DevaNet),
) -> bool {
    let Some(dir) = common::fixtures("deva_net") else {
        return false;
    };
    let sd = checkpoint::load(dir.join("engine.safetensors"), &[]).unwrap();
    let text = std::fs::read_to_string(dir.join("engine_variants_config.json")).unwrap();
    let variants: serde_json::Value = serde_json::from_str(&text).unwrap();
    let net = fixture_net(&dir);
    for tag in size_tags(&sd) {
        let video = engine_video(&sd, &tag);
        for (name, v) in variants.as_object().unwrap() {
            run(&sd, &format!("{tag}.{name}"), &video, v, &net);
        }
    }
    true
}

#[test]
fn engine_variants_match_the_reference() {
    each_engine_run(|sd, key, video, v, net| {
        let config = variant_config(v);
        let mem_every = v["mem_every"].as_u64().unwrap() as usize;
        let mut prop = DevaPropagator::new(net.clone(), &config, &Device::Cpu).unwrap();
        let last = video.frames.len() - 1;
        let mut last_mem = 0;
        for (t, frame) in video.frames.iter().enumerate() {
            // The eval_vos loop: the given mask at t = 0, propagation afterwards; memory
            // every mem_every frames, never at the last frame.
            let (probs, memorize) = if t == 0 {
                let p = ObjectProbs::one_hot(&video.first, &video.objects).unwrap();
                (p.aggregate(), true)
            } else {
                let p = prop.propagate(frame).unwrap();
                (p, t - last_mem >= mem_every && t != last)
            };
            check_engine_frame(sd, key, t, &probs);
            prop.update(frame, &probs, memorize).unwrap();
            if memorize {
                last_mem = t;
            }
            prop.release_frame(frame.index);
        }
    });
}

/// A synthetic video frame: a gradient with two squares moving in opposite directions.
fn moving_squares(index: usize, size: usize) -> Frame {
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
fn square_masks(frame: &Frame) -> ObjectProbs {
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

#[test]
fn long_video_memory_stays_bounded() {
    let config = MemoryConfig {
        top_k: 30,
        max_mid_term_frames: 4,
        min_mid_term_frames: 2,
        max_long_term_elements: 40,
        num_prototypes: 8,
        enable_long_term: true,
        long_term_usage: UsageCounting::On,
        chunk_size: -1,
    };
    let size = 32;
    let mut prop = DevaPropagator::synthetic(0, &config, &Device::Cpu).unwrap();
    let tokens = (size / 16) * (size / 16);
    let mut most_long_term = 0;
    let frames = 210;
    for t in 0..frames {
        let frame = moving_squares(t, size);
        let mut masks = if t == 0 {
            square_masks(&frame)
        } else {
            prop.propagate(&frame).unwrap()
        };
        if t == 100 {
            // A third object appears (its own bucket): the square of object 2, re-labelled.
            let mut data = masks.data().to_vec();
            let plane = size * size;
            let obj2: Vec<f32> = data[2 * plane..3 * plane].to_vec();
            data.extend(obj2.iter().map(|&p| if p > 0.5 { 1.0 } else { 0.0 }));
            masks = ObjectProbs::new(vec![1, 2, 3], size, size, data).unwrap();
        }
        if t == 150 {
            prop.remove_objects(&[1]).unwrap();
            masks = masks.select(&[2, 3]);
        }
        prop.update(&frame, &masks, true).unwrap();
        prop.release_frame(t);
        let sizes = prop.memory().sizes();
        // Object 3 opened a second bucket; removing object 1 leaves object 2 in the first.
        assert_eq!(sizes.len(), if t < 100 { 1 } else { 2 }, "frame {t}");
        for s in &sizes {
            assert!(
                s.working <= config.max_mid_term_frames * tokens,
                "frame {t}: {s:?}"
            );
            assert!(
                s.long_term <= config.max_long_term_elements,
                "frame {t}: {s:?}"
            );
            most_long_term = most_long_term.max(s.long_term);
        }
        assert!(masks.data().iter().all(|v| v.is_finite()));
    }
    // Consolidation filled long-term memory, so eviction ran.
    assert!(most_long_term > config.max_long_term_elements - config.num_prototypes);
    assert_eq!(prop.objects(), &[2, 3]);
}

#[test]
fn memory_bounds_hold_at_default_settings() {
    let d = MemoryConfig::default();
    let mut memory = Memory::new(MemorySettings {
        top_k: d.top_k,
        max_frames: d.max_mid_term_frames,
        min_frames: d.min_mid_term_frames,
        max_long_term: d.max_long_term_elements,
        prototypes: d.num_prototypes,
        long_term: d.enable_long_term,
        count_long_term_usage: true,
    });
    // 6x6 tokens per frame: (T_max − T_min) frames hold more candidates than prototypes.
    let hw = 36;
    let pseudo = |n: usize, seed: u64| -> Vec<f32> {
        (0..n as u64)
            .map(|i| (synthetic::splitmix64(seed * 1_000_003 + i) >> 40) as f32 / 16_777_216.0)
            .collect()
    };
    let mut most = 0;
    for t in 0..450u64 {
        let keys = FrameKeys {
            key: pseudo(hw * KEY_DIM, 3 * t),
            shrinkage: pseudo(hw, 3 * t + 1).iter().map(|v| v + 1.0).collect(),
            selection: pseudo(hw * KEY_DIM, 3 * t + 2),
        };
        let value = vec![(7, pseudo(hw * VALUE_DIM, t + 99_999))];
        memory.add(&keys, &value);
        let out = memory.read(&keys.key, &keys.selection);
        assert!(out[0].1.iter().all(|v| v.is_finite()));
        let s = memory.sizes()[0];
        assert!(s.working <= d.max_mid_term_frames * hw, "frame {t}: {s:?}");
        assert!(s.long_term <= d.max_long_term_elements, "frame {t}: {s:?}");
        most = most.max(s.long_term);
    }
    assert!(
        most > d.max_long_term_elements - d.num_prototypes,
        "eviction never ran"
    );
}

#[test]
fn align_leaves_the_tracker_state_untouched() {
    let config = MemoryConfig::default();
    let size = 48;
    let mut a = DevaPropagator::synthetic(1, &config, &Device::Cpu).unwrap();
    let mut b = DevaPropagator::synthetic(1, &config, &Device::Cpu).unwrap();
    let f0 = moving_squares(0, size);
    let masks = square_masks(&f0);
    for p in [&mut a, &mut b] {
        p.update(&f0, &masks, true).unwrap();
    }
    for t in 1..4 {
        let f = moving_squares(t, size);
        let pa = a.propagate(&f).unwrap();
        // b additionally aligns another frame's masks onto this one, in between.
        let other = moving_squares(10 + t, size);
        let aligned = b.align(&other, &square_masks(&other), &f).unwrap();
        assert_eq!(aligned.ids(), &[1, 2]);
        assert!(aligned.data().iter().all(|v| v.is_finite()));
        let pb = b.propagate(&f).unwrap();
        assert_eq!(pa, pb, "frame {t}");
        a.update(&f, &pa, t % 2 == 0).unwrap();
        b.update(&f, &pb, t % 2 == 0).unwrap();
        assert_eq!(a.memory().sizes(), b.memory().sizes());
    }
}

#[test]
fn chunked_objects_give_the_same_masks() {
    let size = 48;
    let mut probs = Vec::new();
    for chunk in [-1, 1] {
        let config = MemoryConfig {
            chunk_size: chunk,
            ..MemoryConfig::default()
        };
        let mut p = DevaPropagator::synthetic(2, &config, &Device::Cpu).unwrap();
        let f0 = moving_squares(0, size);
        p.update(&f0, &square_masks(&f0), true).unwrap();
        let f1 = moving_squares(1, size);
        let r = p.propagate(&f1).unwrap();
        p.update(&f1, &r, true).unwrap();
        probs.push(p.propagate(&moving_squares(2, size)).unwrap());
    }
    assert!(max_abs_diff(probs[0].data(), probs[1].data()) < 1e-5);
}

#[test]
fn bad_inputs_are_errors_naming_the_frame() {
    let mut p = DevaPropagator::synthetic(3, &MemoryConfig::default(), &Device::Cpu).unwrap();
    let f0 = moving_squares(0, 48);
    let masks = square_masks(&f0);
    p.update(&f0, &masks, true).unwrap();
    let small = moving_squares(1, 32);
    let e = p.propagate(&small).unwrap_err().to_string();
    assert!(e.contains("frame 1") && e.contains("32x32"), "{e}");
    let f1 = moving_squares(1, 48);
    let e = p
        .update(&f1, &masks.select(&[2]), false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("frame 1") && e.contains("object 1"), "{e}");
    let bad = MemoryConfig {
        min_mid_term_frames: 20,
        ..MemoryConfig::default()
    };
    assert!(DevaPropagator::synthetic(3, &bad, &Device::Cpu).is_err());
}

/// A reference segmenter that gives the first-frame mask of a VOS video and nothing later.
struct FirstMask(Option<IdMap>);

impl ImageSegmenter for FirstMask {
    fn name(&self) -> &str {
        "first-mask"
    }
    fn kind(&self) -> SegmenterKind {
        SegmenterKind::Reference
    }
    fn segment(
        &mut self,
        frame: &Frame,
        _tracked: Option<&deva::mask::BinaryMask>,
    ) -> deva::Result<Option<deva::mask::Segmentation>> {
        Ok(match (frame.index, &self.0) {
            (0, Some(map)) => Some(deva::mask::Segmentation::from_map(map.clone())),
            _ => None,
        })
    }
}

#[test]
fn tracker_in_reference_mode_matches_the_engine() {
    each_engine_run(|sd, key, video, v, net| {
        let mut config = deva::Config::default();
        config.input.size = v["size"].as_i64().unwrap() as i32;
        config.tracker.mem_every = v["mem_every"].as_u64().unwrap() as usize;
        config.tracker.temporal = deva::config::Temporal::Vos;
        let prop = DevaPropagator::new(net.clone(), &variant_config(v), &Device::Cpu).unwrap();
        let seg = FirstMask(Some(video.first.clone()));
        let mut tracker = Tracker::new(&config, Box::new(seg), Some(Box::new(prop))).unwrap();
        let mut out = Vec::new();
        for frame in &video.frames {
            out.extend(tracker.step(frame.clone()).unwrap());
        }
        out.extend(tracker.finish().unwrap());
        assert_eq!(out.len(), video.frames.len(), "{key}");
        for (t, tf) in out.iter().enumerate() {
            assert_eq!(tf.index, t);
            check_engine_frame(sd, key, t, &tf.probs.select(&video.objects));
        }
    });
}
