//! Shared by the fuzz targets: readers that take paths get the input through a file in a
//! per-process scratch folder.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

/// This process's scratch folder (created once).
pub fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("deva-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("scratch folder");
        d
    })
}

/// Writes `bytes` to `name` in the scratch folder and returns its path.
pub fn file(name: &str, bytes: &[u8]) -> PathBuf {
    let p = scratch().join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).expect("scratch subfolder");
    }
    std::fs::write(&p, bytes).expect("scratch file");
    p
}

/// Splits the input at the first `sep` byte sequence: (before, after); all of it and nothing
/// when there is none.
pub fn split<'a>(data: &'a [u8], sep: &[u8]) -> (&'a [u8], &'a [u8]) {
    match data.windows(sep.len()).position(|w| w == sep) {
        Some(i) => (&data[..i], &data[i + sep.len()..]),
        None => (data, &[]),
    }
}
