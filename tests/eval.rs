//! Parity of `deva::eval` with the official evaluators on every case under
//! `$DEVA_FIXTURES/eval/` (values produced by the official code; see the fixture README), plus
//! error reporting on broken inputs.

mod common;

use deva::eval::davis::{self, DavisOptions, DavisTask, GtFormat};
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

#[test]
fn davis_cases_match_official() {
    for_each_case("eval/davis", |name, case, exp| {
        let task: DavisTask = exp["task"].as_str().expect("task").parse().unwrap();
        let options = DavisOptions {
            task,
            gt_format: GtFormat::Auto,
            sequences: None,
        };
        let report = davis::evaluate(&case.join("gt"), &case.join("pred"), &options, &no_progress)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_close(report.jf, &exp["J&F-Mean"], &format!("{name} J&F-Mean"));
        for (key, got) in report.scores.named() {
            assert_close(got, &exp[key], &format!("{name} {key}"));
        }
        let opts = &exp["options"];
        if let Some(seqs) = opts["sequences"].as_array() {
            let got: Vec<&str> = report.sequences.iter().map(|s| s.name.as_str()).collect();
            let want: Vec<&str> = seqs.iter().map(|s| s.as_str().unwrap()).collect();
            assert_eq!(got, want, "{name}: sequences");
        }
        for seq in &report.sequences {
            let what = format!("{name}/{}", seq.name);
            if let Some(fmt) = opts["gt_format"].as_str() {
                let want = if fmt.starts_with("davis2016") {
                    GtFormat::Davis2016
                } else {
                    GtFormat::Davis2017
                };
                assert_eq!(seq.gt_format, want, "{what}: detected GT format");
            }
            if let Some(px) = opts["bound_pix_per_sequence"][&seq.name].as_u64() {
                assert_eq!(seq.tolerance_px as u64, px, "{what}: boundary tolerance");
            }
            if let Some(hwl) = opts["frame_size_hw_and_length"][&seq.name].as_array() {
                let got = [seq.height, seq.width, seq.frames].map(|v| v as u64);
                let want: Vec<u64> = hwl.iter().map(|v| v.as_u64().unwrap()).collect();
                assert_eq!(got.to_vec(), want, "{what}: size and length");
            }
        }
        let objects: Vec<&davis::DavisObject> =
            report.sequences.iter().flat_map(|s| &s.objects).collect();
        let per_object = exp["per_object"].as_object().expect("per_object");
        assert_eq!(objects.len(), per_object.len(), "{name}: number of objects");
        for o in &objects {
            let e = &per_object
                .get(&o.key)
                .unwrap_or_else(|| panic!("{name}: object {} not expected", o.key));
            let what = format!("{name} {}", o.key);
            for (key, got) in o.scores.named() {
                assert_close(got, &e[key], &format!("{what} {key}"));
            }
            assert_series(&o.j_per_frame, &e["J_per_frame"], &format!("{what} J"));
            assert_series(&o.f_per_frame, &e["F_per_frame"], &format!("{what} F"));
            assert_close(o.scores.j_mean, &exp["per_object_J"][&o.key], &what);
            assert_close(o.scores.f_mean, &exp["per_object_F"][&o.key], &what);
        }
        if let Some(matching) = exp["unsup_matching"].as_object() {
            for (seq, entries) in matching {
                for m in entries.as_array().unwrap() {
                    let key = m["object_key"].as_str().unwrap();
                    let o = objects
                        .iter()
                        .find(|o| o.key == key)
                        .unwrap_or_else(|| panic!("{name}: no object {key} ({seq})"));
                    assert_eq!(Some(o.gt_id as u64), m["gt_id"].as_u64(), "{key} gt_id");
                    let padding = m["pred_is_zero_padding"].as_bool().unwrap();
                    assert_eq!(o.pred_id.is_none(), padding, "{key} padding");
                    if !padding {
                        assert_eq!(o.pred_id.map(u64::from), m["pred_id"].as_u64(), "{key}");
                    }
                    assert_close(o.mean_jf, &m["mean_JF"], &format!("{key} mean_JF"));
                }
            }
        }
    });
}

#[test]
fn stq_unit_cases_match_official() {
    use deva::eval::stq::{StQuality, StqConfig};
    let Some(root) = common::fixtures("eval/stq_unit") else {
        return;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no STQ cases in {}", root.display());
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let case = read_json(&file);
        let config: StqConfig = serde_json::from_value(case.clone()).expect("STQ settings");
        let mut stq = StQuality::new(config).unwrap();
        let flat = |v: &Value| -> Vec<i64> {
            v.as_array()
                .expect("2-D label array")
                .iter()
                .flat_map(|row| row.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()))
                .collect()
        };
        for u in case["updates"].as_array().unwrap() {
            let seq = u["sequence_id"].to_string();
            stq.update(&flat(&u["ground_truth"]), &flat(&u["prediction"]), &seq)
                .unwrap();
        }
        let r = stq.result();
        let e = &case["expected"];
        assert_close(r.scores.stq, &e["STQ"], &format!("{name} STQ"));
        assert_close(r.scores.aq, &e["AQ"], &format!("{name} AQ"));
        assert_close(r.scores.iou, &e["IoU"], &format!("{name} IoU"));
        let ids: Vec<String> = e["ID_per_seq"]
            .as_array()
            .unwrap()
            .iter()
            .map(Value::to_string)
            .collect();
        let got_ids: Vec<String> = r.sequences.iter().map(|s| s.id.clone()).collect();
        assert_eq!(got_ids, ids, "{name} sequence ids");
        for (i, s) in r.sequences.iter().enumerate() {
            let q = &s.scores;
            assert_close(q.stq, &e["STQ_per_seq"][i], &format!("{name} STQ[{i}]"));
            assert_close(q.aq, &e["AQ_per_seq"][i], &format!("{name} AQ[{i}]"));
            assert_close(q.iou, &e["IoU_per_seq"][i], &format!("{name} IoU[{i}]"));
            assert_eq!(
                Some(s.length as u64),
                e["Length_per_seq"][i].as_u64(),
                "{name}"
            );
        }
    }
}

#[test]
fn vipseg_cases_match_official() {
    use deva::eval::vipseg;
    for_each_case("eval/vipseg", |name, case, exp| {
        let report = vipseg::evaluate(
            &case.join("panoptic_gt_VIPSeg_val.json"),
            &case.join("panomasksRGB"),
            &case.join("pred"),
            &no_progress,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let vpq = exp["VPQ"].as_object().expect("VPQ");
        assert_eq!(vpq.len(), report.windows.len(), "{name}: window sizes");
        for (k, e) in vpq {
            let w = report
                .windows
                .iter()
                .find(|w| &w.k == k)
                .unwrap_or_else(|| panic!("{name}: no window {k}"));
            let what = format!("{name} VPQ^{k}");
            if let Some(n) = e["window_nframes"].as_u64() {
                assert_eq!(w.window_nframes as u64, n, "{what}");
            }
            for (split, got) in [
                ("all", w.vpq.all),
                ("things", w.vpq.things),
                ("stuff", w.vpq.stuff),
            ] {
                assert_close(got, &e[split], &format!("{what} {split}"));
            }
            for (split, sq, rq, n) in [
                ("all", w.sq.all, w.rq.all, w.n_categories.all),
                ("things", w.sq.things, w.rq.things, w.n_categories.things),
                ("stuff", w.sq.stuff, w.rq.stuff, w.n_categories.stuff),
            ] {
                assert_close(sq, &e["SQ"][split], &format!("{what} SQ {split}"));
                assert_close(rq, &e["RQ"][split], &format!("{what} RQ {split}"));
                assert_eq!(
                    Some(n as u64),
                    e["n_categories"][split].as_u64(),
                    "{what} n {split}"
                );
            }
            let per = e["per_category"].as_object().expect("per_category");
            let got_keys: Vec<String> = w.per_category.keys().map(u32::to_string).collect();
            let mut want_keys: Vec<String> = per.keys().cloned().collect();
            want_keys.sort_by_key(|k| k.parse::<u32>().unwrap());
            assert_eq!(got_keys, want_keys, "{what}: active categories");
            for (cat, s) in &w.per_category {
                let c = &per[&cat.to_string()];
                let cw = format!("{what} category {cat}");
                assert_close(s.pq, &c["pq"], &cw);
                assert_close(s.sq, &c["sq"], &cw);
                assert_close(s.rq, &c["rq"], &cw);
                assert_close(s.iou_sum, &c["iou_sum"], &cw);
                assert_eq!(Some(s.tp), c["tp"].as_u64(), "{cw} tp");
                assert_eq!(Some(s.fp), c["fp"].as_u64(), "{cw} fp");
                assert_eq!(Some(s.fn_), c["fn"].as_u64(), "{cw} fn");
                if let Some(t) = c["isthing"].as_u64() {
                    assert_eq!(s.isthing, t == 1, "{cw} isthing");
                }
            }
        }
        let stq = &exp["STQ"];
        assert_close(report.stq.stq, &stq["STQ"], &format!("{name} STQ"));
        assert_close(report.stq.aq, &stq["AQ"], &format!("{name} AQ"));
        assert_close(report.stq.iou, &stq["IoU"], &format!("{name} IoU"));
        let n = stq["STQ_per_seq"].as_array().unwrap().len();
        assert_eq!(report.sequences.len(), n, "{name}: videos");
        for (i, s) in report.sequences.iter().enumerate() {
            let what = format!("{name} {}", s.video_id);
            assert_close(s.stq.stq, &stq["STQ_per_seq"][i], &what);
            assert_close(s.stq.aq, &stq["AQ_per_seq"][i], &what);
            assert_close(s.stq.iou, &stq["IoU_per_seq"][i], &what);
            assert_eq!(
                Some(s.frames as u64),
                stq["Length_per_seq"][i].as_u64(),
                "{what}"
            );
            let v = &exp["options"]["videos"][&s.video_id];
            if !v.is_null() {
                assert_eq!(Some(s.frames as u64), v["frames"].as_u64(), "{what} frames");
                assert_eq!(Some(s.width as u64), v["width"].as_u64(), "{what} width");
                assert_eq!(Some(s.height as u64), v["height"].as_u64(), "{what} height");
            }
        }
    });
}

#[test]
fn burst_cases_match_official() {
    use deva::eval::burst;
    for_each_case("eval/burst", |name, case, exp| {
        let report = burst::evaluate(&case.join("gt"), &case.join("pred.json"), &no_progress)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for (split, e) in ["all", "common", "uncommon"].map(|s| (s, &exp[s])) {
            if e.is_null() {
                continue;
            }
            let r = report
                .splits
                .get(split)
                .unwrap_or_else(|| panic!("{name}: split {split} not evaluated"));
            let what = format!("{name} {split}");
            for (key, got) in r.summary.named() {
                assert_close(got, &e[key], &format!("{what} {key}"));
            }
            let pa = &r.per_alpha;
            for (key, got) in [
                ("OWTA", &pa.owta),
                ("DetRe", &pa.det_re),
                ("AssA", &pa.ass_a),
                ("HOTA", &pa.hota),
                ("DetA", &pa.det_a),
            ] {
                if !e["per_alpha"][key].is_null() {
                    assert_series(
                        got,
                        &e["per_alpha"][key],
                        &format!("{what} {key} per alpha"),
                    );
                }
            }
            for (key, got) in [
                ("HOTA_TP", &pa.tp),
                ("HOTA_FN", &pa.fn_),
                ("HOTA_FP", &pa.fp),
            ] {
                let want: Vec<u64> = e[key]
                    .as_array()
                    .unwrap_or_else(|| panic!("{what}: {key}"))
                    .iter()
                    .map(|v| v.as_u64().unwrap())
                    .collect();
                assert_eq!(got.to_vec(), want, "{what} {key}");
            }
            let seqs = e["per_sequence"].as_object().expect("per_sequence");
            assert_eq!(r.sequences.len(), seqs.len(), "{what}: sequences");
            for s in &r.sequences {
                let es = &seqs
                    .get(&s.name)
                    .unwrap_or_else(|| panic!("{what}: unexpected sequence {}", s.name));
                let sw = format!("{what} {}", s.name);
                for (key, got) in [
                    ("num_gt_dets", s.num_gt_dets),
                    ("num_tracker_dets", s.num_tracker_dets),
                    ("num_gt_ids", s.num_gt_ids),
                    ("num_tracker_ids", s.num_tracker_ids),
                    ("num_timesteps", s.num_timesteps),
                ] {
                    assert_eq!(Some(got as u64), es[key].as_u64(), "{sw} {key}");
                }
                // per-sequence summaries hold OWTA, DetRe, AssA, HOTA and DetA
                for (key, got) in s.summary.named().into_iter().take(5) {
                    assert_close(got, &es[key], &format!("{sw} {key}"));
                }
            }
        }
    });
}

#[test]
fn box_cases_match_official() {
    use deva::eval::boxes::{got10k, lasot};
    use deva::eval::input::read_name_list;
    for_each_case("eval/boxes", |name, case, exp| {
        let protocol = exp["protocol"].as_str().expect("protocol");
        if protocol.starts_with("LaSOT") {
            let seqs = read_name_list(&case.join("sequences.txt")).unwrap();
            let r = lasot::evaluate(
                &case.join("gt"),
                &case.join("absent"),
                &case.join("pred"),
                &seqs,
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            for (key, got) in [
                ("success_AUC", r.success_auc),
                ("precision_20px", r.precision_20px),
                ("norm_precision_0.20", r.norm_precision_020),
                ("precision_curve_mean", r.precision_curve_mean),
                ("norm_precision_curve_mean", r.norm_precision_curve_mean),
            ] {
                assert_close(got, &exp[key], &format!("{name} {key}"));
            }
            let thresholds = &exp["options"]["success_thresholds_matlab_colon_0_0.05_1"];
            if !thresholds.is_null() {
                let want: Vec<f64> = serde_json::from_value(thresholds.clone()).unwrap();
                assert_eq!(
                    r.success_thresholds, want,
                    "{name}: MATLAB colon thresholds"
                );
            }
            for (prefix, curve) in [
                ("success", &r.success),
                ("precision", &r.precision),
                ("norm_precision", &r.norm_precision),
            ] {
                assert_series(
                    &curve.curve,
                    &exp[format!("mean_{prefix}_curve")],
                    &format!("{name} {prefix}"),
                );
                let list = |v: &Value| -> Vec<String> {
                    v.as_array()
                        .unwrap()
                        .iter()
                        .map(|s| s.as_str().unwrap().to_string())
                        .collect()
                };
                assert_eq!(
                    curve.kept,
                    list(&exp[format!("{prefix}_sequences_kept")]),
                    "{name} {prefix} kept"
                );
                assert_eq!(
                    curve.dropped,
                    list(&exp[format!("{prefix}_sequences_dropped")]),
                    "{name} {prefix} dropped"
                );
            }
            let names: Vec<&str> = r.sequences.iter().map(|s| s.name.as_str()).collect();
            assert_eq!(names, string_list(&exp["sequences"]), "{name}: sequences");
            for s in &r.sequences {
                let e = &exp["per_sequence"][&s.name];
                let what = format!("{name} {}", s.name);
                for (key, got) in [
                    ("n_frames", s.n_frames),
                    ("n_absent", s.n_absent),
                    ("n_evaluated_frames", s.n_evaluated_frames),
                    ("n_invalid_gt_rows_evaluated", s.n_invalid_gt_rows_evaluated),
                ] {
                    assert_eq!(Some(got as u64), e[key].as_u64(), "{what} {key}");
                }
                assert_series(
                    &s.success_curve,
                    &e["success_curve"],
                    &format!("{what} success"),
                );
                assert_series(
                    &s.precision_curve,
                    &e["precision_curve"],
                    &format!("{what} precision"),
                );
                assert_series(
                    &s.norm_precision_curve,
                    &e["norm_precision_curve"],
                    &format!("{what} norm"),
                );
                assert_close(s.success_auc, &e["success_AUC"], &what);
                assert_close(s.precision_20px, &e["precision_20px"], &what);
                assert_close(s.norm_precision_020, &e["norm_precision_0.20"], &what);
            }
        } else if protocol.starts_with("GOT-10k") {
            let seqs = read_name_list(&case.join("list.txt")).unwrap();
            let r = got10k::evaluate(&case.join("gt"), &case.join("pred"), &seqs)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_close(r.ao, &exp["AO"], &format!("{name} AO"));
            assert_close(r.sr50, &exp["SR0.5"], &format!("{name} SR0.5"));
            assert_close(r.sr75, &exp["SR0.75"], &format!("{name} SR0.75"));
            assert_series(
                &r.success_curve_101,
                &exp["success_curve_101"],
                &format!("{name} curve"),
            );
            assert_eq!(
                Some(r.n_ious as u64),
                exp["n_ious"].as_u64(),
                "{name} n_ious"
            );
            for s in &r.sequences {
                let e = &exp["per_sequence"][&s.name];
                let what = format!("{name} {}", s.name);
                assert_close(s.ao, &e["AO"], &what);
                assert_close(s.sr50, &e["SR0.5"], &what);
                assert_eq!(
                    Some(s.length_minus_first as u64),
                    e["length_minus_first"].as_u64(),
                    "{what}"
                );
                assert_eq!(
                    Some(s.repetitions as u64),
                    e["repetitions"].as_u64(),
                    "{what}"
                );
            }
        } else {
            panic!("{name}: unknown protocol {protocol:?}");
        }
    });
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

// Oracle: the official davis2017-evaluation (commit ac7c43f) with numpy 2.4.6, opencv 5.0.0
// and scikit-image 0.26.0, run by `DAVISEvaluation(root, task, 'val').evaluate(results)` on the
// masks `write_synthetic_davis` generates (same formulas, written by PIL). This case exercises
// what the fixtures do not: GT void in both protocols, an object absent from a frame, a
// proposal that matches nothing, and non-trivial boundaries at a small radius.
#[test]
fn davis_void_and_proposals_match_official_oracle() {
    struct Want {
        task: DavisTask,
        global: [f64; 7],
        objects: [(f64, f64); 2],
    }
    let cases = [
        Want {
            task: DavisTask::Semi,
            global: [
                0.6031250263288565,
                0.6308627254089787,
                0.8333333333333333,
                0.38306451612903225,
                0.5753873272487342,
                0.8333333333333333,
                0.3835616438356164,
            ],
            objects: [
                (0.510752688172043, 0.5114155251141552),
                (0.7509727626459144, 0.6393591293833131),
            ],
        },
        Want {
            task: DavisTask::Unsup,
            global: [
                0.7727276124899145,
                0.786551115390788,
                0.9,
                0.19153225806451613,
                0.758904109589041,
                0.9,
                0.1917808219178082,
            ],
            objects: [
                (0.6129032258064516, 0.6136986301369862),
                (0.9601990049751243, 0.9041095890410957),
            ],
        },
    ];
    for want in cases {
        let dir = tempfile::tempdir().unwrap();
        let (gt, pred) = (dir.path().join("gt"), dir.path().join("pred"));
        write_synthetic_davis(&gt, &pred, want.task == DavisTask::Unsup);
        let options = DavisOptions {
            task: want.task,
            gt_format: GtFormat::Auto,
            sequences: None,
        };
        let r = davis::evaluate(&gt, &pred, &options, &no_progress).unwrap();
        let mut got = vec![r.jf];
        got.extend(r.scores.named().map(|(_, v)| v));
        for (g, w) in got.iter().zip(want.global) {
            assert!(
                (g - w).abs() <= TOL,
                "{:?}: {got:?} vs {:?}",
                want.task,
                want.global
            );
        }
        let objects = &r.sequences[0].objects;
        assert_eq!(objects.len(), 2);
        for (o, (j, f)) in objects.iter().zip(want.objects) {
            assert!(
                (o.scores.j_mean - j).abs() <= TOL && (o.scores.f_mean - f).abs() <= TOL,
                "{o:?}"
            );
        }
        assert_eq!(r.sequences[0].gt_format, GtFormat::Davis2017);
    }
}

#[test]
fn davis_errors_name_the_file() {
    let options = |task| DavisOptions {
        task,
        gt_format: GtFormat::Auto,
        sequences: None,
    };
    let run = |gt: &Path, pred: &Path, task| {
        davis::evaluate(gt, pred, &options(task), &no_progress)
            .unwrap_err()
            .to_string()
    };
    let dir = tempfile::tempdir().unwrap();
    let (gt, pred) = (dir.path().join("gt"), dir.path().join("pred"));
    // a proposal id (3) above the number of GT objects is an error in the semi-supervised task
    write_synthetic_davis(&gt, &pred, true);
    let e = run(&gt, &pred, DavisTask::Semi);
    assert!(
        e.contains("00001.png") && e.contains("predicted id 3"),
        "{e}"
    );
    // missing predicted frame
    write_synthetic_davis(&gt, &pred, false);
    std::fs::remove_file(pred.join("seq/00002.png")).unwrap();
    let e = run(&gt, &pred, DavisTask::Unsup);
    assert!(e.contains("seq/00002.png") && e.contains("missing"), "{e}");
    // size mismatch
    let small = deva::mask::IdMap::new(10, 10);
    deva::imageio::write_palette_png(
        &pred.join("seq/00002.png"),
        &small,
        &deva::imageio::davis_palette(),
    )
    .unwrap();
    let e = run(&gt, &pred, DavisTask::Unsup);
    assert!(e.contains("seq/00002.png") && e.contains("10x10"), "{e}");
    // missing sequence folder in the predictions
    std::fs::remove_dir_all(&pred).unwrap();
    let e = run(&gt, &pred, DavisTask::Semi);
    assert!(e.contains("pred/seq") && e.contains("not found"), "{e}");
}

#[test]
fn davis2016_binary_masks_are_object_one() {
    // DAVIS-2016 convention: grayscale 0/255 GT (and a prediction stored the same way).
    let dir = tempfile::tempdir().unwrap();
    for sub in ["gt/s", "pred/s"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    for t in 0..3u32 {
        let img = image::GrayImage::from_fn(20, 10, |x, _| {
            image::Luma([if (5 + t..12 + t).contains(&x) { 255 } else { 0 }])
        });
        for sub in ["gt/s", "pred/s"] {
            img.save(dir.path().join(format!("{sub}/{t:05}.png")))
                .unwrap();
        }
    }
    let options = DavisOptions {
        task: DavisTask::Semi,
        gt_format: GtFormat::Auto,
        sequences: None,
    };
    let r = davis::evaluate(
        &dir.path().join("gt"),
        &dir.path().join("pred"),
        &options,
        &no_progress,
    )
    .unwrap();
    assert_eq!(r.sequences[0].gt_format, GtFormat::Davis2016);
    assert_eq!(r.sequences[0].objects.len(), 1);
    assert_eq!((r.scores.j_mean, r.scores.f_mean, r.jf), (1.0, 1.0, 1.0));
}

/// Our result files may carry a top-level `"categories"` list of `{"id", "name"}`: the BURST
/// evaluation reads such a file exactly as the file without it.
#[test]
fn burst_results_with_category_names_evaluate_the_same() {
    use deva::eval::burst;
    let Some(root) = common::fixtures("eval/burst") else {
        return;
    };
    let case = case_dirs(&root).into_iter().next().expect("a BURST case");
    let mut pred = read_json(&case.join("pred.json"));
    pred["categories"] = serde_json::json!([{"id": 1, "name": "person"}]);
    let dir = tempfile::tempdir().unwrap();
    let named = dir.path().join("pred.json");
    std::fs::write(&named, pred.to_string()).unwrap();
    let report = |p: &Path| {
        let r = burst::evaluate(&case.join("gt"), p, &no_progress).unwrap();
        serde_json::to_string(&r).unwrap()
    };
    assert_eq!(report(&named), report(&case.join("pred.json")));
}

#[test]
fn burst_errors_name_the_file() {
    use deva::eval::burst;
    let dir = tempfile::tempdir().unwrap();
    let gt_dir = dir.path().join("gt");
    std::fs::create_dir_all(&gt_dir).unwrap();
    let pred = dir.path().join("pred.json");
    let gt = serde_json::json!({"split": "val", "sequences": [{
        "id": 1, "width": 4, "height": 3, "dataset": "D", "seq_name": "s",
        "all_image_paths": ["frame0000.jpg"], "annotated_image_paths": ["frame0000.jpg"],
        "neg_category_ids": [], "not_exhaustive_category_ids": [],
        "track_category_ids": {"1": 805},
        "segmentations": [{"1": {"rle": "0;", "is_gt": true}}]}]});
    std::fs::write(gt_dir.join("all_classes.json"), gt.to_string()).unwrap();
    // malformed prediction JSON
    std::fs::write(&pred, "{\"sequences\": [").unwrap();
    let e = burst::evaluate(&gt_dir, &pred, &no_progress)
        .unwrap_err()
        .to_string();
    assert!(e.contains("pred.json") && e.contains("invalid JSON"), "{e}");
    // the GT RLE "0;" (11 foreground pixels) does not cover the 4x3 image
    std::fs::write(&pred, serde_json::json!({"sequences": []}).to_string()).unwrap();
    let e = burst::evaluate(&gt_dir, &pred, &no_progress)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("all_classes.json") && e.contains("track 1"),
        "{e}"
    );
    // missing field
    std::fs::write(gt_dir.join("all_classes.json"), "{\"split\": \"val\"}").unwrap();
    let e = burst::evaluate(&gt_dir, &pred, &no_progress)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("all_classes.json") && e.contains("sequences"),
        "{e}"
    );
}

#[test]
fn vipseg_errors_name_the_file() {
    use deva::eval::vipseg;
    use deva::imageio::write_rgb_id_png;
    use deva::mask::IdMap;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let gt = serde_json::json!({
        "videos": [{"video_id": "v", "images": [{"id": "0", "width": 4, "height": 2, "file_name": "0.png"}]}],
        "annotations": [{"video_id": "v", "annotations": [{"image_id": "0", "file_name": "0.png",
            "segments_info": [{"id": 1, "category_id": 0, "iscrowd": 0, "area": 8}]}]}],
        "categories": [{"id": 0, "name": "wall", "isthing": 0}]});
    std::fs::write(root.join("gt.json"), gt.to_string()).unwrap();
    let map = IdMap::from_vec(4, 2, vec![1; 8]).unwrap();
    write_rgb_id_png(&root.join("gt/v/0.png"), &map).unwrap();
    let pred_map = IdMap::from_vec(4, 2, vec![1, 1, 1, 1, 7, 7, 7, 7]).unwrap();
    write_rgb_id_png(&root.join("pred/pan_pred/v/0.png"), &pred_map).unwrap();
    let pred = |segments: Value| {
        let j = serde_json::json!({"annotations": [{"video_id": "v", "annotations": [
            {"file_name": "0.png", "segments_info": segments}]}]});
        std::fs::write(root.join("pred/pred.json"), j.to_string()).unwrap();
    };
    let run = || {
        vipseg::evaluate(
            &root.join("gt.json"),
            &root.join("gt"),
            &root.join("pred"),
            &no_progress,
        )
    };
    // id 7 occurs in the PNG but is not listed
    pred(serde_json::json!([{"id": 1, "category_id": 0}]));
    let e = run().unwrap_err().to_string();
    assert!(e.contains("pan_pred/v/0.png") && e.contains("[7]"), "{e}");
    // a listed id absent from the PNG
    pred(
        serde_json::json!([{"id": 1, "category_id": 0}, {"id": 7, "category_id": 0}, {"id": 9, "category_id": 0}]),
    );
    let e = run().unwrap_err().to_string();
    assert!(
        e.contains("pan_pred/v/0.png") && e.contains("segment id 9"),
        "{e}"
    );
    // consistent input evaluates: one GT tube, two predicted tubes of the same category
    pred(serde_json::json!([{"id": 1, "category_id": 0}, {"id": 7, "category_id": 0}]));
    let r = run().unwrap();
    assert_eq!(r.windows[0].per_category[&0].tp, 0);
    // the category lists our writer adds (top level and per video) change nothing
    let names = serde_json::json!([{"id": 0, "name": "wall"}]);
    let j = serde_json::json!({"categories": names, "annotations": [{"video_id": "v",
        "categories": names, "annotations": [{"file_name": "0.png",
        "segments_info": [{"id": 1, "category_id": 0}, {"id": 7, "category_id": 0}]}]}]});
    std::fs::write(root.join("pred/pred.json"), j.to_string()).unwrap();
    let json = |r: &vipseg::VipsegReport| serde_json::to_string(r).unwrap();
    assert_eq!(json(&run().unwrap()), json(&r));
    // malformed pred.json
    std::fs::write(root.join("pred/pred.json"), "[1,").unwrap();
    let e = run().unwrap_err().to_string();
    assert!(e.contains("pred.json") && e.contains("invalid JSON"), "{e}");
}

#[test]
fn box_errors_name_the_file() {
    use deva::eval::boxes::{got10k, lasot};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("gt/s")).unwrap();
    std::fs::create_dir_all(root.join("absent")).unwrap();
    std::fs::create_dir_all(root.join("pred")).unwrap();
    std::fs::write(root.join("gt/s.txt"), "1,1,10,10\n2,2,10,10\n").unwrap();
    std::fs::write(root.join("absent/s.txt"), "0\n0\n").unwrap();
    std::fs::write(root.join("pred/s.txt"), "1,1,10,10\n").unwrap();
    let names = vec!["s".to_string()];
    let e = lasot::evaluate(
        &root.join("gt"),
        &root.join("absent"),
        &root.join("pred"),
        &names,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("pred/s.txt") && e.contains("1 predicted boxes"),
        "{e}"
    );
    std::fs::write(root.join("gt/s/groundtruth.txt"), "1,1,10,10\n2,2,10,10\n").unwrap();
    std::fs::write(root.join("gt/s/cover.label"), "8\n8\n").unwrap();
    std::fs::write(
        root.join("gt/s/meta_info.ini"),
        "[METAINFO]\nresolution: (64, 48)\n",
    )
    .unwrap();
    let e = got10k::evaluate(&root.join("gt"), &root.join("pred"), &names)
        .unwrap_err()
        .to_string();
    assert!(e.contains("s_NNN.txt"), "{e}");
    std::fs::create_dir_all(root.join("pred/s")).unwrap();
    std::fs::write(root.join("pred/s/s_001.txt"), "1,1,10,10\n2,2,x,10\n").unwrap();
    let e = got10k::evaluate(&root.join("gt"), &root.join("pred"), &names)
        .unwrap_err()
        .to_string();
    assert!(e.contains("s_001.txt") && e.contains("line 2"), "{e}");
    std::fs::write(root.join("pred/s/s_001.txt"), "1,1,10,10\n2,2,10,10\n").unwrap();
    let r = got10k::evaluate(&root.join("gt"), &root.join("pred"), &names).unwrap();
    assert_eq!((r.n_ious, r.sr50), (1, 1.0));
}

#[test]
fn cli_writes_json_report_with_global_names() {
    let dir = tempfile::tempdir().unwrap();
    let (gt, pred) = (dir.path().join("gt"), dir.path().join("pred"));
    write_synthetic_davis(&gt, &pred, true);
    let json = dir.path().join("out/report.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_deva"))
        .args(["eval", "davis", "--task", "unsup", "--gt"])
        .arg(&gt)
        .arg("--pred")
        .arg(&pred)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("J&F"));
    let r = read_json(&json);
    // the official value of this synthetic case (see davis_void_and_proposals_match_official_oracle)
    assert_close(
        r["J&F"].as_f64().unwrap(),
        &serde_json::json!(0.7727276124899145),
        "J&F",
    );
    for key in [
        "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay",
    ] {
        assert!(r[key].is_f64(), "{key} missing at the top level");
    }
    assert_eq!(r["sequences"][0]["objects"][0]["key"], "seq_1");
    // errors exit non-zero and name the file
    std::fs::remove_file(pred.join("seq/00004.png")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_deva"))
        .args(["eval", "davis", "--task", "unsup", "--gt"])
        .arg(&gt)
        .arg("--pred")
        .arg(&pred)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("seq/00004.png"));
}

/// Ref-DAVIS: one prediction folder per annotator, each scored against the DAVIS-17 GT, the
/// report the mean. Annotator 0 predicts the GT (void as background): J&F 1; annotator 1 misses
/// object 2 entirely: object 1 scores 1 and object 2 scores 0, J&F 0.5; the mean is 0.75.
#[test]
fn ref_davis_scores_every_annotator_and_averages() {
    use deva::imageio::{davis_palette, read_index_png, write_palette_png};
    let dir = tempfile::tempdir().unwrap();
    let (gt, pred) = (dir.path().join("gt"), dir.path().join("pred"));
    write_synthetic_davis(&gt, &dir.path().join("unused"), false);
    for t in 0..5 {
        let name = format!("seq/{t:05}.png");
        let mut m = read_index_png(&gt.join(&name)).unwrap().map;
        for v in m.data_mut() {
            if *v == 255 {
                *v = 0;
            }
        }
        write_palette_png(&pred.join("anno_0").join(&name), &m, &davis_palette()).unwrap();
        for v in m.data_mut() {
            if *v == 2 {
                *v = 0;
            }
        }
        write_palette_png(&pred.join("anno_1").join(&name), &m, &davis_palette()).unwrap();
    }
    // A folder that is not an annotator's is ignored.
    std::fs::create_dir_all(pred.join("logs")).unwrap();
    for task in [DavisTask::Semi, DavisTask::Unsup] {
        let options = DavisOptions {
            task,
            gt_format: GtFormat::Auto,
            sequences: None,
        };
        let r = davis::evaluate_referring(&gt, &pred, &options, &no_progress).unwrap();
        let names: Vec<&str> = r.annotators.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["anno_0", "anno_1"]);
        assert_eq!(r.annotators[0].1.jf, 1.0, "{task:?}");
        assert_eq!(r.annotators[1].1.jf, 0.5, "{task:?}");
        assert_eq!(r.jf, 0.75, "{task:?}");
        assert_eq!(r.scores.j_mean, 0.75, "{task:?}");
    }
    let e = davis::evaluate_referring(
        &gt,
        &gt,
        &DavisOptions {
            task: DavisTask::Semi,
            gt_format: GtFormat::Auto,
            sequences: None,
        },
        &no_progress,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("anno_0"), "{e}");
}
