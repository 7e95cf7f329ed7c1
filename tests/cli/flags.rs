//! `--help` text and the configuration presets and files.

use super::util::*;
use deva::segmenter::mask2former::{LabelSet, TaskName};
use deva::segmenter::SegmenterSpec;

/// Asserts that `deva <command> --help` lists every flag with a paragraph that states its
/// default (or that it is required).
fn assert_help_documents(command: &str, flags: &[&str]) {
    let o = deva(&[&command, &"--help"]);
    assert_ok(&o);
    let help = String::from_utf8_lossy(&o.stdout);
    for flag in flags {
        // The flag's own paragraph, from its line in the options list to the next flag.
        let lines: Vec<&str> = help.lines().collect();
        let is_flag_line = |l: &str| {
            let t = l.trim_start();
            let t = t.strip_prefix("-o, ").unwrap_or(t);
            t.starts_with(&format!("{flag} ")) || t == *flag
        };
        let at = lines
            .iter()
            .position(|l| is_flag_line(l))
            .unwrap_or_else(|| panic!("{flag} missing from {command} --help:\n{help}"));
        let paragraph: Vec<&str> = std::iter::once(lines[at])
            .chain(lines[at + 1..].iter().copied().take_while(|l| {
                let t = l.trim_start();
                !(t.starts_with("--") || t.get(2..4) == Some(", "))
            }))
            .collect();
        let text = paragraph.join("\n");
        assert!(
            text.contains("default") || text.contains("required"),
            "{flag} states no default in {command} --help:\n{text}"
        );
    }
}

#[test]
fn help_explains_every_flag_with_its_default() {
    assert_help_documents(
        "track",
        &[
            "--out",
            "--detections",
            "--init-masks",
            "--segmenter",
            "--init-box",
            "--sam-auto",
            "--sam-weights",
            "--boxes",
            "--models-dir",
            "--config",
            "--temporal",
            "--size",
            "--detection-every",
            "--num-voting-frames",
            "--max-missed-detection-count",
            "--max-num-objects",
            "--format",
            "--propagator",
            "--weights",
            "--video-name",
            "--resize-masks",
            "--foreground",
            "--overlay",
            "--overlay-video",
            "--fps",
            "--category-names",
            "--m2f-weights",
        ],
    );
    assert_help_documents(
        "demo",
        &[
            "--out",
            "--segmenter",
            "--sam-auto",
            "--frames",
            "--models-dir",
        ],
    );
    assert_help_documents(
        "run",
        &[
            "--layout",
            "--videos",
            "--out",
            "--shard",
            "--format",
            "--status",
            "--detections",
            "--init-masks",
            "--propagator",
            "--size",
            "--device",
        ],
    );
    assert_help_documents("merge", &["--into", "--eval", "--davis-task"]);
}

#[test]
fn config_presets_parse_with_the_papers_settings() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut parsed = BTreeMap::new();
    for name in stems(&dir, "toml") {
        let c = Config::from_toml_file(&dir.join(format!("{name}.toml")))
            .unwrap_or_else(|e| panic!("configs/{name}.toml: {e}"));
        parsed.insert(name, c);
    }
    // Reference §2.1 (eval_args, demo defaults, evaluation scripts).
    let t = |n: &str| &parsed[n].tracker;
    assert_eq!(t("vipseg_online").temporal, Temporal::Online);
    assert_eq!(t("vipseg_semionline").temporal, Temporal::SemiOnline);
    assert_eq!(
        (
            t("vipseg_semionline").detection_every,
            t("vipseg_semionline").num_voting_frames
        ),
        (5, 3)
    );
    assert_eq!(t("burst").max_missed_detection_count, 5);
    assert_eq!(t("text").max_missed_detection_count, 10);
    assert_eq!(
        (t("automatic").max_num_objects, t("automatic").incremental),
        (200, true)
    );
    assert_eq!(
        (
            t("referring_offline").temporal,
            t("referring_offline").num_voting_frames
        ),
        (Temporal::Offline, 5)
    );
    assert_eq!(
        (
            t("unsupervised_offline").temporal,
            t("unsupervised_offline").num_voting_frames
        ),
        (Temporal::Offline, 10)
    );
    assert_eq!(parsed["davis"].propagator, Config::default().propagator);
    assert_eq!(t("davis").temporal, Temporal::Vos);
    assert!(parsed.values().all(|c| c.input.size == 480));

    // The VIPSeg and BURST presets run Mask2Former: panoptic over VIPSeg's classes, instances
    // over COCO's (reference §3.2); named weights are models of the manifest and label sets
    // are built in.
    let m2f = |n: &str| match &parsed[n].segmenter {
        Some(SegmenterSpec::Mask2former(m)) => m.clone(),
        other => panic!("configs/{n}.toml: segmenter {other:?}"),
    };
    let store = deva::ModelStore::new(tempfile::tempdir().unwrap().path()).unwrap();
    for (name, task, labels, classes) in [
        ("vipseg_online", TaskName::Panoptic, "vipseg", 124),
        ("vipseg_semionline", TaskName::Panoptic, "vipseg", 124),
        ("burst", TaskName::Instance, "coco-instance", 80),
    ] {
        let m = m2f(name);
        assert_eq!(
            (m.task, m.labels.as_deref()),
            (task, Some(labels)),
            "{name}"
        );
        assert_eq!(LabelSet::resolve(labels).unwrap().len(), classes, "{name}");
        if let Some(w) = &m.weights {
            let entry = store.entry(w.to_str().unwrap()).unwrap();
            assert!(entry.name.starts_with("mask2former-"), "{name}");
        }
    }
    assert!(m2f("burst").weights.is_some());
}

#[test]
fn unknown_config_key_is_named() {
    let Some((frames, detections, _)) = vipseg() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[tracker]\ndetection_evry = 3\n").unwrap();
    let o = deva(&[
        &"track",
        &frames,
        &"--detections",
        &detections,
        &"--out",
        &dir.path().join("o"),
        &"--config",
        &cfg,
    ]);
    assert_fails_naming(&o, &["bad.toml", "detection_evry"]);
    assert!(!dir.path().join("o").exists());
}
