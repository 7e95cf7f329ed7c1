//! The padded input of a convolution, copied once into phase planes per channel (one per pair
//! of row and column offsets modulo the stride that some tap reads) so that every tap of every
//! output position reads one contiguous run.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::direct::PX;
use super::Geometry;
use crate::nn::vmath::multiversion;

/// The padded input of one image split into phase planes of `rows × cols` (+ tail), followed
/// by [`PX`] zeros that the direct kernel's last tile may read. A phase is a pair of offsets
/// modulo the stride; only those that some tap reads are kept (a strided 1×1 layer reads
/// one of `stride²`).
pub(super) struct Planes {
    /// `[phase][channel][plane]`, then the tail.
    pub(super) data: Vec<f32>,
    /// Floats per plane (`rows · cols` plus the reach of the last tap).
    pub(super) plane_len: usize,
    /// Floats per plane row.
    pub(super) cols: usize,
    /// The offsets modulo the stride that some tap reads, in order.
    kept: Vec<usize>,
}

multiversion! {
    /// `dst[j] = src[s·j]`, through a ReLU with `relu`; with the widest vectors of the CPU
    /// (stride 1 is a copy, stride 2 a deinterleave).
    fn copy_strided(src: &[f32], s: usize, relu: bool, dst: &mut [MaybeUninit<f32>]) {
        let f = |v: f32| if relu { v.max(0.0) } else { v };
        match s {
            1 => {
                for (d, v) in dst.iter_mut().zip(src) {
                    d.write(f(*v));
                }
            }
            2 => {
                // Whole pairs, then the last value where the row ends inside a pair.
                let pairs = dst.len().min(src.len() / 2);
                let (body, tail) = dst.split_at_mut(pairs);
                for (d, p) in body.iter_mut().zip(src.chunks_exact(2)) {
                    d.write(f(p[0]));
                }
                for (j, d) in tail.iter_mut().enumerate() {
                    d.write(f(src[2 * (pairs + j)]));
                }
            }
            _ => {
                for (j, d) in dst.iter_mut().enumerate() {
                    d.write(f(src[s * j]));
                }
            }
        }
    }
}

/// Writes zeros into `s`.
fn zero(s: &mut [MaybeUninit<f32>]) {
    s.fill(MaybeUninit::new(0.0));
}

impl Planes {
    /// The planes of the input channels `chans` (each `h × w`), through a ReLU with `relu`.
    pub(super) fn build(
        chans: &[&[f32]],
        h: usize,
        w: usize,
        g: &Geometry,
        out_h: usize,
        relu: bool,
    ) -> Planes {
        let (s, c) = (g.stride, chans.len());
        let (hp, wp) = (h + 2 * g.pad, w + 2 * g.pad);
        let cols = wp.div_ceil(s);
        let reach = g.reach();
        let rows = hp.div_ceil(s).max(out_h + reach);
        let plane_len = rows * cols + reach;
        let kept: Vec<usize> = (0..s)
            .filter(|&r| (0..g.k).any(|t| t * g.dilation % s == r))
            .collect();
        let n = kept.len();
        let total = n * n * c * plane_len;
        let mut data = Vec::with_capacity(total + PX);
        let (planes, tail) = data.spare_capacity_mut()[..total + PX].split_at_mut(total);
        zero(tail);
        // Layout: [phase][channel][plane]; each (phase, channel) block written independently.
        planes
            .par_chunks_mut(plane_len)
            .enumerate()
            .for_each(|(i, plane)| {
                let (phase, ch) = (i / c, i % c);
                let (a, b) = (kept[phase / n], kept[phase % n]);
                let src = chans[ch];
                let (body, end) = plane.split_at_mut(rows * cols);
                zero(end);
                for (r, dst) in body.chunks_mut(cols).enumerate() {
                    let yp = s * r + a;
                    if yp < g.pad || yp - g.pad >= h {
                        zero(dst);
                        continue;
                    }
                    let row = &src[(yp - g.pad) * w..(yp - g.pad + 1) * w];
                    // Columns j of the plane read input column s·j + b − pad: those inside
                    // the row are j0..j1, the others are padding.
                    let j0 = g.pad.saturating_sub(b).div_ceil(s).min(cols);
                    let j1 = (w + g.pad).saturating_sub(b).div_ceil(s).clamp(j0, cols);
                    let (left, rest) = dst.split_at_mut(j0);
                    let (mid, right) = rest.split_at_mut(j1 - j0);
                    zero(left);
                    zero(right);
                    if !mid.is_empty() {
                        copy_strided(&row[s * j0 + b - g.pad..], s, relu, mid);
                    }
                }
            });
        // SAFETY: the loop above and `zero(tail)` wrote every one of the `total + PX` floats.
        unsafe { data.set_len(total + PX) };
        Planes {
            data,
            plane_len,
            cols,
            kept,
        }
    }

    /// Start of the run that tap (kh, kw) of channel `ch` reads.
    pub(super) fn tap(&self, g: &Geometry, c_in: usize, ch: usize, kh: usize, kw: usize) -> usize {
        let (s, kh, kw) = (g.stride, kh * g.dilation, kw * g.dilation);
        let slot = |r: usize| {
            self.kept
                .binary_search(&(r % s))
                .expect("every tap's offset is among the kept phases")
        };
        let phase = slot(kh) * self.kept.len() + slot(kw);
        (phase * c_in + ch) * self.plane_len + (kh / s) * self.cols + kw / s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::conv::Path;

    /// Only the phases that some tap reads are built, and every tap of every output position
    /// reads the padded input's value (through the ReLU where asked) from them.
    #[test]
    fn keeps_the_phases_the_taps_read() {
        let (c, h, w) = (3, 7, 9);
        let input: Vec<Vec<f32>> = (0..c)
            .map(|ch| (0..h * w).map(|i| (ch * 100 + i) as f32 - 50.0).collect())
            .collect();
        let chans: Vec<&[f32]> = input.iter().map(Vec::as_slice).collect();
        // (k, stride, pad, dilation, phases kept)
        for (k, s, pad, d, phases) in [
            (1, 2, 0, 1, 1),
            (3, 2, 1, 1, 4),
            (3, 2, 2, 2, 1),
            (3, 1, 1, 1, 1),
            (2, 3, 0, 1, 4),
            (7, 2, 3, 1, 4),
        ] {
            let g = Geometry {
                c_in: c,
                c_out: 2,
                k,
                stride: s,
                pad,
                dilation: d,
                path: Path::Shifted,
            };
            let (out_h, out_w) = (g.out_len(h), g.out_len(w));
            for relu in [false, true] {
                let p = Planes::build(&chans, h, w, &g, out_h, relu);
                let case = (k, s, pad, d, relu);
                assert_eq!(p.data.len(), phases * c * p.plane_len + PX, "{case:?}");
                for (ch, values) in input.iter().enumerate() {
                    for (kh, kw) in (0..k).flat_map(|a| (0..k).map(move |b| (a, b))) {
                        let at = p.tap(&g, c, ch, kh, kw);
                        for (oy, ox) in (0..out_h).flat_map(|y| (0..out_w).map(move |x| (y, x))) {
                            // The padded input's position that this tap reads.
                            let (yp, xp) = (oy * s + kh * d, ox * s + kw * d);
                            let inside =
                                (pad..pad + h).contains(&yp) && (pad..pad + w).contains(&xp);
                            let v = if inside {
                                values[(yp - pad) * w + xp - pad]
                            } else {
                                0.0
                            };
                            let want = if relu { v.max(0.0) } else { v };
                            assert_eq!(
                                p.data[at + oy * p.cols + ox],
                                want,
                                "{case:?} channel {ch} tap ({kh}, {kw}) output ({oy}, {ox})"
                            );
                        }
                    }
                }
            }
        }
    }
}
