//! End-to-end tests of benchmark-scale runs: `deva run` sharded over processes, resumed after a
//! SIGKILL, merged with `deva merge`; `--shard auto` under Kubernetes and Slurm variables;
//! concurrent `deva track --format vipseg` into one output folder.
//!
//! DAVIS data come from `$DEVA_DATA/davis16` (short prefixes of four sequences); VIPSeg-layout
//! data are generated frames with detections computed from the generated objects.

mod common;

use deva::imageio::{davis_palette, write_palette_png};
use deva::mask::IdMap;
use deva::video::synthetic::SyntheticClip;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Scheduler variables the tests set themselves; removed from every child first.
const SCHEDULER_VARS: [&str; 7] = [
    "JOB_COMPLETION_INDEX",
    "JOB_COMPLETIONS",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_MAX",
    "SLURM_ARRAY_TASK_STEP",
];

fn deva(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_deva"));
    c.args(args.iter().map(|a| a.as_ref()));
    for v in SCHEDULER_VARS {
        c.env_remove(v);
    }
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "deva failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn run(c: &mut Command) -> Output {
    ok(c.output().expect("run deva"))
}

/// Every file under `dir` by relative path, with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Whether a folder that another process may rename or delete at any moment holds a PNG now.
fn holds_a_png(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let p = e.path();
            p.extension().is_some_and(|x| x == "png") || (p.is_dir() && holds_a_png(&p))
        })
}

/// Asserts two trees hold the same files with the same bytes.
fn assert_same_tree(a: &Path, b: &Path) {
    let (fa, fb) = (files(a), files(b));
    assert_eq!(
        fa.keys().collect::<Vec<_>>(),
        fb.keys().collect::<Vec<_>>(),
        "{} and {} list other files",
        a.display(),
        b.display()
    );
    for (name, bytes) in &fa {
        assert!(bytes == &fb[name], "{name} differs");
    }
}

/// Paths under `dir` that are temporaries: `*.tmp-<pid>` folders, `*.lock` and `*.tmp` files.
fn temporaries(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.contains(".tmp") || name.ends_with(".lock") {
                found.push(p.display().to_string());
            }
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    found
}

/// A DAVIS-layout dataset of the first 4 DAVIS-16 sequences cut to 5..8 frames, with the
/// first-frame masks in `Annotations/480p`.
fn davis_subset(root: &Path) -> Option<(PathBuf, Vec<(String, usize)>)> {
    let davis = common::data("davis16")?;
    let mut names: Vec<String> = std::fs::read_dir(davis.join("JPEGImages/480p"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut videos = Vec::new();
    for (i, name) in names.iter().take(4).enumerate() {
        let n = 5 + i;
        let src = davis.join("JPEGImages/480p").join(name);
        let dst = root.join("JPEGImages/480p").join(name);
        std::fs::create_dir_all(&dst).unwrap();
        for t in 0..n {
            let f = format!("{t:05}.jpg");
            std::fs::copy(src.join(&f), dst.join(&f)).unwrap();
        }
        let ann = root.join("Annotations/480p").join(name);
        std::fs::create_dir_all(&ann).unwrap();
        std::fs::copy(
            davis.join("Annotations/480p").join(name).join("00000.png"),
            ann.join("00000.png"),
        )
        .unwrap();
        videos.push((name.clone(), n));
    }
    Some((root.to_path_buf(), videos))
}

fn davis_run(root: &Path, out: &Path, shard: Option<&str>) -> Command {
    let ann = root.join("Annotations/480p");
    let mut c = deva(&[
        &"run",
        &root,
        &"--layout",
        &"davis",
        &"--init-masks",
        &ann,
        &"--propagator",
        &"static",
        &"--size",
        &"120",
        &"--out",
        &out,
    ]);
    if let Some(s) = shard {
        c.args(["--shard", s]);
    }
    c
}

fn merge(out: &Path) -> PathBuf {
    run(&mut deva(&[&"merge", &out]));
    out.join("merged")
}

fn status(out: &Path) -> String {
    String::from_utf8(run(&mut deva(&[&"run", &"--status", &out])).stdout).unwrap()
}

/// The `all` row of `--status`: done, running, failed, pending.
fn overall(status: &str) -> [usize; 4] {
    let row = status
        .lines()
        .find(|l| l.trim_start().starts_with("all "))
        .unwrap_or_else(|| panic!("no overall row in {status}"));
    let n: Vec<usize> = row
        .split_whitespace()
        .skip(1)
        .take(4)
        .map(|v| v.parse().unwrap())
        .collect();
    [n[0], n[1], n[2], n[3]]
}

fn wait_all(children: Vec<Child>) {
    for c in children {
        ok(c.wait_with_output().unwrap());
    }
}

#[test]
fn davis_shards_and_a_killed_shard_merge_to_the_single_run() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((root, videos)) = davis_subset(&tmp.path().join("davis")) else {
        return;
    };
    // One process.
    let single = tmp.path().join("single");
    run(&mut davis_run(&root, &single, None));
    let reference = merge(&single);
    for (name, n) in &videos {
        let pngs = std::fs::read_dir(reference.join(name)).unwrap().count();
        assert_eq!(pngs, *n, "{name}");
    }

    // Three concurrent shard processes.
    let sharded = tmp.path().join("sharded");
    let children = (0..3)
        .map(|i| {
            davis_run(&root, &sharded, Some(&format!("{i}/3")))
                .spawn()
                .unwrap()
        })
        .collect();
    wait_all(children);
    assert_eq!(overall(&status(&sharded)), [4, 0, 0, 0]);
    assert_same_tree(&reference, &merge(&sharded));
    assert_eq!(temporaries(&sharded), Vec::<String>::new());

    // One process killed by SIGKILL while it writes the second video, then run again.
    let killed = tmp.path().join("killed");
    let mut child = davis_run(&root, &killed, None).spawn().unwrap();
    let staging_prefix = format!("{}.tmp-", videos[1].0);
    let start = Instant::now();
    let caught = loop {
        let partial = std::fs::read_dir(killed.join("videos"))
            .into_iter()
            .flatten()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&staging_prefix)
                    && holds_a_png(p)
            });
        if partial.is_some() {
            break true;
        }
        if child.try_wait().unwrap().is_some() || start.elapsed() > Duration::from_secs(60) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    assert!(
        caught,
        "the run ended before its second video was half written"
    );
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    assert!(
        !temporaries(&killed).is_empty(),
        "the kill left its temporaries"
    );
    let [done, running, failed, pending] = overall(&status(&killed));
    assert!(done < 4 && running == 0 && failed == 0 && pending == 4 - done);
    let e = deva(&[&"merge", &killed]).output().unwrap();
    assert_eq!(e.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&e.stderr).contains(&videos[1].0),
        "merge names the unfinished video"
    );
    run(&mut davis_run(&root, &killed, None));
    assert_eq!(temporaries(&killed), Vec::<String>::new());
    assert_same_tree(&reference, &merge(&killed));

    // Another config in the same output folder is refused, naming both hashes.
    let o = davis_run(&root, &single, None)
        .args(["--detection-every", "7"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("config hash"));
}

/// A VIPSeg-layout dataset of generated clips (`images/<video>/`) with detections
/// (`<dets>/<video>/<frame>.{png,json}`: the moving object as a thing, the bottom rows as stuff).
fn vipseg_dataset(root: &Path, videos: usize) -> (PathBuf, PathBuf) {
    let (data, dets) = (root.join("vipseg"), root.join("dets"));
    for v in 0..videos {
        let clip = SyntheticClip {
            frames: 3 + v % 3,
            width: 64 + 8 * v,
            height: 48,
        };
        let name = format!("{v}_video");
        let (img, det) = (data.join("images").join(&name), dets.join(&name));
        std::fs::create_dir_all(&img).unwrap();
        std::fs::create_dir_all(&det).unwrap();
        for t in 0..clip.frames {
            let stem = format!("{:08}", 3 * t + 1);
            clip.image(t).save(img.join(format!("{stem}.jpg"))).unwrap();
            let mask = clip.mask(t);
            let ids = (0..clip.height)
                .flat_map(|y| (0..clip.width).map(move |x| (x, y)))
                .map(|(x, y)| match (mask.get(x, y), y >= clip.height - 6) {
                    (true, _) => 1,
                    (false, true) => 2,
                    _ => 0,
                })
                .collect();
            let map = IdMap::from_vec(clip.width, clip.height, ids).unwrap();
            write_palette_png(&det.join(format!("{stem}.png")), &map, &davis_palette()).unwrap();
            let info = r#"[{"id": 1, "isthing": true, "category_id": 63},
                           {"id": 2, "isthing": false, "category_id": 7}]"#;
            std::fs::write(det.join(format!("{stem}.json")), info).unwrap();
        }
    }
    (data, dets)
}

fn vipseg_run(data: &Path, dets: &Path, out: &Path) -> Command {
    deva(&[
        &"run",
        &data,
        &"--layout",
        &"vipseg",
        &"--detections",
        &dets,
        &"--propagator",
        &"static",
        &"--out",
        &out,
    ])
}

fn video_ids(pred_json: &Path) -> Vec<String> {
    let doc: Value = serde_json::from_slice(&std::fs::read(pred_json).unwrap()).unwrap();
    doc["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["video_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn vipseg_shards_merge_to_the_single_run_and_auto_shards_follow_the_scheduler() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, dets) = vipseg_dataset(tmp.path(), 5);
    let single = tmp.path().join("single");
    run(&mut vipseg_run(&data, &dets, &single));
    let reference = merge(&single);
    let names: Vec<String> = (0..5).map(|v| format!("{v}_video")).collect();
    assert_eq!(video_ids(&reference.join("pred.json")), names);
    assert!(reference.join("pan_pred/4_video/00000001.png").is_file());

    let sharded = tmp.path().join("sharded");
    let children = (0..3)
        .map(|i| {
            vipseg_run(&data, &dets, &sharded)
                .args(["--shard", &format!("{i}/3")])
                .spawn()
                .unwrap()
        })
        .collect();
    wait_all(children);
    assert_same_tree(&reference, &merge(&sharded));

    // --shard auto takes the same videos as the explicit shard the scheduler's variables mean.
    let done = |out: &Path| -> Vec<String> {
        names
            .iter()
            .filter(|n| out.join("videos").join(n).join("record.json").is_file())
            .cloned()
            .collect()
    };
    let shard_of = |arg: &str, env: &[(&str, &str)]| -> Vec<String> {
        let out = tmp.path().join(format!("auto-{}", arg.replace('/', "-")));
        let mut c = vipseg_run(&data, &dets, &out);
        c.args(["--shard", arg]);
        for (k, v) in env {
            c.env(k, v);
        }
        run(&mut c);
        done(&out)
    };
    for (explicit, env) in [
        // Kubernetes Indexed Job, completions: 3 (JOB_COMPLETIONS from the manifest).
        (
            "1/3",
            &[("JOB_COMPLETION_INDEX", "1"), ("JOB_COMPLETIONS", "3")][..],
        ),
        // sbatch --array=1-3: the third task.
        (
            "2/3",
            &[
                ("SLURM_ARRAY_JOB_ID", "777"),
                ("SLURM_ARRAY_TASK_ID", "3"),
                ("SLURM_ARRAY_TASK_COUNT", "3"),
                ("SLURM_ARRAY_TASK_MIN", "1"),
                ("SLURM_ARRAY_TASK_MAX", "3"),
            ][..],
        ),
    ] {
        let auto = shard_of("auto", env);
        assert!(!auto.is_empty());
        std::fs::remove_dir_all(tmp.path().join("auto-auto")).unwrap();
        assert_eq!(auto, shard_of(explicit, &[]), "{env:?}");
    }
    for (env, named) in [
        (&[("JOB_COMPLETION_INDEX", "1")][..], "JOB_COMPLETIONS"),
        (
            &[("SLURM_ARRAY_TASK_ID", "3"), ("SLURM_ARRAY_TASK_MIN", "1")][..],
            "SLURM_ARRAY_TASK_COUNT",
        ),
        (&[][..], "JOB_COMPLETION_INDEX"),
    ] {
        let mut c = vipseg_run(&data, &dets, &tmp.path().join("bad"));
        c.args(["--shard", "auto"]);
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        assert_eq!(o.status.code(), Some(1));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(named), "{env:?}: {err}");
    }
}

#[test]
fn a_failed_video_is_recorded_and_the_others_go_on() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, dets) = vipseg_dataset(tmp.path(), 3);
    let broken = dets.join("1_video/00000001.png");
    std::fs::write(&broken, b"not a png").unwrap();
    let out = tmp.path().join("out");
    let o = vipseg_run(&data, &dets, &out).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("1 of 3 videos failed (1_video)"), "{err}");
    let st = status(&out);
    assert_eq!(overall(&st), [2, 0, 1, 0]);
    assert!(
        st.contains("failed 1_video") && st.contains("00000001.png"),
        "{st}"
    );

    // Repaired, the rerun does only the failed video.
    vipseg_dataset(tmp.path(), 3);
    let o = run(&mut vipseg_run(&data, &dets, &out));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("1 videos done now, 2 done before, 0 failed"),
        "{err}"
    );
    assert_eq!(overall(&status(&out)), [3, 0, 0, 0]);
    assert_eq!(temporaries(&out), Vec::<String>::new());
    assert!(!out.join("videos/1_video.failed.json").exists());
}

#[test]
fn concurrent_vipseg_tracks_into_one_folder_keep_every_video() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, dets) = vipseg_dataset(tmp.path(), 4);
    let names: Vec<String> = (0..4).map(|v| format!("{v}_video")).collect();
    for round in 0..5 {
        let out = tmp.path().join(format!("out{round}"));
        let children = names
            .iter()
            .map(|n| {
                deva(&[
                    &"track",
                    &data.join("images").join(n),
                    &"--detections",
                    &dets.join(n),
                    &"--propagator",
                    &"static",
                    &"--format",
                    &"vipseg",
                    &"--out",
                    &out,
                ])
                .spawn()
                .unwrap()
            })
            .collect();
        wait_all(children);
        assert_eq!(video_ids(&out.join("pred.json")), names, "round {round}");
        assert_eq!(temporaries(&out), Vec::<String>::new());
    }
}
