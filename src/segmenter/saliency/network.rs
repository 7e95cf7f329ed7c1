//! The U²-Net family (U²-Net, U²-Netp, IS-Net) in candle, built from an ONNX export.
//!
//! All three are a U-Net whose stages are residual U-blocks (RSU): RSU-L is a small U-Net of
//! depth L (3×3 conv + ReLU layers, 2×2 max-pooling with `ceil_mode`, bilinear upsampling,
//! skip concatenations) plus a residual connection; RSU-4F replaces pooling by dilations 1, 2,
//! 4, 8. Side convolutions turn each decoder level into a logit map that is upsampled to the
//! input size; U²-Net fuses them with a 1×1 convolution, IS-Net uses the first one.
//!
//! The module structure is read from the graph rather than from initializer names (the folded
//! Conv+BN weights only have numbers): the Conv nodes, in file order, are the layers in forward
//! order. A leading Conv not followed by ReLU is a stem (IS-Net's stride-2 `conv_in`); then
//! come the blocks, each recognised by its dilation pattern (the bottom layer is the first whose
//! successor has a smaller dilation), then one side Conv per level (one output channel), then
//! an optional 1×1 fusion Conv. Every layer's channels are checked against the layers that
//! feed it, so a graph of another shape is an error naming the node, not a wrong result.

use crate::error::{Error, Result};
use crate::nn::act::Activation;
use crate::nn::conv::{Conv2d, ConvKernel, ConvShape, ConvWeights};
use crate::nn::onnx::{Graph, Node};
use crate::nn::resample::{max_pool2_ceil, resize_bilinear};
use candle_core::{Device, Tensor};
use std::path::Path;

/// The kernel of the network's convolutions: the direct one (the parity tests of
/// `tests/saliency.rs` hold within their fixtures' tolerances with it).
const CONV: ConvKernel = ConvKernel::Direct;

/// A convolution with folded batch norm (weight, bias), optionally followed by ReLU (fused:
/// [`Conv2d`] lays the weights out once at load and adds bias and ReLU in its own pass).
#[derive(Debug, Clone)]
struct ConvLayer {
    conv: Conv2d,
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    relu: bool,
    /// Position among the graph's Conv nodes and the weight's name, for error messages.
    label: String,
}

impl ConvLayer {
    /// Reads the `index`-th Conv node (`node`); `relu` says whether a ReLU consumes its output.
    fn from_node(
        graph: &Graph,
        node: &Node,
        index: usize,
        relu: bool,
        device: &Device,
    ) -> std::result::Result<Self, String> {
        let label = format!(
            "Conv node #{index} {:?} (weight {:?})",
            node.name,
            node.inputs.get(1).copied().unwrap_or("")
        );
        let fail = |msg: String| format!("{label}: {msg}");
        let square =
            |name: &str, default: &[i64], n: usize| -> std::result::Result<usize, String> {
                let v = node.ints(name, default)?;
                if v.len() != n || v.iter().any(|&x| x != v[0] || x < 0) {
                    return Err(fail(format!("{name} {v:?} is not uniform")));
                }
                Ok(v[0] as usize)
            };
        if node.int("group", 1)? != 1 {
            return Err(fail("grouped convolution is not supported".into()));
        }
        let stride = square("strides", &[1, 1], 2)?;
        let dilation = square("dilations", &[1, 1], 2)?;
        let padding = square("pads", &[0, 0, 0, 0], 4)?;
        let tensor = |i: usize, what: &str| {
            let name = node.inputs.get(i).copied().unwrap_or("");
            graph
                .initializer(name)
                .ok_or_else(|| fail(format!("{what} {name:?} is not an initializer")))
        };
        let w = tensor(1, "weight")?;
        let b = tensor(2, "bias")?;
        let shape = w.shape();
        let [out_channels, in_channels, kh, kw] = shape[..] else {
            return Err(fail(format!(
                "weight has shape {shape:?}, expected 4 dimensions"
            )));
        };
        if kh != kw || kh % 2 == 0 || padding != dilation * (kh / 2) {
            return Err(fail(format!(
                "kernel {kh}×{kw} with padding {padding} and dilation {dilation} is not centred"
            )));
        }
        if b.shape() != [out_channels] {
            return Err(fail(format!(
                "bias has shape {:?}, expected [{out_channels}]",
                b.shape()
            )));
        }
        let weights = ConvWeights {
            shape: ConvShape {
                c_in: in_channels,
                c_out: out_channels,
                k: kh,
                stride,
                pad: padding,
            },
            weight: Tensor::from_vec(w.to_f32()?, shape, device)
                .map_err(|e| fail(e.to_string()))?,
            bias: Tensor::from_vec(b.to_f32()?, out_channels, device)
                .map_err(|e| fail(e.to_string()))?,
        };
        let conv = Conv2d::dilated(weights, dilation, CONV).map_err(|e| fail(e.to_string()))?;
        Ok(ConvLayer {
            conv,
            in_channels,
            out_channels,
            kernel: kh,
            stride,
            dilation,
            relu,
            label,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(&[x], None)
    }

    /// The layer over the channel concatenation of `parts`, plus `residual` if given (after
    /// the ReLU), without making the concatenation.
    fn forward_with(&self, parts: &[&Tensor], residual: Option<&Tensor>) -> Result<Tensor> {
        let act = if self.relu {
            Activation::Relu
        } else {
            Activation::Identity
        };
        self.conv.forward_with(parts, act, residual)
    }
}

/// Pulls layers in order and checks what a layer must look like.
struct LayerStream {
    layers: std::vec::IntoIter<ConvLayer>,
}

impl LayerStream {
    fn peek(&self) -> Option<&ConvLayer> {
        self.layers.as_slice().first()
    }

    fn peek2(&self) -> Option<&ConvLayer> {
        self.layers.as_slice().get(1)
    }

    /// The next layer, which must take `in_channels` inputs and have ReLU as given.
    fn take(
        &mut self,
        in_channels: usize,
        relu: bool,
        role: &str,
    ) -> std::result::Result<ConvLayer, String> {
        let layer = self
            .layers
            .next()
            .ok_or_else(|| format!("the graph ends where the {role} was expected"))?;
        if layer.in_channels != in_channels {
            return Err(format!(
                "{}: the {role} should read {in_channels} channels, its weight reads {}",
                layer.label, layer.in_channels
            ));
        }
        if layer.relu != relu || (relu && layer.stride != 1) {
            return Err(format!(
                "{}: unexpected as the {role} (ReLU {}, stride {})",
                layer.label, layer.relu, layer.stride
            ));
        }
        Ok(layer)
    }
}

/// A residual U-block: RSU-L (pooling between encoder layers) or RSU-LF (dilations instead).
#[derive(Debug, Clone)]
struct Rsu {
    input: ConvLayer,
    encoders: Vec<ConvLayer>,
    bottom: ConvLayer,
    /// Decoder layers from the deepest level up.
    decoders: Vec<ConvLayer>,
    pooled: bool,
}

impl Rsu {
    /// Reads one block from the stream (its input width is checked by the caller, which knows
    /// the wiring).
    fn read(stream: &mut LayerStream) -> std::result::Result<Self, String> {
        let width = stream.peek().map_or(0, |l| l.in_channels);
        let input = stream.take(width, true, "block input layer")?;
        let mut encoders: Vec<ConvLayer> = Vec::new();
        let mut channels = input.out_channels;
        // Encoder layers until the bottom: the first layer whose successor has a smaller dilation.
        let bottom = loop {
            let is_bottom = match (stream.peek(), stream.peek2()) {
                (Some(a), Some(b)) => b.dilation < a.dilation,
                _ => true,
            };
            let layer = stream.take(channels, true, "block encoder layer")?;
            channels = layer.out_channels;
            if is_bottom {
                break layer;
            }
            encoders.push(layer);
        };
        if encoders.is_empty() {
            return Err(format!("{}: block without encoder layers", bottom.label));
        }
        let dilations: Vec<usize> = encoders.iter().map(|l| l.dilation).collect();
        let pooled = dilations.iter().all(|&d| d == 1);
        let doubling = dilations.iter().enumerate().all(|(i, &d)| d == 1 << i);
        let bottom_dilation = if pooled {
            2
        } else {
            2 * dilations[dilations.len() - 1]
        };
        if !(pooled || doubling) || bottom.dilation != bottom_dilation || input.dilation != 1 {
            return Err(format!(
                "{}: dilations {:?} then {} are not an RSU block's",
                bottom.label, dilations, bottom.dilation
            ));
        }
        let mut decoders = Vec::with_capacity(encoders.len());
        let mut below = bottom.out_channels;
        for skip in encoders.iter().rev() {
            let layer = stream.take(below + skip.out_channels, true, "block decoder layer")?;
            if layer.dilation != skip.dilation {
                return Err(format!(
                    "{}: decoder dilation {} differs from its encoder's {}",
                    layer.label, layer.dilation, skip.dilation
                ));
            }
            below = layer.out_channels;
            decoders.push(layer);
        }
        if below != input.out_channels {
            return Err(format!(
                "{}: the block ends with {below} channels but its residual has {}",
                decoders[decoders.len() - 1].label,
                input.out_channels
            ));
        }
        Ok(Rsu {
            input,
            encoders,
            bottom,
            decoders,
            pooled,
        })
    }

    fn out_channels(&self) -> usize {
        self.input.out_channels
    }

    /// The block over the channel concatenation of `parts`.
    fn forward(&self, parts: &[&Tensor]) -> Result<Tensor> {
        let residual = self.input.forward_with(parts, None)?;
        let mut skips = Vec::with_capacity(self.encoders.len());
        let mut h = residual.clone();
        for (i, layer) in self.encoders.iter().enumerate() {
            if i > 0 && self.pooled {
                h = max_pool2_ceil(&h)?;
            }
            h = layer.forward(&h)?;
            skips.push(h.clone());
        }
        let mut d = self.bottom.forward(&h)?;
        let last = self.decoders.len() - 1;
        for (i, (layer, skip)) in self.decoders.iter().zip(skips.iter().rev()).enumerate() {
            let up = upsample_like(&d, skip)?;
            d = layer.forward_with(&[&up, skip], (i == last).then_some(&residual))?;
        }
        Ok(d)
    }
}

/// Bilinear resize of `x` to the spatial size of `like` (half-pixel centres, no antialiasing:
/// ONNX `linear` + `pytorch_half_pixel` / PyTorch `align_corners = False`).
fn upsample_like(x: &Tensor, like: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = like.dims4()?;
    resize_bilinear(x, h, w)
}

/// The saliency maps of one forward pass (probabilities in [0, 1], each `[1, 1, H, W]` at the
/// input size).
#[derive(Debug, Clone)]
pub struct SaliencyMaps {
    /// The fused map (U²-Net's d0), if the network has a fusion layer.
    pub fused: Option<Tensor>,
    /// One map per level, finest first (U²-Net's d1..d6; IS-Net's first is its output).
    pub sides: Vec<Tensor>,
}

impl SaliencyMaps {
    /// The map the network's authors use: the fused one, else the finest side output.
    pub fn primary(&self) -> &Tensor {
        self.fused.as_ref().unwrap_or(&self.sides[0])
    }
}

/// A U²-Net-family network read from an ONNX file.
#[derive(Debug, Clone)]
pub struct U2NetFamily {
    stem: Option<ConvLayer>,
    encoders: Vec<Rsu>,
    decoders: Vec<Rsu>,
    sides: Vec<ConvLayer>,
    fuse: Option<ConvLayer>,
}

/// The Conv nodes of `graph` in file order, with whether a ReLU (alone) consumes each output.
fn conv_layers(graph: &Graph, device: &Device) -> std::result::Result<Vec<ConvLayer>, String> {
    let mut consumers: std::collections::HashMap<&str, Vec<&str>> = Default::default();
    for n in &graph.nodes {
        for &i in &n.inputs {
            consumers.entry(i).or_default().push(n.op_type);
        }
    }
    graph
        .nodes
        .iter()
        .filter(|n| n.op_type == "Conv" && n.domain.is_empty())
        .enumerate()
        .map(|(k, n)| {
            let out = n.outputs.first().copied().unwrap_or("");
            let relu = consumers.get(out).is_some_and(|c| c == &["Relu"]);
            ConvLayer::from_node(graph, n, k, relu, device)
        })
        .collect()
}

impl U2NetFamily {
    /// Builds the network from a decoded ONNX graph; `path` names the file in errors.
    pub fn from_graph(graph: &Graph, path: &Path, device: &Device) -> Result<Self> {
        Self::build(graph, device).map_err(|e| Error::checkpoint(path, e))
    }

    fn build(graph: &Graph, device: &Device) -> std::result::Result<Self, String> {
        let layers = conv_layers(graph, device)?;
        let in_channels = layers
            .first()
            .ok_or("the graph has no Conv nodes")?
            .in_channels;
        let mut stream = LayerStream {
            layers: layers.into_iter(),
        };
        let stem = match stream.peek() {
            Some(l) if !l.relu => Some(stream.take(in_channels, false, "stem")?),
            _ => None,
        };
        // Blocks (every block starts with a ReLU layer), then the side layers.
        let mut blocks: Vec<Rsu> = Vec::new();
        while stream.peek().is_some_and(|l| l.relu) {
            blocks.push(Rsu::read(&mut stream)?);
        }
        if blocks.len() < 3 || blocks.len().is_multiple_of(2) {
            return Err(format!(
                "found {} blocks; a U-Net of RSU blocks has an odd number (at least 3)",
                blocks.len()
            ));
        }
        let levels = blocks.len().div_ceil(2);
        let decoders = blocks.split_off(levels);
        let encoders = blocks;
        // Check the block inputs against the U-Net wiring: encoder k reads encoder k-1 (pooled);
        // decoder j reads the level below (upsampled) concatenated with the encoder's skip.
        let mut channels = stem.as_ref().map_or(in_channels, |s| s.out_channels);
        for (k, enc) in encoders.iter().enumerate() {
            if enc.input.in_channels != channels {
                return Err(format!(
                    "{}: encoder stage {} should read {channels} channels",
                    enc.input.label,
                    k + 1
                ));
            }
            channels = enc.out_channels();
        }
        let mut below = channels;
        for (j, dec) in decoders.iter().enumerate() {
            let skip = encoders[levels - 2 - j].out_channels();
            if dec.input.in_channels != below + skip {
                return Err(format!(
                    "{}: decoder stage {} should read {} + {} channels",
                    dec.input.label,
                    levels - 1 - j,
                    below,
                    skip
                ));
            }
            below = dec.out_channels();
        }
        // Side layers: level 1 (finest) reads the last decoder, level `levels` the deepest encoder.
        let mut level_channels: Vec<usize> = decoders.iter().rev().map(Rsu::out_channels).collect();
        level_channels.push(encoders[levels - 1].out_channels());
        let mut sides = Vec::with_capacity(levels);
        for (k, &c) in level_channels.iter().enumerate() {
            let side = stream.take(c, false, &format!("side output {}", k + 1))?;
            if side.out_channels != 1 || side.stride != 1 {
                return Err(format!(
                    "{}: a side output layer has one output channel",
                    side.label
                ));
            }
            sides.push(side);
        }
        let fuse = match stream.peek() {
            None => None,
            Some(_) => {
                let f = stream.take(levels, false, "fusion layer")?;
                if f.kernel != 1 || f.out_channels != 1 {
                    return Err(format!(
                        "{}: the fusion layer is a 1×1 conv to one channel",
                        f.label
                    ));
                }
                Some(f)
            }
        };
        if let Some(extra) = stream.peek() {
            return Err(format!(
                "{}: unexpected layer after the outputs",
                extra.label
            ));
        }
        Ok(U2NetFamily {
            stem,
            encoders,
            decoders,
            sides,
            fuse,
        })
    }

    /// Number of input channels (3 for RGB).
    pub fn in_channels(&self) -> usize {
        self.stem
            .as_ref()
            .unwrap_or(&self.encoders[0].input)
            .in_channels
    }

    /// Number of levels (side outputs).
    pub fn levels(&self) -> usize {
        self.sides.len()
    }

    /// Runs the network on a `[1, C, H, W]` input; every map comes back at `H × W`.
    pub fn forward(&self, x: &Tensor) -> Result<SaliencyMaps> {
        let (_, c, h, w) = x.dims4()?;
        if c != self.in_channels() {
            return Err(Error::invalid(format!(
                "the network reads {} channels, the input has {c}",
                self.in_channels()
            )));
        }
        let mut hx = match &self.stem {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        let mut skips = Vec::with_capacity(self.encoders.len());
        for (i, block) in self.encoders.iter().enumerate() {
            if i > 0 {
                hx = max_pool2_ceil(&hx)?;
            }
            hx = block.forward(&[&hx])?;
            skips.push(hx.clone());
        }
        // Level features from the deepest up: the deepest encoder, then each decoder.
        let mut levels = vec![hx];
        for (block, skip) in self.decoders.iter().zip(skips.iter().rev().skip(1)) {
            let below = &levels[levels.len() - 1];
            let d = block.forward(&[&upsample_like(below, skip)?, skip])?;
            levels.push(d);
        }
        levels.reverse();
        let logits = self
            .sides
            .iter()
            .zip(&levels)
            .map(|(side, f)| resize_bilinear(&side.forward(f)?, h, w))
            .collect::<Result<Vec<_>>>()?;
        let fused = match &self.fuse {
            Some(f) => Some(candle_nn::ops::sigmoid(
                &f.forward_with(&logits.iter().collect::<Vec<_>>(), None)?,
            )?),
            None => None,
        };
        let sides = logits
            .iter()
            .map(candle_nn::ops::sigmoid)
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(SaliencyMaps { fused, sides })
    }
}
