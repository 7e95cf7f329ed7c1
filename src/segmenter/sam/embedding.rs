//! An image embedded by SAM, and the per-model cache of the last one, so a SAM segmenter and
//! the refiner on the same frame run the image encoder once.

use crate::error::Result;
use candle_core::Tensor;
use image::RgbImage;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// An image embedded by SAM, with the sizes needed to map prompts and masks.
#[derive(Debug, Clone)]
pub struct ImageEmbedding {
    /// The embedding `(1, C, h, w)`.
    pub features: Tensor,
    /// `(h, w)` of the original image.
    pub original_size: (usize, usize),
    /// `(h, w)` of the resized image inside the padded model input.
    pub input_size: (usize, usize),
}

/// The last image a model embedded and its embedding, and how often the encoder ran.
#[derive(Debug, Default)]
pub(super) struct EmbeddingCache {
    last: Mutex<Option<(RgbImage, ImageEmbedding)>>,
    encoder_runs: AtomicUsize,
}

impl EmbeddingCache {
    /// The embedding of `image`: the cached one when the pixels equal the last image's,
    /// otherwise `embed(image)`, which then becomes the cached one.
    pub(super) fn get_or_embed(
        &self,
        image: &RgbImage,
        embed: impl FnOnce(&RgbImage) -> Result<ImageEmbedding>,
    ) -> Result<ImageEmbedding> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, emb)) = last.as_ref() {
            if seen == image {
                return Ok(emb.clone());
            }
        }
        let emb = embed(image)?;
        *last = Some((image.clone(), emb.clone()));
        Ok(emb)
    }

    /// Counts one run of the image encoder.
    pub(super) fn count_run(&self) {
        self.encoder_runs.fetch_add(1, Ordering::Relaxed);
    }

    /// How many times the image encoder has run.
    pub(super) fn runs(&self) -> usize {
        self.encoder_runs.load(Ordering::Relaxed)
    }
}
