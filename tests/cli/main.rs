//! End-to-end tests of `deva track` (the built binary) and of the configuration presets, by
//! topic: `vipseg` (precomputed detections), `flags` (help and config files), `errors` (bad
//! inputs are named), `runs` (video files, saliency with flow, the demo), `referring` (ReferFormer, offline). Helpers in `util`.
//!
//! Real data come from `$DEVA_DATA` (default `../shared/data`): the DEVA VIPSeg example with its
//! detections, and the Cutie judo clip whose `00005.png` mask is one pixel narrower than its
//! frame. Output PNGs are decoded with the `image` crate (independently of deva's reader).

#[path = "../common/mod.rs"]
mod common;
mod entityseg;
mod errors;
mod flags;
mod mask2former;
mod referring;
mod runs;
mod text;
mod util;
mod vipseg;
