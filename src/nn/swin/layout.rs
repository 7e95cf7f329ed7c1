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
    /// Video-Swin as ReferFormer keeps it (`models/video_swin_transformer.py`,
    /// `VideoSwinTransformerBackbone`): the original block keys, a `[C, 3, 1, p, p]` 3D
    /// patch embedding, patch merging at `downsamples.i`, no output norms, bias tables over
    /// `[frames, w, w]` windows, and windows clamped to a map side not larger than them.
    Video,
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
            Layout::Official | Layout::Video => {
                let e = vb.pp("patch_embed");
                (e.pp("proj"), e.pp("norm"))
            }
        }
    }

    /// Stage `i` (0-based), holding `blocks.j` and `downsample`.
    pub(super) fn stage<'a>(self, vb: &VarBuilder<'a>, i: usize) -> VarBuilder<'a> {
        match self {
            Layout::HuggingFace => vb.pp("encoder").pp("layers").pp(i),
            Layout::Official | Layout::Video => vb.pp("layers").pp(i),
        }
    }

    /// The patch merging after stage `i` (0-based).
    pub(super) fn downsample<'a>(self, vb: &VarBuilder<'a>, i: usize) -> VarBuilder<'a> {
        match self {
            Layout::Video => vb.pp("downsamples").pp(i),
            _ => self.stage(vb, i).pp("downsample"),
        }
    }

    /// Whether a map side not larger than the window shrinks the window to it, unshifted.
    pub(super) fn clamps_windows(self) -> bool {
        self == Layout::Video
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
            Layout::Official | Layout::Video => BlockKeys {
                norm1: vb.pp("norm1"),
                norm2: vb.pp("norm2"),
                attn: vb.pp("attn"),
                proj: vb.pp("attn").pp("proj"),
                fc1: vb.pp("mlp").pp("fc1"),
                fc2: vb.pp("mlp").pp("fc2"),
            },
        }
    }

    /// The LayerNorm of output stage `i` (0-based); Video-Swin has none.
    pub(super) fn output_norm<'a>(self, vb: &VarBuilder<'a>, i: usize) -> Option<VarBuilder<'a>> {
        match self {
            Layout::HuggingFace => Some(vb.pp("hidden_states_norms").pp(format!("stage{}", i + 1))),
            Layout::Official => Some(vb.pp(format!("norm{i}"))),
            Layout::Video => None,
        }
    }

    /// Keys of buffers the layout stores but the port derives itself (the relative position
    /// index of every block), with `prefix` (ending in `.` or empty) before each; loaders pass
    /// them as ignored keys.
    pub fn derived_buffers(self, c: &SwinConfig, prefix: &str) -> Vec<String> {
        match self {
            Layout::HuggingFace => Vec::new(),
            Layout::Official | Layout::Video => c
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
        Self::from_keys(w, prefix, Layout::Official)
    }

    /// Reads every size of a ReferFormer Video-Swin backbone ([`Layout::Video`]) under
    /// `prefix` as [`SwinConfig::from_official`] does, with the window's frames and side from
    /// the bias table and the stored `relative_position_index` (`[f·w², f·w²]`); every stage
    /// is an output. A missing key is an error naming it.
    pub fn from_video(w: &Weights, prefix: &str) -> Result<SwinConfig> {
        Self::from_keys(w, prefix, Layout::Video)
    }

    fn from_keys(w: &Weights, prefix: &str, layout: Layout) -> Result<SwinConfig> {
        let key = |k: &str| format!("{prefix}{k}");
        let video = layout == Layout::Video;
        let proj_key = key("patch_embed.proj.weight");
        let proj = w.dims(&proj_key)?;
        let square = |d: &[usize]| d.len() == 4 && d[2] == d[3];
        let proj = match (video, proj.as_slice()) {
            (false, d) if square(d) => proj,
            (true, &[c, cin, 1, p, q]) if p == q => vec![c, cin, p, q],
            _ => {
                let want = if video {
                    "[C, 3, 1, p, p]"
                } else {
                    "[C, 3, p, p]"
                };
                return Err(w.error(format!(
                    "{proj_key}: expected a {want} patch convolution, found {proj:?}"
                )));
            }
        };
        let (embed_dim, num_channels, patch_size) = (proj[0], proj[1], proj[2]);
        let stages = w.count(&key("layers"), "blocks.0.norm1.weight");
        if stages == 0 {
            // The error names the first block's key.
            w.dims(&key("layers.0.blocks.0.norm1.weight"))?;
        }
        let (mut depths, mut num_heads, mut window) = (Vec::new(), Vec::new(), (1, 0));
        for i in 0..stages {
            let block = format!("layers.{i}.blocks");
            depths.push(w.count(&key(&block), "norm1.weight"));
            let table = key(&format!("{block}.0.attn.relative_position_bias_table"));
            let dims = w.dims(&table)?;
            let tokens = if video {
                Some(w.dims(&key(&format!("{block}.0.attn.relative_position_index")))?[0])
            } else {
                None
            };
            window = table_window(dims[0], tokens)
                .filter(|_| dims.len() == 2)
                .ok_or_else(|| {
                    w.error(format!(
                        "{table}: expected [(2f-1)·(2w-1)², heads] for a window of f frames \
                         (1 for image Swin) and side w, found {dims:?}"
                    ))
                })?;
            num_heads.push(dims[1]);
        }
        let fc1 = w.dims(&key("layers.0.blocks.0.mlp.fc1.weight"))?;
        let c = SwinConfig {
            embed_dim,
            depths,
            num_heads,
            window_size: window.1,
            window_frames: window.0,
            patch_size,
            mlp_ratio: fc1[0] as f64 / embed_dim as f64,
            qkv_bias: w.contains(&key("layers.0.blocks.0.attn.qkv.bias")),
            layer_norm_eps: 1e-5,
            num_channels,
            out_features: (0..stages)
                .filter(|i| video || w.contains(&key(&format!("norm{i}.weight"))))
                .map(|i| format!("stage{}", i + 1))
                .collect(),
            use_absolute_embeddings: w.contains(&key("absolute_pos_embed")),
        };
        c.validate()?;
        Ok(c)
    }
}

/// (frames, side) of the window whose bias table has `rows` rows: image Swin's square table
/// `(2w-1)²` when `tokens` is `None`, else the only window of `tokens = f·w²` tokens with
/// `(2f-1)·(2w-1)²` rows.
fn table_window(rows: usize, tokens: Option<usize>) -> Option<(usize, usize)> {
    let rows_of = |f: usize, s: usize| (2 * f - 1) * (2 * s - 1) * (2 * s - 1);
    let fits: Vec<(usize, usize)> = match tokens {
        None => (1..=rows)
            .take_while(|s| rows_of(1, *s) <= rows)
            .map(|s| (1, s))
            .collect(),
        Some(n) => (1..=n)
            .take_while(|s| s * s <= n)
            .filter(|s| n.is_multiple_of(s * s))
            .map(|s| (n / (s * s), s))
            .collect(),
    };
    let mut hit = fits.into_iter().filter(|&(f, s)| rows_of(f, s) == rows);
    match (hit.next(), hit.next()) {
        (Some(w), None) => Some(w),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::swin::SwinBackbone;
    use crate::nn::synthetic::{self, TensorSpec};

    #[test]
    fn official_sizes_are_read_back_from_the_keys_a_backbone_asks_for() {
        let c = SwinConfig {
            embed_dim: 8,
            depths: vec![2, 1, 3],
            num_heads: vec![1, 2, 4],
            window_size: 3,
            window_frames: 1,
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

    #[test]
    fn video_sizes_are_read_back_from_the_keys_and_stored_index_shapes() {
        let c = SwinConfig {
            embed_dim: 8,
            depths: vec![2, 1],
            num_heads: vec![1, 2],
            window_size: 3,
            window_frames: 4,
            patch_size: 2,
            mlp_ratio: 2.0,
            qkv_bias: true,
            layer_norm_eps: 1e-5,
            num_channels: 3,
            out_features: vec!["stage1".into(), "stage2".into()],
            use_absolute_embeddings: false,
        };
        let build = |vb| SwinBackbone::load(&c, Layout::Video, vb);
        let mut layout = Weights::layout_of(build).unwrap();
        let find = |name: &str| layout.iter().find(|t| t.name == name).map(|t| &t.shape);
        assert_eq!(find("patch_embed.proj.weight"), Some(&vec![8, 3, 1, 2, 2]));
        assert_eq!(
            find("layers.1.blocks.0.attn.relative_position_bias_table"),
            Some(&vec![7 * 5 * 5, 2])
        );
        assert!(find("downsamples.0.reduction.weight").is_some());
        assert!(!layout.iter().any(|t| t.name.starts_with("norm")));
        // The official checkpoint also stores each block's `[f·w², f·w²]` index.
        let dtype = layout[0].dtype;
        for name in Layout::Video.derived_buffers(&c, "") {
            let shape = vec![4 * 9, 4 * 9];
            layout.push(TensorSpec { name, shape, dtype });
        }
        let w = Weights::from_state_dict(synthetic::state_dict(&layout, 5).unwrap()).unwrap();
        assert_eq!(SwinConfig::from_video(&w, "").unwrap(), c);
    }
}
