//! DEVA checkpoints: reading `.pth` (safe pickle) and safetensors files, strict loading of the
//! network with errors naming the file and the key, and the network's state-dict layout.
//!
//! Expected values come from the official implementation's fixtures (`$DEVA_FIXTURES/deva_net`,
//! see its README).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use common::deva::fixture_layout;
use deva::nn::checkpoint::{self, StateDict, TensorDType};
use deva::nn::synthetic;
use deva::nn::Weights;
use deva::propagator::deva::network::DevaNet;

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
    let w = Weights::from_state_dict(sd.clone()).unwrap();
    let vb = w.var_builder(&Device::Cpu);
    for spec in layout.iter().filter(|s| sd.get(&s.name).is_some()) {
        if spec.dtype == TensorDType::F32 {
            vb.get(spec.shape.as_slice(), &spec.name).unwrap();
        } else {
            vb.get_unchecked_dtype(&spec.name, DType::I64).unwrap();
        }
    }
    w.finish(&[]).unwrap();
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
    let w = Weights::open(&bad).unwrap();
    let e = w
        .build(&Device::Cpu, &[], |vb| Ok(vb.get(t.shape(), &victim)?))
        .unwrap_err()
        .to_string();
    assert!(e.contains(&victim) && e.contains("renamed.pth"), "{e}");
    let w = Weights::open(&bad).unwrap();
    let e = w.finish(&[]).unwrap_err().to_string();
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

#[test]
fn network_layout_equals_the_official_state_dict() {
    let Some(dir) = common::fixtures("deva_net") else {
        return;
    };
    let (seed, layout) = fixture_layout(&dir);
    let ours = Weights::layout_of(DevaNet::load).unwrap();
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
    let w = Weights::from_state_dict(renamed).unwrap();
    let e = w
        .build(&Device::Cpu, &[], DevaNet::load)
        .unwrap_err()
        .to_string();
    assert!(e.contains(&victim.name) && e.contains("renamed.pth"), "{e}");
    let bad = checkpoint::RawTensor::from_f32(vec![t.numel()], &t.to_f32().unwrap()).unwrap();
    sd.insert(victim.name.clone(), bad);
    let w = Weights::from_state_dict(sd).unwrap();
    let e = w
        .build(&Device::Cpu, &[], DevaNet::load)
        .unwrap_err()
        .to_string();
    assert!(e.contains(&victim.name) && e.contains("shape"), "{e}");
}
