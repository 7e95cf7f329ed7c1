//! Resampling by integer factors with PyTorch's semantics.

use candle_core::Tensor;

use crate::error::{Error, Result};

/// Bilinear upsampling by `factor` (`align_corners = False`), `[n, c, h, w]`.
pub fn upsample_bilinear(x: &Tensor, factor: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    Ok(x.upsample_bilinear2d(h * factor, w * factor, false)?)
}

/// `F.interpolate(mode='area')` down by an integer `factor` that divides both sides: the
/// mean of each `factor × factor` block.
pub fn area_downsample(x: &Tensor, factor: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if h % factor != 0 || w % factor != 0 {
        return Err(Error::invalid(format!(
            "area downsampling of {h}x{w} by {factor}: sides must be multiples of the factor"
        )));
    }
    Ok(x.avg_pool2d(factor)?)
}
