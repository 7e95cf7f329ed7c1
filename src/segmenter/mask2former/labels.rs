//! Label sets: the model's classes with their dataset category ids and thing/stuff kind,
//! from a checkpoint's `id2label`, a built-in set (`models/labels/`: COCO panoptic, COCO
//! instance, VIPSeg) or a categories file.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::mask::CategoryNames;

/// The built-in label sets: spec name, file under `models/labels/`, its text.
const BUILTIN: &[(&str, &str, &str)] = &[
    (
        "coco-panoptic",
        "models/labels/coco_panoptic.json",
        include_str!("../../../models/labels/coco_panoptic.json"),
    ),
    (
        "coco-instance",
        "models/labels/coco_instance.json",
        include_str!("../../../models/labels/coco_instance.json"),
    ),
    (
        "vipseg",
        "models/labels/vipseg.json",
        include_str!("../../../models/labels/vipseg.json"),
    ),
];

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
#[serde(deny_unknown_fields)]
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
    /// Names of the built-in sets, as the spec's `labels` field takes them.
    pub fn builtin_names() -> Vec<&'static str> {
        BUILTIN.iter().map(|b| b.0).collect()
    }

    /// The built-in set `name` (`coco-panoptic`, `coco-instance`, `vipseg`), if there is one.
    pub fn builtin(name: &str) -> Option<Result<Self>> {
        BUILTIN
            .iter()
            .find(|b| b.0 == name)
            .map(|&(_, file, text)| Self::from_json(text, Path::new(file)))
    }

    /// A built-in set by name, else the categories file at that path.
    pub fn resolve(name_or_path: &str) -> Result<Self> {
        match Self::builtin(name_or_path) {
            Some(set) => set,
            None => Self::from_file(Path::new(name_or_path)),
        }
    }

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
    /// `isthing` defaults to 1). Category ids must be unique.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text, path)
    }

    /// Parses the text of a categories file; errors name `path`.
    fn from_json(text: &str, path: &Path) -> Result<Self> {
        let entries: Vec<FileEntry> =
            serde_json::from_str(text).map_err(|e| Error::parse(path, e))?;
        if entries.is_empty() {
            return Err(Error::parse(path, "no categories"));
        }
        let mut seen = BTreeSet::new();
        let mut labels = Vec::with_capacity(entries.len());
        for e in entries {
            if !seen.insert(e.id) {
                return Err(Error::parse(
                    path,
                    format!("category id {} is listed twice", e.id),
                ));
            }
            if e.isthing > 1 {
                return Err(Error::parse(
                    path,
                    format!(
                        "category {}: isthing must be 0 or 1, got {}",
                        e.id, e.isthing
                    ),
                ));
            }
            labels.push(Label {
                category_id: e.id,
                name: e.name,
                isthing: e.isthing == 1,
            });
        }
        Ok(LabelSet { labels })
    }

    /// The set with class names from a checkpoint's `id2label` (which win over the set's
    /// own), keeping the set's category ids and kinds; the class counts must agree.
    pub fn named_by(mut self, id2label: &[String]) -> Result<Self> {
        self.check(id2label.len())?;
        for (l, n) in self.labels.iter_mut().zip(id2label) {
            l.name.clone_from(n);
        }
        Ok(self)
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no classes.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Class names in model order.
    pub fn names(&self) -> Vec<String> {
        self.labels.iter().map(|l| l.name.clone()).collect()
    }

    /// Class names by category id, as
    /// [`OutputOptions::category_names`](crate::output::OutputOptions) takes them.
    pub fn category_names(&self) -> CategoryNames {
        self.labels
            .iter()
            .map(|l| (l.category_id, l.name.clone()))
            .collect()
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
        let f = LabelSet::resolve(p.to_str().unwrap()).unwrap();
        assert_eq!(f.labels[1].category_id, 184);
        assert_eq!(f.stuff_ids(), vec![1]);
        let names = f.category_names();
        assert_eq!(
            (names.len(), &*names[&1], &*names[&184]),
            (2, "person", "sky")
        );
        assert!(!names.contains_key(&2));
        std::fs::write(&p, "[]").unwrap();
        assert!(LabelSet::from_file(&p).is_err());
        std::fs::write(
            &p,
            r#"[{"id": 3, "name": "a"}, {"id": 3, "name": "b", "isthing": 0}]"#,
        )
        .unwrap();
        let e = LabelSet::from_file(&p).unwrap_err().to_string();
        assert!(
            e.contains("category id 3") && e.contains("cats.json"),
            "{e}"
        );
    }

    /// (name, classes, things) of the published lists: detectron2's COCO_CATEGORIES (133, of
    /// which the 80 things are the instance set) and VIPSeg's panoVIPSeg_categories.json
    /// (124, 58 things).
    #[test]
    fn builtin_sets_have_the_published_sizes_and_unique_ids() {
        for (name, classes, things) in [
            ("coco-panoptic", 133, 80),
            ("coco-instance", 80, 80),
            ("vipseg", 124, 58),
        ] {
            let s = LabelSet::resolve(name).unwrap();
            assert_eq!(s.len(), classes, "{name}");
            assert_eq!(
                s.labels.iter().filter(|l| l.isthing).count(),
                things,
                "{name}"
            );
            let ids: BTreeSet<u32> = s.labels.iter().map(|l| l.category_id).collect();
            assert_eq!(ids.len(), classes, "{name}: ids unique");
            assert!(s.labels.iter().all(|l| !l.name.is_empty()), "{name}");
        }
        // The instance set is the panoptic set's things, in the same order.
        let pan = LabelSet::builtin("coco-panoptic").unwrap().unwrap();
        let inst = LabelSet::builtin("coco-instance").unwrap().unwrap();
        let pan_things: Vec<&Label> = pan.labels.iter().filter(|l| l.isthing).collect();
        assert_eq!(pan_things, inst.labels.iter().collect::<Vec<_>>());
        assert!(LabelSet::builtin("ade").is_none());
        let e = LabelSet::resolve("ade").unwrap_err().to_string();
        assert!(e.contains("ade"), "{e}");
    }

    #[test]
    fn checkpoint_names_win_and_counts_must_agree() {
        let vipseg = LabelSet::builtin("vipseg").unwrap().unwrap();
        let names: Vec<String> = (0..124).map(|i| format!("c{i}")).collect();
        let named = vipseg.clone().named_by(&names).unwrap();
        assert_eq!(named.labels[5].name, "c5");
        assert_eq!(named.labels[5].category_id, vipseg.labels[5].category_id);
        assert_eq!(named.stuff_ids(), vipseg.stuff_ids());
        let e = vipseg.named_by(&names[..100]).unwrap_err().to_string();
        assert!(e.contains("124") && e.contains("100"), "{e}");
    }
}
