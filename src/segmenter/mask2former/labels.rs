//! Label sets: the model's classes with their dataset category ids and thing/stuff kind,
//! from a checkpoint's `id2label` or a categories file (COCO panoptic, COCO instance,
//! VIPSeg, ...).

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// One class of the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// Category id written to outputs (the dataset's id).
    pub category_id: u32,
    /// Class name.
    pub name: String,
    /// Countable object (true) or amorphous region (false).
    pub isthing: bool,
}

/// The model's classes, indexed by class id (the no-object class excluded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSet {
    /// Classes in model order.
    pub labels: Vec<Label>,
}

#[derive(Deserialize)]
struct FileEntry {
    id: u32,
    name: String,
    #[serde(default = "one")]
    isthing: u8,
}

fn one() -> u8 {
    1
}

impl LabelSet {
    /// Classes named as in `id2label`, category id = class id; classes listed in `stuff` are
    /// stuff, the others things.
    pub fn from_names(names: &[String], stuff: &[usize]) -> Self {
        LabelSet {
            labels: names
                .iter()
                .enumerate()
                .map(|(i, n)| Label {
                    category_id: i as u32,
                    name: n.clone(),
                    isthing: !stuff.contains(&i),
                })
                .collect(),
        }
    }

    /// Reads a categories file: a JSON list in model class order of
    /// `{"id": category id, "name": ..., "isthing": 0|1}` (the panopticapi format;
    /// `isthing` defaults to 1).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let entries: Vec<FileEntry> =
            serde_json::from_str(&text).map_err(|e| Error::parse(path, e))?;
        if entries.is_empty() {
            return Err(Error::parse(path, "no categories"));
        }
        Ok(LabelSet {
            labels: entries
                .into_iter()
                .map(|e| Label {
                    category_id: e.id,
                    name: e.name,
                    isthing: e.isthing != 0,
                })
                .collect(),
        })
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no classes.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Class ids of stuff classes (fused in panoptic post-processing).
    pub fn stuff_ids(&self) -> Vec<usize> {
        (0..self.labels.len())
            .filter(|&i| !self.labels[i].isthing)
            .collect()
    }

    /// Checks that the set matches a model with `num_labels` classes.
    pub fn check(&self, num_labels: usize) -> Result<()> {
        if self.labels.len() != num_labels {
            return Err(Error::Config(format!(
                "mask2former: the label set has {} classes, the checkpoint {num_labels}",
                self.labels.len()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_files_give_kinds_and_category_ids() {
        let s = LabelSet::from_names(&["person".into(), "sky".into()], &[1]);
        assert_eq!(s.stuff_ids(), vec![1]);
        assert!(s.labels[0].isthing);
        assert!(s.check(2).is_ok() && s.check(3).is_err());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cats.json");
        std::fs::write(
            &p,
            r#"[{"id": 1, "name": "person", "isthing": 1}, {"id": 184, "name": "sky", "isthing": 0}]"#,
        )
        .unwrap();
        let f = LabelSet::from_file(&p).unwrap();
        assert_eq!(f.labels[1].category_id, 184);
        assert_eq!(f.stuff_ids(), vec![1]);
        std::fs::write(&p, "[]").unwrap();
        assert!(LabelSet::from_file(&p).is_err());
    }
}
