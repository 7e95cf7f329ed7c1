//! The DEVA propagation network (reference §1): pixel encoder, key projection, mask encoder
//! and mask decoder. Object tensors are `[objects, channels, h, w]` (the reference's batch of
//! one with its group dimension folded in); image tensors have a batch of one.
//!
//! Loading spells the keys of `DEVA-propagation.pth` (`vb.pp("pixel_encoder").pp("layer2")`,
//! ...), in the checkpoint's order. Convolutions that read one input are stacked after
//! loading, in one visible step each: `proj1` + `proj2`, and the three key projections.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::sensory::gated_update;
use crate::error::Result;
use crate::nn::act::Activation;
use crate::nn::blocks::{FusionBlock, GroupResBlock, ImageParts};
use crate::nn::conv::{Conv2d, ConvKernel, ConvShape, ConvWeights};
use crate::nn::resample::{area_downsample, upsample_bilinear, upsample_bilinear_add};
use crate::nn::resnet::{BlockKind, Loading, Stage, StageSpec, Stem};

/// Key (and selection) channels.
pub const KEY_DIM: usize = 64;
/// Memory value channels, also the width of the sensory (hidden) state.
pub const VALUE_DIM: usize = 512;
/// Projected image feature channels.
const PIX_FEAT_DIM: usize = 512;
/// Clamp of the soft aggregation.
const AGGREGATE_EPS: f64 = 1e-7;
/// The kernel of the image's convolutions (pixel encoder, key projection): matrix products,
/// the summation order that the parity fixtures hold the memory readout's top-k selection
/// (near-tied affinities of the keys) to.
const CONV: ConvKernel = ConvKernel::Products;
/// The kernel of the decoder's fusion block (512 → 512 channels at stride 16): Winograd's
/// F(2×2, 3×3) with the filters transformed on each call (its last-bit differences reach only
/// the masks, never which memory is selected). Kept
/// transformed filters ([`ConvKernel::Winograd`]) ran no faster and held 29 MB more at the
/// 1-object step's peak.
const FUSER_CONV: ConvKernel = ConvKernel::WinogradLean;
/// The kernel of the decoder's upsampling blocks, the largest share of a step's
/// multiplications (42 of about 90 G per object and frame, counted as tap sums): Winograd's
/// F(4×4, 3×3), 0.56 of F(2×2, 3×3)'s products
/// (their weights, 4 times the filters', are 47 MB, kept: transformed on each call, they would
/// be transformed once per block of rows at stride 4).
const UPSAMPLE_CONV: ConvKernel = ConvKernel::Winograd4x4;
/// The kernel of the 3×3 sensory transforms (512 + 512 → 1536 channels at stride 16, in the
/// mask encoder and the decoder; 23 G multiplications per object as tap sums): Winograd's
/// F(2×2, 3×3) with the filters transformed on each call, 0.55 of the products' time. Kept,
/// their transformed filters would take 100 MB each (56 MB as the checkpoint's).
const SENSORY_CONV: ConvKernel = ConvKernel::WinogradLean;

/// Image features of one frame (`encode_image`), plus the decoder's projections of the
/// skip features, which depend only on the image.
#[derive(Debug, Clone)]
pub struct ImageFeatures {
    /// `proj1(layer3)`: `[1, 512, H/16, W/16]`.
    pub f16: Tensor,
    /// `layer2` output: `[1, 512, H/8, W/8]`.
    pub f8: Tensor,
    /// `layer1` output: `[1, 256, H/4, W/4]`.
    pub f4: Tensor,
    /// `proj2(layer3)`, input of the key projection: `[1, 512, H/16, W/16]`.
    pub key_feat: Tensor,
}

/// Key, shrinkage and selection of one frame (`transform_key`), each `[1, C, H/16, W/16]`.
#[derive(Debug, Clone)]
pub struct KeyFeatures {
    /// Key (64 channels).
    pub key: Tensor,
    /// Shrinkage `d² + 1` (1 channel).
    pub shrinkage: Tensor,
    /// Selection `sigmoid(e)` (64 channels).
    pub selection: Tensor,
}

/// What the decoder returns for a chunk of objects.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Object logits at stride 4: `[objects, 1, H/4, W/4]`.
    pub logits: Tensor,
    /// Updated sensory state, when requested.
    pub sensory: Option<Tensor>,
}

#[derive(Debug, Clone)]
struct PixelEncoder {
    stem: Stem,
    res2: Stage,
    layer2: Stage,
    layer3: Stage,
    /// `proj1` and `proj2` stacked into one 1×1 convolution (1024 → 512 + 512).
    proj: Conv2d,
}

impl PixelEncoder {
    /// Loads `pixel_encoder` (ResNet-50 stem, `res2` = layer1, `layer2`, `layer3`, `proj1`,
    /// `proj2`).
    fn load(vb: &VarBuilder) -> Result<Self> {
        use BlockKind::Bottleneck;
        let how = Loading::torchvision(CONV);
        let stem = Stem::load(vb, 3, 64, how)?;
        // (kind, c_in, planes, blocks, stride)
        let res2 = Stage::load(vb.pp("res2"), StageSpec::new(Bottleneck, 64, 64, 3, 1), how)?;
        let layer2 = Stage::load(
            vb.pp("layer2"),
            StageSpec::new(Bottleneck, 256, 128, 4, 2),
            how,
        )?;
        let layer3 = Stage::load(
            vb.pp("layer3"),
            StageSpec::new(Bottleneck, 512, 256, 6, 2),
            how,
        )?;
        let shape = ConvShape::same(1024, PIX_FEAT_DIM, 1);
        let proj1 = ConvWeights::load(&vb.pp("proj1"), shape)?;
        let proj2 = ConvWeights::load(&vb.pp("proj2"), shape)?;
        // Stacked: one 1×1 convolution computes both projections of layer3.
        let proj = Conv2d::new(ConvWeights::stack(&[proj1, proj2])?, CONV)?;
        Ok(PixelEncoder {
            stem,
            res2,
            layer2,
            layer3,
            proj,
        })
    }

    fn forward(&self, image: &Tensor) -> Result<ImageFeatures> {
        let x = self.stem.forward(image)?;
        let f4 = self.res2.forward(&x)?;
        let f8 = self.layer2.forward(&f4)?;
        let f16 = self.layer3.forward(&f8)?;
        let proj = self.proj.forward(&f16)?;
        Ok(ImageFeatures {
            f16: proj.narrow(1, 0, PIX_FEAT_DIM)?.contiguous()?,
            f8,
            f4,
            key_feat: proj.narrow(1, PIX_FEAT_DIM, PIX_FEAT_DIM)?.contiguous()?,
        })
    }
}

#[derive(Debug, Clone)]
struct MaskEncoder {
    stem: Stem,
    layers: [Stage; 3],
    fuser: FusionBlock,
    /// SensoryDeepUpdater's `transform`: 3×3, 512 + 512 → 3 · 512.
    sensory_transform: Conv2d,
}

impl MaskEncoder {
    /// Loads `mask_encoder` (ResNet-18 stem on RGB + mask, `layer1..3`, `fuser`,
    /// `sensory_update`).
    fn load(vb: &VarBuilder) -> Result<Self> {
        use BlockKind::Basic;
        let how = Loading::torchvision(CONV);
        let stem = Stem::load(vb, 4, 64, how)?;
        // (kind, c_in, planes, blocks, stride)
        let layers = [
            Stage::load(vb.pp("layer1"), StageSpec::new(Basic, 64, 64, 2, 1), how)?,
            Stage::load(vb.pp("layer2"), StageSpec::new(Basic, 64, 128, 2, 2), how)?,
            Stage::load(vb.pp("layer3"), StageSpec::new(Basic, 128, 256, 2, 2), how)?,
        ];
        let fuser = FusionBlock::load(
            &vb.pp("fuser"),
            /* c_image */ PIX_FEAT_DIM,
            /* c_group */ 256,
            /* c_mid */ VALUE_DIM,
            /* c_out */ VALUE_DIM,
            CONV,
        )?;
        let sensory_transform = Conv2d::load(
            &vb.pp("sensory_update").pp("transform"),
            ConvShape::same(2 * VALUE_DIM, 3 * VALUE_DIM, 3),
            SENSORY_CONV,
        )?;
        Ok(MaskEncoder {
            stem,
            layers,
            fuser,
            sensory_transform,
        })
    }

    /// Values and deep-updated sensory of a chunk of objects; `fused` holds the fuser's
    /// image parts (of `f16`).
    fn forward(
        &self,
        image: &Tensor,
        fused: &ImageParts,
        sensory: &Tensor,
        masks: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let (n, _, h, w) = masks.dims4()?;
        let g = Tensor::cat(&[&image.broadcast_as((n, 3, h, w))?, masks], 1)?;
        let mut g = self.stem.forward(&g)?;
        for layer in &self.layers {
            g = layer.forward(&g)?;
        }
        let value = self.fuser.forward_with_image(fused, &g)?;
        let values =
            self.sensory_transform
                .forward_with(&[&value, sensory], Activation::Identity, None)?;
        let sensory = gated_update(&values, sensory)?;
        Ok((value, sensory))
    }
}

#[derive(Debug, Clone)]
struct KeyProjection {
    /// `key_proj`, `d_proj` and `e_proj` stacked into one 3×3 convolution (64 + 1 + 64).
    conv: Conv2d,
}

impl KeyProjection {
    /// Loads `key_proj` (`key_proj`, `d_proj`, `e_proj`).
    fn load(vb: &VarBuilder) -> Result<Self> {
        let conv = |name: &str, c_out| {
            ConvWeights::load(&vb.pp(name), ConvShape::same(PIX_FEAT_DIM, c_out, 3))
        };
        let key = conv("key_proj", KEY_DIM)?;
        let shrinkage = conv("d_proj", 1)?;
        let selection = conv("e_proj", KEY_DIM)?;
        // Stacked: one 3×3 convolution computes key, shrinkage and selection.
        Ok(KeyProjection {
            conv: Conv2d::new(ConvWeights::stack(&[key, shrinkage, selection])?, CONV)?,
        })
    }

    fn forward(&self, key_feat: &Tensor) -> Result<KeyFeatures> {
        let y = self.conv.forward(key_feat)?;
        let d = y.narrow(1, KEY_DIM, 1)?;
        Ok(KeyFeatures {
            key: y.narrow(1, 0, KEY_DIM)?.contiguous()?,
            shrinkage: (d.sqr()? + 1.0)?,
            selection: candle_nn::ops::sigmoid(&y.narrow(1, KEY_DIM + 1, KEY_DIM)?.contiguous()?)?,
        })
    }
}

#[derive(Debug, Clone)]
struct MaskDecoder {
    fuser: FusionBlock,
    sensory_compress: Conv2d,
    g16: Conv2d,
    g8: Conv2d,
    g4: Conv2d,
    sensory_transform: Conv2d,
    proc8: Conv2d,
    proc4: Conv2d,
    up_16_8: GroupResBlock,
    up_8_4: GroupResBlock,
    pred: Conv2d,
}

impl MaskDecoder {
    /// Loads `mask_decoder`.
    fn load(vb: &VarBuilder) -> Result<Self> {
        let v = VALUE_DIM;
        let fuser = FusionBlock::load(&vb.pp("fuser"), PIX_FEAT_DIM, v, v, v, FUSER_CONV)?;
        let c1 =
            |vb: VarBuilder, c_in, c_out| Conv2d::load(&vb, ConvShape::same(c_in, c_out, 1), CONV);
        let sensory_compress = c1(vb.pp("sensory_compress"), v + 1, v)?;
        let update = vb.pp("sensory_update");
        let g16 = c1(update.pp("g16_conv"), v, v)?;
        let g8 = c1(update.pp("g8_conv"), 256, v)?;
        let g4 = c1(update.pp("g4_conv"), 257, v)?;
        let sensory_transform = Conv2d::load(
            &update.pp("transform"),
            ConvShape::same(2 * v, 3 * v, 3),
            SENSORY_CONV,
        )?;
        let transforms = vb.pp("decoder_feat_proc").pp("transforms");
        let proc8 = c1(transforms.pp("0"), 512, 512)?;
        let proc4 = c1(transforms.pp("1"), 256, 256)?;
        let up_16_8 = GroupResBlock::load(&vb.pp("up_16_8").pp("out_conv"), v, 256, UPSAMPLE_CONV)?;
        let up_8_4 = GroupResBlock::load(&vb.pp("up_8_4").pp("out_conv"), 256, 256, UPSAMPLE_CONV)?;
        let pred = Conv2d::load(&vb.pp("pred"), ConvShape::same(256, 1, 3), CONV)?;
        // Training-only auxiliary head: part of the checkpoint, checked but unused here.
        let aux = vb.pp("sensory_linear_pred").pp("projection");
        aux.get((v + 1, v, 1, 1), "weight")?;
        aux.get(v + 1, "bias")?;
        Ok(MaskDecoder {
            fuser,
            sensory_compress,
            g16,
            g8,
            g4,
            sensory_transform,
            proc8,
            proc4,
            up_16_8,
            up_8_4,
            pred,
        })
    }

    fn forward(
        &self,
        frame: &DecoderFrame,
        readout: &Tensor,
        sensory: &Tensor,
        mask16: &Tensor,
        update_sensory: bool,
    ) -> Result<Decoded> {
        let (skip8, skip4) = (&frame.skips.skip8, &frame.skips.skip4);
        let compressed = self.sensory_compress.forward_with(
            &[sensory, mask16],
            Activation::Identity,
            Some(readout),
        )?;
        let p16 = self.fuser.forward_with_image(&frame.fuser, &compressed)?;
        // Each block's input is bound first, so that the upsampled tensor is freed before the
        // block runs (a temporary of the call's statement would live through it: 26 MB at
        // stride 4 of a 480p frame, at the step's peak).
        let g8 = upsample_bilinear_add(&p16, 2, skip8)?;
        let p8 = self.up_16_8.forward(&g8)?;
        drop(g8);
        let g4 = upsample_bilinear_add(&p8, 2, skip4)?;
        let p4 = self.up_8_4.forward(&g4)?;
        drop(g4);
        let logits = self
            .pred
            .forward_of_relu(&[&p4], Activation::Identity, None)?;
        let sensory = if update_sensory {
            let g16 = self.g16.forward(&p16)?;
            let g8 = self.g8.forward_with(
                &[&area_downsample(&p8, 2)?],
                Activation::Identity,
                Some(&g16),
            )?;
            let g = self.g4.forward_with(
                &[&area_downsample(&p4, 4)?, &area_downsample(&logits, 4)?],
                Activation::Identity,
                Some(&g8),
            )?;
            let values =
                self.sensory_transform
                    .forward_with(&[&g, sensory], Activation::Identity, None)?;
            Some(gated_update(&values, sensory)?)
        } else {
            None
        };
        Ok(Decoded { logits, sensory })
    }
}

/// Decoder inputs that depend only on the image (computed once per frame).
#[derive(Debug, Clone)]
pub struct DecoderSkips {
    /// `decoder_feat_proc.transforms.0(f8)`.
    pub skip8: Tensor,
    /// `decoder_feat_proc.transforms.1(f4)`.
    pub skip4: Tensor,
}

/// What the decoder reads of the frame, the same for every object.
struct DecoderFrame<'a> {
    /// The fuser's image parts (of `f16`).
    fuser: ImageParts,
    /// The projected stride-8 and stride-4 features.
    skips: &'a DecoderSkips,
}

/// The DEVA propagation network.
#[derive(Debug, Clone)]
pub struct DevaNet {
    pixel_encoder: PixelEncoder,
    mask_encoder: MaskEncoder,
    key_proj: KeyProjection,
    mask_decoder: MaskDecoder,
}

impl DevaNet {
    /// Builds the network from the keys of `DEVA-propagation.pth` under `vb` (in state-dict
    /// order: pixel encoder, mask encoder, key projection, mask decoder); strictness comes
    /// from the backend (see [`crate::nn::Weights::build`]).
    pub fn load(vb: VarBuilder) -> Result<Self> {
        Ok(DevaNet {
            pixel_encoder: PixelEncoder::load(&vb.pp("pixel_encoder"))?,
            mask_encoder: MaskEncoder::load(&vb.pp("mask_encoder"))?,
            key_proj: KeyProjection::load(&vb.pp("key_proj"))?,
            mask_decoder: MaskDecoder::load(&vb.pp("mask_decoder"))?,
        })
    }

    /// `encode_image` of a normalised, padded image `[1, 3, H, W]` (H, W multiples of 16).
    pub fn encode_image(&self, image: &Tensor) -> Result<ImageFeatures> {
        self.pixel_encoder.forward(image)
    }

    /// `transform_key` of the key features.
    pub fn transform_key(&self, key_feat: &Tensor) -> Result<KeyFeatures> {
        self.key_proj.forward(key_feat)
    }

    /// The decoder's projections of the skip features of one frame.
    pub fn decoder_skips(&self, features: &ImageFeatures) -> Result<DecoderSkips> {
        Ok(DecoderSkips {
            skip8: self.mask_decoder.proc8.forward(&features.f8)?,
            skip4: self.mask_decoder.proc4.forward(&features.f4)?,
        })
    }

    /// `encode_mask` with deep update: memory values `[n, 512, h, w]` and the new sensory state
    /// of objects with soft `masks` `[n, 1, H, W]` and `sensory` `[n, 512, h, w]`, in chunks of
    /// `chunk` objects (0 = all at once; the result does not depend on it).
    pub fn encode_mask(
        &self,
        image: &Tensor,
        f16: &Tensor,
        sensory: &Tensor,
        masks: &Tensor,
        chunk: usize,
    ) -> Result<(Tensor, Tensor)> {
        // The fuser's image parts, once for every chunk.
        let fused = self.mask_encoder.fuser.image_parts(f16)?;
        let parts = for_chunks(masks.dim(0)?, chunk, |start, len| {
            let (v, s) = self.mask_encoder.forward(
                image,
                &fused,
                &sensory.narrow(0, start, len)?,
                &masks.narrow(0, start, len)?,
            )?;
            Ok(vec![v, s])
        })?;
        Ok((cat0(&parts, 0)?, cat0(&parts, 1)?))
    }

    /// The mask decoder alone (`mask_decoder(...)`): object logits at stride 4 and, if
    /// `update_sensory`, the new sensory state; `mask16` is the previous mask at stride 16.
    /// Objects are decoded `chunk` at a time, one at a time for 0 (the result is the same bit
    /// for bit: every convolution computes each object apart; the image's parts of the fuser
    /// are computed once).
    #[allow(clippy::too_many_arguments)]
    pub fn decode(
        &self,
        f16: &Tensor,
        skips: &DecoderSkips,
        readout: &Tensor,
        sensory: &Tensor,
        mask16: &Tensor,
        update_sensory: bool,
        chunk: usize,
    ) -> Result<Decoded> {
        let frame = DecoderFrame {
            fuser: self.mask_decoder.fuser.image_parts(f16)?,
            skips,
        };
        let parts = for_chunks(readout.dim(0)?, chunk.max(1), |start, len| {
            let d = self.mask_decoder.forward(
                &frame,
                &readout.narrow(0, start, len)?,
                &sensory.narrow(0, start, len)?,
                &mask16.narrow(0, start, len)?,
                update_sensory,
            )?;
            Ok(std::iter::once(d.logits).chain(d.sensory).collect())
        })?;
        Ok(Decoded {
            logits: cat0(&parts, 0)?,
            sensory: if update_sensory {
                Some(cat0(&parts, 1)?)
            } else {
                None
            },
        })
    }

    /// `segment`: the previous `last_mask` `[n, 1, H, W]` is area-downsampled to stride 16,
    /// the decoder runs, and its logits are turned into probabilities `[n + 1, H, W]`
    /// (background first). Returns (aggregated upsampled logits, probabilities, sensory).
    #[allow(clippy::too_many_arguments)]
    pub fn segment(
        &self,
        f16: &Tensor,
        skips: &DecoderSkips,
        readout: &Tensor,
        sensory: &Tensor,
        last_mask: &Tensor,
        update_sensory: bool,
        chunk: usize,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let mask16 = area_downsample(last_mask, 16)?;
        let d = self.decode(f16, skips, readout, sensory, &mask16, update_sensory, chunk)?;
        let prob = candle_nn::ops::sigmoid(&d.logits)?;
        let logits = upsample_bilinear(&aggregate(&prob)?, 4)?;
        let prob = candle_nn::ops::softmax(&logits, 0)?;
        Ok((logits, prob, d.sensory))
    }
}

/// Soft aggregation (reference `aggregate`): object probabilities `[n, 1, h, w]` become logits
/// `[n + 1, 1, h, w]` of [background = Π(1 − pᵢ), p₁ … pₙ] clamped to [1e-7, 1 − 1e-7].
pub fn aggregate(prob: &Tensor) -> Result<Tensor> {
    let n = prob.dim(0)?;
    let mut bg = prob.narrow(0, 0, 1)?.affine(-1.0, 1.0)?;
    for i in 1..n {
        bg = (bg * prob.narrow(0, i, 1)?.affine(-1.0, 1.0)?)?;
    }
    let p = Tensor::cat(&[&bg, prob], 0)?.clamp(AGGREGATE_EPS, 1.0 - AGGREGATE_EPS)?;
    Ok((&p / p.affine(-1.0, 1.0)?)?.log()?)
}

/// Runs `f(start, len)` over chunks of `n` objects (`chunk` 0 = one chunk).
fn for_chunks(
    n: usize,
    chunk: usize,
    mut f: impl FnMut(usize, usize) -> Result<Vec<Tensor>>,
) -> Result<Vec<Vec<Tensor>>> {
    let size = if chunk == 0 { n.max(1) } else { chunk };
    (0..n)
        .step_by(size)
        .map(|start| f(start, size.min(n - start)))
        .collect()
}

/// Concatenates the `i`-th tensor of every chunk along the object dimension.
fn cat0(parts: &[Vec<Tensor>], i: usize) -> Result<Tensor> {
    let ts: Vec<&Tensor> = parts.iter().map(|p| &p[i]).collect();
    if ts.len() == 1 {
        return Ok(ts[0].clone());
    }
    Ok(Tensor::cat(&ts, 0)?)
}
