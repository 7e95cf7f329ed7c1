//! Parity of `deva::eval` with the official evaluators on every case under
//! `$DEVA_FIXTURES/eval/` (values produced by the official code; see the fixture README), plus
//! error reporting on broken inputs.
//!
//! By subject: `davis` (DAVIS 2016/2017, the synthetic oracle case, Ref-DAVIS), `vipseg`
//! (VPQ and STQ), `burst`, `boxes` (LaSOT and GOT-10k), `cli` (`deva eval`'s JSON report).
//! Shared helpers here.

mod boxes;
mod burst;
mod cli;
#[path = "../common/mod.rs"]
mod common;
mod davis;
mod vipseg;

use serde_json::Value;
use std::path::{Path, PathBuf};

/// Absolute tolerance of the fixtures.
const TOL: f64 = 1e-6;

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The case folders of a fixture group (every sub-folder, sorted); at least one must exist.
fn case_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no case folders in {}", root.display());
    dirs
}

/// Runs `check(name, folder, expected)` on every case folder of a fixture group (skipped when
/// `DEVA_FIXTURES` is unset).
fn for_each_case(group: &str, mut check: impl FnMut(&str, &Path, &Value)) {
    let Some(root) = common::fixtures(group) else {
        return;
    };
    for case in case_dirs(&root) {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        check(&name, &case, &read_json(&case.join("expected.json")));
    }
}

/// `got` equals the expected JSON number within the tolerance (`null` stands for NaN).
#[track_caller]
fn assert_close(got: f64, expected: &Value, what: &str) {
    match expected {
        Value::Null => assert!(got.is_nan(), "{what}: expected NaN (null), got {got}"),
        v => {
            let e = v
                .as_f64()
                .unwrap_or_else(|| panic!("{what}: expected value {v} is not a number"));
            assert!(
                (got - e).abs() <= TOL,
                "{what}: got {got}, expected {e} (diff {})",
                (got - e).abs()
            );
        }
    }
}

#[track_caller]
fn assert_series(got: &[f64], expected: &Value, what: &str) {
    let e = expected
        .as_array()
        .unwrap_or_else(|| panic!("{what}: expected a list"));
    assert_eq!(got.len(), e.len(), "{what}: length");
    for (i, (g, x)) in got.iter().zip(e).enumerate() {
        assert_close(*g, x, &format!("{what}[{i}]"));
    }
}

fn no_progress(_: &str) {}

/// A JSON list of strings.
fn string_list(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected a list of names, found {v}"))
        .iter()
        .map(|s| s.as_str().expect("a name"))
        .collect()
}

/// Writes a synthetic 64x48, 5-frame DAVIS-2017 sequence `seq` (palette PNGs): GT object 1 is
/// a moving rectangle absent in frame 3, object 2 a disk with a void (255) ring; predictions
/// are shifted versions (plus a third proposal in frames 0-2 when `unsup`).
fn write_synthetic_davis(gt: &Path, pred: &Path, unsup: bool) {
    use deva::imageio::{davis_palette, write_palette_png};
    use deva::mask::IdMap;
    let (w, h) = (64usize, 48usize);
    for t in 0..5i64 {
        let mut g = IdMap::new(w, h);
        let mut p = IdMap::new(w, h);
        for y in 0..h as i64 {
            for x in 0..w as i64 {
                let d2 = (x - 45).pow(2) + (y - (30 - t)).pow(2);
                let mut v = 0;
                if d2 > 64 && d2 <= 100 {
                    v = 255;
                }
                if d2 <= 64 {
                    v = 2;
                }
                if t != 3 && (5..20).contains(&y) && (5 + 2 * t..25 + 2 * t).contains(&x) {
                    v = 1;
                }
                g.set(x as usize, y as usize, v);
                let d2 = (x - 44).pow(2) + (y - (31 - t)).pow(2);
                let mut v = 0;
                if d2 <= 81 {
                    v = 2;
                }
                if (4..21).contains(&y) && (6 + 2 * t..27 + 2 * t).contains(&x) {
                    v = 1;
                }
                if unsup && t <= 2 && y >= 40 && x < 4 {
                    v = 3;
                }
                p.set(x as usize, y as usize, v);
            }
        }
        let name = format!("seq/{t:05}.png");
        write_palette_png(&gt.join(&name), &g, &davis_palette()).unwrap();
        write_palette_png(&pred.join(&name), &p, &davis_palette()).unwrap();
    }
}
