//! Soft masks of tracked objects: one probability map per object plus background.

use super::{IdMap, ObjectId};
use crate::error::{Error, Result};

/// Clamp used by [`ObjectProbs::aggregate`], as in the reference soft aggregation.
const AGGREGATE_EPS: f32 = 1e-7;

/// Soft masks of tracked objects on one frame.
///
/// Channel 0 is the background; channel `i` (1-based) belongs to `ids()[i - 1]`. Maps are
/// stored channel-major, each row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectProbs {
    ids: Vec<ObjectId>,
    width: usize,
    height: usize,
    data: Vec<f32>,
}

/// Source indices and weight of PyTorch's bilinear resampling (`align_corners = False`).
pub(crate) fn bilinear_taps(dst: usize, src_len: usize, dst_len: usize) -> (usize, usize, f32) {
    let scale = src_len as f64 / dst_len as f64;
    let s = ((dst as f64 + 0.5) * scale - 0.5).max(0.0);
    let i0 = (s.floor() as usize).min(src_len - 1);
    let i1 = (i0 + 1).min(src_len - 1);
    (i0, i1, (s - i0 as f64) as f32)
}

impl ObjectProbs {
    /// Probabilities from channel-major data with `ids.len() + 1` channels.
    pub fn new(ids: Vec<ObjectId>, width: usize, height: usize, data: Vec<f32>) -> Result<Self> {
        let expected = (ids.len() + 1) * width * height;
        if data.len() != expected {
            return Err(Error::invalid(format!(
                "probability maps hold {} values, expected {} channels of {}x{} = {expected}",
                data.len(),
                ids.len() + 1,
                width,
                height
            )));
        }
        if ids.contains(&0) {
            return Err(Error::invalid("object id 0 is reserved for background"));
        }
        Ok(ObjectProbs {
            ids,
            width,
            height,
            data,
        })
    }

    /// Certain background everywhere, with no objects.
    pub fn background(width: usize, height: usize) -> Self {
        ObjectProbs {
            ids: Vec::new(),
            width,
            height,
            data: vec![1.0; width * height],
        }
    }

    /// Hard one-hot maps of `ids` from an id map; pixels of other ids become background.
    pub fn one_hot(map: &IdMap, ids: &[ObjectId]) -> Result<Self> {
        let (w, h) = (map.width(), map.height());
        let hw = w * h;
        let mut data = vec![0.0f32; (ids.len() + 1) * hw];
        let channel_of: std::collections::HashMap<ObjectId, usize> =
            ids.iter().enumerate().map(|(i, &id)| (id, i + 1)).collect();
        let mut start = 0;
        for run in map.data().chunk_by(|a, b| a == b) {
            let c = channel_of.get(&run[0]).copied().unwrap_or(0);
            data[c * hw + start..c * hw + start + run.len()].fill(1.0);
            start += run.len();
        }
        ObjectProbs::new(ids.to_vec(), w, h, data)
    }

    /// Object ids in channel order (channel 1 first).
    pub fn ids(&self) -> &[ObjectId] {
        &self.ids
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Number of channels (objects + 1).
    pub fn num_channels(&self) -> usize {
        self.ids.len() + 1
    }

    /// All values, channel-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// One channel's map (0 = background).
    pub fn channel(&self, c: usize) -> &[f32] {
        let hw = self.width * self.height;
        &self.data[c * hw..(c + 1) * hw]
    }

    /// The map of object `id`, if tracked.
    pub fn object(&self, id: ObjectId) -> Option<&[f32]> {
        self.ids
            .iter()
            .position(|&i| i == id)
            .map(|i| self.channel(i + 1))
    }

    /// The most probable id at every pixel (0 = background); ties go to the lower channel.
    pub fn argmax(&self) -> IdMap {
        let hw = self.width * self.height;
        let mut best = self.channel(0).to_vec();
        let mut out = vec![0 as ObjectId; hw];
        for (i, &id) in self.ids.iter().enumerate() {
            for ((b, o), &v) in best.iter_mut().zip(out.iter_mut()).zip(self.channel(i + 1)) {
                if v > *b {
                    *b = v;
                    *o = id;
                }
            }
        }
        IdMap::from_vec(self.width, self.height, out).expect("sizes agree by construction")
    }

    /// Bilinear resize of every channel (PyTorch `align_corners = False`) followed by
    /// [`argmax`](Self::argmax), without materialising the resized maps.
    pub fn resize_argmax(&self, width: usize, height: usize) -> IdMap {
        if width == self.width && height == self.height {
            return self.argmax();
        }
        let xt: Vec<_> = (0..width)
            .map(|x| bilinear_taps(x, self.width, width))
            .collect();
        let mut out = Vec::with_capacity(width * height);
        for y in 0..height {
            let (y0, y1, ly) = bilinear_taps(y, self.height, height);
            for &(x0, x1, lx) in &xt {
                let sample = |c: usize| {
                    let m = self.channel(c);
                    let top = m[y0 * self.width + x0] * (1.0 - lx) + m[y0 * self.width + x1] * lx;
                    let bot = m[y1 * self.width + x0] * (1.0 - lx) + m[y1 * self.width + x1] * lx;
                    top * (1.0 - ly) + bot * ly
                };
                let mut best = sample(0);
                let mut id = 0;
                for (i, &oid) in self.ids.iter().enumerate() {
                    let v = sample(i + 1);
                    if v > best {
                        best = v;
                        id = oid;
                    }
                }
                out.push(id);
            }
        }
        IdMap::from_vec(width, height, out).expect("sizes agree by construction")
    }

    /// Soft aggregation of independent object probabilities (channels 1..) into a distribution:
    /// background = Π(1 − pᵢ), values clamped to [1e-7, 1 − 1e-7], turned into logits
    /// log(p / (1 − p)) and soft-maxed over channels. Channel 0 of `self` is ignored.
    pub fn aggregate(&self) -> ObjectProbs {
        let hw = self.width * self.height;
        let n = self.num_channels();
        let mut data = vec![0.0f32; n * hw];
        let mut logits = vec![0.0f32; n];
        for p in 0..hw {
            let mut bg = 1.0f32;
            for c in 1..n {
                bg *= 1.0 - self.data[c * hw + p];
            }
            for (c, l) in logits.iter_mut().enumerate() {
                let v = if c == 0 { bg } else { self.data[c * hw + p] };
                let v = v.clamp(AGGREGATE_EPS, 1.0 - AGGREGATE_EPS);
                *l = (v / (1.0 - v)).ln();
            }
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = logits.iter().map(|l| (l - max).exp()).sum();
            for (c, l) in logits.iter().enumerate() {
                data[c * hw + p] = (l - max).exp() / sum;
            }
        }
        ObjectProbs {
            ids: self.ids.clone(),
            width: self.width,
            height: self.height,
            data,
        }
    }

    /// The maps of `ids` in that order (an id not tracked here gets an all-zero map); the
    /// background channel is kept as it is.
    pub fn select(&self, ids: &[ObjectId]) -> ObjectProbs {
        let hw = self.width * self.height;
        let mut data = Vec::with_capacity((ids.len() + 1) * hw);
        data.extend_from_slice(self.channel(0));
        for id in ids {
            match self.object(*id) {
                Some(m) => data.extend_from_slice(m),
                None => data.extend(std::iter::repeat_n(0.0, hw)),
            }
        }
        ObjectProbs {
            ids: ids.to_vec(),
            width: self.width,
            height: self.height,
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_hot_and_argmax_round_trip() {
        let map = IdMap::from_vec(3, 2, vec![0, 5, 5, 9, 0, 7]).unwrap();
        let p = ObjectProbs::one_hot(&map, &[5, 9]).unwrap();
        assert_eq!(p.num_channels(), 3);
        // id 7 is not tracked, so it becomes background.
        assert_eq!(p.argmax().data(), &[0, 5, 5, 9, 0, 0]);
        assert_eq!(p.channel(0), &[1.0, 0.0, 0.0, 0.0, 1.0, 1.0]);
    }

    #[test]
    fn aggregate_matches_the_reference_formula() {
        // One pixel, two objects with p = 0.6 and 0.3: bg = 0.4 * 0.7 = 0.28.
        let p = ObjectProbs::new(vec![1, 2], 1, 1, vec![0.0, 0.6, 0.3]).unwrap();
        let a = p.aggregate();
        let odds = [0.28f64 / 0.72, 0.6 / 0.4, 0.3 / 0.7];
        let total: f64 = odds.iter().sum();
        for (c, o) in odds.iter().enumerate() {
            assert!((a.channel(c)[0] as f64 - o / total).abs() < 1e-6);
        }
        // A hard one-hot input stays a near one-hot distribution.
        let h = ObjectProbs::new(vec![1], 1, 1, vec![0.0, 1.0])
            .unwrap()
            .aggregate();
        assert!(h.channel(1)[0] > 0.999_999);
    }

    #[test]
    fn resize_argmax_equals_materialised_bilinear() {
        // 2x1 -> 4x1: PyTorch bilinear gives x-sources -0.25->0, 0.25, 0.75, 1.25->1.
        let p = ObjectProbs::new(vec![3], 2, 1, vec![0.9, 0.2, 0.1, 0.8]).unwrap();
        // object channel after resize: 0.1, 0.275, 0.625, 0.8; background: 0.9, 0.725, 0.375, 0.2
        assert_eq!(p.resize_argmax(4, 1).data(), &[0, 0, 3, 3]);
    }

    #[test]
    fn select_reorders_and_fills_missing() {
        let p = ObjectProbs::new(vec![4, 8], 1, 1, vec![0.1, 0.2, 0.7]).unwrap();
        let s = p.select(&[8, 5]);
        assert_eq!(s.ids(), &[8, 5]);
        assert_eq!(s.data(), &[0.1, 0.7, 0.0]);
    }
}
