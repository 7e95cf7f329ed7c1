//! Prompted prediction on one image, as the official `SamPredictor`: the image is embedded
//! once, then points, boxes and mask inputs given in original-image pixels give masks at the
//! original size.

use super::embedding::ImageEmbedding;
use super::model::SamModel;
use super::prompt::PromptEmbeddings;
use super::transform::{apply_coords, input_tensor, resize_longest_side, MaskUpscaler};
use crate::error::{Error, Result};
use crate::mask::BinaryMask;
use candle_core::{DType, Tensor};
use image::RgbImage;

impl SamModel {
    /// How many times the image encoder has run (embeddings served from the model's cache of
    /// the last image are not counted).
    pub fn encoder_runs(&self) -> usize {
        self.cache.runs()
    }

    /// Also keeps image embeddings on disk in `dir` (created if missing), one file per image
    /// (about 4 MB for a 1024-pixel SAM), named by a hash of the pixels and of the model: later
    /// runs over the same frames with this model read them instead of running the encoder.
    /// The model is identified by its prompt encoder's dense positional encoding and its
    /// embedding of a fixed pattern (one encoder run here). Nothing is ever deleted from `dir`.
    pub fn cache_embeddings_in(&self, dir: &std::path::Path) -> Result<()> {
        use sha2::Digest;
        let pattern = RgbImage::from_fn(16, 16, |x, y| {
            image::Rgb([(x * 16) as u8, (y * 16) as u8, 128])
        });
        let resized = resize_longest_side(&pattern, self.arch().img_size);
        let probe = self.embed_resized(&resized, (16, 16))?.features;
        let mut h = sha2::Sha256::new();
        h.update((self.arch().img_size as u64).to_le_bytes());
        for t in [&self.dense_pe, &probe] {
            for v in t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()? {
                h.update(v.to_le_bytes());
            }
        }
        self.cache.use_dir(dir, h.finalize().into(), self.device())
    }
}

/// One point prompt in original-image pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PointPrompt {
    /// Column (x).
    pub x: f64,
    /// Row (y).
    pub y: f64,
    /// Foreground (`true`) or background point.
    pub positive: bool,
}

/// The prompts for one prediction.
#[derive(Debug, Clone, Default)]
pub struct Prompt {
    /// Point prompts.
    pub points: Vec<PointPrompt>,
    /// A box `[x0, y0, x1, y1]` in original-image pixels.
    pub bbox: Option<[f64; 4]>,
    /// Low-resolution mask logits from an earlier prediction, `(1, 4h, 4w)`.
    pub mask_input: Option<Tensor>,
}

/// Masks predicted for one prompt.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// Width of the original image.
    pub width: usize,
    /// Height of the original image.
    pub height: usize,
    /// Mask logits at the original size, one row-major map per output.
    pub logits: Vec<Vec<f32>>,
    /// Predicted IoU of each output.
    pub iou: Vec<f32>,
    /// Low-resolution logits `(M, 4h, 4w)`, usable as a later `mask_input`.
    pub low_res: Tensor,
}

impl Prediction {
    /// Output `i` binarised at logit 0.
    pub fn mask(&self, i: usize) -> BinaryMask {
        let data = self.logits[i].iter().map(|&v| v > 0.0).collect();
        BinaryMask::from_vec(self.width, self.height, data).expect("logits sized for the image")
    }

    /// The output with the highest predicted IoU (the first on ties).
    pub fn best(&self) -> usize {
        first_max(&self.iou)
    }
}

/// The index of the largest value (the first on ties; 0 when empty).
fn first_max(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

impl SamModel {
    /// Embeds an RGB image: resize so the longest side is the input size, normalise, pad,
    /// encode.
    ///
    /// The model keeps the embedding of the last image it embedded this way: asked again for
    /// an image with the same pixels (a SAM segmenter and the refiner on one frame), it returns
    /// that embedding without running the encoder.
    pub fn embed_image(&self, image: &RgbImage) -> Result<ImageEmbedding> {
        self.cache.get_or_embed(image, |image| {
            let resized = resize_longest_side(image, self.arch().img_size);
            self.embed_resized(&resized, (image.height() as usize, image.width() as usize))
        })
    }

    /// Embeds an image already resized by [`resize_longest_side`] from an original of
    /// `original_size` `(h, w)`.
    pub fn embed_resized(
        &self,
        resized: &RgbImage,
        original_size: (usize, usize),
    ) -> Result<ImageEmbedding> {
        let input = self.input_tensor(resized)?;
        self.cache.count_run();
        let features = self.encode(&input, None)?;
        Ok(ImageEmbedding {
            features,
            original_size,
            input_size: (resized.height() as usize, resized.width() as usize),
        })
    }

    /// The normalised, padded model input for a resized image; its longest side must be the
    /// model's input size.
    pub fn input_tensor(&self, resized: &RgbImage) -> Result<Tensor> {
        let size = self.arch().img_size;
        let (w, h) = (resized.width() as usize, resized.height() as usize);
        if w.max(h) != size {
            return Err(Error::invalid(format!(
                "SAM input is {w}x{h}; its longest side must be {size}"
            )));
        }
        input_tensor(resized, size, self.device())
    }

    /// Maps a point of the original image into the model input (per the model's
    /// [`CoordScale`](super::transform::CoordScale)).
    pub fn to_input_coords(&self, emb: &ImageEmbedding, x: f64, y: f64) -> (f32, f32) {
        apply_coords(
            (x, y),
            emb.original_size,
            emb.input_size,
            self.coord_scale(),
        )
    }

    /// The prompt embeddings of one prompt (coordinates mapped into the model input).
    pub fn prompt_embeddings(
        &self,
        emb: &ImageEmbedding,
        prompt: &Prompt,
    ) -> Result<PromptEmbeddings> {
        let dev = self.device();
        let map = |x: f64, y: f64| self.to_input_coords(emb, x, y);
        let points = if prompt.points.is_empty() {
            None
        } else {
            let n = prompt.points.len();
            let coords: Vec<f32> = prompt
                .points
                .iter()
                .flat_map(|p| {
                    let (x, y) = map(p.x, p.y);
                    [x, y]
                })
                .collect();
            let labels: Vec<f32> = prompt
                .points
                .iter()
                .map(|p| if p.positive { 1.0 } else { 0.0 })
                .collect();
            Some((
                Tensor::from_vec(coords, (1, n, 2), dev)?,
                Tensor::from_vec(labels, (1, n), dev)?,
            ))
        };
        let boxes = match prompt.bbox {
            Some([x0, y0, x1, y1]) => {
                let (a, b) = map(x0, y0);
                let (c, d) = map(x1, y1);
                Some(Tensor::from_vec(vec![a, b, c, d], (1, 4), dev)?)
            }
            None => None,
        };
        let masks = match &prompt.mask_input {
            Some(m) => Some(m.to_dtype(DType::F32)?.unsqueeze(0)?),
            None => None,
        };
        self.embed_prompts(
            points.as_ref().map(|(p, l)| (p, l)),
            boxes.as_ref(),
            masks.as_ref(),
        )
    }

    /// Predicts masks for one prompt (`SamPredictor.predict`); `multimask` returns the three
    /// multimask outputs, otherwise the single-mask output.
    pub fn predict(
        &self,
        emb: &ImageEmbedding,
        prompt: &Prompt,
        multimask: bool,
    ) -> Result<Prediction> {
        if prompt.points.is_empty() && prompt.bbox.is_none() && prompt.mask_input.is_none() {
            return Err(Error::invalid(
                "a SAM prompt needs points, a box or a mask input",
            ));
        }
        let prompts = self.prompt_embeddings(emb, prompt)?;
        let (low, iou) = self.decode(&emb.features, &prompts, multimask)?;
        self.prediction(emb, low, iou)
    }

    /// Predicts one mask as SAM's ONNX export does (`SamOnnxModel`, `return_single_mask`):
    /// prompt rows `(1, N, 2)` in model-input pixels with labels `(1, N)` (see
    /// [`SamModel::embed_prompt_rows`]) and an optional mask input `(1, 1, 4h, 4w)`. With
    /// `N ≤ 2` rows the multimask output of highest predicted IoU is chosen, otherwise the
    /// single-mask output.
    pub fn predict_rows(
        &self,
        emb: &ImageEmbedding,
        points: &Tensor,
        labels: &Tensor,
        mask_input: Option<&Tensor>,
    ) -> Result<Prediction> {
        let rows = points.dim(1)?;
        let prompts = self.embed_prompt_rows(points, labels, mask_input)?;
        let (low, iou) = self.decode(&emb.features, &prompts, rows <= 2)?;
        let best = first_max(&iou.squeeze(0)?.to_vec1::<f32>()?);
        self.prediction(emb, low.narrow(1, best, 1)?, iou.narrow(1, best, 1)?)
    }

    /// The prediction of decoder outputs `low` `(1, M, 4h, 4w)` and `iou` `(1, M)`.
    fn prediction(&self, emb: &ImageEmbedding, low: Tensor, iou: Tensor) -> Result<Prediction> {
        let low = low.squeeze(0)?;
        let iou = iou.squeeze(0)?.to_vec1::<f32>()?;
        let (_, lh, lw) = low.dims3()?;
        let upscaler = self.upscaler(emb, (lh, lw));
        let logits = low
            .to_vec3::<f32>()?
            .into_iter()
            .map(|m| upscaler.apply(&m.concat()))
            .collect();
        Ok(Prediction {
            width: emb.original_size.1,
            height: emb.original_size.0,
            logits,
            iou,
            low_res: low,
        })
    }

    /// The upscaler from low-resolution logits of `low` `(h, w)` to the original image of
    /// `emb`.
    pub fn upscaler(&self, emb: &ImageEmbedding, low: (usize, usize)) -> MaskUpscaler {
        MaskUpscaler::new(low, self.arch().img_size, emb.input_size, emb.original_size)
    }
}
