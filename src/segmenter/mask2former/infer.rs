//! Sizes of a Mask2Former checkpoint read from its tensors, for detectron2 `.pkl` files that
//! come without a `config.json`: the backbone (Swin embed dim, depths, heads, window size; or
//! ResNet stem, widths, depths), pixel-decoder and transformer-decoder widths and depths,
//! attention heads, queries and classes. Works on the Hugging Face key layout (a `.pkl` is
//! mapped by [`to_hf`](super::detectron2::to_hf) first); an unknown or inconsistent layout is
//! an error naming the key.

use std::collections::BTreeSet;

use super::config::{BackboneConfig, Mask2FormerConfig, ResNetBackboneConfig};
use super::pixel_decoder::{NUM_LEVELS, NUM_POINTS};
use crate::error::{Error, Result};
use crate::nn::checkpoint::StateDict;
use crate::nn::swin::SwinConfig;

const BACKBONE: &str = "model.pixel_level_module.encoder.";
const PIXEL: &str = "model.pixel_level_module.decoder.";
const TRANSFORMER: &str = "model.transformer_module.";

/// Shape reader over a state dict whose errors name the key.
struct Shapes<'a>(&'a StateDict);

impl Shapes<'_> {
    /// The shape of `key`, which must have `rank` dimensions.
    fn get(&self, key: &str, rank: usize) -> Result<&[usize]> {
        let t = self.0.get(key).ok_or_else(|| {
            self.0.error(format!(
                "key '{key}' is missing (cannot infer the model's sizes)"
            ))
        })?;
        if t.shape().len() != rank {
            return Err(self.0.error(format!(
                "key '{key}' has shape {:?}, expected {rank} dimensions",
                t.shape()
            )));
        }
        Ok(t.shape())
    }

    /// Dimension `dim` of `key`.
    fn dim(&self, key: &str, rank: usize, dim: usize) -> Result<usize> {
        Ok(self.get(key, rank)?[dim])
    }

    /// How many `prefix{i}.` blocks exist (i = 0, 1, ...); gaps are an error naming the key.
    fn count(&self, prefix: &str) -> Result<usize> {
        let idx: BTreeSet<usize> = self
            .0
            .names()
            .filter_map(|k| k.strip_prefix(prefix)?.split('.').next()?.parse().ok())
            .collect();
        match idx.iter().enumerate().find(|(i, v)| i != *v) {
            Some((i, _)) => Err(self.0.error(format!("key '{prefix}{i}.*' is missing"))),
            None => Ok(idx.len()),
        }
    }

    fn inconsistent(&self, key: &str, what: String) -> Error {
        self.0.error(format!("key '{key}': {what}"))
    }
}

/// The sizes of the model whose Hugging Face-layout weights are `dict`; classes are named by
/// `id2label`, whose length must match the class head.
pub fn infer_config(dict: &StateDict, id2label: &[String]) -> Result<Mask2FormerConfig> {
    let s = Shapes(dict);
    let backbone = infer_backbone(&s)?;
    let channels = backbone.channels();
    if channels.len() != 4 {
        return Err(dict.error(format!(
            "the backbone has {} stages under '{BACKBONE}', Mask2Former needs 4",
            channels.len()
        )));
    }

    let proj = format!("{PIXEL}input_projections.0.0.weight");
    let feature_size = s.dim(&proj, 4, 0)?;
    let coarsest = *channels.last().unwrap_or(&0);
    if s.dim(&proj, 4, 1)? != coarsest {
        return Err(s.inconsistent(
            &proj,
            format!(
                "takes {} channels, the backbone's last stage has {coarsest}",
                s.dim(&proj, 4, 1)?
            ),
        ));
    }
    let mask_feature_size = s.dim(&format!("{PIXEL}mask_projection.weight"), 4, 0)?;
    let encoder_layers = s.count(&format!("{PIXEL}encoder.layers."))?;
    let enc = format!("{PIXEL}encoder.layers.0.");
    let encoder_feedforward_dim = s.dim(&format!("{enc}fc1.weight"), 2, 0)?;
    let offsets = format!("{enc}self_attn.sampling_offsets.weight");
    let per_head = NUM_LEVELS * NUM_POINTS * 2;
    let rows = s.dim(&offsets, 2, 0)?;
    if rows == 0 || !rows.is_multiple_of(per_head) {
        return Err(s.inconsistent(
            &offsets,
            format!("{rows} rows are not heads × {NUM_LEVELS} levels × {NUM_POINTS} points × 2"),
        ));
    }
    let num_attention_heads = rows / per_head;

    let queries = format!("{TRANSFORMER}queries_features.weight");
    let num_queries = s.dim(&queries, 2, 0)?;
    let hidden_dim = s.dim(&queries, 2, 1)?;
    if !hidden_dim.is_multiple_of(num_attention_heads) {
        return Err(s.inconsistent(
            &queries,
            format!("{hidden_dim} channels are not divisible by {num_attention_heads} heads"),
        ));
    }
    let layers = s.count(&format!("{TRANSFORMER}decoder.layers."))?;
    let dim_feedforward = s.dim(&format!("{TRANSFORMER}decoder.layers.0.fc1.weight"), 2, 0)?;
    let enforce_input_projection = feature_size == hidden_dim
        && dict
            .get(&format!("{TRANSFORMER}input_projections.0.weight"))
            .is_some();

    let head = "class_predictor.weight";
    let classes = s.dim(head, 2, 0)?.saturating_sub(1);
    if classes != id2label.len() {
        return Err(s.inconsistent(
            head,
            format!(
                "the checkpoint has {classes} classes (+1 no-object), the label set {}",
                id2label.len()
            ),
        ));
    }
    Ok(Mask2FormerConfig {
        backbone,
        feature_size,
        mask_feature_size,
        hidden_dim,
        encoder_layers,
        encoder_feedforward_dim,
        decoder_layers: layers + 1,
        dim_feedforward,
        num_attention_heads,
        num_queries,
        pre_norm: false,
        enforce_input_projection,
        common_stride: 4,
        feature_strides: vec![4, 8, 16, 32],
        id2label: id2label.to_vec(),
    })
}

fn infer_backbone(s: &Shapes) -> Result<BackboneConfig> {
    let swin = format!("{BACKBONE}embeddings.patch_embeddings.projection.weight");
    let resnet = format!("{BACKBONE}embedder.embedder.convolution.weight");
    if s.0.get(&swin).is_some() {
        infer_swin(s, &swin).map(BackboneConfig::Swin)
    } else if s.0.get(&resnet).is_some() {
        infer_resnet(s, &resnet).map(BackboneConfig::ResNet)
    } else {
        Err(s.0.error(format!(
            "unknown backbone: neither a Swin ('{swin}') nor a ResNet ('{resnet}') key"
        )))
    }
}

fn infer_swin(s: &Shapes, patch: &str) -> Result<SwinConfig> {
    let p = s.get(patch, 4)?;
    let (embed_dim, num_channels, patch_size) = (p[0], p[1], p[2]);
    let abs = format!("{BACKBONE}embeddings.position_embeddings");
    if s.0.get(&abs).is_some() {
        return Err(s.inconsistent(
            &abs,
            "absolute position embeddings are not supported".into(),
        ));
    }
    let stages = s.count(&format!("{BACKBONE}encoder.layers."))?;
    let (mut depths, mut num_heads, mut window, mut mlp_ratio) = (vec![], vec![], None, None);
    let mut qkv_bias = None;
    for i in 0..stages {
        let dim = embed_dim << i;
        let stage = format!("{BACKBONE}encoder.layers.{i}.blocks.");
        let depth = s.count(&stage)?;
        if depth == 0 {
            return Err(s.0.error(format!("key '{stage}0.*' is missing")));
        }
        let mut heads = None;
        for j in 0..depth {
            let b = format!("{stage}{j}.");
            let table = format!("{b}attention.self.relative_position_bias_table");
            let t = s.get(&table, 2)?;
            let side = (t[0] as f64).sqrt().round() as usize;
            if side * side != t[0] || side.is_multiple_of(2) {
                return Err(
                    s.inconsistent(&table, format!("{} rows are not (2·window − 1)²", t[0]))
                );
            }
            let ws = side.div_ceil(2);
            for (name, v, got) in [
                ("window size", &mut window, ws),
                ("heads", &mut heads, t[1]),
            ] {
                if *v.get_or_insert(got) != got {
                    return Err(s.inconsistent(
                        &table,
                        format!("{name} {got} differs from the other blocks'"),
                    ));
                }
            }
            let q = format!("{b}attention.self.query.weight");
            if s.get(&q, 2)? != [dim, dim] {
                return Err(
                    s.inconsistent(&q, format!("expected [{dim}, {dim}] for stage {}", i + 1))
                );
            }
            let bias = s.0.get(&format!("{b}attention.self.query.bias")).is_some();
            if *qkv_bias.get_or_insert(bias) != bias {
                return Err(s.inconsistent(&q, "query biases present in some blocks only".into()));
            }
            let fc1 = format!("{b}intermediate.dense.weight");
            let ratio = s.dim(&fc1, 2, 0)? as f64 / dim as f64;
            if *mlp_ratio.get_or_insert(ratio) != ratio {
                return Err(s.inconsistent(
                    &fc1,
                    format!("MLP ratio {ratio} differs from the other blocks'"),
                ));
            }
        }
        let norm = format!("{BACKBONE}hidden_states_norms.stage{}.weight", i + 1);
        if s.dim(&norm, 1, 0)? != dim {
            return Err(s.inconsistent(
                &norm,
                format!("expected {dim} channels for stage {}", i + 1),
            ));
        }
        depths.push(depth);
        num_heads.push(heads.unwrap_or(1));
    }
    let c = SwinConfig {
        embed_dim,
        depths,
        num_heads,
        window_size: window.unwrap_or(7),
        window_frames: 1,
        patch_size,
        mlp_ratio: mlp_ratio.unwrap_or(4.0),
        qkv_bias: qkv_bias.unwrap_or(true),
        layer_norm_eps: 1e-5,
        num_channels,
        out_features: (1..=stages).map(|i| format!("stage{i}")).collect(),
        use_absolute_embeddings: false,
    };
    c.validate()?;
    Ok(c)
}

fn infer_resnet(s: &Shapes, stem: &str) -> Result<ResNetBackboneConfig> {
    let embedding_size = s.dim(stem, 4, 0)?;
    let stages = s.count(&format!("{BACKBONE}encoder.stages."))?;
    let (mut depths, mut hidden_sizes) = (vec![], vec![]);
    for i in 0..stages {
        let stage = format!("{BACKBONE}encoder.stages.{i}.layers.");
        depths.push(s.count(&stage)?);
        hidden_sizes.push(s.dim(&format!("{stage}0.layer.2.convolution.weight"), 4, 0)?);
    }
    Ok(ResNetBackboneConfig {
        embedding_size,
        hidden_sizes,
        depths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::checkpoint::RawTensor;

    /// The keys the sizes are read from, for a ResNet backbone of `depths` and `widths`.
    fn resnet_layout(depths: &[usize], widths: &[usize]) -> StateDict {
        let mut d = StateDict::new("r50.pkl");
        let mut put = |k: String, shape: &[usize]| {
            let n = shape.iter().product::<usize>();
            d.insert(
                k,
                RawTensor::from_f32(shape.to_vec(), &vec![0.0; n]).unwrap(),
            );
        };
        put(
            format!("{BACKBONE}embedder.embedder.convolution.weight"),
            &[4, 3, 7, 7],
        );
        for (s, (&depth, &w)) in depths.iter().zip(widths).enumerate() {
            for l in 0..depth {
                let k =
                    format!("{BACKBONE}encoder.stages.{s}.layers.{l}.layer.2.convolution.weight");
                put(k, &[w, w / 4, 1, 1]);
            }
        }
        let last = *widths.last().unwrap();
        put(
            format!("{PIXEL}input_projections.0.0.weight"),
            &[16, last, 1, 1],
        );
        put(format!("{PIXEL}mask_projection.weight"), &[12, 16, 1, 1]);
        for l in 0..2 {
            put(format!("{PIXEL}encoder.layers.{l}.fc1.weight"), &[40, 16]);
            put(
                format!("{PIXEL}encoder.layers.{l}.self_attn.sampling_offsets.weight"),
                &[2 * NUM_LEVELS * NUM_POINTS * 2, 16],
            );
        }
        put(format!("{TRANSFORMER}queries_features.weight"), &[7, 16]);
        for l in 0..3 {
            put(
                format!("{TRANSFORMER}decoder.layers.{l}.fc1.weight"),
                &[24, 16],
            );
        }
        put("class_predictor.weight".into(), &[6, 16]);
        d
    }

    #[test]
    fn resnet_sizes_are_read_from_the_shapes() {
        let names: Vec<String> = (0..5).map(|i| format!("c{i}")).collect();
        let d = resnet_layout(&[3, 4, 6, 3], &[8, 16, 32, 64]);
        let c = infer_config(&d, &names).unwrap();
        let BackboneConfig::ResNet(r) = &c.backbone else {
            panic!("not a ResNet: {:?}", c.backbone)
        };
        assert_eq!(
            (r.embedding_size, &*r.depths, &*r.hidden_sizes),
            (4, &[3, 4, 6, 3][..], &[8, 16, 32, 64][..])
        );
        assert_eq!(
            (c.feature_size, c.mask_feature_size, c.encoder_layers),
            (16, 12, 2)
        );
        assert_eq!(
            (
                c.encoder_feedforward_dim,
                c.num_attention_heads,
                c.num_queries
            ),
            (40, 2, 7)
        );
        assert_eq!(
            (
                c.hidden_dim,
                c.decoder_layers,
                c.dim_feedforward,
                c.num_labels()
            ),
            (16, 4, 24, 5)
        );
        assert!(!c.enforce_input_projection);

        // A class head of another size, a gap in a stage, three stages: errors name the key.
        let e = infer_config(&d, &names[..3]).unwrap_err().to_string();
        assert!(
            e.contains("class_predictor.weight") && e.contains("5 classes"),
            "{e}"
        );
        let mut gap = StateDict::new("r50.pkl");
        let skip = format!("{BACKBONE}encoder.stages.1.layers.2.");
        for (k, t) in d.iter().filter(|(k, _)| !k.starts_with(&skip)) {
            gap.insert(k, t.clone());
        }
        let e = infer_config(&gap, &names).unwrap_err().to_string();
        assert!(
            e.contains(&format!("{skip}*")) && e.contains("missing"),
            "{e}"
        );
        let three = resnet_layout(&[1, 1, 1], &[8, 16, 32]);
        let e = infer_config(&three, &names).unwrap_err().to_string();
        assert!(e.contains("3 stages"), "{e}");
        let e = infer_config(&StateDict::new("x.pkl"), &names)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown backbone") && e.contains("x.pkl"), "{e}");
    }
}
