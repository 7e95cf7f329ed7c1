//! [`ModelStore`]: model names resolved to verified files in a models folder. It is the only
//! reader of the manifest; fetching missing files is the command line's job (`deva models
//! fetch`).

use super::{default_dir, Manifest, ModelEntry};
use crate::error::Result;
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
}
