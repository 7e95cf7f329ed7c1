//! Shared helpers of the integration tests: where fixtures and data are, and reading them.
#![allow(dead_code)]

pub mod deva;
pub mod npy_pickle;
pub mod tensors;

use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The fixture folder `sub` under `$DEVA_FIXTURES`, or `None` (with a "skipped" line) when the
/// variable is unset. When it is set, the folder must exist: a missing fixture is a failure.
pub fn fixtures(sub: &str) -> Option<PathBuf> {
    match std::env::var_os("DEVA_FIXTURES") {
        None => {
            eprintln!("skipped: DEVA_FIXTURES is not set (needed for {sub} fixtures)");
            None
        }
        Some(root) => {
            let dir = PathBuf::from(root).join(sub);
            assert!(
                dir.is_dir(),
                "DEVA_FIXTURES is set but {} does not exist",
                dir.display()
            );
            Some(dir)
        }
    }
}

/// A fixture folder made by one of this project's own oracle scripts (`script`, under
/// `tests/oracle/`), which `../shared/fixtures` does not ship: `$DEVA_FIXTURES/sub` when it is
/// there, else `None` with a "skipped" line that says how to make it.
pub fn oracle_fixtures(sub: &str, script: &str) -> Option<PathBuf> {
    let root = std::env::var_os("DEVA_FIXTURES").map(PathBuf::from);
    match root.map(|r| r.join(sub)) {
        Some(dir) if dir.is_dir() => Some(dir),
        Some(dir) => {
            eprintln!(
                "skipped: no oracle fixture at {}; make one with `{script} --out {}` \
                 (see its README)",
                dir.display(),
                dir.display()
            );
            None
        }
        None => {
            eprintln!("skipped: DEVA_FIXTURES is not set (needed for {sub} fixtures)");
            None
        }
    }
}

/// The data folder `sub` (real video with ground truth): `$DEVA_DATA/sub`, or
/// `../shared/data/sub` beside the repository. With `DEVA_DATA` set a missing folder is a
/// failure; otherwise the test is skipped with a message.
pub fn data(sub: &str) -> Option<PathBuf> {
    let (root, required) = match std::env::var_os("DEVA_DATA") {
        Some(r) => (PathBuf::from(r), true),
        None => (
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"),
            false,
        ),
    };
    let dir = root.join(sub);
    if dir.is_dir() {
        Some(dir)
    } else if required {
        panic!("DEVA_DATA is set but {} does not exist", dir.display());
    } else {
        eprintln!("skipped: {} not found (set DEVA_DATA)", dir.display());
        None
    }
}

/// The tensors of `dir/cases.safetensors` and its `cases_json` metadata (the text).
pub fn safetensors_cases(dir: &Path) -> (HashMap<String, Tensor>, String) {
    let bytes = std::fs::read(dir.join("cases.safetensors")).expect("cases.safetensors");
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&bytes).expect("cases.safetensors metadata");
    let json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("cases_json"))
        .expect("cases_json metadata")
        .clone();
    let tensors =
        candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).expect("cases.safetensors");
    (tensors, json)
}

/// The JSON file `dir/name` (e.g. `config.json`), parsed.
pub fn json_file(dir: &Path, name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is JSON: {e}"))
}

/// The SHA-256 of `bytes` in lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(bytes))
}

/// The first `n` frames of the first DAVIS-2016 sequence, copied into `dir/clip`.
pub fn davis_clip(dir: &Path, n: usize) -> Option<PathBuf> {
    let davis = data("davis16")?;
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
    let clip = dir.join("clip");
    std::fs::create_dir(&clip).unwrap();
    for f in &frames[..n] {
        std::fs::copy(f, clip.join(f.file_name().unwrap())).unwrap();
    }
    Some(clip)
}
