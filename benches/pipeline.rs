//! Speed of the per-merge work at DEVA's working size (854×480): the in-clip consensus of
//! 300 proposals from 3 frames, the exact selection on a clustered 200-proposal instance, and
//! merging 100 proposals into 100 tracked objects.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use deva::config::TrackerConfig;
use deva::consensus::{select, vote, Consensus, VotedSegment};
use deva::mask::{IdMap, ObjectId, SegmentInfo, Segmentation};
use deva::merge::merge;
use deva::objects::{ObjectManager, Votes};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const W: usize = 854;
const H: usize = 480;

/// A 10 × 10 grid of cells; cell k holds a rectangle jittered by a few pixels, id `k + 1`.
fn grid_map(rng: &mut StdRng, jitter: i64) -> IdMap {
    let (cw, ch) = (W / 10, H / 10);
    let mut data = vec![0 as ObjectId; W * H];
    for k in 0..100 {
        let (cx, cy) = ((k % 10) * cw, (k / 10) * ch);
        let mut j = || rng.random_range(-jitter..=jitter);
        let (x0, y0) = ((cx as i64 + 4 + j()).max(0), (cy as i64 + 4 + j()).max(0));
        let (x1, y1) = (
            (cx as i64 + cw as i64 - 4 + j()).min(W as i64),
            (cy as i64 + ch as i64 - 4 + j()).min(H as i64),
        );
        for y in y0..y1 {
            for x in x0..x1 {
                data[y as usize * W + x as usize] = k as ObjectId + 1;
            }
        }
    }
    IdMap::from_vec(W, H, data).unwrap()
}

fn consensus_bench(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(1);
    let clip: Vec<Option<Segmentation>> = (0..3)
        .map(|_| Some(Segmentation::from_map(grid_map(&mut rng, 6))))
        .collect();
    let config = TrackerConfig::default();
    c.bench_function("consensus/300 proposals, 3 frames, 854x480", |b| {
        b.iter(|| vote(&clip, &config).unwrap())
    });

    // 200 proposals in clusters of up to 5 frames, 80 % detection rate, matched pairs with
    // IoU in (0.5, 1]; 10 % of pairs inside a cluster fail to match (non-clique components
    // that need the integer program).
    let mut weights = Vec::new();
    let mut conflicts = Vec::new();
    while weights.len() < 200 {
        let start = weights.len();
        let members: Vec<usize> = (0..5).filter(|_| rng.random_bool(0.8)).collect();
        let mut support = vec![0.0; members.len()];
        for a in 0..members.len() {
            for b in a + 1..members.len() {
                if rng.random_bool(0.9) {
                    let iou = rng.random_range(0.5..1.0);
                    support[a] += iou;
                    support[b] += iou;
                    conflicts.push((start + a, start + b));
                }
            }
        }
        weights.extend(support.iter().map(|s| s - 0.5));
    }
    c.bench_function("consensus/exact selection, 200 clustered proposals", |b| {
        b.iter(|| select(&weights, &conflicts).unwrap())
    });
}

fn merge_bench(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(2);
    let forward = grid_map(&mut rng, 0);
    let mut objects = ObjectManager::new();
    for id in forward.ids() {
        objects.add(id, None, Votes::default()).unwrap();
    }
    let map = grid_map(&mut rng, 6).remap(|id| if id == 0 { 0 } else { id + 1000 });
    let segments = map
        .ids()
        .into_iter()
        .map(|id| VotedSegment {
            id,
            isthing: None,
            votes: Votes::of(&SegmentInfo {
                id,
                category_id: Some(id % 7),
                score: Some(0.5),
                isthing: None,
            }),
        })
        .collect();
    let proposals = Consensus { map, segments };
    let config = TrackerConfig::default();
    c.bench_function("merge/100 objects, 854x480", |b| {
        b.iter_batched(
            || objects.clone(),
            |mut objects| merge(&forward, &mut objects, &proposals, &config).unwrap(),
            BatchSize::SmallInput,
        )
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = consensus_bench, merge_bench
}
criterion_main!(benches);
