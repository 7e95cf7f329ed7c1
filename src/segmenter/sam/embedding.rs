//! An image embedded by SAM, and the per-model cache of the last one, so a SAM segmenter and
//! the refiner on the same frame run the image encoder once; optionally also a cache on disk
//! (one file per image, named by a hash of the model and the pixels), so repeated runs over the
//! same frames (a settings sweep of the refiner) run the encoder once per frame in all.

use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use image::RgbImage;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// An image embedded by SAM, with the sizes needed to map prompts and masks.
#[derive(Debug, Clone)]
pub struct ImageEmbedding {
    /// The embedding `(1, C, h, w)`.
    pub features: Tensor,
    /// `(h, w)` of the original image.
    pub original_size: (usize, usize),
    /// `(h, w)` of the resized image inside the padded model input.
    pub input_size: (usize, usize),
}

/// The last image a model embedded and its embedding, and how often the encoder ran.
#[derive(Debug, Default)]
pub(super) struct EmbeddingCache {
    last: Mutex<Option<(RgbImage, ImageEmbedding)>>,
    encoder_runs: AtomicUsize,
    disk: Mutex<Option<DiskCache>>,
}

/// Embeddings on disk: `dir/<sha256 of fingerprint, size and pixels>.emb`.
#[derive(Debug)]
struct DiskCache {
    dir: PathBuf,
    /// Identifies the model (a hash of values its weights determine).
    fingerprint: [u8; 32],
    device: Device,
}

/// First bytes of an embedding file.
const MAGIC: &[u8; 8] = b"DEVAEMB1";

impl DiskCache {
    /// The file holding the embedding of `image`.
    fn path(&self, image: &RgbImage) -> PathBuf {
        let mut h = Sha256::new();
        h.update(self.fingerprint);
        h.update((image.width() as u64).to_le_bytes());
        h.update((image.height() as u64).to_le_bytes());
        h.update(image.as_raw());
        let name: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{name}.emb"))
    }

    /// The embedding stored in `path`; `None` when there is no such file.
    fn read(&self, path: &Path) -> Result<Option<ImageEmbedding>> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        let bad = |what: &str| Error::parse(path, format!("not a SAM embedding file: {what}"));
        let word = |i: usize| -> Result<usize> {
            let b = bytes
                .get(8 + 8 * i..16 + 8 * i)
                .ok_or_else(|| bad("short header"))?;
            usize::try_from(u64::from_le_bytes(b.try_into().expect("8 bytes")))
                .map_err(|_| bad("size out of range"))
        };
        if bytes.get(..8) != Some(MAGIC.as_slice()) {
            return Err(bad("wrong magic"));
        }
        // header: rank, dims, original (h, w), input (h, w)
        let rank = word(0)?;
        if rank > 8 {
            return Err(bad("rank above 8"));
        }
        let dims = (0..rank).map(|i| word(1 + i)).collect::<Result<Vec<_>>>()?;
        let sizes = (0..4)
            .map(|i| word(1 + rank + i))
            .collect::<Result<Vec<_>>>()?;
        let start = 8 + 8 * (5 + rank);
        let n = dims
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| bad("size overflow"))?;
        if bytes.len() != start + 4 * n {
            return Err(bad("length does not match its shape"));
        }
        let data: Vec<f32> = bytes[start..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        Ok(Some(ImageEmbedding {
            features: Tensor::from_vec(data, dims, &self.device)?,
            original_size: (sizes[0], sizes[1]),
            input_size: (sizes[2], sizes[3]),
        }))
    }

    /// Stores `emb` in `path` (written beside it, then renamed: runs sharing the folder never
    /// read a half-written file).
    fn write(&self, path: &Path, emb: &ImageEmbedding) -> Result<()> {
        let dims = emb.features.dims();
        let mut bytes = MAGIC.to_vec();
        let (o, i) = (emb.original_size, emb.input_size);
        let header = [dims.len()].into_iter().chain(dims.iter().copied());
        for v in header.chain([o.0, o.1, i.0, i.1]) {
            bytes.extend((v as u64).to_le_bytes());
        }
        let values = emb
            .features
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?;
        for v in values.to_vec1::<f32>()? {
            bytes.extend(v.to_le_bytes());
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, &bytes).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    }
}

impl EmbeddingCache {
    /// The embedding of `image`: the cached one when the pixels equal the last image's,
    /// otherwise `embed(image)`, which then becomes the cached one.
    pub(super) fn get_or_embed(
        &self,
        image: &RgbImage,
        embed: impl FnOnce(&RgbImage) -> Result<ImageEmbedding>,
    ) -> Result<ImageEmbedding> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, emb)) = last.as_ref() {
            if seen == image {
                return Ok(emb.clone());
            }
        }
        let disk = self.disk.lock().unwrap_or_else(|e| e.into_inner());
        let path = disk.as_ref().map(|d| d.path(image));
        let stored = match (disk.as_ref(), &path) {
            (Some(d), Some(p)) => d.read(p)?,
            _ => None,
        };
        let emb = match stored {
            Some(emb) => emb,
            None => {
                let emb = embed(image)?;
                if let (Some(d), Some(p)) = (disk.as_ref(), &path) {
                    d.write(p, &emb)?;
                }
                emb
            }
        };
        *last = Some((image.clone(), emb.clone()));
        Ok(emb)
    }

    /// Keeps embeddings in `dir` too (created if missing); `fingerprint` identifies the model,
    /// so models never read each other's files.
    pub(super) fn use_dir(&self, dir: &Path, fingerprint: [u8; 32], device: &Device) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        *self.disk.lock().unwrap_or_else(|e| e.into_inner()) = Some(DiskCache {
            dir: dir.to_path_buf(),
            fingerprint,
            device: device.clone(),
        });
        Ok(())
    }

    /// Counts one run of the image encoder.
    pub(super) fn count_run(&self) {
        self.encoder_runs.fetch_add(1, Ordering::Relaxed);
    }

    /// How many times the image encoder has run.
    pub(super) fn runs(&self) -> usize {
        self.encoder_runs.load(Ordering::Relaxed)
    }
}
