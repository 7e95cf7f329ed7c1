//! [`ModelStore`]: model names resolved to verified files in a models folder. It is the only
//! reader of the manifest; fetching missing files is the command line's job (`deva models
//! fetch`).

use super::{default_dir, Manifest, ModelEntry};
use crate::error::{Error, Result};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A models folder and the manifest of the files it may hold.
#[derive(Debug, Clone)]
pub struct ModelStore {
    dir: PathBuf,
    manifest: Arc<Manifest>,
    /// Files already verified (hashed once per store).
    verified: Arc<Mutex<HashSet<PathBuf>>>,
}

impl ModelStore {
    /// The store of folder `dir` with the built-in manifest.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self> {
        Ok(Self::with_manifest(dir, Manifest::builtin()?))
    }

    /// The store of folder `dir` with `manifest`.
    pub fn with_manifest(dir: impl Into<PathBuf>, manifest: Manifest) -> Self {
        ModelStore {
            dir: dir.into(),
            manifest: Arc::new(manifest),
            verified: Arc::default(),
        }
    }

    /// The default folder (`$DEVA_MODELS`, else `~/.cache/deva/models`) with the built-in
    /// manifest.
    pub fn default_location() -> Result<Self> {
        Self::new(default_dir()?)
    }

    /// The models folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The manifest entry called `name`; the error lists the known names.
    pub fn entry(&self, name: &str) -> Result<&ModelEntry> {
        self.manifest.get(name)
    }

    /// The verified file of model `name` (size and sha256 checked the first time it is asked
    /// for); a missing or corrupt file is an error that says `deva models fetch NAME`.
    pub fn path(&self, name: &str) -> Result<PathBuf> {
        let entry = self.entry(name)?;
        let path = entry.path_in(&self.dir);
        if self.is_verified(&path) {
            return Ok(path);
        }
        let path = entry.locate(&self.dir)?;
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.clone());
        Ok(path)
    }

    /// A weights setting that may name a model or a file: a manifest name is resolved (and
    /// verified) through the store, anything else must be an existing file. The error lists the
    /// models whose name starts with `family` (e.g. `"entityseg"`) and names `key`, the setting.
    pub fn model_or_file(&self, weights: &Path, family: &str, key: &str) -> Result<PathBuf> {
        if let Some(name) = weights.to_str().filter(|n| self.entry(n).is_ok()) {
            return self.path(name);
        }
        if weights.is_file() {
            return Ok(weights.to_path_buf());
        }
        let names: Vec<&str> = self
            .manifest
            .models
            .iter()
            .map(|m| m.name.as_str())
            .filter(|n| n.starts_with(family))
            .collect();
        Err(Error::Config(format!(
            "{key}: '{}' is neither a file nor a model name ({})",
            weights.display(),
            names.join(", ")
        )))
    }

    fn is_verified(&self, path: &Path) -> bool {
        path.is_file()
            && self
                .verified
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_verified_and_missing_models_say_how_to_fetch() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModelStore::new(dir.path()).unwrap();
        let e = store.path("u2netp").unwrap_err().to_string();
        assert!(e.contains("deva models fetch u2netp"), "{e}");
        let e = store.path("nope").unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("u2netp"), "{e}");
        // A file of the wrong size is refused.
        std::fs::write(dir.path().join("u2netp.onnx"), b"short").unwrap();
        let e = store.path("u2netp").unwrap_err().to_string();
        assert!(e.contains("5 bytes"), "{e}");
    }

    #[test]
    fn weights_settings_take_a_model_name_or_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModelStore::new(dir.path()).unwrap();
        // A manual-download model that is not there says where to get it.
        let e = store
            .model_or_file(Path::new("referformer-r50-ytvos"), "referformer", "k")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("drive.google.com") && e.contains("referformer_r50_ytvos.pth"),
            "{e}"
        );
        // Once saved under its file name, the name resolves to it (no size or sha256 listed).
        let file = dir.path().join("entityseg_r50_1x.pth");
        std::fs::write(&file, b"x").unwrap();
        let got = store.model_or_file(Path::new("entityseg-r50-1x"), "entityseg", "k");
        assert_eq!(got.unwrap(), file);
        // A path is taken as it is; anything else lists the family's models and the key.
        assert_eq!(store.model_or_file(&file, "entityseg", "k").unwrap(), file);
        let e = store
            .model_or_file(Path::new("nope.pth"), "entityseg", "segmenter.weights")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("segmenter.weights")
                && e.contains("entityseg-r101-dcnv2-3x")
                && !e.contains("u2net"),
            "{e}"
        );
    }
}
