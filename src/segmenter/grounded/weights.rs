//! Loading Grounding-DINO weights: the Hugging Face layout (`model.safetensors` with its
//! `config.json`), and the official checkpoints (`groundingdino_swint_ogc.pth`,
//! `groundingdino_swinb_cogcoor.pth`) through one mapping table from the official key names
//! to the Hugging Face ones, checked strictly: every official key is used (or is a listed
//! tied copy / derived buffer), every mapped key exists, every shape is right.

use candle_core::{Device, Tensor};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use super::config::{BertConfig, GroundingDinoConfig};
use super::model::GroundingDino;
use crate::error::{CheckpointProblem, Error, Result};
use crate::nn::checkpoint::{self, RawTensor, StateDict};
use crate::nn::swin::SwinConfig;
use crate::nn::Weights;

/// Hugging Face keys the model does not read (the Swin model's final norm).
const HF_UNUSED: [&str; 2] = [
    "model.backbone.conv_encoder.model.swin.layernorm.weight",
    "model.backbone.conv_encoder.model.swin.layernorm.bias",
];

/// Official keys the port does not read: buffers it derives itself and the unused BERT
/// pooler.
fn official_ignored(name: &str) -> bool {
    name.ends_with(".relative_position_index")
        || name == "bert.embeddings.position_ids"
        || name.starts_with("bert.pooler.")
}

/// Where a Hugging Face tensor comes from in an official checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfficialSource {
    /// The tensor of that name.
    Rename(String),
    /// Rows `part·n/parts .. (part+1)·n/parts` of the tensor of that name (fused q/k/v).
    Split {
        /// Official name of the fused tensor.
        name: String,
        /// Which part (0 = query, 1 = key, 2 = value).
        part: usize,
        /// Number of parts.
        parts: usize,
    },
}

/// Table rows `hf.{weight,bias}` <- `off.{weight,bias}`.
fn rename(t: &mut Vec<(String, OfficialSource)>, hf: String, off: String) {
    for s in ["weight", "bias"] {
        t.push((
            format!("{hf}.{s}"),
            OfficialSource::Rename(format!("{off}.{s}")),
        ));
    }
}

/// Table rows of an attention whose q/k/v projections are one fused `in_proj` officially.
fn fused(t: &mut Vec<(String, OfficialSource)>, hf: &str, off: &str) {
    for (part, name) in ["query", "key", "value"].iter().enumerate() {
        for (s, o) in [("weight", "in_proj_weight"), ("bias", "in_proj_bias")] {
            t.push((
                format!("{hf}.{name}.{s}"),
                OfficialSource::Split {
                    name: format!("{off}.{o}"),
                    part,
                    parts: 3,
                },
            ));
        }
    }
}

/// The mapping table for a configuration: every Hugging Face key the model reads, with its
/// official source.
pub fn official_table(c: &GroundingDinoConfig) -> Vec<(String, OfficialSource)> {
    let mut t: Vec<(String, OfficialSource)> = Vec::new();
    // Swin backbone.
    let sw = "model.backbone.conv_encoder.model";
    rename(
        &mut t,
        format!("{sw}.embeddings.patch_embeddings.projection"),
        "backbone.0.patch_embed.proj".into(),
    );
    rename(
        &mut t,
        format!("{sw}.embeddings.norm"),
        "backbone.0.patch_embed.norm".into(),
    );
    let b = &c.backbone_config;
    for (i, &depth) in b.depths.iter().enumerate() {
        for j in 0..depth {
            let hf = format!("{sw}.encoder.layers.{i}.blocks.{j}");
            let off = format!("backbone.0.layers.{i}.blocks.{j}");
            rename(
                &mut t,
                format!("{hf}.layernorm_before"),
                format!("{off}.norm1"),
            );
            rename(
                &mut t,
                format!("{hf}.layernorm_after"),
                format!("{off}.norm2"),
            );
            rename(
                &mut t,
                format!("{hf}.attention.output.dense"),
                format!("{off}.attn.proj"),
            );
            rename(
                &mut t,
                format!("{hf}.intermediate.dense"),
                format!("{off}.mlp.fc1"),
            );
            rename(
                &mut t,
                format!("{hf}.output.dense"),
                format!("{off}.mlp.fc2"),
            );
            let suffixes: &[&str] = if b.qkv_bias {
                &["weight", "bias"]
            } else {
                &["weight"]
            };
            for (part, name) in ["query", "key", "value"].iter().enumerate() {
                for s in suffixes {
                    t.push((
                        format!("{hf}.attention.self.{name}.{s}"),
                        OfficialSource::Split {
                            name: format!("{off}.attn.qkv.{s}"),
                            part,
                            parts: 3,
                        },
                    ));
                }
            }
            t.push((
                format!("{hf}.attention.self.relative_position_bias_table"),
                OfficialSource::Rename(format!("{off}.attn.relative_position_bias_table")),
            ));
        }
        if i + 1 < b.depths.len() {
            let hf = format!("{sw}.encoder.layers.{i}.downsample");
            let off = format!("backbone.0.layers.{i}.downsample");
            rename(&mut t, format!("{hf}.norm"), format!("{off}.norm"));
            t.push((
                format!("{hf}.reduction.weight"),
                OfficialSource::Rename(format!("{off}.reduction.weight")),
            ));
        }
    }
    // The official backbone names its output norms by 0-based stage.
    for stage in &b.out_features {
        let n: usize = stage.trim_start_matches("stage").parse().unwrap_or(1);
        rename(
            &mut t,
            format!("{sw}.hidden_states_norms.{stage}"),
            format!("backbone.0.norm{}", n.saturating_sub(1)),
        );
    }
    // BERT: same names under another prefix.
    let tb = "model.text_backbone";
    for e in [
        "word_embeddings",
        "position_embeddings",
        "token_type_embeddings",
    ] {
        t.push((
            format!("{tb}.embeddings.{e}.weight"),
            OfficialSource::Rename(format!("bert.embeddings.{e}.weight")),
        ));
    }
    rename(
        &mut t,
        format!("{tb}.embeddings.LayerNorm"),
        "bert.embeddings.LayerNorm".into(),
    );
    for i in 0..c.text_config.num_hidden_layers {
        for m in [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "attention.output.LayerNorm",
            "intermediate.dense",
            "output.dense",
            "output.LayerNorm",
        ] {
            rename(
                &mut t,
                format!("{tb}.encoder.layer.{i}.{m}"),
                format!("bert.encoder.layer.{i}.{m}"),
            );
        }
    }
    rename(&mut t, "model.text_projection".into(), "feat_map".into());
    // Input projections.
    for l in 0..c.num_feature_levels {
        for k in 0..2 {
            rename(
                &mut t,
                format!("model.input_proj_vision.{l}.{k}"),
                format!("input_proj.{l}.{k}"),
            );
        }
    }
    t.push((
        "model.level_embed".into(),
        OfficialSource::Rename("transformer.level_embed".into()),
    ));
    t.push((
        "model.query_position_embeddings.weight".into(),
        OfficialSource::Rename("transformer.tgt_embed.weight".into()),
    ));
    // Encoder layers.
    for i in 0..c.encoder_layers {
        let hf = format!("model.encoder.layers.{i}");
        let de = format!("transformer.encoder.layers.{i}");
        for m in [
            "sampling_offsets",
            "attention_weights",
            "value_proj",
            "output_proj",
        ] {
            rename(
                &mut t,
                format!("{hf}.deformable_layer.self_attn.{m}"),
                format!("{de}.self_attn.{m}"),
            );
        }
        for (h, o) in [
            ("self_attn_layer_norm", "norm1"),
            ("fc1", "linear1"),
            ("fc2", "linear2"),
            ("final_layer_norm", "norm2"),
        ] {
            rename(
                &mut t,
                format!("{hf}.deformable_layer.{h}"),
                format!("{de}.{o}"),
            );
        }
        let te = format!("transformer.encoder.text_layers.{i}");
        fused(
            &mut t,
            &format!("{hf}.text_enhancer_layer.self_attn"),
            &format!("{te}.self_attn"),
        );
        for (h, o) in [
            ("self_attn.out_proj", "self_attn.out_proj"),
            ("fc1", "linear1"),
            ("fc2", "linear2"),
            ("layer_norm_before", "norm1"),
            ("layer_norm_after", "norm2"),
        ] {
            rename(
                &mut t,
                format!("{hf}.text_enhancer_layer.{h}"),
                format!("{te}.{o}"),
            );
        }
        let fu = format!("transformer.encoder.fusion_layers.{i}");
        t.push((
            format!("{hf}.fusion_layer.vision_param"),
            OfficialSource::Rename(format!("{fu}.gamma_v")),
        ));
        t.push((
            format!("{hf}.fusion_layer.text_param"),
            OfficialSource::Rename(format!("{fu}.gamma_l")),
        ));
        for (h, o) in [
            ("layer_norm_vision", "layer_norm_v"),
            ("layer_norm_text", "layer_norm_l"),
            ("attn.vision_proj", "attn.v_proj"),
            ("attn.text_proj", "attn.l_proj"),
            ("attn.values_vision_proj", "attn.values_v_proj"),
            ("attn.values_text_proj", "attn.values_l_proj"),
            ("attn.out_vision_proj", "attn.out_v_proj"),
            ("attn.out_text_proj", "attn.out_l_proj"),
        ] {
            rename(
                &mut t,
                format!("{hf}.fusion_layer.{h}"),
                format!("{fu}.{o}"),
            );
        }
    }
    // Decoder layers.
    for i in 0..c.decoder_layers {
        let hf = format!("model.decoder.layers.{i}");
        let de = format!("transformer.decoder.layers.{i}");
        for m in [
            "sampling_offsets",
            "attention_weights",
            "value_proj",
            "output_proj",
        ] {
            rename(
                &mut t,
                format!("{hf}.encoder_attn.{m}"),
                format!("{de}.cross_attn.{m}"),
            );
        }
        fused(
            &mut t,
            &format!("{hf}.self_attn"),
            &format!("{de}.self_attn"),
        );
        fused(
            &mut t,
            &format!("{hf}.encoder_attn_text"),
            &format!("{de}.ca_text"),
        );
        for (h, o) in [
            ("self_attn.out_proj", "self_attn.out_proj"),
            ("encoder_attn_text.out_proj", "ca_text.out_proj"),
            ("encoder_attn_layer_norm", "norm1"),
            ("encoder_attn_text_layer_norm", "catext_norm"),
            ("self_attn_layer_norm", "norm2"),
            ("fc1", "linear1"),
            ("fc2", "linear2"),
            ("final_layer_norm", "norm3"),
        ] {
            rename(&mut t, format!("{hf}.{h}"), format!("{de}.{o}"));
        }
    }
    rename(
        &mut t,
        "model.decoder.layer_norm".into(),
        "transformer.decoder.norm".into(),
    );
    for k in 0..2 {
        rename(
            &mut t,
            format!("model.decoder.reference_points_head.layers.{k}"),
            format!("transformer.decoder.ref_point_head.layers.{k}"),
        );
    }
    rename(
        &mut t,
        "model.enc_output".into(),
        "transformer.enc_output".into(),
    );
    rename(
        &mut t,
        "model.enc_output_norm".into(),
        "transformer.enc_output_norm".into(),
    );
    for k in 0..3 {
        rename(
            &mut t,
            format!("model.encoder_output_bbox_embed.layers.{k}"),
            format!("transformer.enc_out_bbox_embed.layers.{k}"),
        );
        rename(
            &mut t,
            format!("bbox_embed.0.layers.{k}"),
            format!("bbox_embed.0.layers.{k}"),
        );
    }
    t
}

/// Official keys that are tied copies of another official key (the shared box head):
/// `(copy, original)`.
pub fn official_tied(c: &GroundingDinoConfig) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for k in 0..3 {
        for s in ["weight", "bias"] {
            let orig = format!("bbox_embed.0.layers.{k}.{s}");
            for i in 0..c.decoder_layers {
                if i > 0 {
                    v.push((format!("bbox_embed.{i}.layers.{k}.{s}"), orig.clone()));
                }
                v.push((
                    format!("transformer.decoder.bbox_embed.{i}.layers.{k}.{s}"),
                    orig.clone(),
                ));
            }
        }
    }
    v
}

/// The Swin-T (`groundingdino_swint_ogc`) or Swin-B (`groundingdino_swinb_cogcoor`)
/// configuration, chosen by the patch-embedding width of the checkpoint (96 or 128).
pub fn official_config(embed_dim: usize) -> Result<GroundingDinoConfig> {
    let (depths, heads, window) = match embed_dim {
        96 => (vec![2, 2, 6, 2], vec![3, 6, 12, 24], 7),
        128 => (vec![2, 2, 18, 2], vec![4, 8, 16, 32], 12),
        _ => {
            return Err(Error::Config(format!(
                "official Grounding-DINO checkpoint with Swin width {embed_dim}: only Swin-T (96) and Swin-B (128) are known"
            )))
        }
    };
    Ok(GroundingDinoConfig {
        backbone_config: SwinConfig {
            embed_dim,
            depths,
            num_heads: heads,
            window_size: window,
            window_frames: 1,
            patch_size: 4,
            mlp_ratio: 4.0,
            qkv_bias: true,
            layer_norm_eps: 1e-5,
            num_channels: 3,
            out_features: vec!["stage2".into(), "stage3".into(), "stage4".into()],
            use_absolute_embeddings: false,
        },
        text_config: BertConfig {
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            vocab_size: 30522,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
        },
        d_model: 256,
        encoder_layers: 6,
        decoder_layers: 6,
        encoder_attention_heads: 8,
        decoder_attention_heads: 8,
        encoder_ffn_dim: 2048,
        decoder_ffn_dim: 2048,
        num_queries: 900,
        num_feature_levels: 4,
        encoder_n_points: 4,
        decoder_n_points: 4,
        max_text_len: 256,
        positional_embedding_temperature: 20.0,
        layer_norm_eps: 1e-5,
        two_stage: true,
        embedding_init_target: true,
        decoder_bbox_embed_share: true,
        two_stage_bbox_embed_share: false,
        activation_function: Some("relu".into()),
        position_embedding_type: Some("sine".into()),
        bert_mask: Default::default(),
    })
}

/// Reads the official state dict (`model` entry of a `.pth`, or a flat safetensors file),
/// without a `module.` prefix.
fn read_official(path: &Path) -> Result<HashMap<String, Tensor>> {
    checkpoint::load_model(path)?
        .strip_prefix("module.")
        .iter()
        .map(|(k, v)| Ok((k.to_string(), v.to_tensor(&Device::Cpu)?)))
        .collect()
}

/// Renames an official state dict to the Hugging Face layout with `table`, strictly.
pub fn official_to_hf(
    path: &Path,
    official: &HashMap<String, Tensor>,
    c: &GroundingDinoConfig,
) -> Result<HashMap<String, Tensor>> {
    let err = |m: String| Error::checkpoint(path, m);
    let mut used = BTreeSet::new();
    let mut out = HashMap::new();
    for (hf, src) in official_table(c) {
        let name = match &src {
            OfficialSource::Rename(n) | OfficialSource::Split { name: n, .. } => n,
        };
        let t = official
            .get(name)
            .ok_or_else(|| err(format!("missing key {name} (for {hf})")))?;
        used.insert(name.clone());
        let t = match src {
            OfficialSource::Rename(_) => t.clone(),
            OfficialSource::Split { part, parts, .. } => {
                let n = t.dim(0)?;
                if n % parts != 0 {
                    return Err(err(format!(
                        "key {name} has {n} rows, not divisible into {parts} parts"
                    )));
                }
                t.narrow(0, part * n / parts, n / parts)?
            }
        };
        out.insert(hf, t);
    }
    for (copy, orig) in official_tied(c) {
        if let Some(t) = official.get(&copy) {
            let o = &official[&orig];
            let same = t.dims() == o.dims()
                && (t - o)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()? == 0.0;
            if !same {
                return Err(err(format!(
                    "key {copy} should be a tied copy of {orig} but differs"
                )));
            }
            used.insert(copy);
        }
    }
    let mut unused: Vec<&String> = official
        .keys()
        .filter(|k| !used.contains(*k) && !official_ignored(k))
        .collect();
    unused.sort();
    if let Some(first) = unused.first() {
        return Err(err(format!(
            "unexpected key {first} ({} unused keys in all)",
            unused.len()
        )));
    }
    Ok(out)
}

impl GroundingDino {
    /// Loads a checkpoint: the Hugging Face layout when its `config.json` is given, else an
    /// official checkpoint (Swin-T or Swin-B release configuration).
    pub fn load(weights: &Path, config: Option<&Path>, device: &Device) -> Result<Self> {
        match config {
            Some(c) => Self::load_hf(&GroundingDinoConfig::from_file(c)?, weights, device),
            None => Self::load_official(weights, None, device),
        }
    }

    /// Loads a Hugging Face checkpoint (`model.safetensors`) with its configuration; every
    /// key must be used (the Swin model's unused final norm excepted).
    pub fn load_hf(config: &GroundingDinoConfig, weights: &Path, device: &Device) -> Result<Self> {
        Weights::open(weights)?.build(device, &HF_UNUSED, |vb| GroundingDino::new(config, vb))
    }

    /// Loads an official checkpoint (`.pth` or safetensors with the original key names).
    /// `config` gives the sizes; without it, the Swin-T/Swin-B release configuration is
    /// chosen from the checkpoint.
    pub fn load_official(
        path: &Path,
        config: Option<&GroundingDinoConfig>,
        device: &Device,
    ) -> Result<Self> {
        let official = read_official(path)?;
        let c = match config {
            Some(c) => c.clone(),
            None => {
                let key = "backbone.0.patch_embed.proj.weight";
                let w = official
                    .get(key)
                    .ok_or_else(|| Error::checkpoint(path, format!("missing key {key}")))?;
                official_config(w.dim(0)?)?
            }
        };
        let mut dict = StateDict::new(path);
        for (k, t) in official_to_hf(path, &official, &c)? {
            let values = t
                .flatten_all()?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1::<f32>()?;
            dict.insert(k, RawTensor::from_f32(t.dims().to_vec(), &values)?);
        }
        let table = official_table(&c);
        Weights::from_state_dict(dict)?
            .build(device, &[], |vb| GroundingDino::new(&c, vb))
            .map_err(|e| match e {
                // Name the official key in shape errors.
                Error::Checkpoint {
                    path,
                    problem:
                        CheckpointProblem::Shape {
                            key,
                            expected,
                            found,
                        },
                } => {
                    let key = match table.iter().find(|(hf, _)| *hf == key) {
                        Some((
                            _,
                            OfficialSource::Rename(n) | OfficialSource::Split { name: n, .. },
                        )) => {
                            format!("{n} (as {key})")
                        }
                        None => key,
                    };
                    Error::Checkpoint {
                        path,
                        problem: CheckpointProblem::Shape {
                            key,
                            expected,
                            found,
                        },
                    }
                }
                other => other,
            })
    }
}
