//! How a checkpoint spells a Swin backbone's keys ([`Layout`]), and reading a backbone's
//! sizes from the keys of the original (Microsoft) layout.

use candle_nn::VarBuilder;

use super::SwinConfig;
use crate::error::Result;
use crate::nn::Weights;

/// The key spelling of a Swin checkpoint. Both layouts hold the same tensors; only the names
/// differ, and the original layout fuses the query, key and value projections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Hugging Face `SwinBackbone`: `embeddings.patch_embeddings.projection`,
    /// `embeddings.norm`, `encoder.layers.i.blocks.j.{layernorm_before, attention.self.{query,
    /// key, value, relative_position_bias_table}, attention.output.dense, layernorm_after,
    /// intermediate.dense, output.dense}`, `encoder.layers.i.downsample.{norm, reduction}`,
    /// output norms `hidden_states_norms.stageN` (N from 1).
    HuggingFace,
    /// The original Swin code (microsoft/Swin-Transformer's detection backbone, also copied
    /// by EntitySeg, ReferFormer, Grounding-DINO and Mask2Former): `patch_embed.{proj, norm}`,
    /// `layers.i.blocks.j.{norm1, attn.{qkv, relative_position_bias_table, proj}, norm2,
    /// mlp.{fc1, fc2}}`, `layers.i.downsample.{norm, reduction}`, output norms `norm{i}`
    /// (i from 0). Each block also stores its derived `attn.relative_position_index` buffer
    /// ([`Layout::derived_buffers`]).
    Official,
}

/// Variable prefixes of one block's tensors in a layout.
pub(super) struct BlockKeys<'a> {
    /// LayerNorm before the attention.
    pub norm1: VarBuilder<'a>,
    /// LayerNorm before the MLP.
    pub norm2: VarBuilder<'a>,
    /// The attention's query/key/value projections and bias table.
    pub attn: VarBuilder<'a>,
    /// The attention's output projection.
    pub proj: VarBuilder<'a>,
    /// MLP layers.
    pub fc1: VarBuilder<'a>,
    /// MLP layers.
    pub fc2: VarBuilder<'a>,
}

impl Layout {
    /// The patch-embedding convolution and its LayerNorm.
    pub(super) fn patch_embed<'a>(self, vb: &VarBuilder<'a>) -> (VarBuilder<'a>, VarBuilder<'a>) {
        match self {
            Layout::HuggingFace => {
                let e = vb.pp("embeddings");
                (e.pp("patch_embeddings").pp("projection"), e.pp("norm"))
            }
            Layout::Official => {
                let e = vb.pp("patch_embed");
                (e.pp("proj"), e.pp("norm"))
            }
        }
    }

    /// Stage `i` (0-based), holding `blocks.j` and `downsample`.
    pub(super) fn stage<'a>(self, vb: &VarBuilder<'a>, i: usize) -> VarBuilder<'a> {
        match self {
            Layout::HuggingFace => vb.pp("encoder").pp("layers").pp(i),
            Layout::Official => vb.pp("layers").pp(i),
        }
    }

    /// The tensors of one block.
    pub(super) fn block<'a>(self, vb: &VarBuilder<'a>) -> BlockKeys<'a> {
        match self {
            Layout::HuggingFace => BlockKeys {
                norm1: vb.pp("layernorm_before"),
                norm2: vb.pp("layernorm_after"),
                attn: vb.pp("attention").pp("self"),
                proj: vb.pp("attention").pp("output").pp("dense"),
                fc1: vb.pp("intermediate").pp("dense"),
                fc2: vb.pp("output").pp("dense"),
            },
            Layout::Official => BlockKeys {
                norm1: vb.pp("norm1"),
                norm2: vb.pp("norm2"),
                attn: vb.pp("attn"),
                proj: vb.pp("attn").pp("proj"),
                fc1: vb.pp("mlp").pp("fc1"),
                fc2: vb.pp("mlp").pp("fc2"),
            },
        }
    }

    /// The LayerNorm of output stage `i` (0-based).
    pub(super) fn output_norm<'a>(self, vb: &VarBuilder<'a>, i: usize) -> VarBuilder<'a> {
        match self {
            Layout::HuggingFace => vb.pp("hidden_states_norms").pp(format!("stage{}", i + 1)),
            Layout::Official => vb.pp(format!("norm{i}")),
        }
    }

    /// Keys of buffers the layout stores but the port derives itself (the relative position
    /// index of every block), with `prefix` (ending in `.` or empty) before each; loaders pass
    /// them as ignored keys.
    pub fn derived_buffers(self, c: &SwinConfig, prefix: &str) -> Vec<String> {
        match self {
            Layout::HuggingFace => Vec::new(),
            Layout::Official => c
                .depths
                .iter()
                .enumerate()
                .flat_map(|(i, &d)| {
                    (0..d).map(move |j| {
                        format!("{prefix}layers.{i}.blocks.{j}.attn.relative_position_index")
                    })
                })
                .collect(),
        }
    }
}

impl SwinConfig {
    /// Reads every size of an original-layout ([`Layout::Official`]) backbone stored under
    /// `prefix` (ending in `.` or empty) from the checkpoint's shapes: widths and patch size
    /// from `patch_embed.proj`, stages and blocks from the `layers.i.blocks.j` keys, heads and
    /// window from each stage's bias table, MLP ratio from `mlp.fc1`, query/key/value bias from
    /// its presence, and the output stages from the `norm{i}` keys present. A missing key is an
    /// error naming it.
    pub fn from_official(w: &Weights, prefix: &str) -> Result<SwinConfig> {
        let key = |k: &str| format!("{prefix}{k}");
        let proj = w.dims(&key("patch_embed.proj.weight"))?;
        if proj.len() != 4 || proj[2] != proj[3] {
            return Err(w.error(format!(
                "{}: expected a square [C, 3, p, p] convolution, found {proj:?}",
                key("patch_embed.proj.weight")
            )));
        }
        let (embed_dim, num_channels, patch_size) = (proj[0], proj[1], proj[2]);
        let stages = w.count(&key("layers"), "blocks.0.norm1.weight");
        if stages == 0 {
            // The error names the first block's key.
            w.dims(&key("layers.0.blocks.0.norm1.weight"))?;
        }
        let (mut depths, mut num_heads, mut window) = (Vec::new(), Vec::new(), 0);
        for i in 0..stages {
            depths.push(w.count(&key(&format!("layers.{i}.blocks")), "norm1.weight"));
            let table = key(&format!(
                "layers.{i}.blocks.0.attn.relative_position_bias_table"
            ));
            let dims = w.dims(&table)?;
            let side = (dims[0] as f64).sqrt().round() as usize;
            if dims.len() != 2 || side * side != dims[0] || side.is_multiple_of(2) {
                return Err(w.error(format!(
                    "{table}: expected [(2w-1)², heads], found {dims:?}"
                )));
            }
            window = side.div_ceil(2);
            num_heads.push(dims[1]);
        }
        let fc1 = w.dims(&key("layers.0.blocks.0.mlp.fc1.weight"))?;
        let c = SwinConfig {
            embed_dim,
            depths,
            num_heads,
            window_size: window,
            patch_size,
            mlp_ratio: fc1[0] as f64 / embed_dim as f64,
            qkv_bias: w.contains(&key("layers.0.blocks.0.attn.qkv.bias")),
            layer_norm_eps: 1e-5,
            num_channels,
            out_features: (0..stages)
                .filter(|i| w.contains(&key(&format!("norm{i}.weight"))))
                .map(|i| format!("stage{}", i + 1))
                .collect(),
            use_absolute_embeddings: w.contains(&key("absolute_pos_embed")),
        };
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::swin::SwinBackbone;
    use crate::nn::synthetic;

    #[test]
    fn official_sizes_are_read_back_from_the_keys_a_backbone_asks_for() {
        let c = SwinConfig {
            embed_dim: 8,
            depths: vec![2, 1, 3],
            num_heads: vec![1, 2, 4],
            window_size: 3,
            patch_size: 2,
            mlp_ratio: 2.0,
            qkv_bias: true,
            layer_norm_eps: 1e-5,
            num_channels: 3,
            out_features: vec!["stage2".into(), "stage3".into()],
            use_absolute_embeddings: false,
        };
        let build = |vb| SwinBackbone::load(&c, Layout::Official, vb);
        let layout = Weights::layout_of(build).unwrap();
        let names: Vec<&str> = layout.iter().map(|t| t.name.as_str()).collect();
        for key in [
            "patch_embed.proj.weight",
            "patch_embed.norm.bias",
            "layers.2.blocks.2.attn.qkv.weight",
            "layers.0.blocks.1.attn.relative_position_bias_table",
            "layers.1.downsample.reduction.weight",
            "norm1.weight",
            "norm2.bias",
        ] {
            assert!(names.contains(&key), "{key} not asked for: {names:?}");
        }
        assert!(!names.iter().any(|n| n.starts_with("norm0")));
        let w = Weights::from_state_dict(synthetic::state_dict(&layout, 3).unwrap()).unwrap();
        assert_eq!(SwinConfig::from_official(&w, "").unwrap(), c);
        assert_eq!(
            Layout::Official.derived_buffers(&c, "b.").len(),
            c.depths.iter().sum::<usize>()
        );
    }
}
