//! Parity of the SAM port with the official `segment-anything` package on the fixtures in
//! `$DEVA_FIXTURES/sam` (see its README): preprocessing, image encoder, prompted predictor,
//! automatic mask generator.
//!
//! By subject: `encoder` (preprocessing, ViT and MobileSAM's TinyViT), `predictor`, `amg`,
//! `checkpoint` (loading errors), `track` (box-initialised tracking, library and CLI).
//! Shared fixture helpers here.

mod amg;
mod checkpoint;
#[path = "../common/mod.rs"]
mod common;
mod encoder;
mod predictor;
mod track;

use candle_core::{DType, Device, Tensor};
use common::tensors::max_abs_diff;
use deva::segmenter::sam::SamModel;
use image::RgbImage;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

struct Fixture {
    cases: HashMap<String, Tensor>,
    checks: serde_json::Value,
}

fn load_fixture(dir: &Path) -> Fixture {
    let cases = candle_core::safetensors::load(dir.join("cases.safetensors"), &Device::Cpu)
        .expect("cases.safetensors");
    let checks = common::json_file(dir, "checks.json");
    Fixture { cases, checks }
}

impl Fixture {
    fn get(&self, key: &str) -> &Tensor {
        self.cases
            .get(key)
            .unwrap_or_else(|| panic!("cases.safetensors has no {key}"))
    }

    /// The suggested absolute tolerance of the README: max(1e-4·max(1, scale),
    /// 10·(float32 vs float64 deviation)), rounded up to one significant digit, with scale and
    /// deviation read from checks.json (`path` = keys under "precision").
    fn atol(&self, path: &[&str]) -> f32 {
        let mut v = &self.checks["precision"];
        for p in path {
            v = &v[*p];
        }
        let scale = v["scale"]
            .as_f64()
            .unwrap_or_else(|| panic!("no scale for {path:?}"));
        let dev = v["max_abs"]
            .as_f64()
            .unwrap_or_else(|| panic!("no max_abs for {path:?}"));
        let t = (1e-4 * scale.max(1.0)).max(10.0 * dev);
        let unit = 10f64.powf(t.log10().floor());
        ((t / unit).ceil() * unit) as f32
    }

    fn pair(&self, key: &str) -> (usize, usize) {
        let v = self
            .get(key)
            .to_dtype(DType::I64)
            .unwrap()
            .to_vec1::<i64>()
            .unwrap();
        (v[0] as usize, v[1] as usize)
    }

    fn image(&self, key: &str) -> RgbImage {
        let t = self.get(key);
        let (h, w, _) = t.dims3().unwrap();
        let data = t.flatten_all().unwrap().to_vec1::<u8>().unwrap();
        RgbImage::from_raw(w as u32, h as u32, data).unwrap()
    }

    /// Case names: key prefixes (before the first '.') that have predictor outputs.
    fn predictor_cases(&self) -> Vec<String> {
        let names: BTreeSet<String> = self
            .cases
            .keys()
            .filter(|k| k.ends_with(".iou_predictions"))
            .map(|k| k.split('.').next().unwrap().to_string())
            .collect();
        names.into_iter().collect()
    }
}

fn assert_close(name: &str, got: &Tensor, want: &Tensor, atol: f32) {
    let d = max_abs_diff(got, want);
    assert!(d <= atol, "{name}: max |port - ref| = {d:e} > {atol:e}");
    eprintln!("{name}: max diff {d:.3e} (atol {atol:.0e})");
}

fn model(dir: &Path) -> SamModel {
    SamModel::load(&dir.join("weights.pth"), &Device::Cpu).expect("weights.pth loads")
}

fn f64s(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}
