//! The detectron2 (original Mask2Former) checkpoint layout mapped onto the Hugging Face one,
//! in one place. `model_final_*.pkl` files are read with [`crate::nn::checkpoint::load`]
//! (numpy arrays, nothing executed); [`to_hf`] renames every key, splits the fused
//! projections Hugging Face keeps separate (Swin `attn.qkv`, the decoder self-attention's
//! `in_proj`), and refuses keys it does not know.

use std::path::Path;

use crate::error::Result;
use crate::nn::checkpoint::{RawTensor, StateDict};

/// detectron2 buffers that inference does not need (training statistics, constants).
const DROPPED: &[&str] = &["pixel_mean", "pixel_std"];

/// Prefixes of the Hugging Face layout.
const HF_BACKBONE: &str = "model.pixel_level_module.encoder.";
const HF_PIXEL: &str = "model.pixel_level_module.decoder.";
const HF_TRANSFORMER: &str = "model.transformer_module.";

/// Renames with fixed pieces: `(from, to)` applied to the rest of a key after a prefix.
fn replace_all(key: &str, rules: &[(&str, &str)]) -> String {
    let mut k = key.to_string();
    for (a, b) in rules {
        k = k.replace(a, b);
    }
    k
}

/// Splits a `[3d, ...]` tensor into its three row blocks (query, key, value).
fn split3(t: &RawTensor) -> Result<[RawTensor; 3]> {
    let rows = t.shape()[0] / 3;
    let row_bytes = t.bytes().len() / t.shape()[0].max(1);
    let mut shape = t.shape().to_vec();
    shape[0] = rows;
    let part = |i: usize| {
        RawTensor::new(
            t.dtype(),
            shape.clone(),
            t.bytes()[i * rows * row_bytes..(i + 1) * rows * row_bytes].to_vec(),
        )
    };
    Ok([part(0)?, part(1)?, part(2)?])
}

/// Inserts the three parts of a fused projection under `names` + `suffix`.
fn insert_split(
    out: &mut StateDict,
    src: &StateDict,
    key: &str,
    t: &RawTensor,
    names: [String; 3],
) -> Result<()> {
    if t.shape().is_empty() || !t.shape()[0].is_multiple_of(3) {
        return Err(src.error(format!(
            "key '{key}' has shape {:?}, expected a first dimension divisible by 3",
            t.shape()
        )));
    }
    for (n, p) in names.into_iter().zip(split3(t)?) {
        out.insert(n, p);
    }
    Ok(())
}

/// Reads a detectron2 `model_final_*.pkl` (its `model` dict) with keys mapped by [`to_hf`].
pub fn read_detectron2(path: &Path) -> Result<StateDict> {
    to_hf(&crate::nn::checkpoint::load(path, &["model"])?)
}

/// Maps a detectron2 Mask2Former state dict (Swin or ResNet backbone) to Hugging Face keys.
pub fn to_hf(src: &StateDict) -> Result<StateDict> {
    let mut out = StateDict::new(src.source());
    for (key, t) in src.iter() {
        if DROPPED.contains(&key) {
            continue;
        }
        if let Some(rest) = key.strip_prefix("backbone.") {
            map_backbone(&mut out, src, key, rest, t)?;
        } else if let Some(rest) = key.strip_prefix("sem_seg_head.pixel_decoder.") {
            let k = map_pixel_decoder(rest)
                .ok_or_else(|| src.error(format!("unexpected detectron2 key '{key}'")))?;
            out.insert(format!("{HF_PIXEL}{k}"), t.clone());
        } else if let Some(rest) = key.strip_prefix("sem_seg_head.predictor.") {
            map_predictor(&mut out, src, key, rest, t)?;
        } else if key == "criterion.empty_weight" {
            out.insert(key, t.clone());
        } else {
            return Err(src.error(format!("unexpected detectron2 key '{key}'")));
        }
    }
    Ok(out)
}

fn map_backbone(
    out: &mut StateDict,
    src: &StateDict,
    key: &str,
    rest: &str,
    t: &RawTensor,
) -> Result<()> {
    let unexpected = || src.error(format!("unexpected detectron2 key '{key}'"));
    // ResNet: stem.conv1[.norm], resN.L.convK[.norm], resN.L.shortcut[.norm].
    if let Some(r) = rest.strip_prefix("stem.conv1.") {
        let k = match r.strip_prefix("norm.") {
            Some(n) => format!("normalization.{n}"),
            None => format!("convolution.{r}"),
        };
        out.insert(format!("{HF_BACKBONE}embedder.embedder.{k}"), t.clone());
        return Ok(());
    }
    if let Some(r) = rest.strip_prefix("res") {
        let mut it = r.splitn(3, '.');
        let (Some(stage), Some(layer), Some(tail)) = (it.next(), it.next(), it.next()) else {
            return Err(unexpected());
        };
        let stage: usize = stage.parse().map_err(|_| unexpected())?;
        if !(2..=5).contains(&stage) {
            return Err(unexpected());
        }
        let (conv, param) = tail.split_once('.').ok_or_else(unexpected)?;
        let module = match conv {
            "shortcut" => "shortcut".to_string(),
            "conv1" => "layer.0".to_string(),
            "conv2" => "layer.1".to_string(),
            "conv3" => "layer.2".to_string(),
            _ => return Err(unexpected()),
        };
        let p = match param.strip_prefix("norm.") {
            Some(n) => format!("normalization.{n}"),
            None => format!("convolution.{param}"),
        };
        out.insert(
            format!(
                "{HF_BACKBONE}encoder.stages.{}.layers.{layer}.{module}.{p}",
                stage - 2
            ),
            t.clone(),
        );
        return Ok(());
    }
    // Swin (D2SwinTransformer).
    if let Some(r) = rest.strip_prefix("patch_embed.") {
        let k = replace_all(r, &[("proj.", "patch_embeddings.projection.")]);
        out.insert(format!("{HF_BACKBONE}embeddings.{k}"), t.clone());
        return Ok(());
    }
    if let Some(r) = rest.strip_prefix("norm") {
        let (i, param) = r.split_once('.').ok_or_else(unexpected)?;
        let i: usize = i.parse().map_err(|_| unexpected())?;
        out.insert(
            format!("{HF_BACKBONE}hidden_states_norms.stage{}.{param}", i + 1),
            t.clone(),
        );
        return Ok(());
    }
    if let Some(r) = rest.strip_prefix("layers.") {
        if r.ends_with("attn.relative_position_index") {
            return Ok(());
        }
        let base = format!("{HF_BACKBONE}encoder.layers.");
        if let Some(pos) = r.find(".attn.qkv.") {
            let (head, param) = (&r[..pos], &r[pos + ".attn.qkv.".len()..]);
            let names = ["query", "key", "value"]
                .map(|n| format!("{base}{head}.attention.self.{n}.{param}"));
            return insert_split(out, src, key, t, names);
        }
        let k = replace_all(
            r,
            &[
                (".norm1.", ".layernorm_before."),
                (".norm2.", ".layernorm_after."),
                (".attn.proj.", ".attention.output.dense."),
                (
                    ".attn.relative_position_bias_table",
                    ".attention.self.relative_position_bias_table",
                ),
                (".mlp.fc1.", ".intermediate.dense."),
                (".mlp.fc2.", ".output.dense."),
            ],
        );
        out.insert(format!("{base}{k}"), t.clone());
        return Ok(());
    }
    Err(unexpected())
}

fn map_pixel_decoder(rest: &str) -> Option<String> {
    if let Some(r) = rest.strip_prefix("input_proj.") {
        return Some(format!("input_projections.{r}"));
    }
    if rest == "transformer.level_embed" {
        return Some("level_embed".into());
    }
    if let Some(r) = rest.strip_prefix("transformer.encoder.layers.") {
        return Some(format!(
            "encoder.layers.{}",
            replace_all(
                r,
                &[
                    (".norm1.", ".self_attn_layer_norm."),
                    (".norm2.", ".final_layer_norm."),
                    (".linear1.", ".fc1."),
                    (".linear2.", ".fc2."),
                ]
            )
        ));
    }
    if let Some(r) = rest.strip_prefix("mask_features.") {
        return Some(format!("mask_projection.{r}"));
    }
    for fpn in ["adapter_", "layer_"] {
        if let Some(r) = rest.strip_prefix(fpn) {
            let (idx, param) = r.split_once('.')?;
            let p = match param.strip_prefix("norm.") {
                Some(n) => format!("1.{n}"),
                None => format!("0.{param}"),
            };
            return Some(format!("{fpn}{idx}.{p}"));
        }
    }
    None
}

fn map_predictor(
    out: &mut StateDict,
    src: &StateDict,
    key: &str,
    rest: &str,
    t: &RawTensor,
) -> Result<()> {
    let unexpected = || src.error(format!("unexpected detectron2 key '{key}'"));
    let layer = |r: &str| -> Option<(String, String)> {
        let (i, tail) = r.split_once('.')?;
        Some((i.to_string(), tail.to_string()))
    };
    let dec = format!("{HF_TRANSFORMER}decoder.");
    let k = if let Some(r) = rest.strip_prefix("transformer_self_attention_layers.") {
        let (i, tail) = layer(r).ok_or_else(unexpected)?;
        match tail.as_str() {
            "self_attn.in_proj_weight" | "self_attn.in_proj_bias" => {
                let param = if tail.ends_with("weight") {
                    "weight"
                } else {
                    "bias"
                };
                let names =
                    ["q", "k", "v"].map(|n| format!("{dec}layers.{i}.self_attn.{n}_proj.{param}"));
                return insert_split(out, src, key, t, names);
            }
            _ => format!(
                "{dec}layers.{i}.{}",
                replace_all(&tail, &[("norm.", "self_attn_layer_norm.")])
            ),
        }
    } else if let Some(r) = rest.strip_prefix("transformer_cross_attention_layers.") {
        let (i, tail) = layer(r).ok_or_else(unexpected)?;
        format!(
            "{dec}layers.{i}.{}",
            replace_all(
                &tail,
                &[
                    ("multihead_attn.", "cross_attn."),
                    ("norm.", "cross_attn_layer_norm.")
                ]
            )
        )
    } else if let Some(r) = rest.strip_prefix("transformer_ffn_layers.") {
        let (i, tail) = layer(r).ok_or_else(unexpected)?;
        format!(
            "{dec}layers.{i}.{}",
            replace_all(
                &tail,
                &[
                    ("linear1.", "fc1."),
                    ("linear2.", "fc2."),
                    ("norm.", "final_layer_norm.")
                ]
            )
        )
    } else if let Some(r) = rest.strip_prefix("decoder_norm.") {
        format!("{dec}layernorm.{r}")
    } else if let Some(r) = rest.strip_prefix("query_feat.") {
        format!("{HF_TRANSFORMER}queries_features.{r}")
    } else if let Some(r) = rest.strip_prefix("query_embed.") {
        format!("{HF_TRANSFORMER}queries_embedder.{r}")
    } else if let Some(r) = rest.strip_prefix("level_embed.") {
        format!("{HF_TRANSFORMER}level_embed.{r}")
    } else if let Some(r) = rest.strip_prefix("input_proj.") {
        format!("{HF_TRANSFORMER}input_projections.{r}")
    } else if let Some(r) = rest.strip_prefix("class_embed.") {
        format!("class_predictor.{r}")
    } else if let Some(r) = rest.strip_prefix("mask_embed.layers.") {
        let (i, param) = r.split_once('.').ok_or_else(unexpected)?;
        format!("{dec}mask_predictor.mask_embedder.{i}.0.{param}")
    } else {
        return Err(unexpected());
    };
    out.insert(k, t.clone());
    Ok(())
}
