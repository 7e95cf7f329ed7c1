//! The padded input of a convolution, copied once into `stride²` phase planes per channel so
//! that every tap of every output position reads one contiguous run.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::direct::PX;
use super::Geometry;

/// The padded input of one image split into `stride²` phase planes of `rows × cols` (+ tail),
/// followed by [`PX`] zeros that the direct kernel's last tile may read.
pub(super) struct Planes {
    /// `[phase][channel][plane]`, then the tail.
    pub(super) data: Vec<f32>,
    /// Floats per plane (`rows · cols` plus the reach of the last tap).
    pub(super) plane_len: usize,
    /// Floats per plane row.
    pub(super) cols: usize,
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
        let total = s * s * c * plane_len;
        let mut data = Vec::with_capacity(total + PX);
        let (planes, tail) = data.spare_capacity_mut()[..total + PX].split_at_mut(total);
        zero(tail);
        // Layout: [phase][channel][plane]; each (phase, channel) block written independently.
        planes
            .par_chunks_mut(plane_len)
            .enumerate()
            .for_each(|(i, plane)| {
                let (phase, ch) = (i / c, i % c);
                let (a, b) = (phase / s, phase % s);
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
                    if s == 1 {
                        let (left, rest) = dst.split_at_mut(g.pad);
                        let (mid, right) = rest.split_at_mut(w);
                        zero(left);
                        zero(right);
                        if relu {
                            for (d, v) in mid.iter_mut().zip(row) {
                                d.write(v.max(0.0));
                            }
                        } else {
                            // SAFETY: `mid` and `row` both hold `w` floats; they do not
                            // overlap (the planes are a new allocation).
                            unsafe {
                                std::ptr::copy_nonoverlapping(
                                    row.as_ptr(),
                                    mid.as_mut_ptr().cast::<f32>(),
                                    w,
                                )
                            };
                        }
                    } else {
                        for (j, d) in dst.iter_mut().enumerate() {
                            let xp = s * j + b;
                            let inside = xp >= g.pad && xp - g.pad < w;
                            let v = if inside { row[xp - g.pad] } else { 0.0 };
                            d.write(if relu { v.max(0.0) } else { v });
                        }
                    }
                }
            });
        // SAFETY: the loop above and `zero(tail)` wrote every one of the `total + PX` floats.
        unsafe { data.set_len(total + PX) };
        Planes {
            data,
            plane_len,
            cols,
        }
    }

    /// Start of the run that tap (kh, kw) of channel `ch` reads.
    pub(super) fn tap(&self, g: &Geometry, c_in: usize, ch: usize, kh: usize, kw: usize) -> usize {
        let (s, kh, kw) = (g.stride, kh * g.dilation, kw * g.dilation);
        let phase = (kh % s) * s + kw % s;
        (phase * c_in + ch) * self.plane_len + (kh / s) * self.cols + kw / s
    }
}
