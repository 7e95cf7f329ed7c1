//! Grounding-DINO post-processing (`post_process_grounded_object_detection`): queries whose
//! best token probability exceeds a threshold become detections with pixel boxes and the
//! tokens above the text threshold.

use candle_core::Tensor;

use crate::error::{Error, Result};

/// One detected box.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// Index of the decoder query.
    pub query: usize,
    /// Best token probability.
    pub score: f32,
    /// `[x0, y0, x1, y1]` in pixels of the unpadded input image.
    pub bbox: [f32; 4],
    /// Token probabilities over the text positions.
    pub token_probs: Vec<f32>,
    /// Tokens above the text threshold (position 0 and positions ≥ `max_text_len − 1`
    /// cleared).
    pub token_mask: Vec<bool>,
}

/// Detections of every image of a batch from `logits` `(B, Q, T)` and `pred_boxes`
/// `(B, Q, 4)`, for text length `text_len` and image sizes `(height, width)`. Queries are
/// kept when their best probability is strictly above `threshold`, in query order.
pub fn post_process(
    logits: &Tensor,
    pred_boxes: &Tensor,
    text_len: usize,
    target_sizes: &[(usize, usize)],
    threshold: f32,
    text_threshold: f32,
) -> Result<Vec<Vec<Detection>>> {
    let probs = candle_nn::ops::sigmoid(logits)?.to_vec3::<f32>()?;
    let boxes = pred_boxes.to_vec3::<f32>()?;
    if probs.len() != target_sizes.len() {
        return Err(Error::invalid(format!(
            "post-processing: {} target sizes for a batch of {}",
            target_sizes.len(),
            probs.len()
        )));
    }
    let width = logits.dim(2)?;
    let text_len = text_len.min(width);
    Ok(probs
        .iter()
        .zip(&boxes)
        .zip(target_sizes)
        .map(|((p, bx), &(h, w))| {
            let (w, h) = (w as f32, h as f32);
            p.iter()
                .zip(bx)
                .enumerate()
                .filter_map(|(query, (row, b))| {
                    let score = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    if score <= threshold {
                        return None;
                    }
                    let token_probs = row[..text_len].to_vec();
                    let token_mask = token_probs
                        .iter()
                        .enumerate()
                        .map(|(i, &v)| v > text_threshold && i != 0 && i + 1 < width)
                        .collect();
                    let (cx, cy, bw, bh) = (b[0], b[1], b[2], b[3]);
                    let bbox = [
                        (cx - 0.5 * bw) * w,
                        (cy - 0.5 * bh) * h,
                        (cx + 0.5 * bw) * w,
                        (cy + 0.5 * bh) * h,
                    ];
                    Some(Detection {
                        query,
                        score,
                        bbox,
                        token_probs,
                        token_mask,
                    })
                })
                .collect()
        })
        .collect())
}
