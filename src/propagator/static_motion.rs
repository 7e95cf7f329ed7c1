//! A weight-free zero-motion propagator: objects stay where they were last seen.

use super::Propagator;
use crate::error::{Error, Result};
use crate::mask::{ObjectId, ObjectProbs};
use crate::video::Frame;

/// Zero-motion baseline: propagation returns the previous frame's masks, alignment returns the
/// source masks unchanged, and "memory" is whether any masks were memorised. Needs no weights;
/// useful as a baseline and as the pipeline's test propagator.
#[derive(Debug, Clone, Default)]
pub struct StaticPropagator {
    objects: Vec<ObjectId>,
    previous: Option<ObjectProbs>,
    memorised: bool,
}

impl StaticPropagator {
    /// A propagator tracking nothing.
    pub fn new() -> Self {
        StaticPropagator::default()
    }
}

/// Fails unless `probs` is `frame`'s size.
fn check_size(probs: &ObjectProbs, frame: &Frame, what: &str) -> Result<()> {
    if probs.width() != frame.width() || probs.height() != frame.height() {
        return Err(Error::invalid(format!(
            "static propagator: {what} are {}x{} but frame {} ({}) is {}x{}",
            probs.width(),
            probs.height(),
            frame.index,
            frame.name,
            frame.width(),
            frame.height()
        )));
    }
    Ok(())
}

impl Propagator for StaticPropagator {
    fn name(&self) -> &str {
        "static"
    }

    fn objects(&self) -> &[ObjectId] {
        &self.objects
    }

    fn has_memory(&self) -> bool {
        self.memorised
    }

    fn propagate(&mut self, frame: &Frame) -> Result<ObjectProbs> {
        match &self.previous {
            Some(prev) if self.memorised => {
                check_size(prev, frame, "the previous masks")?;
                Ok(prev.clone())
            }
            _ => Ok(ObjectProbs::background(frame.width(), frame.height()).select(&self.objects)),
        }
    }

    fn update(&mut self, frame: &Frame, masks: &ObjectProbs, memorize: bool) -> Result<()> {
        check_size(masks, frame, "the masks")?;
        if let Some(id) = self.objects.iter().find(|id| !masks.ids().contains(id)) {
            return Err(Error::invalid(format!(
                "static propagator: tracked object {id} is missing from the masks of frame {} ({})",
                frame.index, frame.name
            )));
        }
        for &id in masks.ids() {
            if !self.objects.contains(&id) {
                self.objects.push(id);
            }
        }
        self.previous = Some(masks.select(&self.objects));
        self.memorised |= memorize && !self.objects.is_empty();
        Ok(())
    }

    fn remove_objects(&mut self, ids: &[ObjectId]) -> Result<()> {
        self.objects.retain(|id| !ids.contains(id));
        self.previous = self.previous.as_ref().map(|p| p.select(&self.objects));
        if self.objects.is_empty() {
            self.memorised = false;
        }
        Ok(())
    }

    fn align(&mut self, src: &Frame, masks: &ObjectProbs, dst: &Frame) -> Result<ObjectProbs> {
        check_size(masks, src, "the source masks")?;
        check_size(masks, dst, "the source masks")?;
        Ok(masks.clone())
    }

    fn release_frame(&mut self, _index: usize) {}

    fn reset(&mut self) {
        *self = StaticPropagator::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::IdMap;

    fn frame(index: usize) -> Frame {
        Frame {
            index,
            name: format!("{index:05}"),
            image: image::RgbImage::new(3, 2).into(),
        }
    }

    #[test]
    fn propagates_the_last_masks_once_memorised() {
        let mut p = StaticPropagator::new();
        assert!(p.propagate(&frame(0)).unwrap().ids().is_empty());
        let map = IdMap::from_vec(3, 2, vec![0, 4, 4, 7, 0, 0]).unwrap();
        let hot = ObjectProbs::one_hot(&map, &[4, 7]).unwrap();
        p.update(&frame(0), &hot, false).unwrap();
        assert!(!p.has_memory());
        let bg = p.propagate(&frame(1)).unwrap();
        assert_eq!((bg.ids(), bg.argmax().ids()), (&[4, 7][..], vec![]));
        p.update(&frame(1), &hot, true).unwrap();
        assert_eq!(p.propagate(&frame(2)).unwrap(), hot);
        // Every tracked object must be present in an update.
        let only4 = ObjectProbs::one_hot(&map, &[4]).unwrap();
        assert!(p.update(&frame(2), &only4, true).is_err());
        p.remove_objects(&[7]).unwrap();
        assert_eq!(p.objects(), &[4]);
        assert_eq!(p.propagate(&frame(3)).unwrap().argmax().ids(), vec![4]);
        p.reset();
        assert!(!p.has_memory() && p.objects().is_empty());
    }
}
