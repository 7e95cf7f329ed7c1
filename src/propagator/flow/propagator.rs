//! [`FlowPropagator`]: the `Propagator` built on optical flow.

use super::anchor::{anchor, ColorModel};
use super::dis::{coarsest_level, dis_flow, Pyramid};
use super::plane::{on_pool, Plane};
use super::warp::{splat_channels, warp_channels};
use super::FlowConfig;
use crate::error::{Error, Result};
use crate::mask::{ObjectId, ObjectProbs};
use crate::propagator::Propagator;
use crate::video::Frame;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Frames whose pyramids are kept when the caller never releases them.
const CACHE_FRAMES: usize = 8;

/// The frame the next propagation starts from.
struct Previous {
    index: usize,
    pyramid: Arc<Pyramid>,
    probs: ObjectProbs,
}

/// Colour histograms learnt from memorised frames: for every channel, the one of the first
/// frame it was memorised in (the reference) and the one of the latest.
#[derive(Default)]
struct ColorMemory {
    /// Background's (first, latest) densities.
    background: Option<(Vec<f32>, Vec<f32>)>,
    /// Every object's (first, latest) densities.
    objects: HashMap<ObjectId, (Vec<f32>, Vec<f32>)>,
}

impl ColorMemory {
    fn memorise(&mut self, frame: &Frame, probs: &ObjectProbs, bins: usize) {
        let channels: Vec<&[f32]> = (0..probs.num_channels())
            .map(|c| probs.channel(c))
            .collect();
        let model = ColorModel::fit(&frame.image, &channels, bins);
        let merge = |slot: Option<(Vec<f32>, Vec<f32>)>, new: &[f32]| match slot {
            Some((first, _)) => (first, new.to_vec()),
            None => (new.to_vec(), new.to_vec()),
        };
        self.background = Some(merge(self.background.take(), model.density(0)));
        for (i, id) in probs.ids().iter().enumerate() {
            let slot = self.objects.remove(id);
            self.objects.insert(*id, merge(slot, model.density(i + 1)));
        }
    }

    /// The model of `ids` (after the background): the mean of first and latest densities; a
    /// channel never memorised gets a uniform density.
    fn model(&self, ids: &[ObjectId], bins: usize) -> Option<ColorModel> {
        let bg = self.background.as_ref()?;
        let uniform = vec![1.0 / (bins * bins * bins) as f32; bins * bins * bins];
        let mean =
            |(a, b): &(Vec<f32>, Vec<f32>)| a.iter().zip(b).map(|(x, y)| 0.5 * (x + y)).collect();
        let mut densities = vec![mean(bg)];
        densities.extend(
            ids.iter()
                .map(|id| self.objects.get(id).map_or_else(|| uniform.clone(), mean)),
        );
        Some(ColorModel::from_densities(bins, densities))
    }
}

/// A weight-free propagator built on DIS optical flow.
///
/// Each propagation computes the flows between the previous frame and the new one in both
/// directions; the previous masks are pushed along the forward flow of their own pixels
/// (bilinear splatting, so an object cannot grow into surroundings whose flow is blurred
/// across the motion boundary), with the backward warp (bilinear sampling) filling the pixels
/// nothing lands on. Forward–backward consistency marks occluded and disoccluded pixels: the
/// per-object colour model decides those (and, when `fill_radius > 0`, the masks of consistent
/// neighbours of similar colour). A colour-guided filter then snaps the masks to the frame's
/// edges and a sharpening exponent keeps soft tails from accumulating.
///
/// Memory: the masks of the last frame given to [`update`](Propagator::update) (or returned by
/// [`propagate`](Propagator::propagate)) are propagated; memorised frames feed per-object colour
/// histograms (the first memorised frame of each object, i.e. the reference, averaged with the
/// latest), which re-anchor uncertain pixels so that masks do not drift.
pub struct FlowPropagator {
    config: FlowConfig,
    objects: Vec<ObjectId>,
    previous: Option<Previous>,
    colors: ColorMemory,
    memorised: bool,
    /// Pyramids by frame index (and size), oldest first.
    cache: VecDeque<(usize, (usize, usize), Arc<Pyramid>)>,
}

impl FlowPropagator {
    /// A propagator with `config` (checked).
    pub fn new(config: FlowConfig) -> Result<FlowPropagator> {
        config.validate()?;
        Ok(FlowPropagator {
            config,
            objects: Vec::new(),
            previous: None,
            colors: ColorMemory::default(),
            memorised: false,
            cache: VecDeque::new(),
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &FlowConfig {
        &self.config
    }

    /// The pyramid of `frame`, cached by index and size.
    fn pyramid(&mut self, frame: &Frame) -> Arc<Pyramid> {
        let size = (frame.width(), frame.height());
        if let Some((_, _, p)) = self
            .cache
            .iter()
            .find(|(i, s, _)| *i == frame.index && *s == size)
        {
            return p.clone();
        }
        let levels = coarsest_level(&self.config, size.0, size.1) + 1;
        let p = Arc::new(Pyramid::new(&frame.image, levels));
        if self.cache.len() == CACHE_FRAMES {
            self.cache.pop_front();
        }
        self.cache.push_back((frame.index, size, p.clone()));
        p
    }

    /// Carries `probs` from the frame of pyramid `src` onto `dst` (pyramid `dst_pyr`).
    fn carry(
        &self,
        src: &Pyramid,
        probs: &ObjectProbs,
        dst: &Frame,
        dst_pyr: &Pyramid,
        colors: Option<&ColorModel>,
    ) -> Result<ObjectProbs> {
        let config = &self.config;
        let data = on_pool(|| {
            let back = dis_flow(dst_pyr, src, config);
            let fwd = dis_flow(src, dst_pyr, config);
            let confidence = back.consistency(&fwd, config.consistency_px, config.consistency_rel);
            // Masks pushed along the forward flow of their own pixels; where nothing lands
            // (disocclusions, expansion) the backward warp fills in.
            let warped = splat_channels(probs, &fwd, warp_channels(probs, &back));
            let planes = anchor(&dst.image, warped, &confidence, colors, config);
            planes.into_iter().flat_map(Plane::into_vec).collect()
        });
        ObjectProbs::new(probs.ids().to_vec(), dst.width(), dst.height(), data)
    }
}

/// Checks that `masks` has the size of `frame`.
fn check_size(frame: &Frame, masks: &ObjectProbs, what: &str) -> Result<()> {
    if (masks.width(), masks.height()) != (frame.width(), frame.height()) {
        return Err(Error::invalid(format!(
            "flow propagator: {what} masks are {}x{} but frame {} ({}) is {}x{}",
            masks.width(),
            masks.height(),
            frame.index,
            frame.name,
            frame.width(),
            frame.height()
        )));
    }
    Ok(())
}

/// `masks` clamped to [0, 1] and normalised to sum to one at every pixel.
fn normalised(masks: &ObjectProbs) -> Result<ObjectProbs> {
    let hw = masks.width() * masks.height();
    let n = masks.num_channels();
    let mut data: Vec<f32> = masks.data().iter().map(|v| v.clamp(0.0, 1.0)).collect();
    for p in 0..hw {
        let s: f32 = (0..n).map(|c| data[c * hw + p]).sum();
        if s > 1e-6 {
            (0..n).for_each(|c| data[c * hw + p] /= s);
        } else {
            data[p] = 1.0;
        }
    }
    ObjectProbs::new(masks.ids().to_vec(), masks.width(), masks.height(), data)
}

impl Propagator for FlowPropagator {
    fn name(&self) -> &str {
        "flow"
    }

    fn objects(&self) -> &[ObjectId] {
        &self.objects
    }

    fn has_memory(&self) -> bool {
        self.memorised
    }

    fn propagate(&mut self, frame: &Frame) -> Result<ObjectProbs> {
        let (w, h) = (frame.width(), frame.height());
        let Some(prev) = self.previous.as_ref().filter(|_| self.memorised) else {
            return Ok(ObjectProbs::background(w, h).select(&self.objects));
        };
        if (prev.probs.width(), prev.probs.height()) != (w, h) {
            return Err(Error::invalid(format!(
                "flow propagator: frame {} ({}) is {w}x{h} but the previous frame {} was {}x{}",
                frame.index,
                frame.name,
                prev.index,
                prev.probs.width(),
                prev.probs.height()
            )));
        }
        let (src, probs) = (prev.pyramid.clone(), prev.probs.clone());
        let dst = self.pyramid(frame);
        let colors = self.colors.model(&self.objects, self.config.color_bins);
        let out = self.carry(&src, &probs, frame, &dst, colors.as_ref())?;
        self.previous = Some(Previous {
            index: frame.index,
            pyramid: dst,
            probs: out.clone(),
        });
        Ok(out)
    }

    fn update(&mut self, frame: &Frame, masks: &ObjectProbs, memorize: bool) -> Result<()> {
        check_size(frame, masks, "updated")?;
        if let Some(missing) = self.objects.iter().find(|id| !masks.ids().contains(id)) {
            return Err(Error::invalid(format!(
                "flow propagator: the masks of frame {} ({}) lack tracked object {missing}",
                frame.index, frame.name
            )));
        }
        let new: Vec<ObjectId> = masks
            .ids()
            .iter()
            .filter(|id| !self.objects.contains(id))
            .copied()
            .collect();
        self.objects.extend(new);
        let probs = normalised(&masks.select(&self.objects))?;
        if memorize {
            self.colors.memorise(frame, &probs, self.config.color_bins);
            self.memorised = true;
        }
        let pyramid = self.pyramid(frame);
        self.previous = Some(Previous {
            index: frame.index,
            pyramid,
            probs,
        });
        Ok(())
    }

    fn remove_objects(&mut self, ids: &[ObjectId]) -> Result<()> {
        self.objects.retain(|id| !ids.contains(id));
        for id in ids {
            self.colors.objects.remove(id);
        }
        if let Some(prev) = self.previous.as_mut() {
            // The removed objects' probability goes to the background.
            let hw = prev.probs.width() * prev.probs.height();
            let kept = prev.probs.select(&self.objects);
            let mut data = kept.data().to_vec();
            for (c, id) in prev.probs.ids().iter().enumerate() {
                if ids.contains(id) {
                    let removed = prev.probs.channel(c + 1);
                    data[..hw]
                        .iter_mut()
                        .zip(removed)
                        .for_each(|(b, r)| *b += r);
                }
            }
            prev.probs = ObjectProbs::new(self.objects.clone(), kept.width(), kept.height(), data)?;
        }
        Ok(())
    }

    fn align(&mut self, src: &Frame, masks: &ObjectProbs, dst: &Frame) -> Result<ObjectProbs> {
        check_size(src, masks, "aligned")?;
        if (src.width(), src.height()) != (dst.width(), dst.height()) {
            return Err(Error::invalid(format!(
                "flow propagator: cannot align frame {} ({}x{}) to frame {} ({}x{})",
                src.index,
                src.width(),
                src.height(),
                dst.index,
                dst.width(),
                dst.height()
            )));
        }
        let masks = normalised(masks)?;
        let channels: Vec<&[f32]> = (0..masks.num_channels())
            .map(|c| masks.channel(c))
            .collect();
        let colors = ColorModel::fit(&src.image, &channels, self.config.color_bins);
        let (src_pyr, dst_pyr) = (self.pyramid(src), self.pyramid(dst));
        self.carry(&src_pyr, &masks, dst, &dst_pyr, Some(&colors))
    }

    fn release_frame(&mut self, index: usize) {
        self.cache.retain(|(i, _, _)| *i != index);
    }

    fn reset(&mut self) {
        self.objects.clear();
        self.previous = None;
        self.colors = ColorMemory::default();
        self.memorised = false;
        self.cache.clear();
    }
}
