//! The DAVIS boundary measure F: boundary maps exactly as the official `seg2bmap` draws them and
//! matching within the tolerance disk, as `cv2.dilate` with `skimage.morphology.disk` does.
//!
//! Dilation works on bit-packed rows: each row is dilated horizontally by the half-widths the
//! disk has at each vertical offset (by repeated doubling of word shifts), and a pixel of the
//! dilated map is the OR of those rows over the disk's vertical extent. This is the same set as
//! the official dilation with a zero border, at a small fraction of the cost.

use super::bitimage::BitImage;

/// The official boundary tolerance as a fraction of the image diagonal.
pub const BOUND_TH: f64 = 0.008;

/// Tolerance radius in pixels: `ceil(0.008 · hypot(height, width))` (8 at 854x480).
pub fn tolerance_radius(width: usize, height: usize) -> usize {
    let (w, h) = (width as f64, height as f64);
    (BOUND_TH * (h * h + w * w).sqrt()).ceil() as usize
}

/// The boundary map of `seg`: a pixel is on the boundary if it differs from its east, south or
/// south-east neighbour; on the last row only the east neighbour counts, on the last column only
/// the south one, and the bottom-right pixel is never a boundary.
pub fn boundary_map(seg: &BitImage) -> BitImage {
    let (w, h) = (seg.width(), seg.height());
    let mut out = BitImage::new(w, h);
    if w == 0 || h == 0 {
        return out;
    }
    let last = out.last_word_mask();
    let empty = vec![0u64; seg.words_per_row()];
    for y in 0..h {
        let cur = seg.row(y);
        let next = if y + 1 < h { seg.row(y + 1) } else { &empty };
        let row = out.row_mut(y);
        for k in 0..row.len() {
            let east = shifted_word_down(cur, k, 1);
            row[k] = if y + 1 < h {
                let south_east = shifted_word_down(next, k, 1);
                (cur[k] ^ east) | (cur[k] ^ next[k]) | (cur[k] ^ south_east)
            } else {
                cur[k] ^ east
            };
        }
        *row.last_mut().expect("non-empty row") &= last;
        // last column: only the south neighbour counts (never on the last row)
        let x = w - 1;
        let bit = 1u64 << (x % 64);
        let edge = (cur[x / 64] ^ next[x / 64]) & bit != 0 && y + 1 < h;
        if edge {
            row[x / 64] |= bit;
        } else {
            row[x / 64] &= !bit;
        }
    }
    out
}

/// Word `k` of `row` shifted towards lower x by `s` bits (pixel x takes the value of x + s).
#[inline]
fn shifted_word_down(row: &[u64], k: usize, s: usize) -> u64 {
    let (q, b) = (s / 64, s % 64);
    let get = |i: usize| if i < row.len() { row[i] } else { 0 };
    if b == 0 {
        get(k + q)
    } else {
        (get(k + q) >> b) | (get(k + q + 1) << (64 - b))
    }
}

/// Word `k` of `row` shifted towards higher x by `s` bits (pixel x takes the value of x − s).
#[inline]
fn shifted_word_up(row: &[u64], k: usize, s: usize) -> u64 {
    let (q, b) = (s / 64, s % 64);
    let get = |i: usize| if i < q { 0 } else { row[i - q] };
    if b == 0 {
        get(k)
    } else {
        (get(k) << b) | if k > q { row[k - q - 1] >> (64 - b) } else { 0 }
    }
}

/// Dilates a packed row horizontally by `d` pixels on each side (by doubling steps);
/// `scratch` is a buffer of the row's length.
fn dilate_row(row: &mut [u64], d: usize, last_mask: u64, scratch: &mut [u64]) {
    let mut covered = 0;
    while covered < d {
        let s = (covered + 1).min(d - covered);
        scratch.copy_from_slice(row);
        for (k, out) in row.iter_mut().enumerate() {
            *out = scratch[k] | shifted_word_up(scratch, k, s) | shifted_word_down(scratch, k, s);
        }
        if let Some(l) = row.last_mut() {
            *l &= last_mask;
        }
        covered += s;
    }
}

/// Half-width of the disk of radius `r` at each vertical offset `0..=r`: the largest `w`
/// with `w² + dy² ≤ r²`.
fn disk_half_widths(r: usize) -> Vec<usize> {
    (0..=r)
        .map(|dy| {
            let rest = r * r - dy * dy;
            let mut k = (rest as f64).sqrt() as usize;
            while k * k > rest {
                k -= 1;
            }
            while (k + 1) * (k + 1) <= rest {
                k += 1;
            }
            k
        })
        .collect()
}

/// No stored row.
const NO_ROW: usize = usize::MAX;

/// The boundary of one mask prepared for tolerance queries: its map, the number of boundary
/// pixels, and each non-empty row dilated horizontally by every half-width of the disk.
///
/// The map dilated by the disk (offsets with dx² + dy² ≤ r², zero border) is, at row y, the OR
/// over |dy| ≤ r of row y + dy dilated horizontally by the half-width at dy; it is evaluated
/// only at the words where a query has pixels.
#[derive(Debug, Clone)]
pub struct Boundary {
    map: BitImage,
    count: u64,
    radius: usize,
    /// Index into `widths` of the half-width at each |dy|.
    slot: Vec<usize>,
    /// Number of distinct half-widths.
    widths: usize,
    /// Position of each image row in `rows` (`NO_ROW` for empty rows).
    row_index: Vec<usize>,
    /// For each stored row, its horizontal dilations, `widths × words_per_row` words.
    rows: Vec<u64>,
}

impl Boundary {
    /// Boundary of `mask` with tolerance radius `radius`.
    pub fn new(mask: &BitImage, radius: usize) -> Self {
        let map = boundary_map(mask);
        let count = map.count_ones();
        let half = disk_half_widths(radius);
        let mut widths = half.clone();
        widths.sort_unstable();
        widths.dedup();
        let slot = half
            .iter()
            .map(|d| widths.binary_search(d).expect("width listed"))
            .collect();
        let wpr = map.words_per_row();
        let last = map.last_word_mask();
        let mut row_index = vec![NO_ROW; map.height()];
        let mut rows = Vec::new();
        let mut row = vec![0u64; wpr];
        let mut scratch = vec![0u64; wpr];
        for y in (0..map.height()).filter(|&y| !map.row_is_empty(y)) {
            row_index[y] = rows.len() / (wpr * widths.len());
            row.copy_from_slice(map.row(y));
            let mut done = 0;
            for &d in &widths {
                dilate_row(&mut row, d - done, last, &mut scratch);
                done = d;
                rows.extend_from_slice(&row);
            }
        }
        Boundary {
            map,
            count,
            radius,
            slot,
            widths: widths.len(),
            row_index,
            rows,
        }
    }

    /// Number of boundary pixels.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The boundary map.
    pub fn map(&self) -> &BitImage {
        &self.map
    }

    /// Word `k` of row `y` of the boundary map dilated by the tolerance disk.
    pub fn dilated_word(&self, y: usize, k: usize) -> u64 {
        let wpr = self.map.words_per_row();
        let lo = y.saturating_sub(self.radius);
        let hi = (y + self.radius).min(self.map.height() - 1);
        let mut word = 0;
        for src in lo..=hi {
            let stored = self.row_index[src];
            if stored != NO_ROW {
                let s = self.slot[src.abs_diff(y)];
                word |= self.rows[(stored * self.widths + s) * wpr + k];
            }
        }
        word
    }

    /// Number of pixels of `other` (same size) within the tolerance of this boundary.
    pub fn matched(&self, other: &BitImage) -> u64 {
        let mut n = 0;
        for y in 0..other.height() {
            for (k, &w) in other.row(y).iter().enumerate() {
                if w != 0 {
                    n += (w & self.dilated_word(y, k)).count_ones() as u64;
                }
            }
        }
        n
    }
}

/// The official F measure between a predicted and a ground-truth boundary: precision =
/// predicted boundary pixels within tolerance of the GT boundary / predicted boundary pixels,
/// recall likewise; both empty gives 1, exactly one empty gives 0.
pub fn f_measure(pred: &Boundary, gt: &Boundary) -> f64 {
    let (n_fg, n_gt) = (pred.count, gt.count);
    let (precision, recall) = match (n_fg, n_gt) {
        (0, 0) => (1.0, 1.0),
        (0, _) => (1.0, 0.0),
        (_, 0) => (0.0, 1.0),
        _ => (
            gt.matched(&pred.map) as f64 / n_fg as f64,
            pred.matched(&gt.map) as f64 / n_gt as f64,
        ),
    };
    if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The boundary rule written out pixel by pixel.
    fn naive_boundary(seg: &BitImage) -> BitImage {
        let (w, h) = (seg.width(), seg.height());
        let at = |x: usize, y: usize| x < w && y < h && seg.get(x, y);
        BitImage::from_fn(w, h, |x, y| {
            let s = seg.get(x, y);
            if x == w - 1 && y == h - 1 {
                false
            } else if y == h - 1 {
                s != at(x + 1, y)
            } else if x == w - 1 {
                s != at(x, y + 1)
            } else {
                s != at(x + 1, y) || s != at(x, y + 1) || s != at(x + 1, y + 1)
            }
        })
    }

    /// Dilation by brute force over the disk.
    fn naive_dilate(img: &BitImage, r: usize) -> BitImage {
        let (w, h) = (img.width() as i64, img.height() as i64);
        let r = r as i64;
        BitImage::from_fn(img.width(), img.height(), |x, y| {
            (-r..=r).any(|dy| {
                (-r..=r).any(|dx| {
                    let (sx, sy) = (x as i64 + dx, y as i64 + dy);
                    dx * dx + dy * dy <= r * r
                        && (0..w).contains(&sx)
                        && (0..h).contains(&sy)
                        && img.get(sx as usize, sy as usize)
                })
            })
        })
    }

    fn pattern(w: usize, h: usize, seed: u64) -> BitImage {
        let mut s = seed;
        let mut img = BitImage::new(w, h);
        // a few random rectangles and speckles
        for _ in 0..6 {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let (x0, y0) = ((s >> 33) as usize % w, (s >> 17) as usize % h);
            let (rw, rh) = ((s >> 45) as usize % 40 + 1, (s >> 9) as usize % 12 + 1);
            for y in y0..(y0 + rh).min(h) {
                for x in x0..(x0 + rw).min(w) {
                    img.set(x, y, true);
                }
            }
        }
        for _ in 0..20 {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            img.set((s >> 33) as usize % w, (s >> 20) as usize % h, true);
        }
        img
    }

    #[test]
    fn boundary_and_dilation_equal_the_definitions() {
        for (i, &(w, h)) in [
            (1, 1),
            (1, 7),
            (9, 1),
            (63, 5),
            (64, 9),
            (65, 12),
            (150, 33),
        ]
        .iter()
        .enumerate()
        {
            let seg = pattern(w, h, i as u64 + 3);
            let b = boundary_map(&seg);
            assert_eq!(b, naive_boundary(&seg), "boundary {w}x{h}");
            for r in [0, 1, 2, 5, 8, 70] {
                let prepared = Boundary::new(&seg, r);
                let mut dilated = BitImage::new(w, h);
                for y in 0..h {
                    for k in 0..dilated.words_per_row() {
                        dilated.row_mut(y)[k] = prepared.dilated_word(y, k);
                    }
                }
                assert_eq!(dilated, naive_dilate(&b, r), "dilate r={r} {w}x{h}");
                let other = pattern(w, h, i as u64 + 40);
                assert_eq!(
                    prepared.matched(&other),
                    other.count_and(&naive_dilate(&b, r)),
                    "matched r={r} {w}x{h}"
                );
            }
        }
    }

    #[test]
    fn radius_matches_davis_480p() {
        assert_eq!(tolerance_radius(854, 480), 8);
        assert_eq!(tolerance_radius(100, 100), 2);
    }

    #[test]
    fn f_measure_edge_cases() {
        let empty = Boundary::new(&BitImage::new(10, 10), 1);
        let square = Boundary::new(&BitImage::from_fn(10, 10, |x, y| x > 2 && y > 2), 1);
        assert_eq!(f_measure(&empty, &empty), 1.0);
        assert_eq!(f_measure(&empty, &square), 0.0);
        assert_eq!(f_measure(&square, &empty), 0.0);
        assert_eq!(f_measure(&square, &square), 1.0);
    }
}
