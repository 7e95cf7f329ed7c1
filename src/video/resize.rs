//! Resizing frames to the network's internal resolution.

use image::RgbImage;

/// The internal size for a frame: the shorter side becomes `size` and the longer side is
/// scaled in proportion and truncated (torchvision `Resize(size)`); `size <= 0` keeps the
/// native resolution.
pub fn internal_size(width: usize, height: usize, size: i32) -> (usize, usize) {
    if size <= 0 {
        return (width, height);
    }
    let s = size as usize;
    if width <= height {
        (s, (s as f64 * height as f64 / width as f64) as usize)
    } else {
        ((s as f64 * width as f64 / height as f64) as usize, s)
    }
}

/// Weights of one output sample of a separable triangle (bilinear) filter whose support
/// widens when downscaling, as PIL and torchvision's antialiased bilinear resize do.
fn filter_taps(out_len: usize, in_len: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = in_len as f64 / out_len as f64;
    let fs = scale.max(1.0);
    let support = fs;
    (0..out_len)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let lo = ((center - support + 0.5).floor().max(0.0)) as usize;
            let hi = ((center + support + 0.5).floor() as usize).min(in_len);
            let mut w: Vec<f64> = (lo..hi)
                .map(|j| {
                    let t = ((j as f64 - center + 0.5) / fs).abs();
                    (1.0 - t).max(0.0)
                })
                .collect();
            let sum: f64 = w.iter().sum();
            if sum > 0.0 {
                w.iter_mut().for_each(|v| *v /= sum);
            }
            (lo, w.into_iter().map(|v| v as f32).collect())
        })
        .collect()
}

/// Bilinear resize with antialiasing when downscaling; returns a copy if the size is unchanged.
pub fn resize_rgb(img: &RgbImage, width: usize, height: usize) -> RgbImage {
    let (iw, ih) = (img.width() as usize, img.height() as usize);
    if iw == width && ih == height {
        return img.clone();
    }
    let src = img.as_raw();
    let xt = filter_taps(width, iw);
    let yt = filter_taps(height, ih);
    // Horizontal pass into f32, then vertical pass with rounding.
    let mut tmp = vec![0f32; ih * width * 3];
    for y in 0..ih {
        let row = &src[y * iw * 3..(y + 1) * iw * 3];
        for (x, (lo, w)) in xt.iter().enumerate() {
            let mut acc = [0f32; 3];
            for (k, wk) in w.iter().enumerate() {
                let p = &row[(lo + k) * 3..(lo + k) * 3 + 3];
                for c in 0..3 {
                    acc[c] += wk * p[c] as f32;
                }
            }
            tmp[(y * width + x) * 3..(y * width + x) * 3 + 3].copy_from_slice(&acc);
        }
    }
    let mut out = vec![0u8; height * width * 3];
    for (y, (lo, w)) in yt.iter().enumerate() {
        for x in 0..width {
            let mut acc = [0f32; 3];
            for (k, wk) in w.iter().enumerate() {
                let p = &tmp[((lo + k) * width + x) * 3..((lo + k) * width + x) * 3 + 3];
                for c in 0..3 {
                    acc[c] += wk * p[c];
                }
            }
            for c in 0..3 {
                out[(y * width + x) * 3 + c] = acc[c].round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    RgbImage::from_raw(width as u32, height as u32, out).expect("buffer sized for the image")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_size_follows_the_shorter_side() {
        assert_eq!(internal_size(1280, 720, 480), (853, 480));
        assert_eq!(internal_size(854, 480, 480), (854, 480));
        assert_eq!(internal_size(360, 640, 480), (480, 853));
        assert_eq!(internal_size(100, 50, -1), (100, 50));
    }

    #[test]
    fn resize_preserves_constant_images_and_averages_when_halving() {
        let img = RgbImage::from_pixel(8, 6, image::Rgb([10, 200, 33]));
        let r = resize_rgb(&img, 5, 3);
        assert!(r.pixels().all(|p| p.0 == [10, 200, 33]));
        // Halving a stripe pattern: the triangle filter widens to 2 input pixels, giving the
        // values Pillow's BILINEAR resize gives for the same input (86 and 114).
        let stripes = RgbImage::from_fn(4, 2, |x, _| {
            if x % 2 == 0 {
                image::Rgb([0, 0, 0])
            } else {
                image::Rgb([200, 200, 200])
            }
        });
        let r = resize_rgb(&stripes, 2, 1);
        let red: Vec<u8> = r.pixels().map(|p| p.0[0]).collect();
        assert_eq!(red, vec![86, 114]);
    }
}
