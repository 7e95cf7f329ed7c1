//! Benchmark-scale runs: dataset layouts (the videos of DAVIS, VIPSeg, BURST, YouTube-VOS or a
//! folder of frame folders, in one deterministic order), shards balanced by frame count, a
//! resumable per-video result store that many processes share, and the merge of per-video
//! results into submission files.
//!
//! The flow is `Dataset::open` → `shard::assign` → for each video of this process's shard,
//! `store::RunStore::begin` / `publish` (or `fail`) → `merge::merge`.

pub mod merge;
pub mod shard;
pub mod status;
pub mod store;

pub use shard::Shard;
pub use store::RunStore;

use crate::error::{Error, Result};
use crate::eval::input::{list_subdirs, read_name_list};
use crate::video::FolderSource;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// How a dataset's frame folders are arranged on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetLayout {
    /// `JPEGImages/480p/<sequence>/` (else `JPEGImages/Full-Resolution/`); results as palette
    /// PNGs in `<sequence>/`.
    Davis,
    /// `images/<video>/` (VIPSeg_720P); results as `pan_pred/` + `pred.json`.
    Vipseg,
    /// `<dataset>/<sequence>/` (a split folder of the TAO frames, e.g. `frames/val`); videos are
    /// named `<dataset>/<sequence>`; results as one BURST results JSON.
    Burst,
    /// `JPEGImages/<video>/` (a YouTube-VOS split folder); results as `Annotations/<video>/`.
    YoutubeVos,
    /// `<video>/`: every sub-folder is a video.
    Folders,
}

impl DatasetLayout {
    /// Every name [`FromStr`](std::str::FromStr) accepts, in declaration order.
    pub const NAMES: [&'static str; 5] = ["davis", "vipseg", "burst", "youtube-vos", "folders"];

    /// The layout's name.
    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// The folder holding the video folders under `root`.
    pub fn frames_root(self, root: &Path) -> Result<PathBuf> {
        let candidates: Vec<PathBuf> = match self {
            DatasetLayout::Davis => vec![
                root.join("JPEGImages/480p"),
                root.join("JPEGImages/Full-Resolution"),
            ],
            DatasetLayout::Vipseg => vec![root.join("images")],
            DatasetLayout::YoutubeVos => vec![root.join("JPEGImages")],
            DatasetLayout::Burst | DatasetLayout::Folders => vec![root.to_path_buf()],
        };
        candidates
            .iter()
            .find(|p| p.is_dir())
            .cloned()
            .ok_or_else(|| {
                let list: Vec<String> =
                    candidates.iter().map(|p| p.display().to_string()).collect();
                Error::invalid(format!(
                    "{}: not a {} dataset (expected the folder {})",
                    root.display(),
                    self.name(),
                    list.join(" or ")
                ))
            })
    }
}

impl std::fmt::Display for DatasetLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DatasetLayout {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        const ALL: [DatasetLayout; 5] = [
            DatasetLayout::Davis,
            DatasetLayout::Vipseg,
            DatasetLayout::Burst,
            DatasetLayout::YoutubeVos,
            DatasetLayout::Folders,
        ];
        ALL.into_iter().find(|l| l.name() == s).ok_or_else(|| {
            Error::Config(format!(
                "unknown dataset layout {s:?} (expected one of {})",
                Self::NAMES.join(", ")
            ))
        })
    }
}

/// One video of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoEntry {
    /// Its name in outputs (BURST: `<dataset>/<sequence>`).
    pub name: String,
    /// Its frame folder.
    pub frames_dir: PathBuf,
    /// Number of frames.
    pub frames: usize,
}

/// The videos of a dataset in one deterministic order: sorted by name, or the order of a
/// name list.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The dataset folder as given.
    pub root: PathBuf,
    /// Its layout.
    pub layout: DatasetLayout,
    /// Its videos.
    pub videos: Vec<VideoEntry>,
}

/// Sub-folder names of `dir`, sorted, hidden ones left out.
fn subdirs(dir: &Path) -> Result<Vec<String>> {
    Ok(list_subdirs(dir)?
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect())
}

impl Dataset {
    /// Lists the videos of `root` in `layout`: every video folder, sorted by name, or, with
    /// `list` (a file of video names, one a line, e.g. DAVIS `ImageSets/2016/val.txt`), those
    /// videos in the list's order. A video folder without frames, or a listed name without a
    /// folder, is an error naming it.
    pub fn open(root: &Path, layout: DatasetLayout, list: Option<&Path>) -> Result<Dataset> {
        let frames_root = layout.frames_root(root)?;
        let names = match list {
            Some(file) => read_name_list(file)?,
            None if layout == DatasetLayout::Burst => {
                let mut names = Vec::new();
                for ds in subdirs(&frames_root)? {
                    for seq in subdirs(&frames_root.join(&ds))? {
                        names.push(format!("{ds}/{seq}"));
                    }
                }
                names
            }
            None => subdirs(&frames_root)?,
        };
        if names.is_empty() {
            return Err(Error::invalid(format!(
                "{}: no video folders",
                frames_root.display()
            )));
        }
        let mut seen = std::collections::HashSet::new();
        let mut videos = Vec::with_capacity(names.len());
        for name in names {
            if !seen.insert(name.clone()) {
                return Err(Error::invalid(format!("video {name:?} is listed twice")));
            }
            let frames_dir = frames_root.join(&name);
            if !frames_dir.is_dir() {
                return Err(Error::invalid(format!(
                    "video {name:?}: {} is not a folder",
                    frames_dir.display()
                )));
            }
            let frames = FolderSource::open(&frames_dir)?.files().len();
            videos.push(VideoEntry {
                name,
                frames_dir,
                frames,
            });
        }
        Ok(Dataset {
            root: root.to_path_buf(),
            layout,
            videos,
        })
    }

    /// The frame counts of the videos, in order.
    pub fn frame_counts(&self) -> Vec<usize> {
        self.videos.iter().map(|v| v.frames).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(dir: &Path, n: usize) {
        std::fs::create_dir_all(dir).unwrap();
        for i in 0..n {
            std::fs::write(dir.join(format!("{i:05}.jpg")), b"").unwrap();
        }
    }

    #[test]
    fn layouts_list_videos_in_name_order_with_frame_counts() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        frames(&r.join("JPEGImages/480p/b"), 3);
        frames(&r.join("JPEGImages/480p/a"), 2);
        std::fs::create_dir_all(r.join("JPEGImages/480p/.hidden")).unwrap();
        let ds = Dataset::open(r, DatasetLayout::Davis, None).unwrap();
        let got: Vec<(&str, usize)> = ds
            .videos
            .iter()
            .map(|v| (v.name.as_str(), v.frames))
            .collect();
        assert_eq!(got, [("a", 2), ("b", 3)]);

        frames(&r.join("burst/YFCC/s2"), 1);
        frames(&r.join("burst/ArgoVerse/s9"), 4);
        frames(&r.join("burst/YFCC/s1"), 2);
        let ds = Dataset::open(&r.join("burst"), DatasetLayout::Burst, None).unwrap();
        let names: Vec<&str> = ds.videos.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["ArgoVerse/s9", "YFCC/s1", "YFCC/s2"]);
        assert_eq!(ds.frame_counts(), [4, 2, 1]);

        let list = r.join("val.txt");
        std::fs::write(&list, "b\na\n").unwrap();
        let ds = Dataset::open(r, DatasetLayout::Davis, Some(&list)).unwrap();
        assert_eq!(ds.videos[0].name, "b");
        std::fs::write(&list, "b\nzz\n").unwrap();
        let e = Dataset::open(r, DatasetLayout::Davis, Some(&list)).unwrap_err();
        assert!(e.to_string().contains("\"zz\""), "{e}");
        let e = Dataset::open(r, DatasetLayout::Vipseg, None).unwrap_err();
        assert!(e.to_string().contains("images"), "{e}");
        std::fs::create_dir_all(r.join("JPEGImages/480p/c")).unwrap();
        let e = Dataset::open(r, DatasetLayout::Davis, None).unwrap_err();
        assert!(e.to_string().contains("no frames"), "{e}");
    }

    #[test]
    fn layout_names_round_trip() {
        for name in DatasetLayout::NAMES {
            let l: DatasetLayout = name.parse().unwrap();
            assert_eq!(l.to_string(), name);
            let json = serde_json::to_value(l).unwrap();
            assert_eq!(json, name);
        }
        let e = "davis17".parse::<DatasetLayout>().unwrap_err().to_string();
        assert!(e.contains("davis17") && e.contains("youtube-vos"), "{e}");
    }
}
