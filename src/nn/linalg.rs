//! Dense matrix products on the CPU through the `gemm` crate.

use std::mem::MaybeUninit;

/// A read-only strided matrix view: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a> {
    /// The elements.
    pub data: &'a [f32],
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major matrix with rows of `cols` elements.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        MatRef {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of a row-major matrix with rows of `cols` elements.
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        MatRef {
            data,
            rs: 1,
            cs: cols,
        }
    }

    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// What a product does with the old values of its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dst {
    /// `dst += lhs · rhs`.
    Add,
    /// `dst = lhs · rhs`: the old values are not read (no zeroing pass before; the same
    /// values as [`Dst::Add`] into zeros).
    Set,
}

/// `dst[m × n] (+)= lhs[m × k] · rhs[k × n]` as `mode` says, with `dst` row-major (row stride
/// `dst_rs`). `parallel` lets gemm use rayon's threads.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    mode: Dst,
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    lhs: MatRef,
    rhs: MatRef,
    parallel: bool,
) {
    assert!(m == 0 || n == 0 || (m - 1) * dst_rs + n <= dst.len());
    let parallelism = match rayon::current_num_threads() {
        t if t > 1 && parallel => gemm::Parallelism::Rayon(t),
        _ => gemm::Parallelism::None,
    };
    // SAFETY: `dst` holds the `m` rows of `n`, `dst_rs` apart (asserted).
    unsafe {
        product(
            (m, n, k),
            (dst.as_mut_ptr(), dst_rs),
            mode == Dst::Add,
            lhs,
            rhs,
            parallelism,
        )
    }
}

/// `dst = lhs[m × k] · rhs[k × n]` into `dst` (`m` rows of `n`, not yet initialised), single
/// threaded; returns `dst`, every element written.
pub fn matmul_into<'a>(
    m: usize,
    n: usize,
    k: usize,
    dst: &'a mut [MaybeUninit<f32>],
    lhs: MatRef,
    rhs: MatRef,
) -> &'a mut [f32] {
    assert_eq!(dst.len(), m * n, "{m} rows of {n} values");
    if k == 0 {
        dst.fill(MaybeUninit::new(0.0));
    } else {
        let ptr = dst.as_mut_ptr().cast::<f32>();
        // SAFETY: `dst` holds the `m` rows of `n` (asserted); gemm does not read it
        // (`read_dst` false) and writes each of its `m × n` elements.
        unsafe {
            product(
                (m, n, k),
                (ptr, n),
                false,
                lhs,
                rhs,
                gemm::Parallelism::None,
            )
        }
    }
    // SAFETY: every element was written above.
    unsafe { &mut *(dst as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// `dst (+)= lhs · rhs` through gemm, `dst` row-major at `dst.0` with row stride `dst.1`.
///
/// # Safety
/// `dst.0` must be valid for writes (and reads with `read_dst`) of the `m` rows of `n`.
unsafe fn product(
    (m, n, k): (usize, usize, usize),
    dst: (*mut f32, usize),
    read_dst: bool,
    lhs: MatRef,
    rhs: MatRef,
    parallelism: gemm::Parallelism,
) {
    assert!(
        lhs.fits(m, k) && rhs.fits(k, n),
        "matrix operand out of bounds"
    );
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the operands fit (asserted), the destination as the caller promises.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.0,
            1,
            dst.1 as isize,
            read_dst,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_product_matches_the_definition() {
        // lhs 2x3 row-major, rhs given as the transpose of a 2x3 row-major matrix (3x2).
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [1.0, 0.0, -1.0, 2.0, 1.0, 0.5];
        let mut d = vec![10.0; 4];
        matmul(
            Dst::Add,
            2,
            2,
            3,
            &mut d,
            2,
            MatRef::rows(&a, 3),
            MatRef::transposed(&b, 3),
            false,
        );
        // Row 0: (1,2,3)·(1,0,-1) = -2, (1,2,3)·(2,1,0.5) = 5.5; row 1: -2, 16.
        assert_eq!(d, vec![8.0, 15.5, 8.0, 26.0]);
        // The same product written over the old values, into rows 3 apart whose gaps stay.
        let mut e = vec![10.0; 5];
        matmul(
            Dst::Set,
            2,
            2,
            3,
            &mut e,
            3,
            MatRef::rows(&a, 3),
            MatRef::transposed(&b, 3),
            false,
        );
        assert_eq!(e, vec![-2.0, 5.5, 10.0, -2.0, 16.0]);
    }

    #[test]
    fn product_into_uninitialised_rows_matches_the_definition() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [1.0, 0.0, -1.0, 2.0, 1.0, 0.5];
        let mut d = [MaybeUninit::new(f32::NAN); 4];
        let lhs = MatRef::rows(&a, 3);
        let d = matmul_into(2, 2, 3, &mut d, lhs, MatRef::transposed(&b, 3));
        assert_eq!(d, [-2.0, 5.5, -2.0, 16.0]);
        // An empty reduction is a product of zeros.
        let mut z = [MaybeUninit::new(f32::NAN); 6];
        let empty = MatRef::rows(&[], 0);
        assert_eq!(matmul_into(2, 3, 0, &mut z, empty, empty), [0.0; 6]);
    }
}
