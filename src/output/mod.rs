//! (to be written)
pub mod boxes;
