//! Where a run stands: the state of each video of the store, counted per shard and overall.

use super::store::{RunStore, VideoState};
use super::Shard;
use crate::error::Result;
use serde::Serialize;

/// Counts of one shard (or of the whole run).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StatusCounts {
    /// Finished videos.
    pub done: usize,
    /// Videos a process is working on.
    pub running: usize,
    /// Videos whose last try failed.
    pub failed: usize,
    /// Videos not started or interrupted.
    pub pending: usize,
    /// Frames of finished videos.
    pub frames_done: usize,
    /// Frames of all videos.
    pub frames_total: usize,
}

impl StatusCounts {
    fn add(&mut self, state: &VideoState, frames: usize) {
        match state {
            VideoState::Done(_) => {
                self.done += 1;
                self.frames_done += frames;
            }
            VideoState::Running => self.running += 1,
            VideoState::Failed(_) => self.failed += 1,
            VideoState::Pending => self.pending += 1,
        }
        self.frames_total += frames;
    }
}

/// Where a run stands, per shard and overall.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunStatus {
    /// Number of shards of the latest process.
    pub shards: usize,
    /// Counts per shard.
    pub per_shard: Vec<StatusCounts>,
    /// Counts of the whole run.
    pub overall: StatusCounts,
    /// Failed videos with their errors.
    pub failures: Vec<(String, String)>,
}

impl RunStore {
    /// The status of the run in this folder, its videos assigned to the manifest's shards.
    pub fn status(&self) -> Result<RunStatus> {
        let m = self.manifest()?;
        let shards = m.shards.max(1);
        let frames: Vec<usize> = m.videos.iter().map(|v| v.frames).collect();
        let assignment = super::shard::assign(&frames, shards);
        let mut per_shard = vec![StatusCounts::default(); shards];
        let mut overall = StatusCounts::default();
        let mut failures = Vec::new();
        for (v, &s) in m.videos.iter().zip(&assignment) {
            let state = self.state(&v.name, &m.config_hash)?;
            per_shard[s].add(&state, v.frames);
            overall.add(&state, v.frames);
            if let VideoState::Failed(e) = state {
                failures.push((v.name.clone(), e));
            }
        }
        Ok(RunStatus {
            shards,
            per_shard,
            overall,
            failures,
        })
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:>9} {:>6} {:>8} {:>7} {:>8} {:>16}",
            "shard", "done", "running", "failed", "pending", "frames done"
        )?;
        let row = |f: &mut std::fmt::Formatter<'_>, label: &str, c: &StatusCounts| {
            writeln!(
                f,
                "{label:>9} {:>6} {:>8} {:>7} {:>8} {:>16}",
                c.done,
                c.running,
                c.failed,
                c.pending,
                format!("{}/{}", c.frames_done, c.frames_total)
            )
        };
        for (i, c) in self.per_shard.iter().enumerate() {
            row(
                f,
                &Shard {
                    index: i,
                    count: self.shards,
                }
                .to_string(),
                c,
            )?;
        }
        row(f, "all", &self.overall)?;
        for (video, error) in &self.failures {
            writeln!(f, "failed {video}: {error}")?;
        }
        Ok(())
    }
}
