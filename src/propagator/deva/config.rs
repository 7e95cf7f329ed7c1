//! Memory settings of the DEVA propagator (`[propagator] kind = "deva"`, `[propagator.memory]`).

use crate::config::first_failure;
use crate::error::Result;
use serde::{Deserialize, Serialize};

/// Whether long-term memory counts how often its elements are read (needed for eviction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UsageCounting {
    /// Count when the video is long enough to fill long-term memory (reference formula), or
    /// always when the length is unknown (streams).
    #[default]
    Auto,
    /// Always count.
    On,
    /// Never count: long-term memory is not evicted.
    Off,
}

/// Memory settings of the DEVA propagator (reference §2.1, §2.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// Memory entries each query pixel reads (top-k).
    pub top_k: usize,
    /// Working memory holds at most this many frames (T_max).
    pub max_mid_term_frames: usize,
    /// Working memory keeps this many frames after consolidation (T_min).
    pub min_mid_term_frames: usize,
    /// Long-term memory holds at most this many elements (LT_max).
    pub max_long_term_elements: usize,
    /// Prototypes created per consolidation.
    pub num_prototypes: usize,
    /// Consolidate working memory into long-term memory.
    pub enable_long_term: bool,
    /// Count long-term usage.
    pub long_term_usage: UsageCounting,
    /// Objects processed together by the network; 0 or less: all at once.
    pub chunk_size: i64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            top_k: 30,
            max_mid_term_frames: 10,
            min_mid_term_frames: 5,
            max_long_term_elements: 10000,
            num_prototypes: 128,
            enable_long_term: true,
            long_term_usage: UsageCounting::Auto,
            chunk_size: -1,
        }
    }
}

impl MemoryConfig {
    /// Checks value ranges; messages name the `memory.*` key.
    pub fn validate(&self) -> Result<()> {
        let checks: [(bool, &str); 3] = [
            (self.top_k >= 1, "memory.top_k must be at least 1"),
            (
                self.min_mid_term_frames >= 1 && self.min_mid_term_frames < self.max_mid_term_frames,
                "memory.min_mid_term_frames must be at least 1 and below memory.max_mid_term_frames",
            ),
            (
                self.num_prototypes >= 1 && self.num_prototypes < self.max_long_term_elements,
                "memory.num_prototypes must be at least 1 and below memory.max_long_term_elements",
            ),
        ];
        first_failure(&checks)
    }
}
