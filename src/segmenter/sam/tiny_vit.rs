//! The TinyViT image encoder of MobileSAM: a convolutional stem and MBConv stage, then
//! windowed-attention stages with learned relative biases and depthwise "local" convolutions,
//! joined by patch-merging convolutions, and SAM's neck. BatchNorms are folded into the
//! preceding convolutions (eval mode).

use super::neck::Neck;
use crate::error::{Error, Result};
use crate::nn::act::Activation;
use crate::nn::conv::{Conv2d, ConvKernel, ConvShape, ConvWeights};
use crate::nn::dense::Dense;
use crate::nn::depthwise::Depthwise;
use crate::nn::norm::LayerNorm;
use crate::nn::transpose::{to_channels_first, to_channels_last};
use crate::nn::window_attn::grid_window_attention;
use crate::nn::Weights;
use candle_core::Tensor;
use candle_nn::VarBuilder;

/// The kernel of the network's convolutions: the direct one (the parity tests of
/// `tests/minisam.rs` hold within their fixtures' tolerances with it).
const CONV: ConvKernel = ConvKernel::Direct;

/// Size of a TinyViT encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TinyVitConfig {
    /// Side of the square input image (1024; not recorded in checkpoints).
    pub img_size: usize,
    /// Channels of each stage.
    pub embed_dims: Vec<usize>,
    /// Blocks of each stage (stage 0 is convolutional).
    pub depths: Vec<usize>,
    /// Attention heads of each stage (entry 0 unused).
    pub num_heads: Vec<usize>,
    /// Attention window side of each stage (entry 0 unused).
    pub window_sizes: Vec<usize>,
    /// Hidden/input ratio of the attention stages' MLPs.
    pub mlp_ratio: usize,
    /// Hidden/input ratio of the MBConv blocks.
    pub mbconv_expand_ratio: usize,
    /// Channels of the output embedding (256).
    pub out_chans: usize,
}

/// Keys of MobileSAM checkpoints that the encoder does not use (TinyViT's classifier head).
pub const UNUSED_KEYS: [&str; 4] = [
    "image_encoder.norm_head.weight",
    "image_encoder.norm_head.bias",
    "image_encoder.head.weight",
    "image_encoder.head.bias",
];

impl TinyVitConfig {
    /// MobileSAM's encoder (TinyViT-5M at 1024²).
    pub fn mobile_sam() -> Self {
        TinyVitConfig {
            img_size: 1024,
            embed_dims: vec![64, 128, 160, 320],
            depths: vec![2, 2, 6, 2],
            num_heads: vec![2, 4, 5, 10],
            window_sizes: vec![7, 7, 14, 7],
            mlp_ratio: 4,
            mbconv_expand_ratio: 4,
            out_chans: 256,
        }
    }

    /// Whether the tensors under `prefix` are a TinyViT.
    pub fn is_tiny_vit(ck: &Weights, prefix: &str) -> bool {
        ck.contains(&format!("{prefix}.patch_embed.seq.0.c.weight"))
    }

    /// Reads the sizes from the checkpoint's keys and shapes.
    pub fn from_checkpoint(ck: &Weights, prefix: &str) -> Result<Self> {
        let mut c = TinyVitConfig {
            embed_dims: vec![ck.dims(&format!("{prefix}.patch_embed.seq.2.c.weight"))?[0]],
            depths: vec![ck.count(&format!("{prefix}.layers.0.blocks"), "conv1.c.weight")],
            num_heads: vec![0],
            window_sizes: vec![0],
            mlp_ratio: 4,
            ..TinyVitConfig::mobile_sam()
        };
        let hidden = ck.dims(&format!("{prefix}.layers.0.blocks.0.conv1.c.weight"))?[0];
        c.mbconv_expand_ratio = hidden / c.embed_dims[0];
        for i in 1.. {
            let blocks = format!("{prefix}.layers.{i}.blocks");
            let depth = ck.count(&blocks, "attn.norm.weight");
            if depth == 0 {
                break;
            }
            let dim = ck.dims(&format!("{blocks}.0.attn.norm.weight"))?[0];
            let bias = ck.dims(&format!("{blocks}.0.attn.attention_biases"))?;
            let window = (bias[1] as f64).sqrt().round() as usize;
            if window * window != bias[1] {
                return Err(ck.error(format!(
                    "{blocks}.0.attn.attention_biases has {} offsets, not a square window",
                    bias[1]
                )));
            }
            c.mlp_ratio = ck.dims(&format!("{blocks}.0.mlp.fc1.weight"))?[0] / dim;
            c.embed_dims.push(dim);
            c.depths.push(depth);
            c.num_heads.push(bias[0]);
            c.window_sizes.push(window);
        }
        if c.depths.len() < 2 || c.depths[0] == 0 {
            return Err(ck.error(format!("{prefix}: no TinyViT stages found")));
        }
        c.out_chans = ck.dims(&format!("{prefix}.neck.0.weight"))?[0];
        Ok(c)
    }
}

/// A convolution followed by an eval-mode BatchNorm, folded into one convolution.
#[derive(Debug)]
enum ConvBn {
    /// A dense convolution.
    Dense(Conv2d),
    /// A depthwise convolution: `(C, 1, k, k)` kernels and `(C)` biases.
    Depthwise {
        weight: Tensor,
        bias: Tensor,
        stride: usize,
    },
}

impl ConvBn {
    fn new(
        vb: VarBuilder,
        (input, out): (usize, usize),
        k: usize,
        stride: usize,
        groups: usize,
    ) -> Result<Self> {
        let depthwise = groups > 1;
        if depthwise && (groups != input || groups != out) {
            return Err(Error::invalid(format!(
                "TinyViT convolution at {}: {groups} groups of {input} → {out} channels is not depthwise",
                vb.prefix()
            )));
        }
        let shape = ConvShape {
            c_in: if depthwise { 1 } else { input },
            c_out: out,
            k,
            stride,
            pad: k / 2,
        };
        let w = ConvWeights::load_with_batch_norm(&vb.pp("c"), &vb.pp("bn"), shape)?;
        Ok(if depthwise {
            ConvBn::Depthwise {
                weight: w.weight.contiguous()?,
                bias: w.bias,
                stride,
            }
        } else {
            ConvBn::Dense(Conv2d::new(w, CONV)?)
        })
    }

    /// The convolution of `x` then `act`; `channels_last` (depthwise only): `x` is
    /// `(B, H, W, C)` and so is the result.
    fn forward(&self, x: &Tensor, act: Activation, channels_last: bool) -> Result<Tensor> {
        match self {
            ConvBn::Dense(conv) => conv.forward_act(x, act),
            ConvBn::Depthwise {
                weight,
                bias,
                stride,
            } => {
                if x.device().is_cpu() {
                    let op = Depthwise {
                        stride: *stride,
                        act,
                        channels_last,
                    };
                    return Ok(x.contiguous()?.apply_op3_no_bwd(weight, bias, &op)?);
                }
                let nchw = if channels_last {
                    x.permute((0, 3, 1, 2))?
                } else {
                    x.clone()
                };
                let (k, c) = (weight.dim(3)?, weight.dim(0)?);
                let y = nchw
                    .conv2d(weight, k / 2, *stride, 1, c)?
                    .broadcast_add(&bias.reshape((1, (), 1, 1))?)?;
                let y = act.forward(&y)?;
                Ok(if channels_last {
                    y.permute((0, 2, 3, 1))?.contiguous()?
                } else {
                    y
                })
            }
        }
    }
}

/// Inverted residual block of stage 0.
#[derive(Debug)]
struct MbConv {
    conv1: ConvBn,
    conv2: ConvBn,
    /// The 1 × 1 projection back to the block's width (BatchNorm folded in).
    conv3: Conv2d,
}

impl MbConv {
    fn new(vb: VarBuilder, dim: usize, hidden: usize) -> Result<Self> {
        let conv3 = ConvWeights::load_with_batch_norm(
            &vb.pp("conv3.c"),
            &vb.pp("conv3.bn"),
            ConvShape::same(hidden, dim, 1),
        )?;
        Ok(MbConv {
            conv1: ConvBn::new(vb.pp("conv1"), (dim, hidden), 1, 1, 1)?,
            conv2: ConvBn::new(vb.pp("conv2"), (hidden, hidden), 3, 1, hidden)?,
            conv3: Conv2d::new(conv3, CONV)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.conv1.forward(x, Activation::GeluErf, false)?;
        let y = self.conv2.forward(&y, Activation::GeluErf, false)?;
        self.conv3.forward_add_act(&y, x, Activation::GeluErf)
    }
}

/// Downsampling between stages (NCHW in and out).
#[derive(Debug)]
struct PatchMerging {
    conv1: ConvBn,
    conv2: ConvBn,
    conv3: ConvBn,
}

impl PatchMerging {
    fn new(vb: VarBuilder, dim: usize, out: usize) -> Result<Self> {
        // MobileSAM keeps the 64 × 64 grid before its last stage: no stride for these widths.
        let stride = if [320, 448, 576].contains(&out) { 1 } else { 2 };
        Ok(PatchMerging {
            conv1: ConvBn::new(vb.pp("conv1"), (dim, out), 1, 1, 1)?,
            conv2: ConvBn::new(vb.pp("conv2"), (out, out), 3, stride, out)?,
            conv3: ConvBn::new(vb.pp("conv3"), (out, out), 1, 1, 1)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.conv1.forward(x, Activation::GeluErf, false)?;
        let y = self.conv2.forward(&y, Activation::GeluErf, false)?;
        self.conv3.forward(&y, Activation::Identity, false)
    }
}

/// For each (query, key) pair of a `window × window` window (row-major pairs of row-major
/// tokens), the number of its offset (|Δrow|, |Δcol|): offsets are numbered in order of first
/// appearance, as in the reference.
pub(super) fn attention_bias_idxs(window: usize) -> Vec<u32> {
    let points: Vec<(usize, usize)> = (0..window)
        .flat_map(|y| (0..window).map(move |x| (y, x)))
        .collect();
    let mut offsets = std::collections::HashMap::new();
    let mut idxs = Vec::with_capacity(points.len() * points.len());
    for p in &points {
        for q in &points {
            let off = (p.0.abs_diff(q.0), p.1.abs_diff(q.1));
            let next = offsets.len() as u32;
            idxs.push(*offsets.entry(off).or_insert(next));
        }
    }
    idxs
}

/// Windowed self-attention with a learned bias per head and (|dy|, |dx|) offset. The
/// reference pads the raw tokens with zeros up to whole windows and normalises inside the
/// attention, so every padding token has the projection of a normalised zero token: `pad`.
#[derive(Debug)]
struct Attention {
    norm: LayerNorm,
    qkv: Dense,
    proj: Dense,
    heads: usize,
    window: usize,
    /// `(heads, N, N)` bias for windows of N tokens.
    bias: Tensor,
    /// `(3 · C)`: the projection of a padding token.
    pad: Tensor,
}

impl Attention {
    fn new(vb: VarBuilder, dim: usize, heads: usize, window: usize) -> Result<Self> {
        let idxs = attention_bias_idxs(window);
        let n = window * window;
        let biases = vb.get((heads, n), "attention_biases")?;
        let idx = Tensor::from_vec(idxs, n * n, biases.device())?;
        let bias = biases.index_select(&idx, 1)?.reshape((heads, n, n))?;
        let norm = LayerNorm::load(vb.pp("norm"), dim, 1e-5)?;
        let qkv = Dense::load(vb.pp("qkv"), (dim, 3 * dim), Activation::Identity)?;
        let zero = Tensor::zeros((1, dim), biases.dtype(), biases.device())?;
        let pad = qkv.forward(&norm.forward(&zero)?)?.reshape(3 * dim)?;
        Ok(Attention {
            norm,
            qkv,
            proj: Dense::load(vb.pp("proj"), (dim, dim), Activation::Identity)?,
            heads,
            window,
            bias,
            pad,
        })
    }

    /// Tokens `x (B, H, W, C)` plus their windows' attention.
    fn forward_add(&self, x: &Tensor) -> Result<Tensor> {
        let qkv = self.qkv.forward(&self.norm.forward(x)?)?;
        let attended = grid_window_attention(&qkv, &self.pad, &self.bias, self.heads, self.window)?;
        self.proj.forward_add(&attended, x)
    }
}

/// A TinyViT block on tokens `(B, H, W, C)`.
#[derive(Debug)]
struct Block {
    attn: Attention,
    local_conv: ConvBn,
    mlp_norm: LayerNorm,
    fc1: Dense,
    fc2: Dense,
}

impl Block {
    fn new(
        vb: VarBuilder,
        dim: usize,
        heads: usize,
        window: usize,
        mlp_ratio: usize,
    ) -> Result<Self> {
        Ok(Block {
            attn: Attention::new(vb.pp("attn"), dim, heads, window)?,
            local_conv: ConvBn::new(vb.pp("local_conv"), (dim, dim), 3, 1, dim)?,
            mlp_norm: LayerNorm::load(vb.pp("mlp.norm"), dim, 1e-5)?,
            fc1: Dense::load(
                vb.pp("mlp.fc1"),
                (dim, mlp_ratio * dim),
                Activation::GeluErf,
            )?,
            fc2: Dense::load(
                vb.pp("mlp.fc2"),
                (mlp_ratio * dim, dim),
                Activation::Identity,
            )?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.attn.forward_add(x)?;
        let x = self.local_conv.forward(&x, Activation::Identity, true)?;
        let m = self.fc1.forward(&self.mlp_norm.forward(&x)?)?;
        self.fc2.forward_add(&m, &x)
    }
}

/// One stage: convolutional (stage 0) or attention blocks, then optional patch merging.
#[derive(Debug)]
enum Stage {
    Conv(Vec<MbConv>),
    Attention(Vec<Block>),
}

/// The TinyViT image encoder.
#[derive(Debug)]
pub struct TinyVit {
    stem1: ConvBn,
    stem2: ConvBn,
    stages: Vec<(Stage, Option<PatchMerging>)>,
    neck: Neck,
}

impl TinyVit {
    /// Builds the encoder from the variables under `vb` (MobileSAM's key names).
    pub fn new(c: &TinyVitConfig, vb: VarBuilder) -> Result<Self> {
        let n = c.embed_dims.len();
        if n < 2
            || [&c.depths, &c.num_heads, &c.window_sizes]
                .iter()
                .any(|v| v.len() != n)
        {
            return Err(Error::invalid(format!(
                "invalid TinyViT configuration {c:?}"
            )));
        }
        let d0 = c.embed_dims[0];
        let stem = vb.pp("patch_embed.seq");
        let stem1 = ConvBn::new(stem.pp("0"), (3, d0 / 2), 3, 2, 1)?;
        let stem2 = ConvBn::new(stem.pp("2"), (d0 / 2, d0), 3, 2, 1)?;
        let mut stages = Vec::with_capacity(n);
        for i in 0..n {
            let vb = vb.pp(format!("layers.{i}"));
            let dim = c.embed_dims[i];
            let stage = if i == 0 {
                let hidden = dim * c.mbconv_expand_ratio;
                Stage::Conv(
                    (0..c.depths[0])
                        .map(|j| MbConv::new(vb.pp(format!("blocks.{j}")), dim, hidden))
                        .collect::<Result<_>>()?,
                )
            } else {
                Stage::Attention(
                    (0..c.depths[i])
                        .map(|j| {
                            Block::new(
                                vb.pp(format!("blocks.{j}")),
                                dim,
                                c.num_heads[i],
                                c.window_sizes[i],
                                c.mlp_ratio,
                            )
                        })
                        .collect::<Result<_>>()?,
                )
            };
            let merge = if i + 1 < n {
                Some(PatchMerging::new(
                    vb.pp("downsample"),
                    dim,
                    c.embed_dims[i + 1],
                )?)
            } else {
                None
            };
            stages.push((stage, merge));
        }
        let last = c.embed_dims[n - 1];
        Ok(TinyVit {
            stem1,
            stem2,
            stages,
            neck: Neck::load(vb.pp("neck"), last, c.out_chans)?,
        })
    }

    /// Encodes a preprocessed `(B, 3, S, S)` image into `(B, out_chans, S/16, S/16)`. When
    /// `trace` is given, it receives each stage's output (NCHW).
    pub fn forward(&self, image: &Tensor, mut trace: Option<&mut Vec<Tensor>>) -> Result<Tensor> {
        let mut x = self.stem1.forward(image, Activation::GeluErf, false)?;
        x = self.stem2.forward(&x, Activation::Identity, false)?;
        for (stage, merge) in &self.stages {
            x = match stage {
                Stage::Conv(blocks) => {
                    for b in blocks {
                        x = b.forward(&x)?;
                    }
                    x
                }
                Stage::Attention(blocks) => {
                    let mut t = to_channels_last(&x)?;
                    for b in blocks {
                        t = b.forward(&t)?;
                    }
                    to_channels_first(&t)?
                }
            };
            if let Some(m) = merge {
                x = m.forward(&x)?;
            }
            if let Some(t) = trace.as_deref_mut() {
                t.push(x.clone());
            }
        }
        self.neck.forward(&x)
    }
}
