//! Exact linear sum assignment with the tie-breaking of scipy's `linear_sum_assignment`.
//!
//! The official evaluators (DAVIS unsupervised matching, TrackEval's HOTA and BURST
//! preprocessing) call scipy. Where several assignments are optimal, which one is returned
//! changes per-object keys and association counts, so this solver follows scipy's algorithm step
//! by step: the shortest augmenting path method of Crouse (2016) on a wide matrix (a tall one is
//! transposed), rows added in order, columns scanned from a list initialised in reverse order and
//! shrunk by swap-removal, ties on the path cost resolved towards an unassigned column.

use crate::error::{Error, Result};

/// A dense row-major matrix of `f64`.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    rows: usize,
    cols: usize,
    data: Vec<f64>,
}

impl Matrix {
    /// A `rows × cols` matrix of zeros.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Matrix {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    /// A matrix whose entry `(r, c)` is `f(r, c)`.
    pub fn from_fn(rows: usize, cols: usize, mut f: impl FnMut(usize, usize) -> f64) -> Self {
        let mut data = Vec::with_capacity(rows * cols);
        for r in 0..rows {
            for c in 0..cols {
                data.push(f(r, c));
            }
        }
        Matrix { rows, cols, data }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Entry `(r, c)`.
    pub fn get(&self, r: usize, c: usize) -> f64 {
        self.data[r * self.cols + c]
    }

    /// Sets entry `(r, c)`.
    pub fn set(&mut self, r: usize, c: usize, v: f64) {
        self.data[r * self.cols + c] = v;
    }

    /// Row `r` as a slice.
    pub fn row(&self, r: usize) -> &[f64] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// The matrix without the columns whose index is in `drop` (sorted or not).
    pub fn without_cols(&self, drop: &[usize]) -> Matrix {
        let keep: Vec<usize> = (0..self.cols).filter(|c| !drop.contains(c)).collect();
        Matrix::from_fn(self.rows, keep.len(), |r, c| self.get(r, keep[c]))
    }
}

const NONE: usize = usize::MAX;

/// Solves the assignment problem on `cost` (minimising, or maximising when `maximize`).
///
/// Returns `min(rows, cols)` pairs `(row, col)` sorted by row, exactly the pairs scipy returns.
/// Fails on NaN or −∞ entries (after negation when maximising) and on infeasible matrices
/// (too many +∞ entries).
pub fn linear_sum_assignment(cost: &Matrix, maximize: bool) -> Result<Vec<(usize, usize)>> {
    let (nr0, nc0) = (cost.rows, cost.cols);
    if nr0 == 0 || nc0 == 0 {
        return Ok(Vec::new());
    }
    let transpose = nc0 < nr0;
    let (nr, nc) = if transpose { (nc0, nr0) } else { (nr0, nc0) };
    let mut c = vec![0.0; nr * nc];
    for i in 0..nr0 {
        for j in 0..nc0 {
            let v = cost.get(i, j);
            let v = if maximize { -v } else { v };
            if v.is_nan() || v == f64::NEG_INFINITY {
                return Err(Error::invalid(format!(
                    "assignment cost matrix has an invalid entry {v} at ({i}, {j})"
                )));
            }
            if transpose {
                c[j * nr0 + i] = v;
            } else {
                c[i * nc0 + j] = v;
            }
        }
    }
    let col4row = Solver::new(nr, nc, &c).solve()?;
    let mut pairs: Vec<(usize, usize)> = if transpose {
        col4row.iter().enumerate().map(|(r, &cc)| (cc, r)).collect()
    } else {
        col4row.iter().enumerate().map(|(r, &cc)| (r, cc)).collect()
    };
    pairs.sort_unstable();
    Ok(pairs)
}

/// State of the shortest-augmenting-path solver on a wide (`nr ≤ nc`) cost matrix.
struct Solver<'a> {
    nr: usize,
    nc: usize,
    cost: &'a [f64],
    u: Vec<f64>,
    v: Vec<f64>,
    shortest: Vec<f64>,
    path: Vec<usize>,
    col4row: Vec<usize>,
    row4col: Vec<usize>,
    in_sr: Vec<bool>,
    in_sc: Vec<bool>,
}

impl<'a> Solver<'a> {
    fn new(nr: usize, nc: usize, cost: &'a [f64]) -> Self {
        Solver {
            nr,
            nc,
            cost,
            u: vec![0.0; nr],
            v: vec![0.0; nc],
            shortest: vec![f64::INFINITY; nc],
            path: vec![NONE; nc],
            col4row: vec![NONE; nr],
            row4col: vec![NONE; nc],
            in_sr: vec![false; nr],
            in_sc: vec![false; nc],
        }
    }

    /// Adds the rows one by one; returns the column of every row.
    fn solve(mut self) -> Result<Vec<usize>> {
        for cur in 0..self.nr {
            let (sink, min_val) = self.augmenting_path(cur).ok_or_else(|| {
                Error::invalid("assignment cost matrix is infeasible (too many infinite entries)")
            })?;
            self.u[cur] += min_val;
            for i in 0..self.nr {
                if self.in_sr[i] && i != cur {
                    self.u[i] += min_val - self.shortest[self.col4row[i]];
                }
            }
            for j in 0..self.nc {
                if self.in_sc[j] {
                    self.v[j] -= min_val - self.shortest[j];
                }
            }
            let mut j = sink;
            loop {
                let i = self.path[j];
                self.row4col[j] = i;
                std::mem::swap(&mut self.col4row[i], &mut j);
                if i == cur {
                    break;
                }
            }
        }
        Ok(self.col4row)
    }

    /// Shortest augmenting path from row `start` to a free column: `(sink, path cost)`.
    fn augmenting_path(&mut self, start: usize) -> Option<(usize, f64)> {
        let nc = self.nc;
        let mut remaining: Vec<usize> = (0..nc).rev().collect();
        self.in_sr.fill(false);
        self.in_sc.fill(false);
        self.shortest.fill(f64::INFINITY);
        let mut min_val = 0.0;
        let mut i = start;
        loop {
            self.in_sr[i] = true;
            let mut index = NONE;
            let mut lowest = f64::INFINITY;
            for (it, &j) in remaining.iter().enumerate() {
                let r = min_val + self.cost[i * nc + j] - self.u[i] - self.v[j];
                if r < self.shortest[j] {
                    self.path[j] = i;
                    self.shortest[j] = r;
                }
                if self.shortest[j] < lowest
                    || (self.shortest[j] == lowest && self.row4col[j] == NONE)
                {
                    lowest = self.shortest[j];
                    index = it;
                }
            }
            min_val = lowest;
            if min_val == f64::INFINITY || index == NONE {
                return None;
            }
            let j = remaining[index];
            self.in_sc[j] = true;
            remaining.swap_remove(index);
            if self.row4col[j] == NONE {
                return Some((j, min_val));
            }
            i = self.row4col[j];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(rows: &[&[f64]]) -> Matrix {
        Matrix::from_fn(rows.len(), rows[0].len(), |r, c| rows[r][c])
    }

    // Oracle: scipy 1.17.1 `scipy.optimize.linear_sum_assignment` on the same matrices
    // (values printed by scipy, not by this code).
    #[test]
    fn constant_matrix_gives_identity_like_scipy() {
        let c = m(&[&[1.0; 4], &[1.0; 4], &[1.0; 4]]);
        assert_eq!(
            linear_sum_assignment(&c, false).unwrap(),
            vec![(0, 0), (1, 1), (2, 2)]
        );
        let t = Matrix::from_fn(4, 3, |_, _| 0.0);
        assert_eq!(
            linear_sum_assignment(&t, true).unwrap(),
            vec![(0, 0), (1, 1), (2, 2)]
        );
    }

    #[test]
    fn ties_follow_scipy() {
        // scipy: linear_sum_assignment(-np.array(...)) -> rows [0 1 2], cols [2 0 1]
        let c = m(&[&[0.5, 0.5, 1.0], &[1.0, 0.5, 0.5], &[0.5, 1.0, 0.5]]);
        assert_eq!(
            linear_sum_assignment(&c, true).unwrap(),
            vec![(0, 2), (1, 0), (2, 1)]
        );
        // scipy on [[0,0,0],[0,0,0]] with maximize=True -> rows [0 1], cols [0 1]
        let z = Matrix::zeros(2, 3);
        assert_eq!(
            linear_sum_assignment(&z, true).unwrap(),
            vec![(0, 0), (1, 1)]
        );
    }

    #[test]
    fn rejects_nan_and_empty_is_empty() {
        let c = m(&[&[f64::NAN, 1.0]]);
        assert!(linear_sum_assignment(&c, false).is_err());
        assert!(linear_sum_assignment(&Matrix::zeros(0, 3), false)
            .unwrap()
            .is_empty());
    }
}
