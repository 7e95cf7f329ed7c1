//! The exact input preparation of the applications the saliency models were shipped with:
//! rembg for U²-Net(p) (Pillow LANCZOS to 320×320, then normalisation by the image maximum and
//! ImageNet statistics) and imgly for IS-Net (non-antialiased bilinear to 1024×1024, then
//! `(v − 128) / 256`). Small differences here move the outputs far more than the network's own
//! rounding, so both resizers reproduce the originals bit for bit.

use crate::error::Result;
use crate::video::pillow::{self, PillowFilter};
use candle_core::{Device, Tensor};
use image::RgbImage;

/// Pillow's `Image.resize((width, height), Image.LANCZOS)` of an 8-bit RGB image, as rembg
/// calls it.
pub fn resize_lanczos(img: &RgbImage, width: usize, height: usize) -> RgbImage {
    pillow::resize(img, width, height, PillowFilter::Lanczos)
}

/// JavaScript's `Math.round`: the nearest integer, halves rounded up.
fn js_round(v: f64) -> f64 {
    let f = v.floor();
    if v - f >= 0.5 {
        f + 1.0
    } else {
        f
    }
}

/// imgly's `tensorResizeBilinear`: bilinear sampling at `x·W/width` (no half-pixel offset, no
/// antialiasing) in f64, rounded with `Math.round`.
pub fn resize_bilinear_imgly(img: &RgbImage, width: usize, height: usize) -> RgbImage {
    let (iw, ih) = (img.width() as usize, img.height() as usize);
    let axis = |out_len: usize, in_len: usize| -> Vec<(usize, usize, f64)> {
        let scale = in_len as f64 / out_len as f64;
        (0..out_len)
            .map(|i| {
                let s = i as f64 * scale;
                let lo = s.floor();
                let hi = s.ceil().min((in_len - 1) as f64);
                (lo as usize, hi as usize, s - lo)
            })
            .collect()
    };
    let xs = axis(width, iw);
    let ys = axis(height, ih);
    let src = img.as_raw();
    let p = |y: usize, x: usize, c: usize| f64::from(src[(y * iw + x) * 3 + c]);
    let mut out = vec![0u8; width * height * 3];
    for (y, &(y1, y2, dy)) in ys.iter().enumerate() {
        for (x, &(x1, x2, dx)) in xs.iter().enumerate() {
            for c in 0..3 {
                let v = (1.0 - dx) * (1.0 - dy) * p(y1, x1, c)
                    + dx * (1.0 - dy) * p(y1, x2, c)
                    + (1.0 - dx) * dy * p(y2, x1, c)
                    + dx * dy * p(y2, x2, c);
                out[(y * width + x) * 3 + c] = js_round(v) as u8;
            }
        }
    }
    RgbImage::from_raw(width as u32, height as u32, out).expect("buffer sized for the image")
}

/// ImageNet statistics used by rembg.
const MEAN: [f64; 3] = [0.485, 0.456, 0.406];
const STD: [f64; 3] = [0.229, 0.224, 0.225];

/// rembg's normalisation of an already resized image (formula R): `(v / m − mean) / std` in
/// f64 with `m` the image's maximum over all channels, rounded once to f32; NCHW `[1, 3, H, W]`.
/// (An all-black image, where rembg divides by zero, uses `m = 1`.)
pub fn rembg_tensor(resized: &RgbImage, device: &Device) -> Result<Tensor> {
    let m = f64::from(resized.as_raw().iter().copied().max().unwrap_or(0).max(1));
    to_nchw(resized, device, |v, c| {
        ((f64::from(v) / m - MEAN[c]) / STD[c]) as f32
    })
}

/// imgly's normalisation of an already resized image (formula I): `(v − 128) / 256`, exact in
/// f32; NCHW `[1, 3, H, W]`.
pub fn imgly_tensor(resized: &RgbImage, device: &Device) -> Result<Tensor> {
    to_nchw(resized, device, |v, _| (f32::from(v) - 128.0) / 256.0)
}

fn to_nchw(img: &RgbImage, device: &Device, f: impl Fn(u8, usize) -> f32) -> Result<Tensor> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let raw = img.as_raw();
    let mut data = Vec::with_capacity(3 * w * h);
    for c in 0..3 {
        data.extend(raw.chunks_exact(3).map(|p| f(p[c], c)));
    }
    Ok(Tensor::from_vec(data, (1, 3, h, w), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resizing_keeps_flat_images() {
        let flat = RgbImage::from_pixel(37, 23, image::Rgb([0, 128, 255]));
        let r = resize_lanczos(&flat, 16, 40);
        assert!(r.pixels().all(|p| p.0 == [0, 128, 255]));
        let r = resize_bilinear_imgly(&flat, 64, 5);
        assert!(r.pixels().all(|p| p.0 == [0, 128, 255]));
    }

    #[test]
    fn imgly_bilinear_samples_without_half_pixel_offset() {
        // Row 0, 10, 20, 30 resized to 8: sample positions x/2 → 0, 5, 10, 15, 20, 25, 30, 30
        // (the last clamps to the final pixel), rounded half up.
        let img = RgbImage::from_fn(4, 1, |x, _| image::Rgb([(x * 10) as u8, 0, 255]));
        let r = resize_bilinear_imgly(&img, 8, 1);
        let red: Vec<u8> = r.pixels().map(|p| p.0[0]).collect();
        assert_eq!(red, vec![0, 5, 10, 15, 20, 25, 30, 30]);
        assert_eq!(js_round(2.5), 3.0);
        assert_eq!(js_round(-2.5), -2.0);
    }

    #[test]
    fn normalisations_follow_their_formulas() {
        let img = RgbImage::from_fn(2, 1, |x, _| {
            if x == 0 {
                image::Rgb([0, 100, 200])
            } else {
                image::Rgb([50, 150, 250])
            }
        });
        let d = Device::Cpu;
        let r = rembg_tensor(&img, &d).unwrap();
        assert_eq!(r.dims(), &[1, 3, 1, 2]);
        let v: Vec<f32> = r.flatten_all().unwrap().to_vec1().unwrap();
        // Channel G, pixel 1: (150/250 − 0.456) / 0.224.
        assert_eq!(v[3], ((150.0 / 250.0 - 0.456) / 0.224) as f32);
        let i: Vec<f32> = imgly_tensor(&img, &d)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(
            i,
            vec![
                -0.5,
                -78.0 / 256.0,
                -28.0 / 256.0,
                22.0 / 256.0,
                72.0 / 256.0,
                122.0 / 256.0
            ]
        );
    }
}
