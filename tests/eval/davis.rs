//! DAVIS 2016/2017 and Ref-DAVIS: the fixture cases, the synthetic oracle case, errors.

use super::*;
use deva::eval::davis::{self, DavisOptions, DavisTask, GtFormat};

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
