//! Overlaps of two id maps counted in one pass (label co-occurrence), and maximum-weight
//! matching of their segments on IoU (Kuhn–Munkres). Shared by the consensus and the merge.

use crate::error::{Error, Result};
use crate::mask::{IdMap, ObjectId};
use pathfinding::kuhn_munkres::kuhn_munkres;
use pathfinding::matrix::Matrix;
use std::collections::HashMap;

/// IoU weights are scaled to integers for Kuhn–Munkres with this factor.
const IOU_SCALE: f64 = 1e9;

/// Dense labels of a map: `ids[i]` becomes `i + 1`, anything else 0.
pub(crate) fn dense_labels(map: &IdMap, ids: &[ObjectId]) -> Vec<u32> {
    let index: HashMap<ObjectId, u32> = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| (id, i as u32 + 1))
        .collect();
    // Ids come in runs along rows: remember the last lookup.
    let mut last = (0, 0);
    map.data()
        .iter()
        .map(|&id| {
            if id != last.0 {
                last = (id, index.get(&id).copied().unwrap_or(0));
            }
            last.1
        })
        .collect()
}

/// Pixel counts of every pair of labels of two same-size id maps.
#[derive(Debug, Clone)]
pub struct Overlap {
    rows: usize,
    cols: usize,
    /// `(rows + 1) × (cols + 1)`, row-major; index 0 is background (or an unlisted id).
    counts: Vec<u64>,
}

impl Overlap {
    /// Counts, in one pass, how many pixels carry id `a_ids[i]` in `a` and `b_ids[j]` in `b`.
    /// Ids not listed count as background.
    pub fn count(a: &IdMap, a_ids: &[ObjectId], b: &IdMap, b_ids: &[ObjectId]) -> Result<Self> {
        if a.width() != b.width() || a.height() != b.height() {
            return Err(Error::invalid(format!(
                "cannot overlap a {}x{} id map with a {}x{} one",
                a.width(),
                a.height(),
                b.width(),
                b.height()
            )));
        }
        Ok(Overlap::from_labels(
            &dense_labels(a, a_ids),
            a_ids.len(),
            &dense_labels(b, b_ids),
            b_ids.len(),
        ))
    }

    /// Counts pairs of dense labels (see [`dense_labels`]; 0 = background) of equal-length
    /// label vectors with `rows` and `cols` labels besides background.
    pub(crate) fn from_labels(a: &[u32], rows: usize, b: &[u32], cols: usize) -> Self {
        let mut counts = vec![0u64; (rows + 1) * (cols + 1)];
        for (&i, &j) in a.iter().zip(b) {
            counts[i as usize * (cols + 1) + j as usize] += 1;
        }
        Overlap { rows, cols, counts }
    }

    /// Number of listed ids of the first map.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of listed ids of the second map.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Pixels of `a_ids[i]` that are `b_ids[j]` in the second map.
    pub fn intersection(&self, i: usize, j: usize) -> u64 {
        self.counts[(i + 1) * (self.cols + 1) + j + 1]
    }

    /// Area of `a_ids[i]`.
    pub fn row_area(&self, i: usize) -> u64 {
        let start = (i + 1) * (self.cols + 1);
        self.counts[start..start + self.cols + 1].iter().sum()
    }

    /// Area of `b_ids[j]`.
    pub fn col_area(&self, j: usize) -> u64 {
        (0..=self.rows)
            .map(|i| self.counts[i * (self.cols + 1) + j + 1])
            .sum()
    }

    /// Areas of every row and every column.
    pub fn areas(&self) -> (Vec<u64>, Vec<u64>) {
        let mut rows = vec![0u64; self.rows];
        let mut cols = vec![0u64; self.cols];
        for i in 0..=self.rows {
            for j in 0..=self.cols {
                let n = self.counts[i * (self.cols + 1) + j];
                if i > 0 {
                    rows[i - 1] += n;
                }
                if j > 0 {
                    cols[j - 1] += n;
                }
            }
        }
        (rows, cols)
    }

    /// Intersection over union of `a_ids[i]` and `b_ids[j]`; 0 when they do not touch.
    pub fn iou(&self, i: usize, j: usize) -> f64 {
        let inter = self.intersection(i, j);
        if inter == 0 {
            return 0.0;
        }
        inter as f64 / (self.row_area(i) + self.col_area(j) - inter) as f64
    }

    /// The pairs `(i, j, iou)` among `rows × cols` whose IoU exceeds `threshold`.
    pub fn pairs_above(&self, rows: &[usize], cols: &[usize], threshold: f64) -> Vec<Pair> {
        let (ra, ca) = self.areas();
        let mut out = Vec::new();
        for &i in rows {
            for &j in cols {
                let inter = self.intersection(i, j);
                if inter == 0 {
                    continue;
                }
                let iou = inter as f64 / (ra[i] + ca[j] - inter) as f64;
                if iou > threshold {
                    out.push(Pair {
                        row: i,
                        col: j,
                        iou,
                    });
                }
            }
        }
        out
    }
}

/// Index of an `isthing` value among the matching groups, in drawing order: unknown (None),
/// stuff (false), things (true).
pub(crate) fn group(isthing: Option<bool>) -> usize {
    match isthing {
        None => 0,
        Some(false) => 1,
        Some(true) => 2,
    }
}

/// Number of `isthing` groups.
pub(crate) const GROUPS: usize = 3;

impl Overlap {
    /// Maximum-total-IoU matching of rows and columns with IoU above `threshold`, pairing only
    /// equal `isthing` values (`row_isthing[i]`, `col_isthing[j]`).
    pub fn match_groups(
        &self,
        row_isthing: &[Option<bool>],
        col_isthing: &[Option<bool>],
        threshold: f64,
    ) -> Vec<Pair> {
        let mut out = Vec::new();
        for g in 0..GROUPS {
            let rows: Vec<usize> = (0..self.rows)
                .filter(|&i| group(row_isthing[i]) == g)
                .collect();
            let cols: Vec<usize> = (0..self.cols)
                .filter(|&j| group(col_isthing[j]) == g)
                .collect();
            out.extend(max_iou_matching(&self.pairs_above(&rows, &cols, threshold)));
        }
        out
    }
}

/// A candidate association of row `row` and column `col`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    /// Index into the first map's ids.
    pub row: usize,
    /// Index into the second map's ids.
    pub col: usize,
    /// Their IoU.
    pub iou: f64,
}

/// A maximum-total-IoU matching among candidate pairs: each row and each column is used at
/// most once. When no row or column has two candidates the candidates are the matching;
/// otherwise Kuhn–Munkres decides. The result is sorted by row.
pub fn max_iou_matching(candidates: &[Pair]) -> Vec<Pair> {
    let mut rows: Vec<usize> = candidates.iter().map(|p| p.row).collect();
    let mut cols: Vec<usize> = candidates.iter().map(|p| p.col).collect();
    rows.sort_unstable();
    cols.sort_unstable();
    let unique = rows.windows(2).all(|w| w[0] != w[1]) && cols.windows(2).all(|w| w[0] != w[1]);
    rows.dedup();
    cols.dedup();
    let mut out: Vec<Pair> = if unique {
        candidates.to_vec()
    } else {
        // Kuhn–Munkres needs rows <= columns: put the shorter side on the rows.
        let transpose = rows.len() > cols.len();
        let (r, c) = if transpose {
            (&cols, &rows)
        } else {
            (&rows, &cols)
        };
        let mut weights = Matrix::new(r.len(), c.len(), 0i64);
        let mut chosen: HashMap<(usize, usize), Pair> = HashMap::new();
        for p in candidates {
            let (a, b) = if transpose {
                (p.col, p.row)
            } else {
                (p.row, p.col)
            };
            let (ri, ci) = (
                r.binary_search(&a).expect("row listed"),
                c.binary_search(&b).expect("column listed"),
            );
            weights[(ri, ci)] = (p.iou * IOU_SCALE).round() as i64;
            chosen.insert((ri, ci), *p);
        }
        let (_, assignment) = kuhn_munkres(&weights);
        assignment
            .iter()
            .enumerate()
            .filter_map(|(ri, &ci)| chosen.get(&(ri, ci)).copied())
            .collect()
    };
    out.sort_by_key(|p| p.row);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_match_per_pair_masks() {
        let a = IdMap::from_vec(4, 2, vec![1, 1, 2, 2, 1, 0, 2, 9]).unwrap();
        let b = IdMap::from_vec(4, 2, vec![5, 5, 5, 0, 5, 7, 7, 7]).unwrap();
        let ov = Overlap::count(&a, &[1, 2], &b, &[5, 7]).unwrap();
        for (i, ia) in [1u32, 2].iter().enumerate() {
            for (j, jb) in [5u32, 7].iter().enumerate() {
                let (ma, mb) = (a.mask(*ia), b.mask(*jb));
                assert_eq!(
                    ov.intersection(i, j) as usize,
                    ma.intersection(&mb).unwrap()
                );
                assert!((ov.iou(i, j) - ma.iou(&mb).unwrap()).abs() < 1e-12);
            }
        }
        assert_eq!(ov.areas(), (vec![3, 3], vec![4, 3]));
        assert_eq!((ov.row_area(1), ov.col_area(0)), (3, 4));
        let pairs = ov.pairs_above(&[0, 1], &[0, 1], 0.5);
        assert_eq!(pairs.len(), 1);
        assert_eq!((pairs[0].row, pairs[0].col), (0, 0));
        assert!((pairs[0].iou - 3.0 / 4.0).abs() < 1e-12);
    }

    #[test]
    fn matching_maximises_total_iou_not_first_come() {
        // Row 0 prefers column 0 slightly, but only row 0 can take column 1: the optimal
        // matching is (0,1) + (1,0) = 1.4, greedy "first match" would give (0,0) alone = 0.8.
        let p = |row, col, iou| Pair { row, col, iou };
        let cands = [p(0, 0, 0.8), p(0, 1, 0.7), p(1, 0, 0.7)];
        let m = max_iou_matching(&cands);
        assert_eq!(m, vec![p(0, 1, 0.7), p(1, 0, 0.7)]);
        // More rows than columns: transposed internally, same answer shape.
        let cands = [p(0, 0, 0.6), p(1, 0, 0.9), p(2, 0, 0.3)];
        assert_eq!(max_iou_matching(&cands), vec![p(1, 0, 0.9)]);
        assert!(max_iou_matching(&[]).is_empty());
    }
}
