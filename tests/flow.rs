//! Tests of the optical-flow propagator: flow accuracy on synthetic motions of real frames,
//! mask propagation on synthetic and real video (DAVIS-16), and the `Propagator` semantics.

mod common;

use deva::config::FlowConfig;
use deva::propagator::flow::{dis_flow, FlowField, Plane, Pyramid};
use image::RgbImage;

/// A similarity transform about the image centre: `A(x) = c + s·R(θ)·(x − c) + t`.
#[derive(Clone, Copy, Debug)]
struct Similarity {
    scale: f32,
    angle_deg: f32,
    tx: f32,
    ty: f32,
}

impl Similarity {
    fn apply(&self, (cx, cy): (f32, f32), x: f32, y: f32) -> (f32, f32) {
        let (s, c) = self.angle_deg.to_radians().sin_cos();
        let (dx, dy) = (x - cx, y - cy);
        (
            cx + self.scale * (c * dx - s * dy) + self.tx,
            cy + self.scale * (s * dx + c * dy) + self.ty,
        )
    }

    fn invert(&self, (cx, cy): (f32, f32), x: f32, y: f32) -> (f32, f32) {
        let (s, c) = self.angle_deg.to_radians().sin_cos();
        let (dx, dy) = (
            (x - self.tx - cx) / self.scale,
            (y - self.ty - cy) / self.scale,
        );
        (cx + c * dx + s * dy, cy - s * dx + c * dy)
    }
}

/// The oracle: `image` moved by `t` (each output pixel `y` takes the bilinear value at
/// `A⁻¹(y)`, border replicated), written independently of the code under test.
fn transform_image(image: &RgbImage, t: Similarity) -> RgbImage {
    let (w, h) = (image.width(), image.height());
    let c = ((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0);
    RgbImage::from_fn(w, h, |x, y| {
        let (sx, sy) = t.invert(c, x as f32, y as f32);
        let sx = sx.clamp(0.0, (w - 1) as f32);
        let sy = sy.clamp(0.0, (h - 1) as f32);
        let (x0, y0) = (sx.floor() as u32, sy.floor() as u32);
        let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
        let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
        let mut px = [0u8; 3];
        for (k, p) in px.iter_mut().enumerate() {
            let g = |x: u32, y: u32| image.get_pixel(x, y)[k] as f32;
            let top = g(x0, y0) * (1.0 - fx) + g(x1, y0) * fx;
            let bot = g(x0, y1) * (1.0 - fx) + g(x1, y1) * fx;
            *p = (top * (1.0 - fy) + bot * fy).round() as u8;
        }
        image::Rgb(px)
    })
}

/// The true flow of `t` from the original to the transformed image.
fn true_flow(w: usize, h: usize, t: Similarity) -> FlowField {
    let c = ((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0);
    let at = |x: usize, y: usize| t.apply(c, x as f32, y as f32);
    FlowField::from_planes(
        Plane::from_fn(w, h, |x, y| at(x, y).0 - x as f32),
        Plane::from_fn(w, h, |x, y| at(x, y).1 - y as f32),
    )
}

fn davis_frame(seq: &str, frame: usize) -> Option<RgbImage> {
    let dir = common::data("davis16")?;
    let path = dir.join(format!("JPEGImages/480p/{seq}/{frame:05}.jpg"));
    Some(deva::imageio::read_rgb(&path).expect("DAVIS frame"))
}

fn flow_between(a: &RgbImage, b: &RgbImage, config: &FlowConfig) -> FlowField {
    let (w, h) = (a.width() as usize, a.height() as usize);
    let levels = deva::propagator::flow::coarsest_level(config, w, h) + 1;
    dis_flow(&Pyramid::new(a, levels), &Pyramid::new(b, levels), config)
}

/// Margin (pixels) excluded along the border when measuring the end-point error.
const EPE_MARGIN: f32 = 16.0;

#[test]
fn flow_end_point_error_on_synthetic_motions_of_real_frames() {
    let Some(_) = common::data("davis16") else {
        return;
    };
    let config = FlowConfig::default();
    let motions = [
        (
            "translation",
            Similarity {
                scale: 1.0,
                angle_deg: 0.0,
                tx: 3.37,
                ty: -2.71,
            },
        ),
        (
            "rotation",
            Similarity {
                scale: 1.0,
                angle_deg: 1.5,
                tx: 0.0,
                ty: 0.0,
            },
        ),
        (
            "zoom",
            Similarity {
                scale: 1.03,
                angle_deg: 0.0,
                tx: 0.0,
                ty: 0.0,
            },
        ),
        (
            "combined",
            Similarity {
                scale: 0.98,
                angle_deg: -1.0,
                tx: -1.6,
                ty: 2.3,
            },
        ),
    ];
    for (seq, frame) in [("blackswan", 0), ("car-shadow", 20), ("dog", 30)] {
        let a = davis_frame(seq, frame).unwrap();
        let (w, h) = (a.width() as usize, a.height() as usize);
        let c = ((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0);
        for (name, t) in motions {
            let b = transform_image(&a, t);
            let flow = flow_between(&a, &b, &config);
            let truth = true_flow(w, h, t);
            let inner = |x: usize, y: usize| {
                let (tx, ty) = t.apply(c, x as f32, y as f32);
                let m = EPE_MARGIN;
                let inside = |px: f32, py: f32| {
                    px >= m && py >= m && px <= w as f32 - 1.0 - m && py <= h as f32 - 1.0 - m
                };
                inside(x as f32, y as f32) && inside(tx, ty)
            };
            let epe = flow.mean_epe(&truth, inner).unwrap();
            eprintln!("{seq}/{frame:05} {name}: EPE {epe:.3} px");
            assert!(epe < 0.5, "{seq} {name}: EPE {epe:.3} px");
        }
    }
}

#[test]
fn forward_backward_consistency_flags_the_strip_that_leaves_the_view() {
    let Some(a) = davis_frame("blackswan", 10) else {
        return;
    };
    let config = FlowConfig::default();
    let t = Similarity {
        scale: 1.0,
        angle_deg: 0.0,
        tx: 12.4,
        ty: -7.7,
    };
    let b = transform_image(&a, t);
    let (w, h) = (a.width() as usize, a.height() as usize);
    let fwd = flow_between(&a, &b, &config);
    let bwd = flow_between(&b, &a, &config);
    let c = fwd.consistency(&bwd, config.consistency_px, config.consistency_rel);
    // Pixels of A that move out of B: x + 12.4 > w − 0.5 or y − 7.7 < −0.5.
    let leaves = |x: usize, y: usize| x + 13 > w || y < 7;
    let (mut strip, mut strip_flagged, mut inner, mut inner_ok) = (0, 0, 0, 0);
    for y in 0..h {
        for x in 0..w {
            let ok = c.at(x, y) > 0.5;
            if leaves(x, y) {
                strip += 1;
                strip_flagged += usize::from(!ok);
            } else if x >= 20 && x + 20 + 13 <= w && y >= 7 + 20 && y + 20 <= h {
                inner += 1;
                inner_ok += usize::from(ok);
            }
        }
    }
    let flagged = strip_flagged as f64 / strip as f64;
    let kept = inner_ok as f64 / inner as f64;
    eprintln!("strip flagged {flagged:.3}, interior consistent {kept:.3}");
    assert!(
        flagged > 0.95,
        "only {flagged:.3} of the leaving strip flagged"
    );
    assert!(kept > 0.95, "only {kept:.3} of the interior consistent");
}
