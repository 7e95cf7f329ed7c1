//! Binary images with rows packed into 64-bit words, for fast region and boundary measures.

/// A word with the lowest `n` bits set (`n` ≤ 64).
fn low_bits(n: usize) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

/// A binary image; bit `x % 64` of word `x / 64` of a row is pixel `x`. Bits past the width are
/// always zero.
#[derive(Clone, PartialEq, Eq)]
pub struct BitImage {
    width: usize,
    height: usize,
    words_per_row: usize,
    bits: Vec<u64>,
}

impl std::fmt::Debug for BitImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "BitImage({}x{}, {} set)",
            self.width,
            self.height,
            self.count_ones()
        )
    }
}

impl BitImage {
    /// An all-zero `width × height` image.
    pub fn new(width: usize, height: usize) -> Self {
        let words_per_row = width.div_ceil(64);
        BitImage {
            width,
            height,
            words_per_row,
            bits: vec![0; words_per_row * height],
        }
    }

    /// The image whose pixel `(x, y)` is `f(x, y)`.
    pub fn from_fn(width: usize, height: usize, f: impl Fn(usize, usize) -> bool) -> Self {
        let mut img = BitImage::new(width, height);
        for y in 0..height {
            for x in 0..width {
                if f(x, y) {
                    img.set(x, y, true);
                }
            }
        }
        img
    }

    /// The image of the pixels of a row-major label array for which `keep(label)` holds.
    pub fn from_labels<T: Copy>(
        width: usize,
        height: usize,
        labels: &[T],
        keep: impl Fn(T) -> bool,
    ) -> Self {
        let mut img = BitImage::new(width, height);
        for (y, row) in labels.chunks_exact(width.max(1)).take(height).enumerate() {
            let out = img.row_mut(y);
            for (x, &l) in row.iter().enumerate() {
                if keep(l) {
                    out[x / 64] |= 1 << (x % 64);
                }
            }
        }
        img
    }

    /// One image per label value `0..count` of a row-major label array, in a single pass
    /// (pixels with larger labels are in none of them).
    pub fn per_label(width: usize, height: usize, labels: &[u32], count: usize) -> Vec<Self> {
        let mut imgs = vec![BitImage::new(width, height); count];
        let wpr = width.div_ceil(64);
        let mut words = vec![0u64; count];
        for (y, row) in labels.chunks_exact(width.max(1)).take(height).enumerate() {
            for (k, chunk) in row.chunks(64).enumerate() {
                if chunk.iter().all(|&l| l == 0) && count > 0 {
                    // only label 0: the common background chunk
                    imgs[0].bits[y * wpr + k] = low_bits(chunk.len());
                    continue;
                }
                words.fill(0);
                for (b, &l) in chunk.iter().enumerate() {
                    if let Some(w) = words.get_mut(l as usize) {
                        *w |= 1 << b;
                    }
                }
                for (img, &w) in imgs.iter_mut().zip(&words) {
                    img.bits[y * wpr + k] = w;
                }
            }
        }
        imgs
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Number of 64-bit words per row.
    pub fn words_per_row(&self) -> usize {
        self.words_per_row
    }

    /// Pixel `(x, y)`.
    pub fn get(&self, x: usize, y: usize) -> bool {
        self.bits[y * self.words_per_row + x / 64] >> (x % 64) & 1 == 1
    }

    /// Sets pixel `(x, y)` to `v`.
    pub fn set(&mut self, x: usize, y: usize, v: bool) {
        let w = &mut self.bits[y * self.words_per_row + x / 64];
        if v {
            *w |= 1 << (x % 64);
        } else {
            *w &= !(1 << (x % 64));
        }
    }

    /// The words of row `y`.
    pub fn row(&self, y: usize) -> &[u64] {
        &self.bits[y * self.words_per_row..(y + 1) * self.words_per_row]
    }

    /// The words of row `y`, mutable. Callers keep the bits past the width zero.
    pub fn row_mut(&mut self, y: usize) -> &mut [u64] {
        &mut self.bits[y * self.words_per_row..(y + 1) * self.words_per_row]
    }

    /// The valid bits of the last word of a row.
    pub fn last_word_mask(&self) -> u64 {
        match self.width % 64 {
            0 => u64::MAX,
            r => (1u64 << r) - 1,
        }
    }

    /// Number of set pixels.
    pub fn count_ones(&self) -> u64 {
        self.bits.iter().map(|w| w.count_ones() as u64).sum()
    }

    /// Whether no pixel is set.
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|&w| w == 0)
    }

    /// Whether row `y` has no pixel set.
    pub fn row_is_empty(&self, y: usize) -> bool {
        self.row(y).iter().all(|&w| w == 0)
    }

    /// Number of pixels set in both images (same size).
    pub fn count_and(&self, other: &BitImage) -> u64 {
        debug_assert_eq!((self.width, self.height), (other.width, other.height));
        self.bits
            .iter()
            .zip(&other.bits)
            .map(|(a, b)| (a & b).count_ones() as u64)
            .sum()
    }

    /// Number of pixels set in either image (same size).
    pub fn count_or(&self, other: &BitImage) -> u64 {
        debug_assert_eq!((self.width, self.height), (other.width, other.height));
        self.bits
            .iter()
            .zip(&other.bits)
            .map(|(a, b)| (a | b).count_ones() as u64)
            .sum()
    }

    /// Clears the pixels that are set in `other` (same size).
    pub fn clear_where(&mut self, other: &BitImage) {
        debug_assert_eq!((self.width, self.height), (other.width, other.height));
        for (a, b) in self.bits.iter_mut().zip(&other.bits) {
            *a &= !b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_count_across_words() {
        let img = BitImage::from_fn(130, 3, |x, y| (x + y) % 7 == 0);
        let expected = (0..3)
            .flat_map(|y| (0..130).map(move |x| (x, y)))
            .filter(|(x, y)| (x + y) % 7 == 0)
            .count() as u64;
        assert_eq!(img.count_ones(), expected);
        assert!(img.get(129, 0) == (129 % 7 == 0));
        assert!(img.get(64, 1) == (65 % 7 == 0));
        let other = BitImage::from_fn(130, 3, |x, _| x >= 64);
        let both = (0..3)
            .flat_map(|y| (64..130).map(move |x| (x, y)))
            .filter(|(x, y)| (x + y) % 7 == 0)
            .count() as u64;
        assert_eq!(img.count_and(&other), both);
        assert_eq!(img.count_or(&other), expected + 66 * 3 - both);
        let mut a = img.clone();
        a.clear_where(&other);
        assert_eq!(a.count_ones(), expected - both);
    }

    #[test]
    fn from_labels_matches_from_fn() {
        // the first row and a half are background (whole zero words take a fast path)
        let labels: Vec<u8> = (0..70 * 3)
            .map(|i| if i < 100 { 0 } else { (i % 3) as u8 })
            .collect();
        let a = BitImage::from_labels(70, 3, &labels, |l| l == 1);
        let b = BitImage::from_fn(70, 3, |x, y| labels[y * 70 + x] == 1);
        assert_eq!(a, b);
        let wide: Vec<u32> = labels.iter().map(|&l| l as u32).collect();
        let split = BitImage::per_label(70, 3, &wide, 2);
        assert_eq!(split.len(), 2);
        assert_eq!(split[1], b);
        assert_eq!(split[0], BitImage::from_labels(70, 3, &labels, |l| l == 0));
    }
}
