//! Turning warped masks into the masks of a new frame: occluded pixels are filled from
//! their consistent neighbours and a per-object colour model, then a colour-guided filter
//! (He, Sun, Tang, ECCV 2010) snaps the soft masks to the edges of the new frame.

use super::plane::Plane;
use super::FlowConfig;
use image::RgbImage;
use rayon::prelude::*;

/// Soft counts added to every histogram bin (Laplace smoothing).
const BIN_PRIOR: f32 = 0.5;
/// Normalised-convolution weight below which a neighbourhood counts as empty.
const MIN_SUPPORT: f32 = 1e-3;

/// Joint RGB histograms (one per channel of a distribution), normalised to densities.
#[derive(Debug, Clone, PartialEq)]
pub struct ColorModel {
    bins: usize,
    /// One density per channel, `bins³` entries each.
    densities: Vec<Vec<f32>>,
}

/// Index of the colour histogram bin of a pixel.
#[inline]
fn bin_of(p: &[u8], bins: usize) -> usize {
    let q = |v: u8| v as usize * bins / 256;
    (q(p[0]) * bins + q(p[1])) * bins + q(p[2])
}

impl ColorModel {
    /// Soft-count histograms of `image` under each channel map, smoothed and normalised.
    pub fn fit(image: &RgbImage, channels: &[&[f32]], bins: usize) -> ColorModel {
        let raw = image.as_raw();
        let densities = channels
            .par_iter()
            .map(|m| {
                let mut h = vec![BIN_PRIOR; bins * bins * bins];
                for (p, &wgt) in raw.chunks_exact(3).zip(m.iter()) {
                    h[bin_of(p, bins)] += wgt;
                }
                let total: f32 = h.iter().sum();
                h.iter_mut().for_each(|v| *v /= total);
                h
            })
            .collect();
        ColorModel { bins, densities }
    }

    /// The density of channel `c`.
    pub fn density(&self, c: usize) -> &[f32] {
        &self.densities[c]
    }

    /// A model from per-channel densities (each `bins³` long, summing to one).
    pub fn from_densities(bins: usize, densities: Vec<Vec<f32>>) -> ColorModel {
        ColorModel { bins, densities }
    }

    /// Histogram bins per colour channel.
    pub fn bins(&self) -> usize {
        self.bins
    }
}

/// The masks of a new frame from masks warped onto it.
///
/// `warped` is a distribution over channels at every pixel; `confidence` in [0, 1] tells how
/// far the warp can be trusted (forward–backward consistency). Returns a distribution again.
pub fn anchor(
    frame: &RgbImage,
    warped: Vec<Plane>,
    confidence: &Plane,
    colors: Option<&ColorModel>,
    config: &FlowConfig,
) -> Vec<Plane> {
    let mut planes = fill_inconsistent(
        warped,
        confidence,
        frame,
        config.fill_radius,
        config.fill_color_sigma,
    );
    if let Some(model) = colors {
        apply_color_likelihood(&mut planes, frame, confidence, model, config);
    }
    if config.filter_radius > 0 {
        let guide = Guide::new(frame, config.filter_radius, config.filter_eps);
        planes = planes.par_iter().map(|p| guide.filter(p)).collect();
    }
    normalise(&mut planes);
    if config.sharpen > 1.0 {
        for p in planes.iter_mut() {
            p.data_mut()
                .par_iter_mut()
                .for_each(|v| *v = v.powf(config.sharpen));
        }
        normalise(&mut planes);
    }
    planes
}

/// Inconsistent pixels (occluded or disoccluded: their warped masks belong to whatever
/// covered them in the other frame) take the masks of the consistent pixels around them of
/// similar colour: a joint-bilateral normalised convolution over a `(2r+1)²` window (every
/// second pixel), weights `c(q)·exp(−|I(q) − I(x)|² / 2σ²)`, blended as
/// `c·W + (1 − c)·fill`. Pixels without consistent neighbours keep their warped masks.
fn fill_inconsistent(
    warped: Vec<Plane>,
    confidence: &Plane,
    frame: &RgbImage,
    radius: usize,
    sigma: f32,
) -> Vec<Plane> {
    if radius == 0 || confidence.data().iter().all(|&c| c >= 1.0) {
        return warped;
    }
    let (w, h) = (confidence.width(), confidence.height());
    let raw = frame.as_raw();
    let inv2s2 = 1.0 / (2.0 * sigma * sigma * 255.0 * 255.0);
    let r = radius as isize;
    // New values of the inconsistent pixels, per row.
    let rows: Vec<Vec<(usize, Vec<f32>)>> = (0..h)
        .into_par_iter()
        .map(|y| {
            let mut out = Vec::new();
            for x in 0..w {
                let c = confidence.at(x, y);
                if c >= 1.0 {
                    continue;
                }
                let px = &raw[3 * (y * w + x)..3 * (y * w + x) + 3];
                let mut acc = vec![0.0f32; warped.len()];
                let mut total = 0.0f32;
                for dy in (-r..=r).step_by(2) {
                    let yy = y as isize + dy;
                    if yy < 0 || yy >= h as isize {
                        continue;
                    }
                    for dx in (-r..=r).step_by(2) {
                        let xx = x as isize + dx;
                        if xx < 0 || xx >= w as isize {
                            continue;
                        }
                        let q = yy as usize * w + xx as usize;
                        let cq = confidence.data()[q];
                        if cq <= 0.0 {
                            continue;
                        }
                        let qx = &raw[3 * q..3 * q + 3];
                        let d2: f32 = (0..3).map(|k| (px[k] as f32 - qx[k] as f32).powi(2)).sum();
                        let wgt = cq * (-d2 * inv2s2).exp();
                        total += wgt;
                        for (a, plane) in acc.iter_mut().zip(&warped) {
                            *a += wgt * plane.data()[q];
                        }
                    }
                }
                if total > MIN_SUPPORT {
                    let p = y * w + x;
                    let vals = acc
                        .iter()
                        .zip(&warped)
                        .map(|(a, plane)| c * plane.data()[p] + (1.0 - c) * a / total)
                        .collect();
                    out.push((x, vals));
                }
            }
            out
        })
        .collect();
    let mut planes = warped;
    for (y, row) in rows.into_iter().enumerate() {
        for (x, vals) in row {
            for (plane, v) in planes.iter_mut().zip(vals) {
                plane.data_mut()[y * w + x] = v;
            }
        }
    }
    planes
}

/// Multiplies every channel by its colour likelihood (relative to a uniform colour density)
/// raised to a per-pixel exponent, strong where the warp is inconsistent and weak where it is
/// consistent, then renormalises.
fn apply_color_likelihood(
    planes: &mut [Plane],
    frame: &RgbImage,
    confidence: &Plane,
    model: &ColorModel,
    config: &FlowConfig,
) {
    let (occ, vis) = (config.color_weight_occluded, config.color_weight_visible);
    if occ == 0.0 && vis == 0.0 {
        return;
    }
    let bins = model.bins();
    let volume = (bins * bins * bins) as f32;
    let pixel_bins: Vec<usize> = frame
        .as_raw()
        .par_chunks_exact(3)
        .map(|p| bin_of(p, bins))
        .collect();
    let exponents: Vec<f32> = confidence
        .data()
        .par_iter()
        .map(|&c| c * vis + (1.0 - c) * occ)
        .collect();
    for (k, plane) in planes.iter_mut().enumerate() {
        let density = model.density(k);
        plane
            .data_mut()
            .par_iter_mut()
            .zip(pixel_bins.par_iter().zip(&exponents))
            .for_each(|(v, (&b, &lam))| {
                if lam > 0.0 {
                    *v *= (density[b] * volume).powf(lam);
                }
            });
    }
    normalise(planes);
}

/// Clamps to [0, 1] and rescales every pixel to sum to one (background where all vanish).
fn normalise(planes: &mut [Plane]) {
    let hw = planes[0].data().len();
    let sums: Vec<f32> = (0..hw)
        .into_par_iter()
        .map(|p| planes.iter().map(|c| c.data()[p].clamp(0.0, 1.0)).sum())
        .collect();
    for (k, plane) in planes.iter_mut().enumerate() {
        plane
            .data_mut()
            .par_iter_mut()
            .zip(&sums)
            .for_each(|(v, &s)| {
                *v = if s > 1e-6 {
                    v.clamp(0.0, 1.0) / s
                } else if k == 0 {
                    1.0
                } else {
                    0.0
                };
            });
    }
}

/// The colour guide of a guided filter: box means of the frame and the inverse of its
/// regularised local colour covariance.
struct Guide {
    radius: usize,
    /// Colour channels in [0, 1].
    rgb: [Plane; 3],
    /// Box means of the colour channels.
    mean: [Plane; 3],
    /// Inverse of (covariance + εI), entries (rr, rg, rb, gg, gb, bb).
    inv: [Plane; 6],
}

impl Guide {
    fn new(frame: &RgbImage, radius: usize, eps: f32) -> Guide {
        let rgb = [0, 1, 2].map(|c| Plane::channel(frame, c));
        let mean = [0, 1, 2].map(|c| rgb[c].box_mean(radius));
        let pairs = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)];
        let cov: Vec<Plane> = pairs
            .par_iter()
            .map(|&(i, j)| {
                let m = rgb[i].zip_map(&rgb[j], |a, b| a * b).box_mean(radius);
                let mi = mean[i].zip_map(&mean[j], |a, b| a * b);
                m.zip_map(&mi, |a, b| a - b)
            })
            .collect();
        let (w, h) = (frame.width() as usize, frame.height() as usize);
        let inverse: Vec<[f32; 6]> = (0..w * h)
            .into_par_iter()
            .map(|p| {
                let g = |k: usize| cov[k].data()[p];
                let (a, b, c) = (g(0) + eps, g(1), g(2));
                let (d, e, f) = (g(3) + eps, g(4), g(5) + eps);
                // Symmetric 3×3 [[a b c] [b d e] [c e f]] inverted through its adjugate.
                let (ia, ib, ic) = (d * f - e * e, c * e - b * f, b * e - c * d);
                let (id, ie, iff) = (a * f - c * c, b * c - a * e, a * d - b * b);
                let det = a * ia + b * ib + c * ic;
                [ia / det, ib / det, ic / det, id / det, ie / det, iff / det]
            })
            .collect();
        let inv = [0, 1, 2, 3, 4, 5]
            .map(|k| Plane::from_vec(w, h, inverse.iter().map(|v| v[k]).collect()));
        Guide {
            radius,
            rgb,
            mean,
            inv,
        }
    }

    /// The guided filter of `p`: the locally affine function of the colours closest to `p`.
    fn filter(&self, p: &Plane) -> Plane {
        let r = self.radius;
        let mean_p = p.box_mean(r);
        let cov_ip: Vec<Plane> = (0..3)
            .map(|c| {
                let m = self.rgb[c].zip_map(p, |a, b| a * b).box_mean(r);
                let mm = self.mean[c].zip_map(&mean_p, |a, b| a * b);
                m.zip_map(&mm, |a, b| a - b)
            })
            .collect();
        let (w, h) = (p.width(), p.height());
        let n = w * h;
        let coef: Vec<[f32; 4]> = (0..n)
            .into_par_iter()
            .map(|i| {
                let s = |k: usize| self.inv[k].data()[i];
                let (cr, cg, cb) = (
                    cov_ip[0].data()[i],
                    cov_ip[1].data()[i],
                    cov_ip[2].data()[i],
                );
                let ar = s(0) * cr + s(1) * cg + s(2) * cb;
                let ag = s(1) * cr + s(3) * cg + s(4) * cb;
                let ab = s(2) * cr + s(4) * cg + s(5) * cb;
                let b = mean_p.data()[i]
                    - ar * self.mean[0].data()[i]
                    - ag * self.mean[1].data()[i]
                    - ab * self.mean[2].data()[i];
                [ar, ag, ab, b]
            })
            .collect();
        let mean_coef: Vec<Plane> = (0..4)
            .map(|k| Plane::from_vec(w, h, coef.iter().map(|c| c[k]).collect()).box_mean(r))
            .collect();
        Plane::from_fn(w, h, |x, y| {
            mean_coef[0].at(x, y) * self.rgb[0].at(x, y)
                + mean_coef[1].at(x, y) * self.rgb[1].at(x, y)
                + mean_coef[2].at(x, y) * self.rgb[2].at(x, y)
                + mean_coef[3].at(x, y)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn occluded_pixels_take_their_consistent_neighbours_masks() {
        // Object everywhere left of column 4, unknown (0.5) in the inconsistent column 2.
        let (w, h) = (8, 3);
        let obj = Plane::from_fn(w, h, |x, _| {
            if x == 2 {
                0.5
            } else if x < 4 {
                1.0
            } else {
                0.0
            }
        });
        let bg = Plane::from_fn(w, h, |x, y| 1.0 - obj.at(x, y));
        let conf = Plane::from_fn(w, h, |x, _| if x == 2 { 0.0 } else { 1.0 });
        let flat = RgbImage::from_pixel(w as u32, h as u32, image::Rgb([90, 90, 90]));
        let out = fill_inconsistent(vec![bg.clone(), obj.clone()], &conf, &flat, 2, 0.1);
        // On a flat image column 2 averages columns 0 and 4 (object and background).
        assert!((out[1].at(2, 1) - 0.5).abs() < 1e-6, "{}", out[1].at(2, 1));
        assert_eq!(out[1].at(5, 1), 0.0);
        // With the object's colour in columns 0..=2, the colour of column 2 decides.
        let split = RgbImage::from_fn(w as u32, h as u32, |x, _| {
            image::Rgb(if x <= 2 { [200, 40, 40] } else { [40, 40, 200] })
        });
        let out = fill_inconsistent(vec![bg, obj], &conf, &split, 2, 0.1);
        assert!(out[1].at(2, 1) > 0.999, "{}", out[1].at(2, 1));
    }

    #[test]
    fn guided_filter_snaps_a_blurred_mask_to_the_image_edge() {
        // Image: red left half, blue right half; mask: a soft ramp across the edge.
        let (w, h) = (16, 4);
        let img = RgbImage::from_fn(w as u32, h as u32, |x, _| {
            if x < 8 {
                image::Rgb([200, 30, 30])
            } else {
                image::Rgb([30, 30, 200])
            }
        });
        let mask = Plane::from_fn(w, h, |x, _| (1.0 - (x as f32 - 4.0) / 8.0).clamp(0.0, 1.0));
        let guide = Guide::new(&img, 2, 1e-3);
        let q = guide.filter(&mask);
        // The input steps by 0.125 per pixel; the filtered mask jumps at the colour edge.
        assert!(
            q.at(7, 1) - q.at(8, 1) > 0.3,
            "{} {}",
            q.at(7, 1),
            q.at(8, 1)
        );
    }

    #[test]
    fn colour_model_prefers_the_channel_that_owns_the_colour() {
        // 20 red object pixels, 20 green background pixels; 64 bins with 0.5 prior each:
        // object red density (20 + 0.5) / 52, background red density 0.5 / 52.
        let img = RgbImage::from_fn(40, 1, |x, _| {
            image::Rgb(if x < 20 { [250, 0, 0] } else { [0, 250, 0] })
        });
        let bg: Vec<f32> = (0..40).map(|x| if x < 20 { 0.0 } else { 1.0 }).collect();
        let obj: Vec<f32> = bg.iter().map(|v| 1.0 - v).collect();
        let m = ColorModel::fit(&img, &[&bg, &obj], 4);
        let red = bin_of(&[250, 0, 0], 4);
        assert!((m.density(1)[red] - 20.5 / 52.0).abs() < 1e-6);
        assert!((m.density(0)[red] - 0.5 / 52.0).abs() < 1e-6);
        let total: f32 = m.density(0).iter().sum();
        assert!((total - 1.0).abs() < 1e-4);
    }
}
