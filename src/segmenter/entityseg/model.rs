//! `EntityFPN`: a detectron2 ResNet or a Swin Transformer with the FPN (P2 … P7) on its four
//! stage outputs, the entity detection head and controller on P3 … P7, the mask branch on
//! P3 … P5, the dynamic mask head, and the preprocessing of detectron2's `DefaultPredictor`.

use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;

use super::config::EntitySegConfig;
use super::head::{EntityHead, LevelOutput};
use super::mask_head::{DynamicMaskHead, Entities, MaskBranch};
use super::postprocess::{entities, proposals, EntityMap, Proposals, Sizes};
use super::CONV;
use crate::error::{Error, Result};
use crate::nn::fpn::{Fpn, TopBlock};
use crate::nn::resnet::ResNet;
use crate::nn::swin::{Layout, SwinBackbone, SwinConfig};
use crate::nn::Weights;
use crate::video::pillow::{resize, PillowFilter};

/// Keys of official checkpoints that inference does not use: the mask head's training-only
/// "stable" convolutions and its constant `sizes_of_interest` buffer
/// ([`super::config::SIZES_OF_INTEREST`]).
pub const UNUSED_KEYS: &[&str] = &[
    "mask_head.sizes_of_interest",
    "mask_head.stable.0.0.weight",
    "mask_head.stable.0.0.bias",
    "mask_head.stable.1.0.weight",
    "mask_head.stable.1.0.bias",
    "mask_head.stable.2.weight",
    "mask_head.stable.2.bias",
];

/// Prefix of the bottom-up backbone's keys.
pub const BOTTOM_UP: &str = "backbone.bottom_up.";

/// Multiple the network input is padded to (the backbone's coarsest bottom-up stride).
pub const SIZE_DIVISIBILITY: usize = 32;

/// Backbone outputs: the four bottom-up stages (`res2` … `res5` or Swin's `stage2` …
/// `stage5`, strides 4 … 32) and `p2` … `p7`.
#[derive(Debug, Clone)]
pub struct Features {
    /// Bottom-up stages, finest first.
    pub res: Vec<Tensor>,
    /// FPN levels, finest first.
    pub pyramid: Vec<Tensor>,
}

/// The bottom-up part of the backbone.
#[derive(Debug, Clone)]
enum BottomUp {
    /// detectron2's ResNet (`MODEL.RESNETS`).
    ResNet(ResNet),
    /// The Swin Transformer in the original key layout (`MODEL.SWINT`).
    Swin(SwinBackbone),
}

impl BottomUp {
    fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        match self {
            BottomUp::ResNet(r) => r.forward(x),
            BottomUp::Swin(s) => s.forward(x),
        }
    }
}

/// The network.
#[derive(Debug, Clone)]
pub struct EntitySeg {
    config: EntitySegConfig,
    bottom_up: BottomUp,
    fpn: Fpn,
    head: EntityHead,
    mask_branch: MaskBranch,
    mask_head: DynamicMaskHead,
}

impl EntitySeg {
    /// Builds the network from `vb` (official key layout at its root).
    pub fn new(config: &EntitySegConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let backbone = vb.pp("backbone");
        let bottom = backbone.pp("bottom_up");
        // The official builders differ in the top block's input: the ResNet one reads res5,
        // the Swin one (`build_retinanet_swin_fpn_backbone`) reads p5.
        let (bottom_up, channels, first_stage, top) = match &config.swin {
            None => (
                BottomUp::ResNet(config.resnet.load(&bottom, CONV)?),
                config.resnet.out_channels().to_vec(),
                2,
                TopBlock::FromInput,
            ),
            Some(swin) => {
                // FPN levels are named by log2 of their stride: stage i has stride p·2^i.
                let first = swin.stage_index(&swin.out_features[0])?;
                let stride = swin.patch_size << first;
                (
                    BottomUp::Swin(SwinBackbone::load(swin, Layout::Official, bottom)?),
                    swin.out_channels()?,
                    stride.trailing_zeros() as usize,
                    TopBlock::FromOutput,
                )
            }
        };
        Ok(EntitySeg {
            config: config.clone(),
            bottom_up,
            fpn: Fpn::load(
                &backbone,
                &channels,
                first_stage,
                config.fpn_out_channels,
                top,
                CONV,
            )?,
            head: EntityHead::load(
                &vb.pp("det_head").pp("fcos_head"),
                &vb.pp("controller"),
                config,
            )?,
            mask_branch: MaskBranch::load(&vb.pp("mask_branch"), config)?,
            mask_head: DynamicMaskHead::new(config),
        })
    }

    /// Loads an official checkpoint: a detectron2 `.pth` (`{"model": state_dict, ...}`) or a
    /// safetensors file of the same keys; strict (see [`EntitySeg::from_weights`]).
    pub fn load(path: &Path, config: &EntitySegConfig, device: &Device) -> Result<Self> {
        let weights = Weights::open_model(path)?;
        Self::from_weights(&weights, config, device)
    }

    /// Builds the network from official-layout weights, strictly: a missing, misshapen or
    /// unknown key is an error naming it (only [`UNUSED_KEYS`] and Swin's derived
    /// relative-position indices may stay unread). The backbone is a Swin when the checkpoint
    /// has its patch embedding (`backbone.bottom_up.patch_embed.proj.weight`); its sizes then
    /// come from `config.swin` or, when that is absent, from the checkpoint's shapes.
    pub fn from_weights(
        weights: &Weights,
        config: &EntitySegConfig,
        device: &Device,
    ) -> Result<Self> {
        let mut config = config.clone();
        if config.swin.is_none() && weights.contains(&format!("{BOTTOM_UP}patch_embed.proj.weight"))
        {
            config.swin = Some(SwinConfig::from_official(weights, BOTTOM_UP)?);
        }
        let derived = match &config.swin {
            Some(swin) => Layout::Official.derived_buffers(swin, BOTTOM_UP),
            None => Vec::new(),
        };
        let ignored: Vec<&str> = UNUSED_KEYS
            .iter()
            .copied()
            .chain(derived.iter().map(String::as_str))
            .collect();
        weights.build(device, &ignored, |vb| EntitySeg::new(&config, vb))
    }

    /// [`load`](Self::load) with a ResNet's depth and deformable stages read from the
    /// checkpoint ([`Detectron2ResNetConfig::read_from`](crate::nn::resnet::Detectron2ResNetConfig::read_from)),
    /// the other sizes from `config`: the R50, R101 and R101-DCNv2 model-zoo files need no
    /// config file (a Swin checkpoint is recognised as [`from_weights`](Self::from_weights)
    /// says).
    pub fn load_reading_backbone(
        path: &Path,
        config: &EntitySegConfig,
        device: &Device,
    ) -> Result<Self> {
        let weights = Weights::open_model(path)?;
        let mut config = config.clone();
        if !weights.contains(&format!("{BOTTOM_UP}patch_embed.proj.weight")) {
            config.resnet = config.resnet.read_from(&weights, BOTTOM_UP)?;
        }
        Self::from_weights(&weights, &config, device)
    }

    /// The configuration.
    pub fn config(&self) -> &EntitySegConfig {
        &self.config
    }

    /// `(height, width)` detectron2's `ResizeShortestEdge(min_size_test, max_size_test)`
    /// gives an image of `h × w`.
    pub fn resized_size(&self, h: usize, w: usize) -> (usize, usize) {
        let (short, max) = (
            self.config.min_size_test as f64,
            self.config.max_size_test as f64,
        );
        let scale = short / h.min(w) as f64;
        let (mut nh, mut nw) = if h < w {
            (short, scale * w as f64)
        } else {
            (scale * h as f64, short)
        };
        if nh.max(nw) > max {
            let s = max / nh.max(nw);
            nh *= s;
            nw *= s;
        }
        ((nh + 0.5) as usize, (nw + 0.5) as usize)
    }

    /// `DefaultPredictor`'s resize (Pillow bilinear) of an RGB image.
    pub fn resize(&self, img: &RgbImage) -> RgbImage {
        let (h, w) = self.resized_size(img.height() as usize, img.width() as usize);
        resize(img, w, h, PillowFilter::Bilinear)
    }

    /// The network input of an already resized RGB image: BGR, `(x − mean) / std`, zero
    /// padding to multiples of [`SIZE_DIVISIBILITY`]; `[1, 3, H, W]`.
    pub fn input(&self, img: &RgbImage, device: &Device) -> Result<Tensor> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        if w == 0 || h == 0 {
            return Err(Error::invalid("entityseg: empty image"));
        }
        let (ph, pw) = (
            h.div_ceil(SIZE_DIVISIBILITY) * SIZE_DIVISIBILITY,
            w.div_ceil(SIZE_DIVISIBILITY) * SIZE_DIVISIBILITY,
        );
        let mut v = vec![0f32; 3 * ph * pw];
        let (mean, std) = (&self.config.pixel_mean, &self.config.pixel_std);
        for (x, y, p) in img.enumerate_pixels() {
            let (x, y) = (x as usize, y as usize);
            for c in 0..3 {
                // Channel c of the input is BGR: RGB channel 2 − c.
                v[c * ph * pw + y * pw + x] = (p.0[2 - c] as f32 - mean[c]) / std[c];
            }
        }
        Ok(Tensor::from_vec(v, (1, 3, ph, pw), device)?)
    }

    /// Backbone and FPN.
    pub fn features(&self, x: &Tensor) -> Result<Features> {
        let res = self.bottom_up.forward(x)?;
        let pyramid = self.fpn.forward(&res)?;
        Ok(Features { res, pyramid })
    }

    /// The detection head and controller on P3 … P7.
    pub fn head(&self, f: &Features) -> Result<Vec<LevelOutput>> {
        self.head.forward(&f.pyramid[1..])
    }

    /// Mask features (stride 8) from P3 … P5.
    pub fn mask_features(&self, f: &Features) -> Result<Tensor> {
        self.mask_branch.forward(&f.pyramid[1..4])
    }

    /// Proposals of the head outputs.
    pub fn proposals(&self, head: &[LevelOutput]) -> Result<Proposals> {
        proposals(head, &self.config.fcos)
    }

    /// Mask probabilities `[n, 1, H/s, W/s]` (s = mask output stride) of the proposals.
    pub fn mask_probs(&self, mask_feats: &Tensor, p: &Proposals) -> Result<Tensor> {
        self.mask_head.forward(
            mask_feats,
            &Entities {
                locations: &p.locations,
                levels: &p.levels,
                params: &p.params,
            },
        )
    }

    /// The whole inference on a network input `x` of a resized image of `resized` size, with
    /// entities at `original` size.
    pub fn predict(
        &self,
        x: &Tensor,
        resized: (usize, usize),
        original: (usize, usize),
    ) -> Result<EntityMap> {
        let f = self.features(x)?;
        let head = self.head(&f)?;
        let mask_feats = self.mask_features(&f)?;
        let p = self.proposals(&head)?;
        let probs = self.mask_probs(&mask_feats, &p)?;
        let (_, _, ph, pw) = x.dims4()?;
        entities(
            &p,
            &probs,
            Sizes {
                padded: (ph, pw),
                resized,
                original,
            },
        )
    }
}
