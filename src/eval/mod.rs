//! Benchmark metrics computed exactly as the official evaluators compute them: DAVIS J&F
//! (semi-supervised and unsupervised), VIPSeg VPQ and STQ, BURST open-world tracking (OWTA and
//! the HOTA family) and box tracking (LaSOT, GOT-10k).

pub mod bitimage;
pub mod boundary;
pub mod boxes;
pub mod burst;
pub mod davis;
pub mod hota;
pub mod input;
pub mod lap;
pub mod numeric;
pub mod report;
pub mod stq;
pub mod vipseg;
