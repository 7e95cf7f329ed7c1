//! Shared helpers of the integration tests: where fixtures and data are.
#![allow(dead_code)]

use std::path::PathBuf;

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

/// The DEVA network's state-dict layout and formula seed from the fixture's
/// `state_dict_keys.json` in `dir` (`$DEVA_FIXTURES/deva_net`).
pub fn deva_layout(dir: &std::path::Path) -> (u64, Vec<deva::nn::TensorSpec>) {
    let text = std::fs::read_to_string(dir.join("state_dict_keys.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let seed = v["seed"].as_u64().unwrap();
    let keys = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| deva::nn::TensorSpec {
            name: e[0].as_str().unwrap().to_string(),
            shape: e[1]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect(),
            dtype: match e[2].as_str().unwrap() {
                "float32" => deva::nn::TensorDType::F32,
                "int64" => deva::nn::TensorDType::I64,
                other => panic!("unexpected dtype {other} in state_dict_keys.json"),
            },
        })
        .collect();
    (seed, keys)
}
