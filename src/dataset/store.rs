//! The result store of a run, shared by every process of a job, resumable:
//!
//! ```text
//! OUT/run.json                      what the run is: dataset, layout, format, config hash, videos
//! OUT/videos/<video>/               finished results, published by one rename
//! OUT/videos/<video>/record.json    completion record: config hash, frames, tool version, shard
//! OUT/videos/<video>.failed.json   the error of a failed video (until it succeeds)
//! OUT/videos/<video>.lock          held while a process works on the video
//! OUT/videos/<video>.tmp-<pid>/    results being written
//! ```
//!
//! A video is *done* when its folder has a record with the run's config hash. A process takes
//! the video's lock (waiting if another holds it), skips it if done, else removes stale
//! temporaries, writes into a fresh temporary folder and renames it into place. The kernel
//! drops the lock of a killed process; the next run redoes the video from scratch.

use super::DatasetLayout;
use crate::error::{Error, Result};
use crate::fsutil::{write_atomic, FileLock};
use crate::output::OutputFormat;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The tool version written into records.
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A stable hash of a run's settings (the canonical JSON of `settings`): 16 hex digits.
pub fn config_hash(settings: &Value) -> String {
    let bytes = serde_json::to_vec(settings).expect("JSON values serialise");
    let digest = Sha256::digest(&bytes);
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// One video as the run lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedVideo {
    /// Name (BURST: `<dataset>/<sequence>`).
    pub name: String,
    /// Number of frames.
    pub frames: usize,
}

/// `OUT/run.json`: what every process of the run agrees on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunManifest {
    /// Version of the tool that wrote it.
    pub tool_version: String,
    /// The dataset folder.
    pub dataset: PathBuf,
    /// Its layout.
    pub layout: DatasetLayout,
    /// The per-video result format.
    pub format: OutputFormat,
    /// [`config_hash`] of `settings`.
    pub config_hash: String,
    /// Everything that decides the results (config, segmenter, propagator, format).
    pub settings: Value,
    /// Number of shards of the latest process that started.
    pub shards: usize,
    /// The videos in enumeration order.
    pub videos: Vec<ListedVideo>,
}

/// `OUT/videos/<video>/record.json`: the completion record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoRecord {
    /// The video.
    pub video: String,
    /// Frames written.
    pub frames: usize,
    /// The run's config hash.
    pub config_hash: String,
    /// Version of the tool.
    pub tool_version: String,
    /// The shard that made it, `i/n`.
    pub shard: String,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// `OUT/videos/<video>.failed.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureRecord {
    /// The video.
    pub video: String,
    /// The error, with its causes.
    pub error: String,
    /// The run's config hash.
    pub config_hash: String,
    /// Version of the tool.
    pub tool_version: String,
    /// The shard that tried, `i/n`.
    pub shard: String,
}

/// Where a video stands.
#[derive(Debug, Clone, PartialEq)]
pub enum VideoState {
    /// Finished with the run's config.
    Done(VideoRecord),
    /// A process holds its lock.
    Running,
    /// The last try failed with this error.
    Failed(String),
    /// Not started, interrupted, or finished with another config.
    Pending,
}

/// The result store in an output folder.
#[derive(Debug, Clone)]
pub struct RunStore {
    root: PathBuf,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::parse(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::parse(path, e))?;
    write_atomic(path, &bytes)
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    s.into()
}

impl RunStore {
    /// The store in `out` (nothing is read or created yet).
    pub fn new(out: &Path) -> RunStore {
        RunStore {
            root: out.to_path_buf(),
        }
    }

    /// The output folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn manifest_path(&self) -> PathBuf {
        self.root.join("run.json")
    }

    /// The folder of a finished video's results.
    pub fn video_dir(&self, video: &str) -> PathBuf {
        self.root.join("videos").join(video)
    }

    fn lock_path(&self, video: &str) -> PathBuf {
        with_suffix(&self.video_dir(video), ".lock")
    }

    fn failure_path(&self, video: &str) -> PathBuf {
        with_suffix(&self.video_dir(video), ".failed.json")
    }

    /// Reads `OUT/run.json`.
    pub fn manifest(&self) -> Result<RunManifest> {
        let path = self.manifest_path();
        read_json(&path)?.ok_or_else(|| {
            Error::invalid(format!(
                "{}: no run here (run.json is written by `deva run`)",
                path.display()
            ))
        })
    }

    /// Records `manifest` in `OUT/run.json`. An existing run must have the same config hash,
    /// dataset layout and format, and its videos must be the first of `manifest`'s (videos
    /// may be appended, not changed); otherwise the error names the difference.
    pub fn prepare(&self, manifest: &RunManifest) -> Result<()> {
        let path = self.manifest_path();
        if let Some(old) = read_json::<RunManifest>(&path)? {
            let differs = |what: &str, a: &str, b: &str| {
                Error::invalid(format!(
                    "{}: this output folder holds a run with {what} {a}, not {b}; use another --out or remove it",
                    path.display()
                ))
            };
            if old.config_hash != manifest.config_hash {
                return Err(differs(
                    "config hash",
                    &old.config_hash,
                    &manifest.config_hash,
                ));
            }
            if (old.layout, old.format) != (manifest.layout, manifest.format) {
                return Err(differs(
                    "layout/format",
                    &format!("{}/{:?}", old.layout, old.format),
                    &format!("{}/{:?}", manifest.layout, manifest.format),
                ));
            }
            let prefix = manifest.videos.get(..old.videos.len());
            if prefix != Some(&old.videos[..]) {
                let at = old
                    .videos
                    .iter()
                    .zip(&manifest.videos)
                    .position(|(a, b)| a != b)
                    .unwrap_or(manifest.videos.len().min(old.videos.len()));
                let name = |v: Option<&ListedVideo>| {
                    v.map_or("(none)".to_string(), |v| {
                        format!("{} ({} frames)", v.name, v.frames)
                    })
                };
                return Err(differs(
                    &format!("video #{at}"),
                    &name(old.videos.get(at)),
                    &name(manifest.videos.get(at)),
                ));
            }
        }
        write_json(&path, manifest)
    }

    /// Where `video` stands for a run with `config_hash`.
    pub fn state(&self, video: &str, config_hash: &str) -> Result<VideoState> {
        if let Some(r) = self.record(video)? {
            if r.config_hash == config_hash {
                return Ok(VideoState::Done(r));
            }
        }
        if FileLock::is_held(&self.lock_path(video))? {
            return Ok(VideoState::Running);
        }
        Ok(
            match read_json::<FailureRecord>(&self.failure_path(video))? {
                Some(f) => VideoState::Failed(f.error),
                None => VideoState::Pending,
            },
        )
    }

    /// The completion record of `video`, if it has one.
    pub fn record(&self, video: &str) -> Result<Option<VideoRecord>> {
        read_json(&self.video_dir(video).join("record.json"))
    }

    /// Starts work on `video`: waits for its lock, then returns `None` if it is done with
    /// `config_hash`, else removes its stale temporaries and returns a [`Claim`] with a fresh
    /// temporary folder to write into.
    pub fn begin(&self, video: &str, config_hash: &str) -> Result<Option<Claim>> {
        let lock = FileLock::acquire(&self.lock_path(video))?;
        if let VideoState::Done(_) = self.state_locked(video, config_hash)? {
            lock.remove()?;
            return Ok(None);
        }
        let final_dir = self.video_dir(video);
        remove_temporaries(&final_dir)?;
        let staging = with_suffix(&final_dir, &format!(".tmp-{}", std::process::id()));
        std::fs::create_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
        Ok(Some(Claim {
            lock: Some(lock),
            staging,
            final_dir,
            failure: self.failure_path(video),
        }))
    }

    fn state_locked(&self, video: &str, config_hash: &str) -> Result<VideoState> {
        Ok(match self.record(video)? {
            Some(r) if r.config_hash == config_hash => VideoState::Done(r),
            _ => VideoState::Pending,
        })
    }
}

/// Removes `<dir>.tmp-*` beside `dir` (left by killed processes).
fn remove_temporaries(dir: &Path) -> Result<()> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Ok(());
    };
    let prefix = format!("{}.tmp-", name.to_string_lossy());
    let entries = match std::fs::read_dir(parent) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(parent, e)),
    };
    for entry in entries {
        let path = entry.map_err(|e| Error::io(parent, e))?.path();
        let stale = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(&prefix));
        if stale {
            std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

/// Exclusive work on one video: results go into [`staging`](Claim::staging) and become
/// visible with [`publish`](Claim::publish). Dropped unfinished, it removes its temporaries.
#[derive(Debug)]
pub struct Claim {
    lock: Option<FileLock>,
    staging: PathBuf,
    final_dir: PathBuf,
    failure: PathBuf,
}

impl Claim {
    /// The temporary folder to write the video's results into.
    pub fn staging(&self) -> &Path {
        &self.staging
    }

    /// Writes the completion record and moves the results into place.
    pub fn publish(mut self, record: &VideoRecord) -> Result<()> {
        write_json(&self.staging.join("record.json"), record)?;
        if self.final_dir.exists() {
            std::fs::remove_dir_all(&self.final_dir).map_err(|e| Error::io(&self.final_dir, e))?;
        }
        std::fs::rename(&self.staging, &self.final_dir)
            .map_err(|e| Error::io(&self.final_dir, e))?;
        match std::fs::remove_file(&self.failure) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(&self.failure, e))
            }
            _ => {}
        }
        self.release()
    }

    /// Records the video's failure and removes its partial results.
    pub fn fail(mut self, record: &FailureRecord) -> Result<()> {
        std::fs::remove_dir_all(&self.staging).map_err(|e| Error::io(&self.staging, e))?;
        write_json(&self.failure, record)?;
        self.release()
    }

    fn release(&mut self) -> Result<()> {
        match self.lock.take() {
            Some(lock) => lock.remove(),
            None => Ok(()),
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.lock.is_some() {
            let _ = std::fs::remove_dir_all(&self.staging);
            let _ = self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(videos: &[(&str, usize)], hash: &str) -> RunManifest {
        RunManifest {
            tool_version: TOOL_VERSION.into(),
            dataset: "/data".into(),
            layout: DatasetLayout::Folders,
            format: OutputFormat::Demo,
            config_hash: hash.into(),
            settings: Value::Null,
            shards: 2,
            videos: videos
                .iter()
                .map(|&(name, frames)| ListedVideo {
                    name: name.into(),
                    frames,
                })
                .collect(),
        }
    }

    fn record(video: &str, hash: &str) -> VideoRecord {
        VideoRecord {
            video: video.into(),
            frames: 3,
            config_hash: hash.into(),
            tool_version: TOOL_VERSION.into(),
            shard: "0/1".into(),
            seconds: 0.0,
        }
    }

    fn tree(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
                if p.is_dir() {
                    stack.push(p);
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn the_manifest_accepts_appended_videos_and_names_conflicts() {
        let d = tempfile::tempdir().unwrap();
        let s = RunStore::new(d.path());
        assert!(s.manifest().unwrap_err().to_string().contains("run.json"));
        s.prepare(&manifest(&[("a", 1)], "h1")).unwrap();
        s.prepare(&manifest(&[("a", 1), ("b", 2)], "h1")).unwrap();
        assert_eq!(s.manifest().unwrap().videos.len(), 2);
        let e = s
            .prepare(&manifest(&[("a", 1), ("b", 2)], "h2"))
            .unwrap_err();
        assert!(
            e.to_string().contains("h1") && e.to_string().contains("h2"),
            "{e}"
        );
        let e = s
            .prepare(&manifest(&[("a", 1), ("c", 2)], "h1"))
            .unwrap_err();
        assert!(
            e.to_string().contains("b (2 frames)") && e.to_string().contains("c (2"),
            "{e}"
        );
    }

    #[test]
    fn claims_publish_fail_and_clean_up_after_a_killed_process() {
        let d = tempfile::tempdir().unwrap();
        let s = RunStore::new(d.path());
        s.prepare(&manifest(&[("a", 3), ("ds/b", 3)], "h")).unwrap();
        // A killed process left a temporary folder and an unlocked lock file.
        std::fs::create_dir_all(d.path().join("videos/ds/b.tmp-999999/x")).unwrap();
        std::fs::write(d.path().join("videos/ds/b.lock"), b"").unwrap();
        assert_eq!(s.state("ds/b", "h").unwrap(), VideoState::Pending);

        let c = s.begin("ds/b", "h").unwrap().unwrap();
        assert_eq!(s.state("ds/b", "h").unwrap(), VideoState::Running);
        std::fs::write(c.staging().join("f.png"), b"png").unwrap();
        c.fail(&FailureRecord {
            video: "ds/b".into(),
            error: "boom".into(),
            config_hash: "h".into(),
            tool_version: TOOL_VERSION.into(),
            shard: "0/1".into(),
        })
        .unwrap();
        assert_eq!(
            s.state("ds/b", "h").unwrap(),
            VideoState::Failed("boom".into())
        );
        assert_eq!(tree(&d.path().join("videos")), ["ds", "ds/b.failed.json"]);

        let c = s.begin("ds/b", "h").unwrap().unwrap();
        std::fs::write(c.staging().join("f.png"), b"png").unwrap();
        c.publish(&record("ds/b", "h")).unwrap();
        assert!(matches!(s.state("ds/b", "h").unwrap(), VideoState::Done(_)));
        assert_eq!(s.state("ds/b", "other").unwrap(), VideoState::Pending);
        assert!(
            s.begin("ds/b", "h").unwrap().is_none(),
            "done videos are skipped"
        );
        assert_eq!(
            tree(&d.path().join("videos")),
            ["ds", "ds/b", "ds/b/f.png", "ds/b/record.json"]
        );

        // An unfinished claim removes its temporaries when dropped.
        drop(s.begin("a", "h").unwrap().unwrap());
        assert_eq!(tree(&d.path().join("videos")).len(), 4);

        let st = s.status().unwrap();
        assert_eq!((st.overall.done, st.overall.pending), (1, 1));
        assert_eq!((st.overall.frames_done, st.overall.frames_total), (3, 6));
        assert_eq!(st.per_shard.len(), 2);
        let text = st.to_string();
        assert!(text.contains("0/2") && text.contains("all"), "{text}");
    }

    #[test]
    fn config_hashes_are_stable_and_distinguish_settings() {
        let a = serde_json::json!({"size": 480, "propagator": "flow"});
        assert_eq!(config_hash(&a), config_hash(&a.clone()));
        assert_eq!(config_hash(&a).len(), 16);
        let b = serde_json::json!({"size": 240, "propagator": "flow"});
        assert_ne!(config_hash(&a), config_hash(&b));
    }
}
