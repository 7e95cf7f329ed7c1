//! Reading benchmark inputs: JSON documents, name lists, numeric text tables and folder
//! listings, with errors that name the file.

use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Deserialize;
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

/// Deserialises a JSON string or number as a string (ids that datasets write either way).
pub fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "expected a string or a number, found {other}"
        ))),
    }
}

/// Deserialises a 0/1 flag written as a JSON boolean or integer.
pub fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Bool(b) => Ok(b),
        serde_json::Value::Number(n) if n.as_i64().is_some() => Ok(n.as_i64() != Some(0)),
        other => Err(serde::de::Error::custom(format!(
            "expected a boolean or 0/1, found {other}"
        ))),
    }
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
    fn ids_and_flags_accept_both_spellings() {
        #[derive(Deserialize)]
        struct T {
            #[serde(deserialize_with = "string_or_number")]
            id: String,
            #[serde(deserialize_with = "flag")]
            on: bool,
        }
        let a: T = serde_json::from_str(r#"{"id": 12, "on": 1}"#).unwrap();
        assert_eq!((a.id.as_str(), a.on), ("12", true));
        let b: T = serde_json::from_str(r#"{"id": "v_1", "on": false}"#).unwrap();
        assert_eq!((b.id.as_str(), b.on), ("v_1", false));
        assert!(serde_json::from_str::<T>(r#"{"id": [], "on": 0}"#).is_err());
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
