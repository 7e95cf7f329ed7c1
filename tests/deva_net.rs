//! DEVA propagation network: checkpoint reading, module parity, engine parity and memory bounds.
//!
//! Expected values come from the official implementation's fixtures (`$DEVA_FIXTURES/deva_net`,
//! see its README); sizes and case lists are read from the fixture files.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use deva::nn::checkpoint::{self, TensorDType};
use deva::nn::synthetic::{self, TensorSpec};
use deva::nn::Weights;

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
    let records: Vec<(String, Vec<u8>)> = read_zip(&src)
        .into_iter()
        .map(|(n, b)| {
            if n.ends_with("data.pkl") {
                let pos = b
                    .windows(victim.len())
                    .position(|w| w == victim.as_bytes())
                    .unwrap();
                let mut b = b.clone();
                b[pos..pos + victim.len()].copy_from_slice(renamed.as_bytes());
                (n, b)
            } else {
                (n, b)
            }
        })
        .collect();
    let bad = tmp.path().join("renamed.pth");
    write_zip(&bad, &records);
    let sd2 = checkpoint::load(&bad, &[]).unwrap();
    let mut w = Weights::from_state_dict(sd2.clone(), &candle_core::Device::Cpu);
    let e = w.values(&victim, t.shape()).unwrap_err().to_string();
    assert!(e.contains(&victim) && e.contains("renamed.pth"), "{e}");
    let w = Weights::from_state_dict(sd2, &candle_core::Device::Cpu);
    let e = w.finish().unwrap_err().to_string();
    assert!(e.contains("unexpected key"), "{e}");

    // Nested dicts are reached by explicit key path only.
    let nested: Vec<(String, Vec<u8>)> = read_zip(&src)
        .into_iter()
        .map(|(n, b)| {
            if n.ends_with("data.pkl") {
                // {'model': <state dict>}: wrap the top-level dict.
                let mut p = b"\x80\x02}X\x05\x00\x00\x00model".to_vec();
                p.extend_from_slice(&b[2..b.len() - 1]);
                p.extend_from_slice(b"s.");
                (n, p)
            } else {
                (n, b)
            }
        })
        .collect();
    let wrapped = tmp.path().join("wrapped.pth");
    write_zip(&wrapped, &nested);
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
