//! Moving the channels of feature maps between first (`(B, C, H, W)`) and last
//! (`(B, H, W, C)`), and transposing matrices: on the CPU a parallel transpose in cache-sized
//! tiles (candle's strided copy runs on one thread, element by element); elsewhere candle's
//! permute.

use std::mem::MaybeUninit;
use std::ops::Range;

use candle_core::shape::Dims;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::nn::vmath::multiversion;

/// Output rows (columns of the input) per rayon task: each input row gives the task one
/// cache line, and squares of this side go through a buffer in `transpose_rows`.
const ROWS_PER_TASK: usize = 16;

/// `(B, C, H, W)` → `(B, H, W, C)`.
pub fn to_channels_last(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    swap_axes(x, (b, c, h * w), (0, 2, 3, 1), (b, h, w, c))
}

/// `(B, H, W, C)` → `(B, C, H, W)`.
pub fn to_channels_first(x: &Tensor) -> Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    swap_axes(x, (b, h * w, c), (0, 3, 1, 2), (b, c, h, w))
}

/// `(R, C)` → `(C, R)`, contiguous.
pub fn transposed(x: &Tensor) -> Result<Tensor> {
    let (r, c) = x.dims2()?;
    swap_axes(x, (1, r, c), (1, 0), (c, r))
}

/// `x` seen as `(B, R, C)` (`rows`), transposed to `(B, C, R)` and shaped `out`; on other
/// devices and types candle's `permute`.
fn swap_axes(
    x: &Tensor,
    rows: (usize, usize, usize),
    permute: impl Dims,
    out: impl Into<Shape>,
) -> Result<Tensor> {
    if !super::is_host_f32(x) {
        return Ok(x.permute(permute)?.contiguous()?);
    }
    let t = x.contiguous()?.reshape(rows)?;
    Ok(t.apply_op1_no_bwd(&Transpose)?.reshape(out)?)
}

/// `(B, R, C)` → `(B, C, R)` on contiguous CPU `f32` values.
struct Transpose;

impl CustomOp1 for Transpose {
    fn name(&self) -> &'static str {
        "deva-transpose"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, r, c) = l.shape().dims3()?;
        let x = super::contiguous_f32(s, l)?;
        let mut y = Vec::with_capacity(x.len());
        if r > 0 && c > 0 {
            y.spare_capacity_mut()[..x.len()]
                .par_chunks_mut(c * r)
                .zip(x.par_chunks(r * c))
                .for_each(|(image_out, image)| {
                    // Each task writes `ROWS_PER_TASK` output rows (input columns) in full,
                    // reading them input row by input row.
                    image_out
                        .par_chunks_mut(ROWS_PER_TASK * r)
                        .enumerate()
                        .for_each(|(k, out)| {
                            let (j0, rows) = (k * ROWS_PER_TASK, out.len() / r);
                            transpose_rows(image, c, j0, rows, r, out);
                        });
                });
        }
        // SAFETY: each task wrote all `r` values of each of its output rows, and the tasks'
        // rows cover every image's output.
        unsafe { y.set_len(x.len()) };
        Ok((CpuStorage::F32(y), Shape::from((b, c, r))))
    }
}

/// Columns `cols` of `image` (rows of `c` values) as the rows of `out`, one row of
/// `image.len() / c` values per column.
pub(crate) fn transpose_columns(image: &[f32], c: usize, cols: Range<usize>, out: &mut [f32]) {
    let r = image.len() / c.max(1);
    assert!(
        cols.end <= c && out.len() == cols.len() * r,
        "columns {cols:?} of rows of {c} values into {} values",
        out.len()
    );
    // SAFETY: f32 and MaybeUninit<f32> have the same layout; only initialised values are
    // written through the view.
    let out = unsafe { &mut *(out as *mut [f32] as *mut [MaybeUninit<f32>]) };
    for (k, out) in out.chunks_mut(ROWS_PER_TASK * r).enumerate() {
        let j0 = cols.start + k * ROWS_PER_TASK;
        transpose_rows(image, c, j0, out.len() / r, r, out);
    }
}

multiversion! {
    /// Columns `j0..j0 + rows` of `image` (rows of `c`) as the `rows` rows of `r` values of
    /// `out`: whole tiles of `ROWS_PER_TASK` input rows go through a small square buffer, so
    /// that each output row takes contiguous stores; the last rows one value at a time.
    fn transpose_rows(
        image: &[f32],
        c: usize,
        j0: usize,
        rows: usize,
        r: usize,
        out: &mut [MaybeUninit<f32>],
    ) {
        const T: usize = ROWS_PER_TASK;
        let whole = if rows == T { r - r % T } else { 0 };
        let mut tile = [[0f32; T]; T];
        for i0 in (0..whole).step_by(T) {
            for (t, row) in tile.iter_mut().zip(image[i0 * c..].chunks(c)) {
                t.copy_from_slice(&row[j0..j0 + T]);
            }
            for (j, dst) in out.chunks_exact_mut(r).enumerate() {
                for (ii, d) in dst[i0..i0 + T].iter_mut().enumerate() {
                    d.write(tile[ii][j]);
                }
            }
        }
        for (i, row) in image.chunks_exact(c).enumerate().skip(whole) {
            for (j, v) in row[j0..j0 + rows].iter().enumerate() {
                out[j * r + i].write(*v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn equals_candles_permute_both_ways() {
        // Channel counts below, at and past one task's rows.
        for (b, c, h, w) in [(2, 3, 9, 11), (1, 16, 8, 8), (2, 37, 13, 7)] {
            let x = Tensor::randn(0f32, 1.0, (b, c, h, w), &Device::Cpu).unwrap();
            let last = to_channels_last(&x).unwrap();
            let want = x.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap();
            assert_eq!(super::super::max_abs_diff(&last, &want), 0.0);
            let first = to_channels_first(&last).unwrap();
            assert_eq!(super::super::max_abs_diff(&first, &x), 0.0);
        }
    }

    #[test]
    fn matrices_and_column_ranges_transpose_exactly() {
        // Sides below, at and past a tile's 16.
        for (r, c) in [(1, 1), (5, 3), (16, 16), (37, 50)] {
            let x = Tensor::randn(0f32, 1.0, (r, c), &Device::Cpu).unwrap();
            let want = x.t().unwrap().contiguous().unwrap();
            assert_eq!(
                super::super::max_abs_diff(&transposed(&x).unwrap(), &want),
                0.0
            );
            let values = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for cols in [0..c, c / 3..c, c / 2..c / 2 + 1] {
                let mut out = vec![f32::NAN; cols.len() * r];
                transpose_columns(&values, c, cols.clone(), &mut out);
                assert_eq!(
                    out,
                    want[cols.start * r..cols.end * r],
                    "{r} × {c}, {cols:?}"
                );
            }
        }
    }
}
