//! Predictions of a BURST result file on the GT timesteps: boxes of their RLEs, at most
//! `MAX_DETECTIONS` per image (highest scores, stable order).

use super::{detection, rle_box, BurstJson, GroundTruth, MAX_DETECTIONS};
use crate::error::{Error, Result};
use crate::mask::BBox;
use std::collections::HashMap;
use std::path::Path;

/// A prediction on a GT image: track id, score, box.
struct PredDet {
    image: usize,
    track: i64,
    score: f64,
    bbox: BBox,
}

/// Predicted (track id, box) detections of one timestep.
pub(super) type StepDets = Vec<(i64, BBox)>;

/// Predicted detections per GT video and timestep, after the per-image limit.
pub(super) fn tracker_dets(
    gt: &GroundTruth,
    pred: &BurstJson,
    path: &Path,
) -> Result<Vec<Vec<StepDets>>> {
    let split = match &pred.split {
        Some(s) if *s != gt.split => {
            return Err(Error::parse(
                path,
                format!("split {s:?} differs from the ground truth's {:?}", gt.split),
            ))
        }
        _ => gt.split.as_str(),
    };
    let mut dets = Vec::new();
    for seq in &pred.sequences {
        let what = format!("{}/{}", seq.dataset, seq.seq_name);
        seq.check_lengths(path)?;
        for (frame, img) in seq.segmentations.iter().zip(&seq.annotated_image_paths) {
            let name = format!("{split}/{}/{}/{img}", seq.dataset, seq.seq_name);
            let Some(&image) = gt.image_by_name.get(&name) else {
                continue; // frames the GT does not annotate are ignored
            };
            let info = &gt.images[image];
            for (local, value) in frame {
                let track: i64 = local.trim().parse().map_err(|_| {
                    Error::parse(
                        path,
                        format!(
                            "sequence {what}, image {img}: track id {local:?} is not an integer"
                        ),
                    )
                })?;
                let det = detection(value, path, &what, img, local)?;
                let has_category = value.get("category_id").is_some()
                    || seq.track_category_ids.contains_key(local);
                if !has_category {
                    return Err(Error::parse(
                        path,
                        format!(
                            "sequence {what}: track {local} is not listed in track_category_ids"
                        ),
                    ));
                }
                let bbox = rle_box(&det.rle, info.height, info.width).map_err(|e| {
                    Error::parse(
                        path,
                        format!("sequence {what}, image {img}, track {local}: {e}"),
                    )
                })?;
                dets.push(PredDet {
                    image,
                    track,
                    score: det.score.unwrap_or(1.0),
                    bbox,
                });
            }
        }
    }
    // Group by image (first appearance), keeping the highest scores where there are too many.
    let mut groups: Vec<Vec<PredDet>> = Vec::new();
    let mut group_of: HashMap<usize, usize> = HashMap::new();
    for d in dets {
        let g = *group_of.entry(d.image).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(d);
    }
    let mut per_video: Vec<Vec<StepDets>> = gt
        .videos
        .iter()
        .map(|v| vec![Vec::new(); v.num_images])
        .collect();
    for mut group in groups {
        if group.len() > MAX_DETECTIONS {
            group.sort_by(|a, b| b.score.total_cmp(&a.score));
            group.truncate(MAX_DETECTIONS);
        }
        for d in group {
            let video = gt.images[d.image].video;
            if let Some(&t) = gt.videos[video].timestep_of.get(&d.image) {
                per_video[video][t].push((d.track, d.bbox));
            }
        }
    }
    Ok(per_video)
}
