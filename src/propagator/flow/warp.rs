//! Backward warping of soft masks along a flow field.

use super::field::FlowField;
use super::plane::Plane;
use crate::mask::ObjectProbs;

/// Every channel of `probs` (frame A) pulled onto frame B with the flow `b_to_a` from B to A:
/// `out(x) = probs(x + flow(x))`, bilinear, border clamped. The channels of a distribution stay
/// a distribution (bilinear weights sum to one).
pub fn warp_channels(probs: &ObjectProbs, b_to_a: &FlowField) -> Vec<Plane> {
    let (w, h) = (probs.width(), probs.height());
    (0..probs.num_channels())
        .map(|c| {
            let src = Plane::from_vec(w, h, probs.channel(c).to_vec());
            src.warped(b_to_a.u_plane(), b_to_a.v_plane())
        })
        .collect()
}

/// Every channel of `probs` (frame A) pushed onto frame B with the flow `a_to_b` from A to
/// B (bilinear splatting), normalised by the mass that landed on each pixel of B, blended
/// with `fallback` (the backward warp) where less than one pixel's worth of mass landed:
/// `out = min(1, m)·splat/m + (1 − min(1, m))·fallback`.
///
/// Pushing the masks along the flow of their own pixels keeps an object from growing into
/// weakly textured surroundings whose (backward) flow is blurred across the motion boundary:
/// only pixels of the object can carry it, and disoccluded pixels receive the background.
pub fn splat_channels(probs: &ObjectProbs, a_to_b: &FlowField, fallback: Vec<Plane>) -> Vec<Plane> {
    let (w, h) = (probs.width(), probs.height());
    let n = probs.num_channels();
    let mut acc = vec![vec![0.0f32; w * h]; n];
    let mut mass = vec![0.0f32; w * h];
    for y in 0..h {
        for x in 0..w {
            let (u, v) = a_to_b.at(x, y);
            let (tx, ty) = (x as f32 + u, y as f32 + v);
            let (fx, fy) = (tx.floor(), ty.floor());
            let (ax, ay) = (tx - fx, ty - fy);
            let p = y * w + x;
            for (dx, dy, wgt) in [
                (0, 0, (1.0 - ax) * (1.0 - ay)),
                (1, 0, ax * (1.0 - ay)),
                (0, 1, (1.0 - ax) * ay),
                (1, 1, ax * ay),
            ] {
                let (qx, qy) = (fx as isize + dx, fy as isize + dy);
                if wgt <= 0.0 || qx < 0 || qy < 0 || qx >= w as isize || qy >= h as isize {
                    continue;
                }
                let q = qy as usize * w + qx as usize;
                mass[q] += wgt;
                for (c, a) in acc.iter_mut().enumerate() {
                    a[q] += wgt * probs.channel(c)[p];
                }
            }
        }
    }
    acc.into_iter()
        .zip(fallback)
        .map(|(a, back)| {
            let data = a
                .iter()
                .zip(&mass)
                .zip(back.data())
                .map(|((&s, &m), &b)| {
                    let t = m.min(1.0);
                    if m > 0.0 {
                        t * s / m + (1.0 - t) * b
                    } else {
                        b
                    }
                })
                .collect();
            Plane::from_vec(w, h, data)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warping_pulls_values_from_the_displaced_position() {
        // One object occupying column 1 of a 4×1 frame; B sees A shifted right by one pixel,
        // so the flow B → A is −1 everywhere and the object lands on column 2.
        let probs = ObjectProbs::new(vec![7], 4, 1, vec![1., 0., 1., 1., 0., 1., 0., 0.]).unwrap();
        let flow = FlowField::from_planes(Plane::filled(4, 1, -1.0), Plane::filled(4, 1, 0.0));
        let out = warp_channels(&probs, &flow);
        assert_eq!(out[1].data(), &[0., 0., 1., 0.]);
        assert_eq!(out[0].data(), &[1., 1., 0., 1.]);
    }

    #[test]
    fn splatting_pushes_mass_along_the_flow_and_falls_back_in_holes() {
        // Object at column 1 moves right by one; column 0 receives nothing (a hole), where
        // the fallback (0.25 object) is used.
        let probs = ObjectProbs::new(vec![7], 4, 1, vec![1., 0., 1., 1., 0., 1., 0., 0.]).unwrap();
        let flow = FlowField::from_planes(Plane::filled(4, 1, 1.0), Plane::filled(4, 1, 0.0));
        let fallback = vec![Plane::filled(4, 1, 0.75), Plane::filled(4, 1, 0.25)];
        let out = splat_channels(&probs, &flow, fallback);
        assert_eq!(out[1].data(), &[0.25, 0., 1., 0.]);
        assert_eq!(out[0].data(), &[0.75, 1., 0., 1.]);
    }
}
