//! Reading benchmark inputs: JSON documents, name lists, numeric text tables and folder
//! listings, with errors that name the file.

use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// Reads a whole text file.
pub fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// Parses a JSON document into `T`; malformed JSON or a missing field names the file.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_reader(std::io::BufReader::new(file))
        .map_err(|e| Error::parse(path, format!("invalid JSON: {e}")))
}

/// A list of names, one per line (surrounding blanks and empty lines are ignored).
pub fn read_name_list(path: &Path) -> Result<Vec<String>> {
    let names: Vec<String> = read_text(path)?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if names.is_empty() {
        return Err(Error::parse(path, "the list is empty"));
    }
    Ok(names)
}

/// The names of the sub-folders of `dir`, sorted.
pub fn list_subdirs(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if entry.path().is_dir() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// The files of `dir` whose name ends with `suffix`, sorted by name.
pub fn list_files(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let matches = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(suffix));
        if matches && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// A table of numbers, one row per line, values separated by commas (or blanks); `NaN` is
/// allowed. Every row must have `columns` values.
pub fn read_number_rows(path: &Path, columns: usize) -> Result<Vec<Vec<f64>>> {
    let mut rows = Vec::new();
    for (i, line) in read_text(path)?.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let row = line
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<f64>())
            .collect::<std::result::Result<Vec<f64>, _>>()
            .map_err(|e| Error::parse(path, format!("line {}: {e}: {line:?}", i + 1)))?;
        if row.len() != columns {
            return Err(Error::parse(
                path,
                format!(
                    "line {}: expected {columns} values, found {}",
                    i + 1,
                    row.len()
                ),
            ));
        }
        rows.push(row);
    }
    Ok(rows)
}

/// A column of numbers, one per line.
pub fn read_number_column(path: &Path) -> Result<Vec<f64>> {
    Ok(read_number_rows(path, 1)?
        .into_iter()
        .map(|r| r[0])
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_rows_report_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("boxes.txt");
        std::fs::write(&p, "1,2,3,4\nNaN,NaN,NaN,NaN\n\n5 6 7 8\n").unwrap();
        let rows = read_number_rows(&p, 4).unwrap();
        assert_eq!(rows.len(), 3);
        assert!(rows[1][0].is_nan());
        assert_eq!(rows[2], vec![5.0, 6.0, 7.0, 8.0]);
        std::fs::write(&p, "1,2,3\n").unwrap();
        let e = read_number_rows(&p, 4).unwrap_err().to_string();
        assert!(e.contains("boxes.txt") && e.contains("line 1"), "{e}");
        std::fs::write(&p, "1,2,x,4\n").unwrap();
        assert!(read_number_rows(&p, 4).is_err());
    }

    #[test]
    fn json_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gt.json");
        std::fs::write(&p, "{\"a\": [1, 2").unwrap();
        let e = read_json::<serde_json::Value>(&p).unwrap_err().to_string();
        assert!(e.contains("gt.json") && e.contains("invalid JSON"), "{e}");
    }
}
