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
    let wpr = seg.words_per_row();
    let last = out.last_word_mask();
    for y in 0..h {
        let cur = seg.row(y);
        let mut row = vec![0u64; wpr];
        if y + 1 < h {
            let next = seg.row(y + 1);
            for k in 0..wpr {
                let east = shifted_word_down(cur, k, 1);
                let south_east = shifted_word_down(next, k, 1);
                row[k] = (cur[k] ^ east) | (cur[k] ^ next[k]) | (cur[k] ^ south_east);
            }
        } else {
            for k in 0..wpr {
                row[k] = cur[k] ^ shifted_word_down(cur, k, 1);
            }
        }
        row[wpr - 1] &= last;
        let x = w - 1;
        let edge = y + 1 < h && (seg.get(x, y) != seg.get(x, y + 1));
        let bit = 1u64 << (x % 64);
        if edge {
            row[x / 64] |= bit;
        } else {
            row[x / 64] &= !bit;
        }
        out.row_mut(y).copy_from_slice(&row);
    }
    out
}

/// Word `k` of `row` shifted towards lower x by `s` bits (pixel x takes the value of x + s).
fn shifted_word_down(row: &[u64], k: usize, s: usize) -> u64 {
    let (q, b) = (s / 64, s % 64);
    let get = |i: usize| row.get(i).copied().unwrap_or(0);
    if b == 0 {
        get(k + q)
    } else {
        (get(k + q) >> b) | (get(k + q + 1) << (64 - b))
    }
}

/// Word `k` of `row` shifted towards higher x by `s` bits (pixel x takes the value of x − s).
fn shifted_word_up(row: &[u64], k: usize, s: usize) -> u64 {
    let (q, b) = (s / 64, s % 64);
    let get = |i: Option<usize>| i.and_then(|i| row.get(i)).copied().unwrap_or(0);
    let lo = k.checked_sub(q);
    if b == 0 {
        get(lo)
    } else {
        (get(lo) << b) | (get(lo.and_then(|i| i.checked_sub(1))) >> (64 - b))
    }
}

/// Dilates a packed row horizontally by `d` pixels on each side (by doubling steps).
fn dilate_row(row: &mut [u64], d: usize, last_mask: u64) {
    let mut covered = 0;
    while covered < d {
        let s = (covered + 1).min(d - covered);
        let src = row.to_vec();
        for k in 0..row.len() {
            row[k] = src[k] | shifted_word_up(&src, k, s) | shifted_word_down(&src, k, s);
        }
        if let Some(l) = row.last_mut() {
            *l &= last_mask;
        }
        covered += s;
    }
}

/// Dilation with the Euclidean disk of radius `r` (offsets with dx² + dy² ≤ r²), zero border.
pub fn dilate_disk(img: &BitImage, r: usize) -> BitImage {
    let (w, h) = (img.width(), img.height());
    if r == 0 || img.is_empty() {
        return img.clone();
    }
    // Half-width of the disk at vertical offset dy.
    let half: Vec<usize> = (0..=r)
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
        .collect();
    let mut widths = half.clone();
    widths.sort_unstable();
    widths.dedup();
    let slot: Vec<usize> = half
        .iter()
        .map(|d| widths.binary_search(d).expect("width listed"))
        .collect();
    let wpr = img.words_per_row();
    let last = img.last_word_mask();
    let nonempty: Vec<bool> = (0..h).map(|y| !img.row_is_empty(y)).collect();
    // dilated[slot][y] = row y dilated horizontally by widths[slot]
    let mut dilated = vec![vec![0u64; wpr * h]; widths.len()];
    for y in (0..h).filter(|&y| nonempty[y]) {
        let mut row = img.row(y).to_vec();
        let mut done = 0;
        for (s, &d) in widths.iter().enumerate() {
            dilate_row(&mut row, d - done, last);
            done = d;
            dilated[s][y * wpr..(y + 1) * wpr].copy_from_slice(&row);
        }
    }
    let mut out = BitImage::new(w, h);
    for y in 0..h {
        let lo = y.saturating_sub(r);
        let hi = (y + r).min(h - 1);
        let out_row = out.row_mut(y);
        for src in (lo..=hi).filter(|&src| nonempty[src]) {
            let s = slot[src.abs_diff(y)];
            let words = &dilated[s][src * wpr..(src + 1) * wpr];
            for (o, &v) in out_row.iter_mut().zip(words) {
                *o |= v;
            }
        }
    }
    out
}

/// The boundary of one mask prepared for matching: its map, the map dilated by the tolerance
/// disk, and the number of boundary pixels.
#[derive(Debug, Clone)]
pub struct Boundary {
    map: BitImage,
    dilated: BitImage,
    count: u64,
}

impl Boundary {
    /// Boundary of `mask` with tolerance radius `radius`.
    pub fn new(mask: &BitImage, radius: usize) -> Self {
        let map = boundary_map(mask);
        let count = map.count_ones();
        let dilated = dilate_disk(&map, radius);
        Boundary {
            map,
            dilated,
            count,
        }
    }

    /// Number of boundary pixels.
    pub fn count(&self) -> u64 {
        self.count
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
            pred.map.count_and(&gt.dilated) as f64 / n_fg as f64,
            gt.map.count_and(&pred.dilated) as f64 / n_gt as f64,
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
                assert_eq!(
                    dilate_disk(&b, r),
                    naive_dilate(&b, r),
                    "dilate r={r} {w}x{h}"
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
