//! COCO run-length encoding, byte-compatible with pycocotools.
//!
//! Pixels are visited column by column (Fortran order); counts alternate between runs of 0 and
//! runs of 1, starting with 0 (possibly an empty run). The compressed string form stores each
//! count (after the second, as a difference to the count two places before) in 5-bit groups,
//! offset by 48 into printable ASCII.

use super::{BBox, BinaryMask};
use crate::error::{Error, Result};
use crate::imageio::MAX_PIXELS;

/// `height × width` if it is at most [`MAX_PIXELS`].
fn pixel_count(height: usize, width: usize) -> Result<u64> {
    (height as u64)
        .checked_mul(width as u64)
        .filter(|&n| n <= MAX_PIXELS)
        .ok_or_else(|| {
            Error::invalid(format!(
                "RLE mask size {height}x{width} exceeds the limit of {MAX_PIXELS} pixels"
            ))
        })
}

/// The sum of the counts, or `None` if it overflows.
fn total(counts: &[u64]) -> Option<u64> {
    counts.iter().try_fold(0u64, |a, &c| a.checked_add(c))
}

/// A COCO run-length encoded binary mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rle {
    /// Mask height.
    pub height: usize,
    /// Mask width.
    pub width: usize,
    /// Alternating run lengths of 0s and 1s in column-major order, starting with 0s.
    pub counts: Vec<u64>,
}

impl Rle {
    /// Encodes a mask.
    pub fn encode(mask: &BinaryMask) -> Rle {
        let (w, h) = (mask.width(), mask.height());
        let mut counts = Vec::new();
        let mut current = false;
        let mut run = 0u64;
        for x in 0..w {
            for y in 0..h {
                let v = mask.get(x, y);
                if v != current {
                    counts.push(run);
                    run = 0;
                    current = v;
                }
                run += 1;
            }
        }
        counts.push(run);
        Rle {
            height: h,
            width: w,
            counts,
        }
    }

    /// Decodes to a mask; fails if the counts do not add up to `height * width` or the
    /// mask would exceed [`MAX_PIXELS`].
    pub fn decode(&self) -> Result<BinaryMask> {
        let n = pixel_count(self.height, self.width)?;
        match total(&self.counts) {
            Some(t) if t == n => {}
            t => {
                return Err(Error::invalid(format!(
                    "RLE counts sum to {}, but the mask size {}x{} has {n} pixels",
                    t.map_or("more than 2^64".to_string(), |t| t.to_string()),
                    self.height,
                    self.width
                )))
            }
        }
        let mut mask = BinaryMask::new(self.width, self.height);
        let mut pos = 0usize;
        for (i, &c) in self.counts.iter().enumerate() {
            let c = c as usize;
            if i % 2 == 1 {
                for p in pos..pos + c {
                    mask.set(p / self.height, p % self.height, true);
                }
            }
            pos += c;
        }
        Ok(mask)
    }

    /// Number of foreground pixels.
    pub fn area(&self) -> u64 {
        self.counts.iter().skip(1).step_by(2).sum()
    }

    /// The box pycocotools' `toBbox` computes; `[0, 0, 0, 0]` for an empty mask.
    pub fn bbox(&self) -> BBox {
        let h = self.height as u64;
        let m = self.counts.len() / 2 * 2;
        if m == 0 || h == 0 || self.width == 0 {
            return BBox {
                x: 0,
                y: 0,
                w: 0,
                h: 0,
            };
        }
        let (mut xs, mut ys, mut xe, mut ye) = (self.width as u64, h, 0u64, 0u64);
        let (mut cc, mut xp) = (0u64, 0u64);
        for j in 0..m {
            cc = cc.saturating_add(self.counts[j]);
            // A leading empty foreground run has no last pixel; clamp as at the first pixel.
            let t = cc.saturating_sub((j % 2) as u64);
            let (y, x) = (t % h, t / h);
            if j % 2 == 0 {
                xp = x;
            } else if xp < x {
                ys = 0;
                ye = h - 1;
            }
            xs = xs.min(x);
            xe = xe.max(x);
            ys = ys.min(y);
            ye = ye.max(y);
        }
        BBox {
            x: xs as u32,
            y: ys as u32,
            w: (xe - xs + 1) as u32,
            h: (ye - ys + 1) as u32,
        }
    }

    /// The compressed counts string (pycocotools `rleToString`).
    pub fn to_compressed(&self) -> String {
        let mut s = String::new();
        for (i, &c) in self.counts.iter().enumerate() {
            let mut x = c as i64;
            if i > 2 {
                x = x.wrapping_sub(self.counts[i - 2] as i64);
            }
            loop {
                let mut c = (x & 0x1f) as u8;
                x >>= 5;
                let more = if c & 0x10 != 0 { x != -1 } else { x != 0 };
                if more {
                    c |= 0x20;
                }
                s.push((c + 48) as char);
                if !more {
                    break;
                }
            }
        }
        s
    }

    /// Parses a compressed counts string (pycocotools `rleFrString`) for a `height × width` mask.
    pub fn from_compressed(height: usize, width: usize, s: &str) -> Result<Rle> {
        let bytes = s.as_bytes();
        let mut counts: Vec<u64> = Vec::new();
        let mut p = 0;
        while p < bytes.len() {
            let mut x: i64 = 0;
            let mut k = 0;
            loop {
                let b = bytes[p];
                if !(48..48 + 64).contains(&b) || k >= 13 {
                    return Err(Error::invalid(format!(
                        "invalid character {:?} at position {p} of an RLE string",
                        b as char
                    )));
                }
                let c = (b - 48) as i64;
                x |= (c & 0x1f) << (5 * k);
                p += 1;
                k += 1;
                if c & 0x20 == 0 {
                    if c & 0x10 != 0 && 5 * k < 64 {
                        x |= -1i64 << (5 * k);
                    }
                    break;
                }
                if p >= bytes.len() {
                    return Err(Error::invalid("RLE string ends inside a count"));
                }
            }
            let m = counts.len();
            if m > 2 {
                x = x.checked_add_unsigned(counts[m - 2]).ok_or_else(|| {
                    Error::invalid(format!("RLE string has a count over 2^63 at position {p}"))
                })?;
            }
            if x < 0 {
                return Err(Error::invalid(format!(
                    "RLE string decodes to a negative count ({x}) at position {p}"
                )));
            }
            counts.push(x as u64);
        }
        let rle = Rle {
            height,
            width,
            counts,
        };
        let n = pixel_count(height, width)?;
        if total(&rle.counts) != Some(n) {
            return Err(Error::invalid(format!(
                "RLE counts sum to {}, but the mask size {height}x{width} has {n} pixels",
                total(&rle.counts).map_or("more than 2^64".to_string(), |t| t.to_string()),
            )));
        }
        Ok(rle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rect(
        h: usize,
        w: usize,
        rows: std::ops::Range<usize>,
        cols: std::ops::Range<usize>,
    ) -> BinaryMask {
        BinaryMask::from_fn(w, h, |x, y| rows.contains(&y) && cols.contains(&x))
    }

    /// Masks built exactly as in the pycocotools session that produced the expected strings
    /// (`mask.encode(np.asfortranarray(m))['counts']`, `toBbox`, `area`; pycocotools 2.0.11).
    fn oracle_cases() -> Vec<(BinaryMask, &'static str, [u32; 4], u64)> {
        let mut small = rect(5, 4, 1..4, 1..3);
        small.set(3, 4, true);
        let mut blob = rect(40, 60, 5..30, 10..50);
        for y in 12..20 {
            for x in 20..25 {
                blob.set(x, y, false);
            }
        }
        blob.set(0, 0, true);
        blob.set(59, 39, true);
        let disc = BinaryMask::from_fn(500, 300, |x, y| {
            let (dy, dx) = (y as i64 - 150, x as i64 - 260);
            dy * dy + dx * dx < 120 * 120
        });
        vec![
            (small, "63203N", [1, 1, 3, 4], 7),
            (rect(3, 7, 0..3, 0..7), "0e0", [0, 0, 7, 3], 21),
            (BinaryMask::new(6, 6), "T1", [0, 0, 0, 0], 0),
            (
                blob,
                "01d<h0kC000000000000000000^OI37MI37MI37MI37MI37?000000000000000000000000000000000000000000000000Z<XO",
                [0, 0, 60, 40],
                962,
            ),
            (
                disc,
                "S^Y1o0W8<E:G8H8I6J6J6K4L4K6K4L4L4L4M2M4L4M2M4M2M4M2N2M4M2N2M4M2N2N2N2N2N2N2N2N2N2N2N2N2N2N2O0O2N2N2O0O2N2N2O0O2N2O0O2N2O0O2O0O2N2O0O2O0O2O0O2O0O2O000O2O0O2O0O2O000O2O000O2O000O2O00000O2O00000O2O0000000O2O000000000O2O000000000000000000000000000000000000000000000000000000000001N10000000001N100000001N1000001N1000001N10001N10001N10001N101N101N10001N101N101N101N101N2N101N101N2N101N2N101N2N2N101N2N2N101N2N2N2N2N2N2N2N2N2N2N2N2N2N2N3L3N2N3L3N2N3L3N3L3N3L4L3N3L4L4L4L5J5L4L5J6J6J7H8H9F;DoPS1",
                [141, 31, 239, 239],
                45213,
            ),
        ]
    }

    #[test]
    fn strings_match_pycocotools_and_round_trip() {
        for (mask, expected, bbox, area) in oracle_cases() {
            let rle = Rle::encode(&mask);
            assert_eq!(rle.to_compressed(), expected);
            assert_eq!(rle.bbox().xywh(), bbox);
            assert_eq!(rle.area(), area);
            let parsed = Rle::from_compressed(mask.height(), mask.width(), expected).unwrap();
            assert_eq!(parsed, rle);
            assert_eq!(parsed.decode().unwrap(), mask);
        }
    }

    #[test]
    fn bbox_agrees_with_decoded_mask_on_wrapping_runs() {
        // A run of ones from the bottom of column 0 into the top of column 1.
        let rle = Rle {
            height: 4,
            width: 3,
            counts: vec![2, 4, 6],
        };
        assert_eq!(rle.bbox().xywh(), [0, 0, 2, 4]);
        assert_eq!(rle.decode().unwrap().bbox().unwrap().xywh(), [0, 0, 2, 4]);
    }

    #[test]
    fn malformed_strings_are_errors() {
        assert!(Rle::from_compressed(6, 6, "T2").is_err()); // wrong total
        assert!(Rle::from_compressed(6, 6, "T\u{7f}").is_err()); // bad character
        assert!(Rle::from_compressed(6, 6, "o").is_err()); // ends inside a count
        assert!(Rle {
            height: 2,
            width: 2,
            counts: vec![1, 1]
        }
        .decode()
        .is_err());
    }

    /// Inputs that overflowed a shift, a sum or an allocation before: each is an error (or,
    /// for a degenerate but consistent RLE, a result) and never a panic or an abort.
    #[test]
    fn hostile_rles_are_errors_not_panics() {
        // 13-character count whose last character carries the sign bit (a 65-bit shift).
        assert!(Rle::from_compressed(1, 1, "oooooooooooo@").is_err());
        // Counts near 2^63 whose running sums overflow.
        let big = "oooooooooooo7";
        assert!(Rle::from_compressed(1, 1, &big.repeat(2)).is_err());
        assert!(Rle::from_compressed(1, 1, &big.repeat(20)).is_err());
        // A huge declared size is refused before anything is allocated.
        let huge = Rle {
            height: 100_000,
            width: 100_000,
            counts: vec![10_000_000_000],
        };
        let e = huge.decode().unwrap_err().to_string();
        assert!(e.contains("100000x100000"), "{e}");
        let e = Rle::from_compressed(100_000, 100_000, "0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("100000x100000"), "{e}");
        let e = Rle::from_compressed(usize::MAX, 3, "0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("exceeds"), "{e}");
        // Empty leading runs: the box of an empty mask, without underflow.
        let empty = Rle {
            height: 2,
            width: 2,
            counts: vec![0, 0, 4],
        };
        assert_eq!(empty.decode().unwrap().area(), 0);
        let _ = empty.bbox();
        let no_columns = Rle {
            height: 2,
            width: 0,
            counts: vec![0, 0],
        };
        assert_eq!(no_columns.bbox().xywh(), [0, 0, 0, 0]);
    }
}
