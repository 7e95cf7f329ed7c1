//! The transforms of Winograd's F(2×2, 3×3) and F(4×4, 3×3) (Lavin & Gray, 2016):
//! `U = G g Gᵀ` of the filters (in f64, rounded once), `V = Bᵀ d B` of the input tiles and
//! `Y = Aᵀ (U ⊙ V) A` of the products, the last two on [`LANES`] neighbouring tiles at once.

use std::ops::{Add, Div, Mul, Neg, Sub};

/// Tiles (or filters) transformed together (one vector register of f32 lanes).
pub(super) const LANES: usize = 8;

/// One value for each of [`LANES`] neighbouring tiles or filters: the
/// element-wise operations of the transforms compile to single vector instructions.
#[derive(Debug, Clone, Copy)]
pub(super) struct Vector<E>(pub(super) [E; LANES]);

/// A lane of f32 values (input tiles and products).
pub(super) type Lanes = Vector<f32>;
/// A lane of f64 values (filters).
pub(super) type Wide = Vector<f64>;

impl<E: Copy> Vector<E> {
    #[inline(always)]
    fn zip(self, other: Self, f: impl Fn(E, E) -> E) -> Self {
        let mut out = self;
        for (o, b) in out.0.iter_mut().zip(other.0) {
            *o = f(*o, b);
        }
        out
    }

    #[inline(always)]
    fn map(self, f: impl Fn(E) -> E) -> Self {
        let mut out = self;
        for v in out.0.iter_mut() {
            *v = f(*v);
        }
        out
    }
}

/// The arithmetic of the input and output transforms: lanes of f32 values, of any width.
pub(super) trait Floats:
    Copy + Add<Output = Self> + Sub<Output = Self> + Mul<f32, Output = Self>
{
    /// Zero in every lane.
    const ZERO: Self;
}

impl Floats for Vector<f32> {
    const ZERO: Self = Vector([0.0; LANES]);
}

impl<E: Copy + Add<Output = E>> Add for Vector<E> {
    type Output = Self;
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        self.zip(other, |a, b| a + b)
    }
}

impl<E: Copy + Sub<Output = E>> Sub for Vector<E> {
    type Output = Self;
    #[inline(always)]
    fn sub(self, other: Self) -> Self {
        self.zip(other, |a, b| a - b)
    }
}

impl<E: Copy + Neg<Output = E>> Neg for Vector<E> {
    type Output = Self;
    #[inline(always)]
    fn neg(self) -> Self {
        self.map(|a| -a)
    }
}

impl<E: Copy + Mul<Output = E>> Mul<E> for Vector<E> {
    type Output = Self;
    #[inline(always)]
    fn mul(self, k: E) -> Self {
        self.map(|a| a * k)
    }
}

impl<E: Copy + Div<Output = E>> Div<E> for Vector<E> {
    type Output = Self;
    #[inline(always)]
    fn div(self, k: E) -> Self {
        self.map(|a| a / k)
    }
}

/// The arithmetic of the filter transform: f64, one value or a [`Wide`] lane of them, so
/// that the filters transformed at load and on each call are the same.
pub(super) trait Real:
    Copy
    + Add<Output = Self>
    + Sub<Output = Self>
    + Neg<Output = Self>
    + Mul<f64, Output = Self>
    + Div<f64, Output = Self>
{
    /// Zero.
    const ZERO: Self;
}

impl Real for f64 {
    const ZERO: f64 = 0.0;
}

impl Real for Wide {
    const ZERO: Wide = Vector([0.0; LANES]);
}

/// The transforms of one F(M×M, 3×3), T = M + 2; `Bᵀ` and `Aᵀ` apply to LANES tiles at
/// once.
pub(super) trait Transforms<const M: usize, const T: usize> {
    /// `G x` for a column of 3 (in f64: one value, or a lane of them).
    fn g<V: Real>(x: [V; 3]) -> [V; T];
    /// `Bᵀ x` for a column of T.
    fn bt<V: Floats>(x: [V; T]) -> [V; T];
    /// `Aᵀ x` for a column of T.
    fn at<V: Floats>(x: [V; T]) -> [V; M];
}

/// F(2×2, 3×3): `G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]`,
/// `Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]`, `Aᵀ = [1 1 1 0; 0 1 −1 −1]`.
pub(super) struct F2;

impl Transforms<2, 4> for F2 {
    #[inline(always)]
    fn g<V: Real>(x: [V; 3]) -> [V; 4] {
        [
            x[0],
            (x[0] + x[1] + x[2]) * 0.5,
            (x[0] - x[1] + x[2]) * 0.5,
            x[2],
        ]
    }

    #[inline(always)]
    fn bt<V: Floats>(x: [V; 4]) -> [V; 4] {
        [x[0] - x[2], x[1] + x[2], x[2] - x[1], x[1] - x[3]]
    }

    #[inline(always)]
    fn at<V: Floats>(x: [V; 4]) -> [V; 2] {
        [x[0] + x[1] + x[2], x[1] - x[2] - x[3]]
    }
}

/// F(4×4, 3×3) with the points 0, ±1, ±2 and ∞:
/// `G = [¼ 0 0; −⅙ −⅙ −⅙; −⅙ ⅙ −⅙; 1⁄24 1⁄12 ⅙; 1⁄24 −1⁄12 ⅙; 0 0 1]`,
/// `Bᵀ = [4 0 −5 0 1 0; 0 −4 −4 1 1 0; 0 4 −4 −1 1 0; 0 −2 −1 2 1 0; 0 2 −1 −2 1 0;
/// 0 4 0 −5 0 1]`, `Aᵀ = [1 1 1 1 1 0; 0 1 −1 2 −2 0; 0 1 1 4 4 0; 0 1 −1 8 −8 1]`.
pub(super) struct F4;

impl Transforms<4, 6> for F4 {
    #[inline(always)]
    fn g<V: Real>(x: [V; 3]) -> [V; 6] {
        let (even, odd) = (x[0] + x[2], x[1]);
        [
            x[0] / 4.0,
            -(even + odd) / 6.0,
            -(even - odd) / 6.0,
            x[0] / 24.0 + x[1] / 12.0 + x[2] / 6.0,
            x[0] / 24.0 - x[1] / 12.0 + x[2] / 6.0,
            x[2],
        ]
    }

    #[inline(always)]
    fn bt<V: Floats>(x: [V; 6]) -> [V; 6] {
        let (s12, d12, d13) = (x[1] + x[2], x[1] - x[2], x[1] - x[3]);
        let e42 = x[4] - x[2];
        [
            x[0] * 4.0 - x[2] * 5.0 + x[4],
            x[3] + x[4] - s12 * 4.0,
            x[4] - x[3] + d12 * 4.0,
            e42 - d13 * 2.0,
            e42 + d13 * 2.0,
            x[1] * 4.0 - x[3] * 5.0 + x[5],
        ]
    }

    #[inline(always)]
    fn at<V: Floats>(x: [V; 6]) -> [V; 4] {
        let (s12, d12, s34, d34) = (x[1] + x[2], x[1] - x[2], x[3] + x[4], x[3] - x[4]);
        [
            x[0] + s12 + s34,
            d12 + d34 * 2.0,
            s12 + s34 * 4.0,
            d12 + d34 * 8.0 + x[5],
        ]
    }
}

/// `G g Gᵀ` of one 3×3 filter `g` (row-major) in f64, or of a lane of filters: T × T values.
#[inline(always)]
pub(super) fn transform_filter<V: Real, const M: usize, const T: usize, F: Transforms<M, T>>(
    g: [V; 9],
) -> [[V; T]; T] {
    // G g: T rows of 3, then (G g) Gᵀ: T × T (plain loops: `std::array::from_fn`'s closures
    // are not always inlined into the vectorised bodies that call this).
    let mut cols = [[V::ZERO; T]; 3];
    for (c, col) in cols.iter_mut().enumerate() {
        *col = F::g([g[c], g[3 + c], g[6 + c]]);
    }
    let mut u = [[V::ZERO; T]; T];
    for (r, row) in u.iter_mut().enumerate() {
        *row = F::g([cols[0][r], cols[1][r], cols[2][r]]);
    }
    u
}

/// `Bᵀ d B` of a lane of tiles: the T × T transformed values.
#[inline(always)]
pub(super) fn transform_input<V: Floats, const M: usize, const T: usize, F: Transforms<M, T>>(
    d: &[[V; T]; T],
) -> [[V; T]; T] {
    // Bᵀ d on the columns, then B on the rows.
    let mut bd = [[V::ZERO; T]; T];
    for c in 0..T {
        let mut col = [V::ZERO; T];
        for (r, v) in col.iter_mut().enumerate() {
            *v = d[r][c];
        }
        for (r, v) in F::bt(col).into_iter().enumerate() {
            bd[r][c] = v;
        }
    }
    let mut out = [[V::ZERO; T]; T];
    for (o, row) in out.iter_mut().zip(bd) {
        *o = F::bt(row);
    }
    out
}

/// `Aᵀ P A` of a lane of tiles of products: the M × M outputs.
#[inline(always)]
pub(super) fn transform_output<V: Floats, const M: usize, const T: usize, F: Transforms<M, T>>(
    p: &[[V; T]; T],
) -> [[V; M]; M] {
    // Aᵀ P on the columns, then A on the rows.
    let mut ap = [[V::ZERO; T]; M];
    for c in 0..T {
        let mut col = [V::ZERO; T];
        for (r, v) in col.iter_mut().enumerate() {
            *v = p[r][c];
        }
        for (i, v) in F::at(col).into_iter().enumerate() {
            ap[i][c] = v;
        }
    }
    let mut out = [[V::ZERO; M]; M];
    for (o, row) in out.iter_mut().zip(ap) {
        *o = F::at(row);
    }
    out
}
