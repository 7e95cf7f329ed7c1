//! Ref-DAVIS-17 scoring: DAVIS-17 val annotations, and one prediction folder per annotator's
//! expressions (`anno_0` … `anno_3`, each holding `<sequence>/<frame>.png` with one object per
//! referred DAVIS object), as ReferFormer's `inference_davis.py` writes them and its
//! `scripts/dist_test_davis.sh` scores them: every annotator folder is scored on its own with
//! the DAVIS-17 protocol (the official script runs `eval_davis.py`, whose default task is the
//! unsupervised one; `--task semi` is the semi-supervised protocol), and the reported numbers
//! are the means over the annotators (DEVA: "we evaluate each expression separately and report
//! the average").

use std::path::Path;

use serde::Serialize;

use super::{evaluate, DavisOptions, DavisReport, DavisTask, Scores};
use crate::error::{Error, Result};
use crate::eval::input::list_subdirs;
use crate::eval::report::{Report, Table};

/// Prefix of the annotator folders.
const ANNOTATOR_PREFIX: &str = "anno_";

/// Ref-DAVIS results: the mean over annotators and each annotator's DAVIS report.
#[derive(Debug, Clone, Serialize)]
pub struct RefDavisReport {
    /// The protocol every annotator folder was scored with.
    pub task: DavisTask,
    /// Mean over annotators of their J&F.
    #[serde(rename = "J&F")]
    pub jf: f64,
    /// Means over annotators of their global scores.
    #[serde(flatten)]
    pub scores: Scores,
    /// `(folder name, report)` per annotator, in name order.
    pub annotators: Vec<(String, DavisReport)>,
}

impl Report for RefDavisReport {
    fn tables(&self) -> Vec<Table> {
        let mut t = Table::new(
            format!("Ref-DAVIS ({:?})", self.task).to_lowercase(),
            &[
                "", "J&F", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay",
            ],
        );
        let row = |jf: f64, s: &Scores| {
            let mut v = vec![jf];
            v.extend(s.named().map(|(_, v)| v));
            v
        };
        for (name, r) in &self.annotators {
            t.push_numbers(name, &row(r.jf, &r.scores));
        }
        t.push_numbers("mean", &row(self.jf, &self.scores));
        vec![t]
    }
}

/// The annotator folders (`anno_*`) of a Ref-DAVIS prediction folder, sorted; none is an error.
pub fn annotator_folders(pred_root: &Path) -> Result<Vec<String>> {
    let names: Vec<String> = list_subdirs(pred_root)?
        .into_iter()
        .filter(|n| n.starts_with(ANNOTATOR_PREFIX))
        .collect();
    if names.is_empty() {
        return Err(Error::invalid(format!(
            "{}: no annotator folders ({ANNOTATOR_PREFIX}0 …) in this Ref-DAVIS prediction folder",
            pred_root.display()
        )));
    }
    Ok(names)
}

/// Scores every annotator folder of `pred_root` against `gt_dir` and averages them.
/// `progress` is called with `annotator/sequence` as sequences finish.
pub fn evaluate_referring(
    gt_dir: &Path,
    pred_root: &Path,
    options: &DavisOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<RefDavisReport> {
    let mut annotators = Vec::new();
    for name in annotator_folders(pred_root)? {
        let report = evaluate(gt_dir, &pred_root.join(&name), options, &|s| {
            progress(&format!("{name}/{s}"))
        })?;
        annotators.push((name, report));
    }
    let all: Vec<Scores> = annotators.iter().map(|(_, r)| r.scores).collect();
    let jfs: Vec<f64> = annotators.iter().map(|(_, r)| r.jf).collect();
    Ok(RefDavisReport {
        task: options.task,
        jf: jfs.iter().sum::<f64>() / jfs.len() as f64,
        scores: Scores::mean_of(&all),
        annotators,
    })
}
