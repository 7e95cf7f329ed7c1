//! The CPU forward pass of [`super::Conv2d`]: blocks of whole output rows, one rayon task
//! each, whose accumulator stays in a core's cache through all the taps and is then activated
//! (with the residual, if any) and written out by the same task. The taps are computed by the
//! direct kernel ([`super::direct`]), by matrix products through `gemm`, or by Winograd's
//! transforms and matrix products ([`super::winograd`]), as the layer's [`Path`] says.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::direct::{self, CO, PX};
use super::planes::Planes;
use super::winograd;
use super::{Geometry, Path};
use crate::nn::act::Activation;
use crate::nn::linalg::{matmul, Dst, MatRef};
use crate::nn::vmath::multiversion;

/// Accumulator floats per block of output rows (`c_out · len`) for the matrix-product paths:
/// 128 KiB, so that a block's accumulator and inputs stay in a core's cache across the taps.
const BLOCK_ACC_FLOATS: usize = 1 << 15;
/// The same for the direct kernel, which keeps a tile in registers and can afford more.
const DIRECT_ACC_FLOATS: usize = 1 << 16;
/// Output channels per task on the [`Path::WinogradLean`] path. A task's scratch holds its
/// channels' transformed filters and products (`16 · channels · (c_in + tiles)` floats): at 64
/// channels 5.9 MB for DEVA's sensory transform (1024 inputs, 405 tiles), at 128 twice that,
/// with no gain in time (DEVA step, 2 threads, alternated 5 times: 1 object 852 against 860
/// ms, 5 objects 2725 against 2770 ms; peak memory 30 MB less); at 32 the products get slower.
const LEAN_CHANNELS: usize = 64;
/// Input floats per block on the [`Path::Shifted`] path (`c_in · len`), which every tap reads
/// again: 1 MiB, in a core's cache across the taps (without this bound the blocks of layers
/// of few output channels, such as DEVA's 256 → 1 prediction at stride 4, held 13 MB).
const SHIFTED_INPUT_FLOATS: usize = 1 << 18;
/// Fewest output positions per block (keeps wide layers' products efficient).
const MIN_BLOCK: usize = 256;
/// Most weight floats one pass of the direct kernel reads (input channels are split into
/// chunks below it, so that the chunk's weights stay in a core's cache).
const DIRECT_WEIGHT_FLOATS: usize = 1 << 16;

/// The CPU convolution of one geometry with a fused activation.
pub(super) struct CpuConv {
    /// The layer's geometry and path.
    pub(super) g: Geometry,
    /// The activation applied as the output is written.
    pub(super) act: Activation,
    /// Whether a residual is added before the activation (else after it).
    pub(super) before: bool,
    /// Whether the input goes through a ReLU first (applied as the planes are copied).
    pub(super) relu_input: bool,
}

thread_local! {
    /// Each thread's accumulator and column or Winograd buffer, kept from block to block and
    /// layer to layer (no allocation and no page faults per block). Nothing in a block gives
    /// its thread to another rayon task while the buffers are borrowed: its products are
    /// single-threaded.
    static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = const {
        std::cell::RefCell::new((Vec::new(), Vec::new()))
    };
}

/// The output, written by the row blocks in parallel (each block its own rows).
struct SharedOut(*mut MaybeUninit<f32>);

// SAFETY: the blocks write disjoint ranges of the output (see `CpuConv::image`).
unsafe impl Sync for SharedOut {}

impl SharedOut {
    fn get(&self) -> *mut MaybeUninit<f32> {
        self.0
    }
}

multiversion! {
    /// `dst[i] = act(src[i]) + res[i]` (or `act(src[i] + res[i])` with `before`, or
    /// `act(src[i])` without a residual), the activation chosen outside the loop; with the
    /// widest vectors of the CPU.
    fn write_out(
        act: Activation,
        src: &[f32],
        res: Option<&[f32]>,
        before: bool,
        dst: &mut [MaybeUninit<f32>],
    ) {
        write_out_loops(act, src, res, before, dst)
    }
}

multiversion! {
    /// `dst[i] = v` with the widest vectors of the CPU.
    fn fill(dst: &mut [f32], v: f32) {
        dst.fill(v)
    }
}

/// The loops of [`write_out`].
#[inline(always)]
fn write_out_loops(
    act: Activation,
    src: &[f32],
    res: Option<&[f32]>,
    before: bool,
    dst: &mut [MaybeUninit<f32>],
) {
    #[inline(always)]
    fn each(
        src: &[f32],
        res: Option<&[f32]>,
        before: bool,
        dst: &mut [MaybeUninit<f32>],
        f: impl Fn(f32) -> f32,
    ) {
        match res {
            None => dst.iter_mut().zip(src).for_each(|(d, s)| {
                d.write(f(*s));
            }),
            Some(r) if before => dst.iter_mut().zip(src).zip(r).for_each(|((d, s), r)| {
                d.write(f(*s + r));
            }),
            Some(r) => dst.iter_mut().zip(src).zip(r).for_each(|((d, s), r)| {
                d.write(f(*s) + r);
            }),
        }
    }
    match act {
        Activation::Identity => each(src, res, before, dst, |v| v),
        Activation::Relu => each(src, res, before, dst, |v| v.max(0.0)),
        Activation::GeluErf => {
            // The vectorised GELU over the written values, the residual added around it.
            assert_eq!(
                src.len(),
                dst.len(),
                "one output value per accumulated value"
            );
            each(src, res.filter(|_| before), true, dst, |v| v);
            // SAFETY: `each` wrote every element of `dst` (as long as `src`, asserted).
            let vals = unsafe { &mut *(dst as *mut [MaybeUninit<f32>] as *mut [f32]) };
            Activation::GeluErf.apply_slice(vals);
            if let Some(r) = res.filter(|_| !before) {
                vals.iter_mut().zip(r).for_each(|(v, r)| *v += r);
            }
        }
    }
}

impl CpuConv {
    /// The output `[batch, c_out, out_h, out_w]` of the input given as `parts` (values and
    /// channel count of each, concatenated along the channels) of batch × h × w; `res` holds
    /// the residual of every image, or of one image added to each.
    pub(super) fn run(
        &self,
        parts: &[(&[f32], usize)],
        (b, h, w): (usize, usize, usize),
        weight: &[f32],
        bias: &[f32],
        res: Option<&[f32]>,
    ) -> Vec<f32> {
        let g = &self.g;
        let per_image = g.c_out * g.out_len(h) * g.out_len(w);
        let mut out = Vec::with_capacity(b * per_image);
        for (i, dst) in out.spare_capacity_mut()[..b * per_image]
            .chunks_mut(per_image.max(1))
            .enumerate()
        {
            let image: Vec<(&[f32], usize)> = parts
                .iter()
                .map(|&(x, c)| (&x[i * c * h * w..(i + 1) * c * h * w], c))
                .collect();
            // A residual of one image is added to every image.
            let at = if res.is_some_and(|r| r.len() == per_image) {
                0
            } else {
                i
            };
            let res = res.map(|r| &r[at * per_image..(at + 1) * per_image]);
            self.image(&image, h, w, weight, bias, res, dst);
        }
        // SAFETY: `image` writes every element of its output (each output row of each
        // channel is written by the block that owns the row).
        unsafe { out.set_len(b * per_image) };
        out
    }

    /// One image: `parts` (`[c_i, h, w]` each) into `out [c_out, out_h, out_w]`, every element
    /// written.
    #[allow(clippy::too_many_arguments)]
    fn image(
        &self,
        parts: &[(&[f32], usize)],
        h: usize,
        w: usize,
        weight: &[f32],
        bias: &[f32],
        res: Option<&[f32]>,
        out: &mut [MaybeUninit<f32>],
    ) {
        let g = &self.g;
        let (out_h, out_w) = (g.out_len(h), g.out_len(w));
        let kk = g.k * g.k;
        let k_len = g.c_in * kk;
        let chans: Vec<&[f32]> = parts
            .iter()
            .flat_map(|&(x, c)| x.chunks(h * w).take(c))
            .collect();
        if g.path == Path::WinogradLean {
            return self.image_by_channels(&chans, h, w, weight, bias, res, out);
        }
        let planes = match g.path {
            Path::Pointwise | Path::Winograd(_) | Path::WinogradLean => None,
            _ => Some(Planes::build(&chans, h, w, g, out_h, self.relu_input)),
        };
        let cols = planes.as_ref().map_or(w, |p| p.cols);
        let c_acc = g.acc_channels();
        let target = match g.path {
            Path::Direct => DIRECT_ACC_FLOATS,
            _ => BLOCK_ACC_FLOATS,
        };
        // Blocks of whole output rows, one rayon task each: the block's accumulator
        // `[c_acc, len]` (and, on the column-buffer path, its `[k_len, len]` columns) stays in
        // cache through all the taps and the output pass.
        // At least one block per thread where the rows allow (narrow layers of one block
        // would run on one core).
        let threads = rayon::current_num_threads();
        // The shifted views' taps each read the block's input again: bounded too.
        let input_rows = match g.path {
            Path::Shifted => SHIFTED_INPUT_FLOATS / (g.c_in * cols).max(1),
            _ => usize::MAX,
        };
        let rows = match g.path {
            Path::Winograd(tile) => {
                winograd::block_rows(tile, out_h, out_w, g.c_in + g.c_out, threads)
            }
            _ => (target / (c_acc * cols).max(1))
                .min(input_rows)
                .max(MIN_BLOCK.div_ceil(cols))
                .min(out_h.div_ceil(threads))
                .clamp(1, out_h.max(1)),
        };
        let taps: Vec<usize> = match &planes {
            Some(p) => (0..kk)
                .map(|t| p.tap(g, g.c_in, 0, t / g.k, t % g.k))
                .collect(),
            None => Vec::new(),
        };
        if g.path == Path::Direct {
            assert_eq!(weight.len(), c_acc * k_len, "direct weight layout");
        }
        let shared = SharedOut(out.as_mut_ptr());
        let out_len = out.len();
        let act = self.act;
        (0..out_h.div_ceil(rows)).into_par_iter().for_each(|blk| {
            SCRATCH.with_borrow_mut(|(acc, buf)| {
                let (y0, y1) = (blk * rows, ((blk + 1) * rows).min(out_h));
                let (start, len) = (y0 * cols, (y1 - y0) * cols);
                let stride = match g.path {
                    Path::Direct => len.div_ceil(PX) * PX,
                    _ => len,
                };
                // The bias in every row (zeros in the rows that pad the direct kernel's tiles).
                acc.resize(c_acc * stride, 0.0);
                for (co, row) in acc.chunks_mut(stride).enumerate() {
                    fill(row, bias.get(co).copied().unwrap_or(0.0));
                }
                match (g.path, &planes) {
                    (Path::Pointwise, _) => {
                        let mut c0 = 0;
                        for &(x, c) in parts {
                            let lhs = MatRef {
                                data: &weight[c0..],
                                rs: g.c_in,
                                cs: 1,
                            };
                            let rhs = MatRef {
                                data: &x[start..],
                                rs: h * w,
                                cs: 1,
                            };
                            matmul(Dst::Add, g.c_out, len, c, acc, stride, lhs, rhs, false);
                            c0 += c;
                        }
                    }
                    (Path::Winograd(tile), _) => {
                        let x = winograd::Input {
                            chans: &chans,
                            h,
                            w,
                            relu: self.relu_input,
                        };
                        let f = winograd::Filters {
                            tile,
                            u: weight,
                            c_out: g.c_out,
                        };
                        winograd::block(&x, &f, (y0, y1), acc, stride, buf)
                    }
                    (Path::Direct, Some(p)) => {
                        direct_block(g, p, &taps, start, weight, acc, stride)
                    }
                    (Path::Columns, Some(p)) => {
                        buf.resize(k_len * len, 0.0);
                        for (r, dst) in buf.chunks_mut(len).enumerate() {
                            let (ch, kh, kw) = (r / kk, (r % kk) / g.k, r % g.k);
                            let at = p.tap(g, g.c_in, ch, kh, kw) + start;
                            dst.copy_from_slice(&p.data[at..at + len]);
                        }
                        let (lhs, rhs) = (MatRef::rows(weight, k_len), MatRef::rows(buf, len));
                        matmul(Dst::Add, g.c_out, len, k_len, acc, len, lhs, rhs, false);
                    }
                    (_, Some(p)) => {
                        for (t, &at) in taps.iter().enumerate() {
                            let lhs = MatRef::rows(&weight[t * g.c_out * g.c_in..], g.c_in);
                            let rhs = MatRef::rows(&p.data[at + start..], p.plane_len);
                            matmul(Dst::Add, g.c_out, len, g.c_in, acc, len, lhs, rhs, false);
                        }
                    }
                    (_, None) => {
                        unreachable!("only the pointwise and Winograd paths have no planes")
                    }
                }
                // The block's output rows, dropping the columns past the output width.
                for co in 0..g.c_out {
                    for y in y0..y1 {
                        let src = &acc[co * stride + (y - y0) * cols..][..out_w];
                        let at = (co * out_h + y) * out_w;
                        assert!(at + out_w <= out_len);
                        // SAFETY: in bounds (asserted); row `y` of every channel belongs
                        // to this block alone, so no other task touches these elements.
                        let dst =
                            unsafe { std::slice::from_raw_parts_mut(shared.get().add(at), out_w) };
                        let res = res.map(|r| &r[at..at + out_w]);
                        write_out(act, src, res, self.before, dst);
                    }
                }
            })
        });
    }
}

impl CpuConv {
    /// [`image`](Self::image) on the [`Path::WinogradLean`] path: the input's tiles
    /// transformed once, then blocks of [`LEAN_CHANNELS`] output channels over every row,
    /// one rayon task each (the task transforms its channels' filters).
    #[allow(clippy::too_many_arguments)]
    fn image_by_channels(
        &self,
        chans: &[&[f32]],
        h: usize,
        w: usize,
        weight: &[f32],
        bias: &[f32],
        res: Option<&[f32]>,
        out: &mut [MaybeUninit<f32>],
    ) {
        let c_out = self.g.c_out;
        let x = winograd::Input {
            chans,
            h,
            w,
            relu: self.relu_input,
        };
        let x = winograd::transform_image(&x);
        let plane = h * w;
        assert_eq!(
            out.len(),
            c_out * plane,
            "one output per channel and position"
        );
        let shared = SharedOut(out.as_mut_ptr());
        (0..c_out.div_ceil(LEAN_CHANNELS))
            .into_par_iter()
            .for_each(|blk| {
                SCRATCH.with_borrow_mut(|(acc, buf)| {
                    let (co0, co1) = (blk * LEAN_CHANNELS, ((blk + 1) * LEAN_CHANNELS).min(c_out));
                    acc.resize((co1 - co0) * plane, 0.0);
                    for (row, &b) in acc.chunks_mut(plane).zip(&bias[co0..co1]) {
                        fill(row, b);
                    }
                    winograd::channel_block(&x, weight, (co0, co1), acc, plane, buf);
                    let (at, len) = (co0 * plane, (co1 - co0) * plane);
                    // SAFETY: in bounds (asserted above); the channels co0..co1 belong to
                    // this task alone, so no other task touches these elements.
                    let dst = unsafe { std::slice::from_raw_parts_mut(shared.get().add(at), len) };
                    let res = res.map(|r| &r[at..at + len]);
                    write_out(self.act, &acc[..len], res, self.before, dst);
                })
            });
    }
}

/// One block of the direct path: `acc [c_acc, stride]` (bias already in it) += the
/// convolution of the output positions `start..start + stride` of the padded output.
fn direct_block(
    g: &Geometry,
    p: &Planes,
    taps: &[usize],
    start: usize,
    weight: &[f32],
    acc: &mut [f32],
    stride: usize,
) {
    let kk = taps.len();
    let c_acc = g.acc_channels();
    let chunk = (DIRECT_WEIGHT_FLOATS / (c_acc * kk)).max(1);
    // Every read of the kernel stays below this (see `Planes::build`'s tail).
    let last_read =
        (g.c_in - 1) * p.plane_len + taps.iter().max().copied().unwrap_or(0) + start + stride;
    assert!(last_read <= p.data.len() && acc.len() == c_acc * stride && stride.is_multiple_of(PX));
    let tile = direct::tile_fn().expect("the direct path is only chosen where the CPU runs it");
    for c0 in (0..g.c_in).step_by(chunk) {
        let kc = chunk.min(g.c_in - c0);
        for t in (0..stride).step_by(PX) {
            for grp in 0..c_acc / CO {
                // SAFETY: the CPU runs `tile` (`direct::tile_fn`); the reads
                // of `p.data` stay below `last_read` (asserted), the weights of the chunk are
                // inside the `[c_acc / CO, c_in, kk, CO]` layout, and the tile's accumulator
                // rows `grp·CO..grp·CO + CO`, columns `t..t + PX` are inside `acc`.
                unsafe {
                    tile(
                        p.data.as_ptr().add(start + t + c0 * p.plane_len),
                        p.plane_len,
                        taps,
                        kc,
                        weight.as_ptr().add((grp * g.c_in + c0) * kk * CO),
                        acc.as_mut_ptr().add(grp * CO * stride + t),
                        stride,
                    )
                }
            }
        }
    }
}
