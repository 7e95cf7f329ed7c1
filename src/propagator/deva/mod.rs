//! The DEVA propagation network as a [`Propagator`]: XMem-style memory (working, long-term,
//! sensory) read by an anisotropic L2 top-k attention, decoded into object masks.
//!
//! Driven as the reference's `DEVAInferenceCore.step` loop (propagate, then update with the
//! final masks, memorising every `mem_every` frames), it gives the reference's numbers.
//! Where the reference fails or grows without bound, this port decides:
//! - the top-k softmax subtracts the largest selected similarity (the reference can divide
//!   0 by 0 when every similarity is below about −87);
//! - the previous mask's padding holds the network's own prediction when the masks given to
//!   [`update`](Propagator::update) are the propagated ones (as in the reference's `step`),
//!   zeros otherwise (as for merged or given masks);
//! - without long-term memory, working memory keeps its first and latest `T_max − 1` frames
//!   (the reference keeps everything); without usage counting, full long-term memory drops
//!   its oldest tokens (the reference raises);
//! - top-k and the number of prototypes are capped at the tokens available; ties keep the
//!   earlier token;
//! - objects added without being memorised read nothing (zero readout) until memorised;
//! - at most a few frames' features stay cached even if they are never released.

mod config;
pub mod input;
pub mod memory;
pub mod network;
pub mod readout;
mod sensory;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

pub use self::config::{MemoryConfig, UsageCounting};
use self::input::{normalized_padded, Padding};
use self::memory::{FrameKeys, Memory, MemorySettings};
use self::network::{DecoderSkips, DevaNet, VALUE_DIM};
use self::readout::KeyTensors;
use super::Propagator;
use crate::error::{Error, Result};
use crate::mask::{ObjectId, ObjectProbs};
use crate::nn::Weights;
use crate::video::Frame;

/// Frames whose features stay cached at most (the oldest index goes first); callers normally
/// release frames themselves.
const MAX_CACHED_FRAMES: usize = 8;

/// What is kept of one encoded frame.
struct FrameState {
    pad: Padding,
    /// Normalised, padded image `[1, 3, H, W]`.
    image: Tensor,
    /// `f16` `[1, 512, h, w]`.
    f16: Tensor,
    skips: DecoderSkips,
    keys: FrameKeys,
}

/// The propagated probabilities of the last frame, padded, per object.
struct Prediction {
    frame: usize,
    pad: Padding,
    channels: HashMap<ObjectId, Vec<f32>>,
}

/// The DEVA propagator (reference `DEVAInferenceCore` without detection merging).
pub struct DevaPropagator {
    net: DevaNet,
    device: Device,
    config: MemoryConfig,
    video_length: Option<usize>,
    memory: Memory,
    objects: Vec<ObjectId>,
    /// Sensory state per object, `[1, 512, h, w]`.
    sensory: HashMap<ObjectId, Tensor>,
    /// Final masks of the last updated frame, padded, per object.
    last_mask: HashMap<ObjectId, Vec<f32>>,
    last_prediction: Option<Prediction>,
    /// Size of the frames this propagator tracks (fixed by the first one).
    size: Option<(usize, usize)>,
    frames: BTreeMap<usize, Arc<FrameState>>,
}

/// Memory settings from the configuration; usage counting per the reference formula
/// `enable_long_term ∧ length / (T_max − T_min) · P ≥ LT_max` when the length is known.
fn settings(config: &MemoryConfig, video_length: Option<usize>) -> MemorySettings {
    let count = match config.long_term_usage {
        UsageCounting::On => true,
        UsageCounting::Off => false,
        UsageCounting::Auto => match video_length {
            Some(n) => {
                let span = (config.max_mid_term_frames - config.min_mid_term_frames) as f64;
                n as f64 / span * config.num_prototypes as f64
                    >= config.max_long_term_elements as f64
            }
            None => true,
        },
    };
    MemorySettings {
        top_k: config.top_k,
        max_frames: config.max_mid_term_frames,
        min_frames: config.min_mid_term_frames,
        max_long_term: config.max_long_term_elements,
        prototypes: config.num_prototypes,
        long_term: config.enable_long_term,
        count_long_term_usage: config.enable_long_term && count,
    }
}

/// Host copy of a tensor's values.
fn host(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

/// `[1, C, h, w]` as token-major `[h·w, C]`, on the tensor's device.
fn token_major(t: &Tensor) -> Result<Tensor> {
    Ok(t.flatten_from(2)?.squeeze(0)?.t()?.contiguous()?)
}

/// The token-major values `[h·w, VALUE_DIM]` of each object of `value` `[n, VALUE_DIM, h, w]`.
fn object_values(value: &Tensor) -> Result<Vec<Tensor>> {
    (0..value.dim(0)?)
        .map(|i| token_major(&value.narrow(0, i, 1)?))
        .collect()
}

impl DevaPropagator {
    /// A propagator around a built network; `config` is validated.
    pub fn new(net: DevaNet, config: &MemoryConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        Ok(DevaPropagator {
            net,
            device: device.clone(),
            config: config.clone(),
            video_length: None,
            memory: Memory::new(settings(config, None)),
            objects: Vec::new(),
            sensory: HashMap::new(),
            last_mask: HashMap::new(),
            last_prediction: None,
            size: None,
            frames: BTreeMap::new(),
        })
    }

    /// Loads `DEVA-propagation.pth` (or a safetensors conversion) strictly: every key and
    /// shape is checked, a `module.` prefix is removed.
    pub fn from_checkpoint(
        path: impl AsRef<Path>,
        config: &MemoryConfig,
        device: &Device,
    ) -> Result<Self> {
        let w = Weights::open(path)?.strip_common_prefix("module.");
        let net = w.build(device, &[], DevaNet::load)?;
        DevaPropagator::new(net, config, device)
    }

    /// A propagator with synthetic formula weights (see [`crate::nn::synthetic`]), for tests
    /// and benchmarks.
    pub fn synthetic(seed: u64, config: &MemoryConfig, device: &Device) -> Result<Self> {
        let net = Weights::synthetic(seed, device, DevaNet::load)?;
        DevaPropagator::new(net, config, device)
    }

    /// Tells the propagator the video length (frames), which decides long-term usage
    /// counting under [`UsageCounting::Auto`]; takes effect until the first memory frame.
    pub fn set_video_length(&mut self, frames: Option<usize>) {
        self.video_length = frames;
        if !self.memory.is_engaged() {
            self.memory = Memory::new(settings(&self.config, frames));
        }
    }

    /// The memory (for inspection).
    pub fn memory(&self) -> &Memory {
        &self.memory
    }

    /// The network.
    pub fn net(&self) -> &DevaNet {
        &self.net
    }

    fn chunk(&self) -> usize {
        self.config.chunk_size.max(0) as usize
    }

    fn check_size(&mut self, frame: &Frame) -> Result<()> {
        let size = (frame.width(), frame.height());
        match self.size {
            None => {
                self.size = Some(size);
                Ok(())
            }
            Some(s) if s == size => Ok(()),
            Some((w, h)) => Err(Error::invalid(format!(
                "frame {} ({}) is {}x{}, but this video's frames are {w}x{h}",
                frame.index, frame.name, size.0, size.1
            ))),
        }
    }

    /// The cached features of `frame`, computed on first use.
    fn frame_state(&mut self, frame: &Frame) -> Result<Arc<FrameState>> {
        let pad = Padding::new(frame.width(), frame.height());
        if let Some(s) = self.frames.get(&frame.index) {
            if s.pad == pad {
                return Ok(s.clone());
            }
        }
        let image = Tensor::from_vec(
            normalized_padded(&frame.image, &pad),
            (1, 3, pad.padded_height, pad.padded_width),
            &self.device,
        )?;
        let features = self.net.encode_image(&image)?;
        let skips = self.net.decoder_skips(&features)?;
        let k = self.net.transform_key(&features.key_feat)?;
        let keys = FrameKeys {
            key: token_major(&k.key)?,
            shrinkage: k.shrinkage.flatten_all()?,
            selection: token_major(&k.selection)?,
        };
        let state = Arc::new(FrameState {
            pad,
            image,
            f16: features.f16,
            skips,
            keys,
        });
        while self.frames.len() >= MAX_CACHED_FRAMES {
            self.frames.pop_first();
        }
        self.frames.insert(frame.index, state.clone());
        Ok(state)
    }

    /// Stacks per-object padded planes into `[n, 1, H, W]`.
    fn mask_tensor(&self, planes: &[&[f32]], pad: &Padding) -> Result<Tensor> {
        let data: Vec<f32> = planes.iter().flat_map(|p| p.iter().copied()).collect();
        Ok(Tensor::from_vec(
            data,
            (planes.len(), 1, pad.padded_height, pad.padded_width),
            &self.device,
        )?)
    }

    fn zero_sensory(&self, pad: &Padding, n: usize) -> Result<Tensor> {
        let (gw, gh) = pad.grid();
        Ok(Tensor::zeros(
            (n, VALUE_DIM, gh, gw),
            DType::F32,
            &self.device,
        )?)
    }

    fn sensory_of(&self, ids: &[ObjectId], pad: &Padding) -> Result<Tensor> {
        let parts = ids
            .iter()
            .map(|id| match self.sensory.get(id) {
                Some(t) => Ok(t.clone()),
                None => self.zero_sensory(pad, 1),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&parts, 0)?)
    }

    fn store_sensory(&mut self, ids: &[ObjectId], sensory: &Tensor) -> Result<()> {
        for (i, &id) in ids.iter().enumerate() {
            self.sensory.insert(id, sensory.narrow(0, i, 1)?);
        }
        Ok(())
    }

    /// Readout tensor `[n, 512, h, w]` from per-object readouts `[512, h·w]` (zeros for
    /// objects that read nothing).
    fn readout_tensor(
        &self,
        ids: &[ObjectId],
        readouts: &[(ObjectId, Tensor)],
        pad: &Padding,
    ) -> Result<Tensor> {
        let (gw, gh) = pad.grid();
        let parts = ids
            .iter()
            .map(|id| match readouts.iter().find(|(o, _)| o == id) {
                Some((_, r)) => Ok(r.reshape((1, VALUE_DIM, gh, gw))?),
                None => self.zero_sensory(pad, 1),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// Unpadded probabilities from `[n + 1, 1, H, W]` (background first).
    fn to_probs(ids: &[ObjectId], prob: &[f32], pad: &Padding) -> Result<ObjectProbs> {
        let data = prob
            .chunks(pad.padded_len())
            .flat_map(|c| pad.unpad(c))
            .collect();
        ObjectProbs::new(ids.to_vec(), pad.width, pad.height, data)
    }

    /// The padded previous mask of each object of `masks`: the propagated prediction of this
    /// frame where `masks` still equals it (the reference keeps the network's own output in
    /// the padding then), zero padding otherwise.
    fn padded_masks(&self, frame: &Frame, masks: &ObjectProbs, pad: &Padding) -> Vec<Vec<f32>> {
        let prediction = self
            .last_prediction
            .as_ref()
            .filter(|p| p.frame == frame.index && p.pad == *pad);
        masks
            .ids()
            .iter()
            .map(|id| {
                let given = masks.object(*id).expect("ids of masks have maps");
                match prediction.and_then(|p| p.channels.get(id)) {
                    Some(padded) if pad.unpad(padded) == given => padded.clone(),
                    _ => pad.pad(given),
                }
            })
            .collect()
    }
}

impl Propagator for DevaPropagator {
    fn set_video_length(&mut self, frames: Option<usize>) {
        DevaPropagator::set_video_length(self, frames);
    }

    fn name(&self) -> &str {
        "deva"
    }

    fn objects(&self) -> &[ObjectId] {
        &self.objects
    }

    fn has_memory(&self) -> bool {
        self.memory.is_engaged()
    }

    fn propagate(&mut self, frame: &Frame) -> Result<ObjectProbs> {
        self.check_size(frame)?;
        let (w, h) = (frame.width(), frame.height());
        let ids = self.objects.clone();
        if ids.is_empty() || !self.memory.is_engaged() {
            let mut data = vec![1.0; w * h];
            data.resize((ids.len() + 1) * w * h, 0.0);
            return ObjectProbs::new(ids, w, h, data);
        }
        let st = self.frame_state(frame)?;
        let pad = st.pad;
        let readouts = self.memory.read(&st.keys.key, &st.keys.selection)?;
        let readout = self.readout_tensor(&ids, &readouts, &pad)?;
        let sensory = self.sensory_of(&ids, &pad)?;
        let zero = vec![0.0; pad.padded_len()];
        let planes: Vec<&[f32]> = ids
            .iter()
            .map(|id| {
                self.last_mask
                    .get(id)
                    .map_or(zero.as_slice(), |m| m.as_slice())
            })
            .collect();
        let last_mask = self.mask_tensor(&planes, &pad)?;
        let (_, prob, new_sensory) = self.net.segment(
            &st.f16,
            &st.skips,
            &readout,
            &sensory,
            &last_mask,
            true,
            self.chunk(),
        )?;
        if let Some(s) = new_sensory {
            self.store_sensory(&ids, &s)?;
        }
        let prob = host(&prob)?;
        let channels = ids
            .iter()
            .zip(prob.chunks(pad.padded_len()).skip(1))
            .map(|(id, c)| (*id, c.to_vec()))
            .collect();
        self.last_prediction = Some(Prediction {
            frame: frame.index,
            pad,
            channels,
        });
        Self::to_probs(&ids, &prob, &pad)
    }

    fn update(&mut self, frame: &Frame, masks: &ObjectProbs, memorize: bool) -> Result<()> {
        self.check_size(frame)?;
        if (masks.width(), masks.height()) != (frame.width(), frame.height()) {
            return Err(Error::invalid(format!(
                "masks for frame {} ({}) are {}x{}, the frame is {}x{}",
                frame.index,
                frame.name,
                masks.width(),
                masks.height(),
                frame.width(),
                frame.height()
            )));
        }
        if let Some(missing) = self.objects.iter().find(|o| !masks.ids().contains(o)) {
            return Err(Error::invalid(format!(
                "masks for frame {} ({}) lack tracked object {missing}",
                frame.index, frame.name
            )));
        }
        let new: Vec<ObjectId> = masks
            .ids()
            .iter()
            .copied()
            .filter(|o| !self.objects.contains(o))
            .collect();
        self.objects.extend(&new);
        let pad = Padding::new(frame.width(), frame.height());
        let padded = self.padded_masks(frame, masks, &pad);
        self.last_mask = masks.ids().iter().copied().zip(padded).collect();
        self.last_prediction = None;
        if !memorize || self.objects.is_empty() {
            return Ok(());
        }
        let st = self.frame_state(frame)?;
        let ids = self.objects.clone();
        let planes: Vec<&[f32]> = ids.iter().map(|id| self.last_mask[id].as_slice()).collect();
        let mask = self.mask_tensor(&planes, &pad)?;
        let sensory = self.sensory_of(&ids, &pad)?;
        let (value, sensory) =
            self.net
                .encode_mask(&st.image, &st.f16, &sensory, &mask, self.chunk())?;
        self.store_sensory(&ids, &sensory)?;
        let values: Vec<(ObjectId, Tensor)> =
            ids.iter().copied().zip(object_values(&value)?).collect();
        self.memory.add(&st.keys, &values)
    }

    fn remove_objects(&mut self, ids: &[ObjectId]) -> Result<()> {
        self.objects.retain(|o| !ids.contains(o));
        self.memory.retain_objects(&self.objects);
        for id in ids {
            self.sensory.remove(id);
            self.last_mask.remove(id);
        }
        self.last_prediction = None;
        Ok(())
    }

    fn align(&mut self, src: &Frame, masks: &ObjectProbs, dst: &Frame) -> Result<ObjectProbs> {
        if (src.width(), src.height()) != (dst.width(), dst.height())
            || (masks.width(), masks.height()) != (src.width(), src.height())
        {
            return Err(Error::invalid(format!(
                "align: frame {} ({}x{}), its masks ({}x{}) and frame {} ({}x{}) must have one size",
                src.index,
                src.width(),
                src.height(),
                masks.width(),
                masks.height(),
                dst.index,
                dst.width(),
                dst.height()
            )));
        }
        let ids = masks.ids().to_vec();
        let pad = Padding::new(dst.width(), dst.height());
        if ids.is_empty() {
            return Ok(ObjectProbs::background(pad.width, pad.height));
        }
        let s = self.frame_state(src)?;
        let d = self.frame_state(dst)?;
        let planes: Vec<Vec<f32>> = ids
            .iter()
            .map(|id| pad.pad(masks.object(*id).expect("ids of masks have maps")))
            .collect();
        let plane_refs: Vec<&[f32]> = planes.iter().map(Vec::as_slice).collect();
        let mask = self.mask_tensor(&plane_refs, &pad)?;
        let zero = self.zero_sensory(&pad, ids.len())?;
        let (value, sensory) =
            self.net
                .encode_mask(&s.image, &s.f16, &zero, &mask, self.chunk())?;
        let values = object_values(&value)?;
        let runs: Vec<Vec<&Tensor>> = values.iter().map(|v| vec![v]).collect();
        let memory = [KeyTensors {
            key: &s.keys.key,
            shrinkage: &s.keys.shrinkage,
        }];
        let read = readout::read(
            &d.keys.key,
            &d.keys.selection,
            &memory,
            &runs,
            self.config.top_k,
        )?;
        let readouts: Vec<(ObjectId, Tensor)> = ids.iter().copied().zip(read.values).collect();
        let readout = self.readout_tensor(&ids, &readouts, &pad)?;
        let (_, prob, _) = self.net.segment(
            &d.f16,
            &d.skips,
            &readout,
            &sensory,
            &mask,
            false,
            self.chunk(),
        )?;
        Self::to_probs(&ids, &host(&prob)?, &pad)
    }

    fn release_frame(&mut self, index: usize) {
        self.frames.remove(&index);
    }

    fn reset(&mut self) {
        self.memory = Memory::new(settings(&self.config, self.video_length));
        self.objects.clear();
        self.sensory.clear();
        self.last_mask.clear();
        self.last_prediction = None;
        self.size = None;
        self.frames.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counting_follows_the_reference_formula() {
        let c = MemoryConfig::default();
        // length / (10 − 5) · 128 ≥ 10000 from 391 frames on.
        assert!(!settings(&c, Some(390)).count_long_term_usage);
        assert!(settings(&c, Some(391)).count_long_term_usage);
        assert!(settings(&c, None).count_long_term_usage);
        let off = MemoryConfig {
            long_term_usage: UsageCounting::Off,
            ..c.clone()
        };
        assert!(!settings(&off, None).count_long_term_usage);
        let no_long_term = MemoryConfig {
            enable_long_term: false,
            long_term_usage: UsageCounting::On,
            ..c
        };
        assert!(!settings(&no_long_term, None).count_long_term_usage);
    }
}
