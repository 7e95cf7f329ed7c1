//! Evaluation reports: plain-text tables for the terminal and JSON files.

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use serde::Serialize;
use std::fmt;
use std::path::Path;

/// A titled table of text cells; the first column is left-aligned, the others right-aligned.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    title: String,
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with a title and column headers.
    pub fn new(title: impl Into<String>, headers: &[&str]) -> Self {
        Table {
            title: title.into(),
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row: a label followed by numbers (shown with 4 decimals or `nan`).
    pub fn push_numbers(&mut self, label: impl Into<String>, values: &[f64]) {
        let mut row = vec![label.into()];
        row.extend(values.iter().map(|&v| number(v)));
        self.rows.push(row);
    }

    /// Appends a row of text cells.
    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// The rows added so far.
    pub fn rows(&self) -> &[Vec<String>] {
        &self.rows
    }
}

/// A number as shown in tables: 4 decimals, `nan` for NaN.
pub fn number(v: f64) -> String {
    if v.is_nan() {
        "nan".to_string()
    } else {
        format!("{v:.4}")
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ncol = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.headers.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0; ncol];
        for row in self.rows.iter().chain([&self.headers]) {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |f: &mut fmt::Formatter<'_>, row: &[String]| -> fmt::Result {
            for (i, cell) in row.iter().enumerate() {
                if i == 0 {
                    write!(f, "{cell:<w$}", w = widths[0])?;
                } else {
                    write!(f, "  {cell:>w$}", w = widths[i])?;
                }
            }
            writeln!(f)
        };
        writeln!(f, "{}", self.title)?;
        line(f, &self.headers)?;
        let total: usize = widths.iter().sum::<usize>() + 2 * ncol.saturating_sub(1);
        writeln!(f, "{}", "-".repeat(total))?;
        for row in &self.rows {
            line(f, row)?;
        }
        Ok(())
    }
}

/// A benchmark result that can be shown as tables and saved as JSON.
pub trait Report: Serialize {
    /// The tables printed on the terminal (global numbers first, then per-sequence rows).
    fn tables(&self) -> Vec<Table>;
}

/// Writes `report` as pretty-printed JSON, atomically. NaN values become `null`.
pub fn write_json(path: &Path, report: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(report)
        .map_err(|e| Error::invalid(format!("cannot serialise the report: {e}")))?;
    write_atomic(path, format!("{text}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new("Global", &["name", "J", "F"]);
        t.push_numbers("blackswan_1", &[0.5, f64::NAN]);
        let s = t.to_string();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "Global");
        assert_eq!(lines[1], "name              J    F");
        assert_eq!(lines[3], "blackswan_1  0.5000  nan");
    }

    #[test]
    fn json_report_writes_nan_as_null() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        write_json(&p, &serde_json::json!({"a": 1.5})).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(v["a"], 1.5);
        #[derive(Serialize)]
        struct N {
            x: f64,
        }
        write_json(&p, &N { x: f64::NAN }).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert!(v["x"].is_null());
    }
}
