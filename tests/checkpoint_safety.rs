//! The safe checkpoint reader against a corpus of hostile files (tests/malicious): each is
//! refused with an error naming what was refused and the file, and the canary file that the
//! payloads create under Python's `pickle.loads` never appears.
//!
//! With `DEVA_CORPUS_OUT=DIR` the corpus (and `manifest.json`) is written to DIR instead of a
//! temporary folder, for `tests/malicious/demonstrate.py`, which shows the same bytes running
//! their payloads under Python (run by hand only).

mod malicious;

use deva::nn::checkpoint;
use deva::nn::TensorDType;
use malicious::{op, Container};

#[test]
fn hostile_checkpoints_are_refused_naming_what_and_never_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = match std::env::var_os("DEVA_CORPUS_OUT") {
        Some(d) => {
            std::fs::create_dir_all(&d).unwrap();
            std::path::PathBuf::from(d)
        }
        None => tmp.path().to_path_buf(),
    };
    let canary = dir.join("canary");
    let _ = std::fs::remove_file(&canary);
    let cases = malicious::cases(&canary);
    let mut manifest = Vec::new();
    for case in &cases {
        let path = malicious::write_case(&dir, case);
        let file = format!("{}.pth", case.name);
        let e = match checkpoint::load(&path, &[]) {
            Ok(sd) => panic!("{}: accepted ({} tensors)", case.name, sd.len()),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains(case.refused) && e.contains(&file),
            "{}: expected the refusal to name {:?}: {e}",
            case.name,
            case.refused
        );
        manifest.push(serde_json::json!({
            "file": file,
            "zip": case.container == Container::Pth,
            "executes": case.executes,
        }));
    }
    assert!(!canary.exists(), "a payload ran");
    let manifest = serde_json::json!({ "canary": canary, "cases": manifest });
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
}

/// The builder writes real state dicts: the valid one loads with its values, so the hostile
/// variants are refused for their payloads and not for a malformed frame around them.
#[test]
fn the_corpus_state_dict_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let case = malicious::Case {
        name: "valid".into(),
        bytes: malicious::valid_state_dict(),
        container: Container::Pth,
        refused: "",
        executes: false,
    };
    let sd = checkpoint::load(malicious::write_case(dir.path(), &case), &[]).unwrap();
    let w = sd.get("w").unwrap();
    assert_eq!((w.dtype(), w.shape()), (TensorDType::F32, &[2usize, 2][..]));
    // Storage (1, 2, 3, 4) read with strides (2, 1).
    assert_eq!(w.to_f32().unwrap(), [1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn truncated_pickles_and_archives_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let pkl = malicious::valid_state_dict();
    for cut in 0..pkl.len() {
        let case = malicious::Case {
            name: format!("cut{cut}"),
            bytes: pkl[..cut].to_vec(),
            container: Container::Pth,
            refused: "",
            executes: false,
        };
        let path = malicious::write_case(dir.path(), &case);
        let e = checkpoint::load(&path, &[]).unwrap_err().to_string();
        assert!(e.contains(&format!("cut{cut}.pth")), "{e}");
        std::fs::remove_file(path).unwrap();
    }
    let whole = malicious::Case {
        name: "whole".into(),
        bytes: pkl,
        container: Container::Pth,
        refused: "",
        executes: false,
    };
    let bytes = std::fs::read(malicious::write_case(dir.path(), &whole)).unwrap();
    let path = dir.path().join("cut.pth");
    for cut in (4..bytes.len()).step_by(7) {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let e = checkpoint::load(&path, &[]).unwrap_err().to_string();
        assert!(e.contains("cut.pth"), "{e}");
    }
}

/// A million nested tuples: reading and dropping them must not recurse (this runs on a test
/// thread's small stack).
#[test]
fn deep_nesting_neither_overflows_the_stack_nor_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = malicious::Pickle::new(op::PROTO2).op(&[op::EMPTY_TUPLE]);
    p.0.extend(std::iter::repeat_n(op::TUPLE1, 1_000_000));
    let case = malicious::Case {
        name: "deep".into(),
        bytes: p.stop(),
        container: Container::Pth,
        refused: "",
        executes: false,
    };
    let e = checkpoint::load(malicious::write_case(dir.path(), &case), &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("deep.pth") && e.contains("not a dict"), "{e}");
}

/// Training checkpoints written by torch (tests/oracle/checkpoints/make_training_checkpoints.py)
/// with the structure of the official ReferFormer files (legacy format; `args` Namespace,
/// AdamW and MultiStepLR states beside `model`) and of detectron2's (zip; trainer state): the
/// `model` entry loads with the names, shapes and values torch reads back.
#[test]
fn training_checkpoints_give_their_model_entry() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/training_checkpoints");
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let files = expected.as_object().unwrap();
    assert!(files.contains_key("referformer_legacy.pth"));
    for (file, tensors) in files {
        let path = dir.join(file);
        let legacy = file.contains("legacy");
        let format = checkpoint::CheckpointFormat::of_file(&path).unwrap().0;
        assert_eq!(
            format == checkpoint::CheckpointFormat::TorchLegacy,
            legacy,
            "{file}: {format:?}"
        );
        let tensors = tensors.as_object().unwrap();
        for sd in [
            checkpoint::load(&path, &["model"]).unwrap(),
            checkpoint::load_model(&path).unwrap(),
        ] {
            let names: Vec<&str> = sd.names().collect();
            let want: Vec<&str> = tensors.keys().map(String::as_str).collect();
            assert_eq!(names, want, "{file}");
            for (name, t) in sd.iter() {
                let e = &tensors[name];
                let shape: Vec<usize> = serde_json::from_value(e["shape"].clone()).unwrap();
                assert_eq!(t.shape(), shape.as_slice(), "{file} {name}");
                // Compared as f32 (the stored type): JSON's decimal text of an f32 may parse
                // one f64 ulp away.
                let values: Vec<f32> = serde_json::from_value::<Vec<f64>>(e["values"].clone())
                    .unwrap()
                    .into_iter()
                    .map(|v| v as f32)
                    .collect();
                let got: Vec<f32> = match t.to_f32() {
                    Some(v) => v,
                    None => t.to_i64().unwrap().into_iter().map(|x| x as f32).collect(),
                };
                assert_eq!(got, values, "{file} {name}");
            }
        }
        // The whole file flattens too (optimizer states are tensors as well).
        let all = checkpoint::load(&path, &[]).unwrap();
        assert!(
            all.names().any(|n| n == "model.transformer.level_embed"),
            "{file}"
        );
        let e = checkpoint::load(&path, &["state_dict"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no entry 'state_dict'") && e.contains(file.as_str()),
            "{e}"
        );
    }
}

/// A legacy-format file cut anywhere is an error naming the file, never a panic.
#[test]
fn truncated_legacy_checkpoints_are_errors() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/training_checkpoints/referformer_legacy.pth");
    let bytes = std::fs::read(src).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.pth");
    for cut in (16..bytes.len()).step_by(13) {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let e = checkpoint::load(&path, &["model"]).unwrap_err().to_string();
        assert!(e.contains("cut.pth"), "cut at {cut}: {e}");
    }
}
