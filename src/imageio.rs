//! Reading and writing frames and id masks: JPEG/PNG frames, palette and RGB-id PNGs.

use crate::error::{Error, Result};
use crate::fsutil::write_atomic_with;
use crate::mask::{IdMap, ObjectId, MAX_RGB_ID};
use image::RgbImage;
use std::path::Path;

/// The most pixels an image, mask or frame may have (134 million, e.g. 16384 × 8192): every
/// buffer that a file's declared size drives is checked against it before it is allocated.
pub const MAX_PIXELS: u64 = 1 << 27;

/// Checks a declared `width × height` against [`MAX_PIXELS`]; the error names `path`, the
/// declared size and the limit.
pub fn check_dimensions(path: &Path, width: u64, height: u64) -> Result<()> {
    if width.saturating_mul(height) > MAX_PIXELS {
        return Err(Error::image(
            path,
            format!(
                "declares {width}x{height} pixels, more than the limit of {MAX_PIXELS} pixels \
                 (e.g. 16384x8192)"
            ),
        ));
    }
    Ok(())
}

/// Reads an RGB image (JPEG or PNG); the error names the file. An image larger than
/// [`MAX_PIXELS`] or a JPEG that ends before its last scan does (a truncated file) is refused.
pub fn read_rgb(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let reader = || {
        image::ImageReader::new(std::io::Cursor::new(bytes.as_slice()))
            .with_guessed_format()
            .map_err(|e| Error::io(path, e))
    };
    let format = reader()?.format();
    match format {
        None => return Err(Error::image(path, "not a JPEG or PNG image")),
        Some(image::ImageFormat::Jpeg) => check_jpeg_complete(path, &bytes)?,
        Some(_) => {}
    }
    let mut header = reader()?;
    header.no_limits();
    let (w, h) = header
        .into_dimensions()
        .map_err(|e| Error::image(path, format!("cannot read the image header: {e}")))?;
    check_dimensions(path, w.into(), h.into())?;
    let img = reader()?
        .decode()
        .map_err(|e| Error::image(path, format!("cannot decode image: {e}")))?;
    Ok(img.to_rgb8())
}

/// The size an image file (JPEG or PNG) declares in its header, checked against
/// [`MAX_PIXELS`]; the pixels are not decoded.
pub fn image_dimensions(path: &Path) -> Result<(u32, u32)> {
    let mut reader = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    if reader.format().is_none() {
        return Err(Error::image(path, "not a JPEG or PNG image"));
    }
    reader.no_limits();
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| Error::image(path, format!("cannot read the image header: {e}")))?;
    check_dimensions(path, w.into(), h.into())?;
    Ok((w, h))
}

/// Checks that a JPEG's last scan is followed by its end-of-image marker. A decoder fills what
/// a truncated file lacks with grey; the markers cannot occur inside entropy-coded data (0xFF
/// is stuffed there), so a missing end marker after the last start-of-scan means a cut file.
fn check_jpeg_complete(path: &Path, bytes: &[u8]) -> Result<()> {
    let last = |marker: u8| bytes.windows(2).rposition(|w| w == [0xFF, marker]);
    match (last(0xDA), last(0xD9)) {
        (Some(sos), Some(eoi)) if eoi > sos => Ok(()),
        (None, _) => Err(Error::image(
            path,
            "JPEG has no image data (no start of scan)",
        )),
        _ => Err(Error::image(
            path,
            format!(
                "JPEG is truncated: its image data end without an end-of-image marker \
                 ({} bytes; the file was cut short?)",
                bytes.len()
            ),
        )),
    }
}

/// An id mask read from a PNG together with how its ids were stored.
#[derive(Debug, Clone)]
pub struct IndexPng {
    /// The ids per pixel.
    pub map: IdMap,
    /// The palette (RGB triples) if the PNG was palette-indexed.
    pub palette: Option<Vec<u8>>,
    /// Whether ids were encoded as RGB (R + 256·G + 65536·B).
    pub rgb_ids: bool,
    /// For a grayscale PNG, the value of white at its bit depth (255 for 8-bit, 65535 for
    /// 16-bit); `None` for palette and RGB PNGs.
    pub gray_white: Option<ObjectId>,
}

impl IndexPng {
    /// A black-and-white grayscale mask (only 0 and white, at any bit depth) with white as
    /// object 1: the DAVIS-2016 binary convention. `None` for any other mask.
    pub fn binary_foreground(&self) -> Option<IdMap> {
        let white = self.gray_white?;
        let binary = self.map.data().iter().all(|&v| v == 0 || v == white);
        binary.then(|| self.map.remap(|v| u32::from(v == white)))
    }
}

/// Reads an id mask: palette PNG (index = id), 8/16-bit grayscale (value = id) or RGB
/// (id = R + 256·G + 65536·B). An alpha channel is ignored.
pub fn read_index_png(path: &Path) -> Result<IndexPng> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::IDENTITY);
    let mut reader = decoder
        .read_info()
        .map_err(|e| Error::image(path, format!("not a readable PNG: {e}")))?;
    let declared = reader.info().size();
    check_dimensions(path, declared.0.into(), declared.1.into())?;
    let mut buf = vec![
        0;
        reader
            .output_buffer_size()
            .ok_or_else(|| Error::image(path, "PNG too large"))?
    ];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| Error::image(path, format!("cannot decode PNG: {e}")))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let palette = reader.info().palette.as_ref().map(|p| p.to_vec());
    let bytes = &buf[..info.buffer_size()];
    let row = info.line_size;
    let bits = info.bit_depth as usize;
    let mut data = Vec::with_capacity(w * h);
    let mut rgb_ids = false;
    use png::ColorType::*;
    let gray_white = matches!(info.color_type, Grayscale | GrayscaleAlpha)
        .then(|| ((1u32 << bits) - 1) as ObjectId);
    match (info.color_type, bits) {
        (Indexed, 1 | 2 | 4 | 8) | (Grayscale, 1 | 2 | 4 | 8) => {
            let per_byte = 8 / bits;
            let mask = ((1u16 << bits) - 1) as u8;
            for y in 0..h {
                let r = &bytes[y * row..(y + 1) * row];
                for x in 0..w {
                    let b = r[x / per_byte];
                    let shift = 8 - bits * (x % per_byte + 1);
                    data.push(((b >> shift) & mask) as ObjectId);
                }
            }
        }
        (Grayscale, 16) | (GrayscaleAlpha, 16) => {
            let step = if info.color_type == Grayscale { 2 } else { 4 };
            for y in 0..h {
                let r = &bytes[y * row..(y + 1) * row];
                for x in 0..w {
                    data.push(u16::from_be_bytes([r[x * step], r[x * step + 1]]) as ObjectId);
                }
            }
        }
        (GrayscaleAlpha, 8) => {
            for y in 0..h {
                let r = &bytes[y * row..(y + 1) * row];
                data.extend((0..w).map(|x| r[2 * x] as ObjectId));
            }
        }
        (Rgb, 8) | (Rgba, 8) => {
            rgb_ids = true;
            let step = if info.color_type == Rgb { 3 } else { 4 };
            for y in 0..h {
                let r = &bytes[y * row..(y + 1) * row];
                data.extend((0..w).map(|x| {
                    let p = &r[x * step..x * step + 3];
                    p[0] as ObjectId + 256 * p[1] as ObjectId + 65536 * p[2] as ObjectId
                }));
            }
        }
        (ct, b) => {
            return Err(Error::image(
                path,
                format!("unsupported PNG colour type {ct:?} with {b}-bit samples for an id mask"),
            ))
        }
    }
    Ok(IndexPng {
        map: IdMap::from_vec(w, h, data)?,
        palette,
        rgb_ids,
        gray_white,
    })
}

/// The 256-colour DAVIS / PASCAL VOC palette as RGB triples.
pub fn davis_palette() -> Vec<u8> {
    let mut pal = Vec::with_capacity(768);
    for i in 0..256u32 {
        let (mut r, mut g, mut b) = (0u8, 0u8, 0u8);
        let mut c = i;
        for j in 0..8 {
            r |= ((c & 1) as u8) << (7 - j);
            g |= (((c >> 1) & 1) as u8) << (7 - j);
            b |= (((c >> 2) & 1) as u8) << (7 - j);
            c >>= 3;
        }
        pal.extend_from_slice(&[r, g, b]);
    }
    pal
}

/// Writes an 8-bit palette PNG atomically; every id must be at most 255.
pub fn write_palette_png(path: &Path, map: &IdMap, palette: &[u8]) -> Result<()> {
    if let Some(&id) = map.data().iter().find(|&&id| id > 255) {
        return Err(Error::invalid(format!(
            "{}: id {id} does not fit an 8-bit palette PNG; use RGB id output",
            path.display()
        )));
    }
    let pixels: Vec<u8> = map.data().iter().map(|&id| id as u8).collect();
    let mut palette = palette.to_vec();
    palette.resize(768, 0);
    write_atomic_with(path, |w| {
        let mut enc = png::Encoder::new(w, map.width() as u32, map.height() as u32);
        enc.set_color(png::ColorType::Indexed);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_palette(palette);
        let mut writer = enc.write_header().map_err(std::io::Error::other)?;
        writer
            .write_image_data(&pixels)
            .map_err(std::io::Error::other)?;
        writer.finish().map_err(std::io::Error::other)
    })
}

/// The RGB encoding of an id: R = id mod 256, G = (id / 256) mod 256, B = id / 65536.
pub fn id_to_rgb(id: ObjectId) -> [u8; 3] {
    [
        (id & 255) as u8,
        ((id >> 8) & 255) as u8,
        ((id >> 16) & 255) as u8,
    ]
}

/// Writes an RGB-id PNG atomically (id = R + 256·G + 65536·B).
pub fn write_rgb_id_png(path: &Path, map: &IdMap) -> Result<()> {
    if let Some(&id) = map.data().iter().find(|&&id| id > MAX_RGB_ID) {
        return Err(Error::invalid(format!(
            "{}: id {id} exceeds the RGB id range",
            path.display()
        )));
    }
    let pixels: Vec<u8> = map.data().iter().flat_map(|&id| id_to_rgb(id)).collect();
    write_rgb_png(path, map.width(), map.height(), &pixels)
}

/// Writes an 8-bit RGB PNG atomically from packed RGB bytes.
pub fn write_rgb_png(path: &Path, width: usize, height: usize, rgb: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| {
        let mut enc = png::Encoder::new(w, width as u32, height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(std::io::Error::other)?;
        writer
            .write_image_data(rgb)
            .map_err(std::io::Error::other)?;
        writer.finish().map_err(std::io::Error::other)
    })
}

/// Writes a JPEG atomically.
pub fn write_jpeg(path: &Path, image: &RgbImage, quality: u8) -> Result<()> {
    write_atomic_with(path, |w| {
        let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(w, quality);
        enc.encode_image(image).map_err(std::io::Error::other)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn davis_palette_starts_like_pascal() {
        let p = davis_palette();
        assert_eq!(&p[..12], &[0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0]);
        assert_eq!(&p[255 * 3..], &[224, 224, 192]);
    }

    #[test]
    fn palette_and_rgb_pngs_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let map = IdMap::from_vec(3, 2, vec![0, 1, 2, 255, 7, 0]).unwrap();
        let p = dir.path().join("p.png");
        write_palette_png(&p, &map, &davis_palette()).unwrap();
        let back = read_index_png(&p).unwrap();
        assert_eq!(back.map, map);
        assert!(!back.rgb_ids);
        assert_eq!(back.palette.unwrap()[3..6], [128, 0, 0]);

        let big = IdMap::from_vec(2, 2, vec![0, 300, 70000, 16_777_215]).unwrap();
        assert!(write_palette_png(&p, &big, &davis_palette()).is_err());
        let q = dir.path().join("q.png");
        write_rgb_id_png(&q, &big).unwrap();
        let back = read_index_png(&q).unwrap();
        assert!(back.rgb_ids);
        assert_eq!(back.map, big);
    }

    #[test]
    fn non_images_give_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("notes.png");
        std::fs::write(&f, b"not an image").unwrap();
        let e = read_index_png(&f).unwrap_err().to_string();
        assert!(e.contains("notes.png"), "{e}");
        let e = read_rgb(&f).unwrap_err().to_string();
        assert!(e.contains("notes.png"), "{e}");
        let e = read_rgb(&dir.path().join("missing.jpg"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.jpg"), "{e}");
    }

    /// A PNG whose header declares `w × h` 8-bit pixels of `color` (png colour type) and
    /// whose image data are a few zero bytes.
    pub(crate) fn png_declaring(w: u32, h: u32, color: u8) -> Vec<u8> {
        let chunk = |out: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
            out.extend((data.len() as u32).to_be_bytes());
            let mut crc = flate2::Crc::new();
            crc.update(kind);
            crc.update(data);
            out.extend(kind);
            out.extend(data);
            out.extend(crc.sum().to_be_bytes());
        };
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = w.to_be_bytes().to_vec();
        ihdr.extend(h.to_be_bytes());
        ihdr.extend([8, color, 0, 0, 0]);
        chunk(&mut png, b"IHDR", &ihdr);
        chunk(
            &mut png,
            b"IDAT",
            &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
        );
        chunk(&mut png, b"IEND", &[]);
        png
    }

    #[test]
    fn huge_declared_sizes_are_refused_before_allocating() {
        let dir = tempfile::tempdir().unwrap();
        for (name, color) in [("index.png", 3u8), ("gray.png", 0), ("rgb.png", 2)] {
            let f = dir.path().join(name);
            std::fs::write(&f, png_declaring(100_000, 100_000, color)).unwrap();
            for e in [
                read_index_png(&f).unwrap_err().to_string(),
                read_rgb(&f).unwrap_err().to_string(),
            ] {
                assert!(e.contains(name) && e.contains("100000x100000"), "{e}");
            }
        }
        // At the limit the header is accepted (and the missing data are then reported).
        let f = dir.path().join("edge.png");
        std::fs::write(&f, png_declaring(1 << 14, 1 << 13, 0)).unwrap();
        let e = read_index_png(&f).unwrap_err().to_string();
        assert!(!e.contains("limit"), "{e}");
    }

    #[test]
    fn a_truncated_jpeg_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let img = RgbImage::from_fn(96, 64, |x, y| {
            image::Rgb([
                (x * 7 % 256) as u8,
                (y * 13 % 256) as u8,
                ((x * y) % 256) as u8,
            ])
        });
        let full = dir.path().join("00001.jpg");
        write_jpeg(&full, &img, 90).unwrap();
        assert_eq!(read_rgb(&full).unwrap().dimensions(), (96, 64));
        let bytes = std::fs::read(&full).unwrap();
        let cut = dir.path().join("00002.jpg");
        std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
        let e = read_rgb(&cut).unwrap_err().to_string();
        assert!(e.contains("00002.jpg") && e.contains("truncated"), "{e}");
        // Bytes after the end marker (as some cameras append) are accepted.
        let mut padded = bytes.clone();
        padded.extend([0u8; 64]);
        std::fs::write(&cut, &padded).unwrap();
        assert!(read_rgb(&cut).is_ok());
    }
}
