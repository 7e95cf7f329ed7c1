//! SAM's prompt encoder: random Fourier position encodings of points and box corners plus
//! learned type embeddings (sparse), and the convolutional mask-input embedding (dense).

use crate::error::{Error, Result};
use candle_core::{DType, Tensor, D};
use candle_nn::VarBuilder;
use candle_transformers::models::segment_anything::LayerNorm2d;

/// The prompt encoder.
#[derive(Debug)]
pub struct PromptEncoder {
    embed_dim: usize,
    embedding_size: (usize, usize),
    input_size: (usize, usize),
    gaussian: Tensor,
    point_embeddings: Vec<Tensor>,
    not_a_point: Tensor,
    no_mask: Tensor,
    mask_conv1: candle_nn::Conv2d,
    mask_ln1: LayerNorm2d,
    mask_conv2: candle_nn::Conv2d,
    mask_ln2: LayerNorm2d,
    mask_conv3: candle_nn::Conv2d,
}

/// The batch of sparse and dense prompt embeddings given to the mask decoder.
#[derive(Debug, Clone)]
pub struct PromptEmbeddings {
    /// Point and box-corner tokens, `(B, n, C)`.
    pub sparse: Tensor,
    /// Mask-input embedding, `(B, C, h, w)` (batch 1 when it is the shared no-mask embedding).
    pub dense: Tensor,
}

impl PromptEncoder {
    /// Builds the encoder: `embedding_size` is the image embedding's `(h, w)`, `input_size` the
    /// padded model input's `(H, W)`.
    pub fn new(
        embed_dim: usize,
        embedding_size: (usize, usize),
        input_size: (usize, usize),
        mask_in_chans: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let gaussian = vb.get(
            (2, embed_dim / 2),
            "pe_layer.positional_encoding_gaussian_matrix",
        )?;
        let point_embeddings = (0..4)
            .map(|i| vb.get((1, embed_dim), &format!("point_embeddings.{i}.weight")))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let stride2 = candle_nn::Conv2dConfig {
            stride: 2,
            ..Default::default()
        };
        let quarter = mask_in_chans / 4;
        Ok(PromptEncoder {
            embed_dim,
            embedding_size,
            input_size,
            gaussian,
            point_embeddings,
            not_a_point: vb.get((1, embed_dim), "not_a_point_embed.weight")?,
            no_mask: vb.get((1, embed_dim), "no_mask_embed.weight")?,
            mask_conv1: candle_nn::conv2d(1, quarter, 2, stride2, vb.pp("mask_downscaling.0"))?,
            mask_ln1: LayerNorm2d::new(quarter, 1e-6, vb.pp("mask_downscaling.1"))?,
            mask_conv2: candle_nn::conv2d(
                quarter,
                mask_in_chans,
                2,
                stride2,
                vb.pp("mask_downscaling.3"),
            )?,
            mask_ln2: LayerNorm2d::new(mask_in_chans, 1e-6, vb.pp("mask_downscaling.4"))?,
            mask_conv3: candle_nn::conv2d(
                mask_in_chans,
                embed_dim,
                1,
                Default::default(),
                vb.pp("mask_downscaling.6"),
            )?,
        })
    }

    /// Fourier features of coordinates normalised to [0, 1]: `(..., 2)` → `(..., C)`.
    fn pe_encoding(&self, coords: &Tensor) -> Result<Tensor> {
        let c = coords.affine(2.0, -1.0)?.broadcast_matmul(&self.gaussian)?;
        let c = (c * (2.0 * std::f64::consts::PI))?;
        Ok(Tensor::cat(&[c.sin()?, c.cos()?], D::Minus1)?)
    }

    /// Fourier features of pixel coordinates `(B, N, 2)` in the model input frame.
    fn pe_of_pixels(&self, coords: &Tensor) -> Result<Tensor> {
        let (h, w) = self.input_size;
        let x = (coords.narrow(2, 0, 1)? / w as f64)?;
        let y = (coords.narrow(2, 1, 1)? / h as f64)?;
        self.pe_encoding(&Tensor::cat(&[x, y], 2)?)
    }

    /// The dense position encoding of the image embedding grid, `(1, C, h, w)`.
    pub fn dense_pe(&self) -> Result<Tensor> {
        let (h, w) = self.embedding_size;
        let dev = self.gaussian.device();
        let coords: Vec<f32> = (0..h)
            .flat_map(|y| {
                (0..w).flat_map(move |x| [(x as f32 + 0.5) / w as f32, (y as f32 + 0.5) / h as f32])
            })
            .collect();
        let coords = Tensor::from_vec(coords, (h, w, 2), dev)?;
        Ok(self
            .pe_encoding(&coords)?
            .permute((2, 0, 1))?
            .unsqueeze(0)?)
    }

    fn embed_points(&self, points: &Tensor, labels: &Tensor, pad: bool) -> Result<Tensor> {
        let (b, _, _) = points.dims3()?;
        let dev = points.device();
        let mut points = (points + 0.5)?;
        let mut labels = labels.to_dtype(DType::F32)?;
        if pad {
            points = Tensor::cat(&[points, Tensor::zeros((b, 1, 2), DType::F32, dev)?], 1)?;
            labels = Tensor::cat(&[labels, Tensor::full(-1f32, (b, 1), dev)?], 1)?;
        }
        let pe = self.pe_of_pixels(&points)?;
        let shape = pe.shape().clone();
        let labels = labels.unsqueeze(2)?.broadcast_as(shape.clone())?;
        let not_a_point = self.not_a_point.broadcast_as(shape.clone())?;
        let emb = labels.eq(-1f32)?.where_cond(&not_a_point, &pe)?;
        let mut emb = emb;
        for (label, table) in self.point_embeddings.iter().enumerate() {
            let sel = labels.eq(label as f32)?.to_dtype(DType::F32)?;
            emb = (emb + sel.broadcast_mul(table)?)?;
        }
        Ok(emb)
    }

    fn embed_boxes(&self, boxes: &Tensor) -> Result<Tensor> {
        let b = boxes.dim(0)?;
        let corners = (boxes + 0.5)?.reshape((b, 2, 2))?;
        let pe = self.pe_of_pixels(&corners)?;
        let tables = Tensor::cat(&[&self.point_embeddings[2], &self.point_embeddings[3]], 0)?;
        Ok(pe.broadcast_add(&tables.unsqueeze(0)?)?)
    }

    fn embed_masks(&self, masks: &Tensor) -> Result<Tensor> {
        Ok(masks
            .apply(&self.mask_conv1)?
            .apply(&self.mask_ln1)?
            .gelu_erf()?
            .apply(&self.mask_conv2)?
            .apply(&self.mask_ln2)?
            .gelu_erf()?
            .apply(&self.mask_conv3)?)
    }

    /// Embeds a batch of prompts: points `(B, N, 2)` with labels `(B, N)` (1 foreground,
    /// 0 background, -1 padding) in model-input pixels, boxes `(B, 4)` XYXY in model-input
    /// pixels, mask inputs `(B, 1, 4h, 4w)` logits. Without boxes a padding point is appended.
    pub fn forward(
        &self,
        points: Option<(&Tensor, &Tensor)>,
        boxes: Option<&Tensor>,
        masks: Option<&Tensor>,
    ) -> Result<PromptEmbeddings> {
        let batch = match (points, boxes, masks) {
            (Some((p, _)), _, _) => p.dim(0)?,
            (None, Some(b), _) => b.dim(0)?,
            (None, None, Some(m)) => m.dim(0)?,
            (None, None, None) => 1,
        };
        let dev = self.gaussian.device();
        let mut parts = Vec::new();
        if let Some((p, l)) = points {
            parts.push(self.embed_points(p, l, boxes.is_none())?);
        }
        if let Some(b) = boxes {
            parts.push(self.embed_boxes(b)?);
        }
        let sparse = if parts.is_empty() {
            Tensor::zeros((batch, 0, self.embed_dim), DType::F32, dev)?
        } else {
            Tensor::cat(&parts, 1)?
        };
        if sparse.dim(0)? != batch {
            return Err(Error::invalid(
                "points and boxes have different batch sizes",
            ));
        }
        Ok(PromptEmbeddings {
            sparse,
            dense: self.dense(masks)?,
        })
    }

    /// Embeds prompt rows as SAM's ONNX export does: `points` `(B, N, 2)` in model-input
    /// pixels with `labels` `(B, N)` in -1..=3 (2 and 3 are box corners); no padding point is
    /// added.
    pub fn forward_rows(
        &self,
        points: &Tensor,
        labels: &Tensor,
        masks: Option<&Tensor>,
    ) -> Result<PromptEmbeddings> {
        Ok(PromptEmbeddings {
            sparse: self.embed_points(points, labels, false)?,
            dense: self.dense(masks)?,
        })
    }

    /// The dense embedding: of the mask inputs, or the shared no-mask embedding.
    fn dense(&self, masks: Option<&Tensor>) -> Result<Tensor> {
        let (h, w) = self.embedding_size;
        Ok(match masks {
            Some(m) => self.embed_masks(m)?,
            None => self
                .no_mask
                .reshape((1, self.embed_dim, 1, 1))?
                .broadcast_as((1, self.embed_dim, h, w))?,
        })
    }
}
