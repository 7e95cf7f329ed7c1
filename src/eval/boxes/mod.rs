//! Single-object box tracking benchmarks: LaSOT (success AUC, precision, normalised precision,
//! MATLAB toolkit conventions) and GOT-10k (AO, SR0.5, SR0.75, got10k toolkit conventions).

pub mod got10k;
pub mod lasot;

use super::input::read_number_rows;
use crate::error::Result;
use std::path::Path;

/// A box `[x, y, w, h]`.
pub type Rect = [f64; 4];

/// Reads one `x,y,w,h` box per line (`NaN` allowed).
pub fn read_boxes(path: &Path) -> Result<Vec<Rect>> {
    Ok(read_number_rows(path, 4)?
        .into_iter()
        .map(|r| [r[0], r[1], r[2], r[3]])
        .collect())
}
