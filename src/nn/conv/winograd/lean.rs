//! Winograd's F(2×2, 3×3) with no transformed filters kept (`Path::WinogradLean`): the whole
//! image's input tiles are transformed once per call, then each block of output channels
//! transforms its own filters from the checkpoint's and multiplies them over every tile. For
//! layers of many weights and few pixels.

use rayon::prelude::*;

use super::transforms::F2;
use super::{transform_back, transform_filters, transform_rows, Input, Tiles};
use crate::nn::linalg::{matmul, Dst, MatRef};
use crate::nn::vmath::multiversion;

/// Output tile side: F(2×2, 3×3).
const M: usize = 2;
/// Transformed tile side.
const T: usize = M + 2;

/// The transformed input of a whole image, for [`channel_block`].
pub(in crate::nn::conv) struct Transformed {
    /// `[c_in, t², tiles]`.
    v: Vec<f32>,
    /// Input channels.
    c_in: usize,
    /// Rows (of the input and the output).
    h: usize,
    /// Columns.
    w: usize,
}

/// The transformed input tiles of every output row of `x`, `[c_in, t², tiles]`, for
/// [`channel_block`], groups of channels in parallel.
pub(in crate::nn::conv) fn transform_image(x: &Input) -> Transformed {
    let per_chan = T * T * Tiles::<M>::of(x.w, (0, x.h)).count();
    let mut v = vec![0f32; per_chan * x.chans.len()];
    let group = x
        .chans
        .len()
        .div_ceil(4 * rayon::current_num_threads())
        .max(1);
    v.par_chunks_mut(per_chan * group)
        .zip(x.chans.par_chunks(group))
        .for_each(|(v, chans)| transform_channels(&Input { chans, ..*x }, v));
    Transformed {
        v,
        c_in: x.chans.len(),
        h: x.h,
        w: x.w,
    }
}

multiversion! {
/// The transformed input tiles of every output row of `x` into `v [c_in, t², tiles]`. With
/// the widest vectors of the CPU.
fn transform_channels(x: &Input, v: &mut [f32]) {
    let tiles = Tiles::<M>::of(x.w, (0, x.h));
    let n = tiles.count();
    let mut rows = vec![0f32; T * tiles.row_len::<T>()];
    transform_rows::<M, T, F2>(x, &tiles, v, (n, T * T * n), &mut rows);
}
}

multiversion! {
/// Adds the convolution of the output channels `co0..co1` (every row) to `acc [co1 − co0,
/// stride]` (row `y` of a channel at `y · w`), from the image's transformed input `x` and the
/// filters `weight [c_out, c_in, 3, 3]` as the checkpoint holds them, which are transformed
/// here for these channels only; `buf` is scratch. With the widest vectors of the CPU.
pub(in crate::nn::conv) fn channel_block(
    x: &Transformed,
    weight: &[f32],
    channels: (usize, usize),
    acc: &mut [f32],
    stride: usize,
    buf: &mut Vec<f32>,
) {
    let (co0, co1) = channels;
    let (e_len, c_in, c) = (T * T, x.c_in, co1 - co0);
    let tiles = Tiles::<M>::of(x.w, (0, x.h));
    let n = tiles.count();
    buf.resize(e_len * c * (c_in + n), 0.0);
    let (u, m) = buf.split_at_mut(e_len * c * c_in);
    // The channels' transformed filters `[T², c, c_in]`, every value written.
    for co in 0..c {
        let filters = &weight[9 * (co0 + co) * c_in..][..9 * c_in];
        transform_filters::<M, T, F2>(filters, &mut u[co * c_in..], c * c_in);
    }
    for e in 0..e_len {
        let lhs = MatRef::rows(&u[e * c * c_in..(e + 1) * c * c_in], c_in);
        // Rows of the channels' value e, `T² · n` apart.
        let rhs = MatRef {
            data: &x.v[e * n..],
            rs: e_len * n,
            cs: 1,
        };
        matmul(
            Dst::Set,
            c,
            n,
            c_in,
            &mut m[e * c * n..(e + 1) * c * n],
            n,
            lhs,
            rhs,
            false,
        );
    }
    transform_back::<M, T, F2>(m, (c * n, c), &tiles, acc, stride);
}
}
