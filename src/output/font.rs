//! A tiny embedded 5×7 bitmap font (upper-case letters, digits and a little punctuation) for
//! labels on overlay frames. Lower case is drawn as upper case; other characters as `?`.

use image::{Rgb, RgbImage};

/// Glyph width in font pixels.
pub const GLYPH_W: usize = 5;
/// Glyph height in font pixels.
pub const GLYPH_H: usize = 7;
/// Horizontal advance per character in font pixels (glyph plus one column of spacing).
pub const ADVANCE: usize = GLYPH_W + 1;

/// Rows top to bottom; bit 4 is the leftmost column.
const GLYPHS: [(char, [u8; GLYPH_H]); 47] = [
    (' ', [0, 0, 0, 0, 0, 0, 0]),
    (
        'A',
        [
            0b01110, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001,
        ],
    ),
    (
        'B',
        [
            0b11110, 0b10001, 0b10001, 0b11110, 0b10001, 0b10001, 0b11110,
        ],
    ),
    (
        'C',
        [
            0b01110, 0b10001, 0b10000, 0b10000, 0b10000, 0b10001, 0b01110,
        ],
    ),
    (
        'D',
        [
            0b11100, 0b10010, 0b10001, 0b10001, 0b10001, 0b10010, 0b11100,
        ],
    ),
    (
        'E',
        [
            0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b11111,
        ],
    ),
    (
        'F',
        [
            0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b10000,
        ],
    ),
    (
        'G',
        [
            0b01110, 0b10001, 0b10000, 0b10111, 0b10001, 0b10001, 0b01111,
        ],
    ),
    (
        'H',
        [
            0b10001, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001,
        ],
    ),
    (
        'I',
        [
            0b01110, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110,
        ],
    ),
    (
        'J',
        [
            0b00111, 0b00010, 0b00010, 0b00010, 0b00010, 0b10010, 0b01100,
        ],
    ),
    (
        'K',
        [
            0b10001, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010, 0b10001,
        ],
    ),
    (
        'L',
        [
            0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b11111,
        ],
    ),
    (
        'M',
        [
            0b10001, 0b11011, 0b10101, 0b10101, 0b10001, 0b10001, 0b10001,
        ],
    ),
    (
        'N',
        [
            0b10001, 0b10001, 0b11001, 0b10101, 0b10011, 0b10001, 0b10001,
        ],
    ),
    (
        'O',
        [
            0b01110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110,
        ],
    ),
    (
        'P',
        [
            0b11110, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000, 0b10000,
        ],
    ),
    (
        'Q',
        [
            0b01110, 0b10001, 0b10001, 0b10001, 0b10101, 0b10010, 0b01101,
        ],
    ),
    (
        'R',
        [
            0b11110, 0b10001, 0b10001, 0b11110, 0b10100, 0b10010, 0b10001,
        ],
    ),
    (
        'S',
        [
            0b01111, 0b10000, 0b10000, 0b01110, 0b00001, 0b00001, 0b11110,
        ],
    ),
    (
        'T',
        [
            0b11111, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100,
        ],
    ),
    (
        'U',
        [
            0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110,
        ],
    ),
    (
        'V',
        [
            0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100,
        ],
    ),
    (
        'W',
        [
            0b10001, 0b10001, 0b10001, 0b10101, 0b10101, 0b10101, 0b01010,
        ],
    ),
    (
        'X',
        [
            0b10001, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001, 0b10001,
        ],
    ),
    (
        'Y',
        [
            0b10001, 0b10001, 0b10001, 0b01010, 0b00100, 0b00100, 0b00100,
        ],
    ),
    (
        'Z',
        [
            0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b11111,
        ],
    ),
    (
        '0',
        [
            0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110,
        ],
    ),
    (
        '1',
        [
            0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110,
        ],
    ),
    (
        '2',
        [
            0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b01000, 0b11111,
        ],
    ),
    (
        '3',
        [
            0b11111, 0b00010, 0b00100, 0b00010, 0b00001, 0b10001, 0b01110,
        ],
    ),
    (
        '4',
        [
            0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010,
        ],
    ),
    (
        '5',
        [
            0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110,
        ],
    ),
    (
        '6',
        [
            0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110,
        ],
    ),
    (
        '7',
        [
            0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b01000, 0b01000,
        ],
    ),
    (
        '8',
        [
            0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110,
        ],
    ),
    (
        '9',
        [
            0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100,
        ],
    ),
    ('.', [0, 0, 0, 0, 0, 0b01100, 0b01100]),
    ('-', [0, 0, 0, 0b11111, 0, 0, 0]),
    ('_', [0, 0, 0, 0, 0, 0, 0b11111]),
    (':', [0, 0b01100, 0b01100, 0, 0b01100, 0b01100, 0]),
    (
        '#',
        [
            0b01010, 0b01010, 0b11111, 0b01010, 0b11111, 0b01010, 0b01010,
        ],
    ),
    ('/', [0, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0]),
    (
        '(',
        [
            0b00010, 0b00100, 0b01000, 0b01000, 0b01000, 0b00100, 0b00010,
        ],
    ),
    (
        ')',
        [
            0b01000, 0b00100, 0b00010, 0b00010, 0b00010, 0b00100, 0b01000,
        ],
    ),
    (
        '%',
        [
            0b11000, 0b11001, 0b00010, 0b00100, 0b01000, 0b10011, 0b00011,
        ],
    ),
    (
        '?',
        [0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0, 0b00100],
    ),
];

/// The rows of `c`'s glyph.
fn glyph(c: char) -> &'static [u8; GLYPH_H] {
    let c = c.to_ascii_uppercase();
    let find = |c: char| GLYPHS.iter().find(|(g, _)| *g == c).map(|(_, rows)| rows);
    find(c).or_else(|| find('?')).expect("'?' has a glyph")
}

/// Size in image pixels of `text` drawn at `scale`.
pub fn text_size(text: &str, scale: usize) -> (usize, usize) {
    let n = text.chars().count();
    let w = (n * ADVANCE).saturating_sub(1) * scale;
    (w, GLYPH_H * scale)
}

/// Draws `text` with its top-left corner at `(x, y)`, each font pixel a `scale × scale`
/// square; parts outside the image are clipped.
pub fn draw_text(img: &mut RgbImage, x: i64, y: i64, text: &str, scale: usize, colour: [u8; 3]) {
    let s = scale as i64;
    for (i, c) in text.chars().enumerate() {
        let gx = x + (i * ADVANCE) as i64 * s;
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in (0..GLYPH_W).filter(|col| bits >> (GLYPH_W - 1 - col) & 1 == 1) {
                let px = gx + col as i64 * s;
                let py = y + row as i64 * s;
                fill_rect(img, px, py, s, s, colour);
            }
        }
    }
}

/// Fills the rectangle `[x, x + w) × [y, y + h)`, clipped to the image.
pub fn fill_rect(img: &mut RgbImage, x: i64, y: i64, w: i64, h: i64, colour: [u8; 3]) {
    let (iw, ih) = (img.width() as i64, img.height() as i64);
    for py in y.max(0)..(y + h).min(ih) {
        for px in x.max(0)..(x + w).min(iw) {
            img.put_pixel(px as u32, py as u32, Rgb(colour));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(img: &RgbImage) -> Vec<(u32, u32)> {
        img.enumerate_pixels()
            .filter(|(_, _, p)| p.0 != [0, 0, 0])
            .map(|(x, y, _)| (x, y))
            .collect()
    }

    #[test]
    fn glyphs_are_unique_and_fit_the_cell() {
        for (i, (c, rows)) in GLYPHS.iter().enumerate() {
            assert!(rows.iter().all(|r| *r < 32), "{c}");
            for (d, other) in GLYPHS.iter().skip(i + 1) {
                assert!(c != d && rows != other, "{c} and {d}");
            }
        }
    }

    #[test]
    fn draws_a_one_as_its_strokes() {
        let mut img = RgbImage::new(8, 9);
        draw_text(&mut img, 1, 1, "1", 1, [255, 255, 255]);
        // A "1": a stem in column 2, a flag at (1, 1), a foot across columns 1..=3.
        let mut expected: Vec<(u32, u32)> = (1..=7).map(|y| (3, y)).collect();
        expected.extend([(2, 2), (2, 7), (4, 7)]);
        expected.sort_by_key(|&(x, y)| (y, x));
        assert_eq!(lit(&img), expected);
    }

    #[test]
    fn scales_clips_and_substitutes_unknown_characters() {
        assert_eq!(text_size("ab 1", 2), ((4 * 6 - 1) * 2, 14));
        assert_eq!(text_size("", 3), (0, 21));
        assert_eq!(glyph('a'), glyph('A'));
        assert_eq!(glyph('é'), glyph('?'));
        let mut img = RgbImage::new(4, 4);
        draw_text(&mut img, -3, -3, "8", 2, [9, 9, 9]);
        assert!(!lit(&img).is_empty());
        let mut big = RgbImage::new(20, 20);
        draw_text(&mut big, 0, 0, ".", 2, [9, 9, 9]);
        // The dot is a 2×2 block of font pixels at columns 1-2, rows 5-6: 4×4 image pixels.
        let dots = lit(&big);
        assert_eq!(dots.len(), 16);
        assert!(dots
            .iter()
            .all(|&(x, y)| (2..6).contains(&x) && (10..14).contains(&y)));
    }
}
