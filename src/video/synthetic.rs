//! A generated demonstration clip: a striped, orange, wobbling blob gliding over a muted,
//! slowly panning textured landscape. Deterministic (no random state: textures come from an
//! integer hash), so every machine gets the same frames, and the true object mask of every
//! frame is known.

use crate::mask::BinaryMask;
use image::{Rgb, RgbImage};

/// Frames of the demo clip.
pub const DEMO_FRAMES: usize = 40;
/// Width of the demo clip.
pub const DEMO_WIDTH: usize = 854;
/// Height of the demo clip.
pub const DEMO_HEIGHT: usize = 480;

/// The generated clip's geometry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyntheticClip {
    /// Number of frames.
    pub frames: usize,
    /// Frame width in pixels.
    pub width: usize,
    /// Frame height in pixels.
    pub height: usize,
}

impl Default for SyntheticClip {
    fn default() -> Self {
        SyntheticClip {
            frames: DEMO_FRAMES,
            width: DEMO_WIDTH,
            height: DEMO_HEIGHT,
        }
    }
}

/// A hash of integer lattice coordinates to [0, 1).
fn lattice(x: i64, y: i64, seed: u64) -> f32 {
    let mut h = (x as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (y as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        ^ seed.wrapping_mul(0x1656_67B1_9E37_79F9);
    h ^= h >> 31;
    h = h.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    h ^= h >> 29;
    (h >> 40) as f32 / (1u64 << 24) as f32
}

/// Smoothly interpolated lattice noise at cell size `cell`, in [0, 1).
fn smooth_noise(x: f32, y: f32, cell: f32, seed: u64) -> f32 {
    let (gx, gy) = (x / cell, y / cell);
    let (x0, y0) = (gx.floor(), gy.floor());
    let ease = |t: f32| t * t * (3.0 - 2.0 * t);
    let (fx, fy) = (ease(gx - x0), ease(gy - y0));
    let (i, j) = (x0 as i64, y0 as i64);
    let top = lattice(i, j, seed) * (1.0 - fx) + lattice(i + 1, j, seed) * fx;
    let bottom = lattice(i, j + 1, seed) * (1.0 - fx) + lattice(i + 1, j + 1, seed) * fx;
    top * (1.0 - fy) + bottom * fy
}

/// Three octaves of smooth noise, in [0, 1).
fn texture(x: f32, y: f32, seed: u64) -> f32 {
    0.5 * smooth_noise(x, y, 48.0, seed)
        + 0.3 * smooth_noise(x, y, 12.0, seed + 1)
        + 0.2 * smooth_noise(x, y, 4.0, seed + 2)
}

impl SyntheticClip {
    /// Horizontal camera pan (pixels) at frame `t`.
    fn pan(&self, t: usize) -> f32 {
        0.8 * t as f32
    }

    /// Centre, mean radius and rotation of the object at frame `t`: it crosses the frame from
    /// left to right in [`DEMO_FRAMES`] frames and comes back in as many (whatever the clip's
    /// length, so that the motion per frame is the same).
    fn object(&self, t: usize) -> (f32, f32, f32, f32) {
        let (w, h) = (self.width as f32, self.height as f32);
        let period = (DEMO_FRAMES - 1) as f32;
        let phase = (t as f32 / period) % 2.0;
        let s = if phase <= 1.0 { phase } else { 2.0 - phase };
        let cx = w * (0.28 + 0.44 * s);
        let cy = h * (0.55 - 0.08 * (std::f32::consts::PI * 2.0 * s).sin());
        (cx, cy, 0.22 * h, 0.6 * s)
    }

    /// Whether pixel (x, y) of frame `t` is on the object, and the object's texture
    /// coordinates there.
    fn on_object(&self, t: usize, x: f32, y: f32) -> Option<(f32, f32)> {
        let (cx, cy, r, rot) = self.object(t);
        let (dx, dy) = (x + 0.5 - cx, y + 0.5 - cy);
        let theta = dy.atan2(dx);
        let edge = r * (1.0 + 0.12 * (3.0 * theta + 2.0 * rot).sin());
        if dx * dx + dy * dy > edge * edge {
            return None;
        }
        // Texture rotates with the object.
        let (sn, cs) = rot.sin_cos();
        Some((cs * dx + sn * dy, -sn * dx + cs * dy))
    }

    /// The image of frame `t`.
    pub fn image(&self, t: usize) -> RgbImage {
        let pan = self.pan(t);
        let horizon = self.height as f32 * 0.42;
        RgbImage::from_fn(self.width as u32, self.height as u32, |x, y| {
            let (xf, yf) = (x as f32, y as f32);
            if let Some((u, v)) = self.on_object(t, xf, yf) {
                let stripe = ((u + 0.5 * v) / 14.0).sin() > 0.0;
                let n = texture(u + 500.0, v + 500.0, 7);
                let (r, g, b) = if stripe {
                    (235.0, 110.0 + 40.0 * n, 20.0)
                } else {
                    (250.0, 200.0 + 40.0 * n, 40.0)
                };
                return Rgb([r as u8, g as u8, b as u8]);
            }
            let n = texture(xf + pan, yf, 1);
            let c = if yf < horizon {
                // Pale sky with faint clouds.
                let k = yf / horizon;
                [
                    150.0 + 40.0 * n,
                    165.0 + 40.0 * n,
                    180.0 + 30.0 * n - 20.0 * k,
                ]
            } else {
                // Grey-green ground, with more texture.
                let m = texture(xf + pan, yf, 2);
                [70.0 + 50.0 * m, 90.0 + 45.0 * n, 75.0 + 35.0 * m]
            };
            Rgb(c.map(|v| v.clamp(0.0, 255.0) as u8))
        })
    }

    /// The true object mask of frame `t`.
    pub fn mask(&self, t: usize) -> BinaryMask {
        BinaryMask::from_fn(self.width, self.height, |x, y| {
            self.on_object(t, x as f32, y as f32).is_some()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clip_is_deterministic_and_the_object_moves_inside_the_frame() {
        let clip = SyntheticClip {
            width: 160,
            height: 90,
            ..SyntheticClip::default()
        };
        assert_eq!(clip.image(3), clip.image(3));
        assert_ne!(clip.image(3), clip.image(4));
        let areas: Vec<usize> = (0..clip.frames).map(|t| clip.mask(t).area()).collect();
        // The mean radius is 0.22·h ≈ 19.8 px, so the area is about π·19.8² ≈ 1232.
        for a in &areas {
            assert!((1000..1500).contains(a), "{areas:?}");
        }
        let first = clip.mask(0).bbox().unwrap();
        let last = clip.mask(clip.frames - 1).bbox().unwrap();
        assert!(last.x > first.x + 50, "{first:?} {last:?}");
        assert!(first.x > 0 && last.x + last.w < 160);
        // It comes back along the same path.
        assert_eq!(clip.mask(2 * (clip.frames - 1)).bbox(), Some(first));
        // Object pixels are orange: red high, blue low; background pixels are not.
        let img = clip.image(0);
        let m = clip.mask(0);
        for (i, p) in img.pixels().enumerate() {
            let (x, y) = (i % 160, i / 160);
            let orange = p.0[0] > 220 && p.0[2] < 60;
            assert_eq!(orange, m.get(x, y), "pixel ({x}, {y}) {p:?}");
        }
    }

    #[test]
    fn lattice_noise_is_uniform_enough() {
        let n = 10_000;
        let mean: f32 = (0..n).map(|i| lattice(i, 3 * i, 5)).sum::<f32>() / n as f32;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
        assert!((0..n).all(|i| (0.0..1.0).contains(&lattice(i, -i, 9))));
    }
}
