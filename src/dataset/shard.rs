//! Shards: which videos one process of a job array takes.
//!
//! [`assign`] is greedy in enumeration order: each video goes to the shard with the fewest
//! frames so far (the lowest index on ties). Two properties follow and are tested:
//! * **balanced**: every shard's frame total is at most the mean plus the longest video;
//! * **prefix-stable**: a video's shard depends only on the videos before it, so videos added
//!   at the end of the order never move earlier ones (finished results stay in their shard).
//!   Videos inserted in the middle of the order can move the videos after them.

use crate::error::{Error, Result};

/// One shard of `count`: `index` is 0-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This process's shard, `0..count`.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

/// Kubernetes Indexed Job: the control plane sets the pod's completion index here.
pub const K8S_INDEX: &str = "JOB_COMPLETION_INDEX";
/// Kubernetes has no variable for `.spec.completions`; the manifest sets this one to the same
/// number (deploy/kubernetes/job.yaml).
pub const K8S_COUNT: &str = "JOB_COMPLETIONS";
/// Slurm job array: this task's id.
pub const SLURM_ID: &str = "SLURM_ARRAY_TASK_ID";
/// Slurm job array: number of tasks.
pub const SLURM_COUNT: &str = "SLURM_ARRAY_TASK_COUNT";
/// Slurm job array: the smallest task id (`--array=1-8` starts at 1).
pub const SLURM_MIN: &str = "SLURM_ARRAY_TASK_MIN";
/// Slurm job array: the id step (`--array=0-15:4`); 1 when unset.
pub const SLURM_STEP: &str = "SLURM_ARRAY_TASK_STEP";

impl Shard {
    /// The whole dataset in one process.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Parses `i/n` (0-based `i < n`).
    pub fn parse(s: &str) -> Result<Shard> {
        let bad =
            |why: &str| Error::Config(format!("shard {s:?}: {why} (expected i/n, 0 <= i < n)"));
        let (i, n) = s.split_once('/').ok_or_else(|| bad("no '/'"))?;
        let index: usize = i.trim().parse().map_err(|_| bad("i is not a number"))?;
        let count: usize = n.trim().parse().map_err(|_| bad("n is not a number"))?;
        if count == 0 || index >= count {
            return Err(bad("i is out of range"));
        }
        Ok(Shard { index, count })
    }

    /// The shard from the scheduler's environment ([`from_env`](Shard::from_env) over the
    /// process environment).
    pub fn auto() -> Result<Shard> {
        Shard::from_env(|k| std::env::var(k).ok())
    }

    /// The shard a scheduler gives through `var`: a Kubernetes Indexed Job
    /// ([`K8S_INDEX`] with [`K8S_COUNT`]) or a Slurm job array ([`SLURM_ID`], [`SLURM_COUNT`],
    /// [`SLURM_MIN`], optional [`SLURM_STEP`]). A missing, non-numeric or inconsistent
    /// variable is an error naming it.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Shard> {
        let number = |name: &str| -> Result<Option<usize>> {
            match var(name) {
                None => Ok(None),
                Some(v) => v.trim().parse().map(Some).map_err(|_| {
                    Error::Config(format!("{name}={v:?} is not a non-negative integer"))
                }),
            }
        };
        let required = |name: &str, why: &str| -> Result<usize> {
            number(name)?.ok_or_else(|| Error::Config(format!("{name} is not set ({why})")))
        };
        if let Some(index) = number(K8S_INDEX)? {
            let count = required(
                K8S_COUNT,
                "a Kubernetes Indexed Job must pass its .spec.completions in it",
            )?;
            return Shard::checked(index, count, K8S_INDEX, K8S_COUNT);
        }
        if let Some(id) = number(SLURM_ID)? {
            let why = "Slurm sets it for job arrays (sbatch --array)";
            let count = required(SLURM_COUNT, why)?;
            let min = required(SLURM_MIN, why)?;
            let step = number(SLURM_STEP)?.unwrap_or(1);
            if id < min || step == 0 || (id - min) % step != 0 {
                return Err(Error::Config(format!(
                    "{SLURM_ID}={id} is not {SLURM_MIN}={min} plus a multiple of {SLURM_STEP}={step} (use a regular --array range)"
                )));
            }
            return Shard::checked((id - min) / step, count, SLURM_ID, SLURM_COUNT);
        }
        Err(Error::Config(format!(
            "--shard auto: neither {K8S_INDEX} (Kubernetes Indexed Job) nor {SLURM_ID} (Slurm job array) is set"
        )))
    }

    fn checked(index: usize, count: usize, index_var: &str, count_var: &str) -> Result<Shard> {
        if index < count {
            Ok(Shard { index, count })
        } else {
            Err(Error::Config(format!(
                "{index_var} gives shard {index}, but {count_var} gives only {count} shards"
            )))
        }
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The shard of each video, greedy in order over frame counts (see the module doc).
pub fn assign(frames: &[usize], count: usize) -> Vec<usize> {
    let mut load = vec![0usize; count.max(1)];
    frames
        .iter()
        .map(|&f| {
            let (shard, _) = load
                .iter()
                .enumerate()
                .min_by_key(|&(i, &l)| (l, i))
                .expect("at least one shard");
            load[shard] += f.max(1);
            shard
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn parses_i_of_n_and_names_bad_input() {
        assert_eq!(Shard::parse("2/3").unwrap(), Shard { index: 2, count: 3 });
        for bad in ["3/3", "1", "a/2", "0/0", "-1/2"] {
            let e = Shard::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn kubernetes_and_slurm_variables_give_the_shard() {
        let k = env(&[(K8S_INDEX, "4"), (K8S_COUNT, "5")]);
        assert_eq!(Shard::from_env(k).unwrap(), Shard { index: 4, count: 5 });
        let e = Shard::from_env(env(&[(K8S_INDEX, "0")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains(K8S_COUNT), "{e}");
        let e = Shard::from_env(env(&[(K8S_INDEX, "5"), (K8S_COUNT, "5")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains(K8S_INDEX) && e.contains(K8S_COUNT), "{e}");
        // sbatch --array=1-8
        let s = env(&[
            (SLURM_ID, "8"),
            (SLURM_COUNT, "8"),
            (SLURM_MIN, "1"),
            ("SLURM_ARRAY_TASK_MAX", "8"),
        ]);
        assert_eq!(Shard::from_env(s).unwrap(), Shard { index: 7, count: 8 });
        // sbatch --array=0-15:4
        let s = env(&[
            (SLURM_ID, "12"),
            (SLURM_COUNT, "4"),
            (SLURM_MIN, "0"),
            (SLURM_STEP, "4"),
        ]);
        assert_eq!(Shard::from_env(s).unwrap(), Shard { index: 3, count: 4 });
        let e = Shard::from_env(env(&[(SLURM_ID, "1"), (SLURM_MIN, "0")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains(SLURM_COUNT), "{e}");
        let e = Shard::from_env(env(&[(SLURM_ID, "x")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains(SLURM_ID), "{e}");
        let e = Shard::from_env(env(&[])).unwrap_err().to_string();
        assert!(e.contains(K8S_INDEX) && e.contains(SLURM_ID), "{e}");
    }

    #[test]
    fn assignment_is_balanced_and_stable_when_videos_are_appended() {
        // A deterministic pseudo-random list of frame counts.
        let mut x: u64 = 12345;
        let frames: Vec<usize> = (0..200)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                20 + (x >> 33) as usize % 300
            })
            .collect();
        for n in [1, 3, 7] {
            let all = assign(&frames, n);
            let mut load = vec![0; n];
            for (f, s) in frames.iter().zip(&all) {
                load[*s] += f;
            }
            let mean = frames.iter().sum::<usize>() / n;
            let longest = *frames.iter().max().unwrap();
            assert!(load.iter().all(|&l| l <= mean + longest), "{load:?}");
            for k in [1, 50, 199] {
                assert_eq!(
                    assign(&frames[..k], n),
                    all[..k],
                    "prefix {k} of {n} shards"
                );
            }
        }
    }
}
