//! The frames the fine-tuning sees: per video, one frame per second for its first 10 seconds,
//! picked at random among the second's 16 sampled frames (`16·s + randint(0, 16)`), resized and
//! centre-cropped to 224×224 (torchvision's ResNet-50 transforms: the frame-dumping branch of the
//! official visual extractor, REFERENCE §6.1), as 8-bit pixels.
//!
//! As in the official run, the pick is made once, when the frames are dumped, and every epoch
//! sees the same 10 frames of a video. They are decoded once into `RUN/frames/<id>.rgb`
//! (`[10, 224, 224, 3]` u8, 1.5 MB a video; 6.2 GB for AVE), written atomically, so 50 epochs do
//! not decode 50 times and an interrupted dump resumes where it stopped. The pick depends only
//! on the seed and the video id.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::{Device, Tensor, TensorData};
use rayon::prelude::*;

use super::data::Video;
use crate::T;
use crate::encoders::decode::{FRAMES_PER_SECOND, VideoFrames};
use crate::encoders::image::{INPUT_SIZE, Preprocess, normalise};

/// Bytes of one cached frame.
pub const FRAME_BYTES: usize = INPUT_SIZE * INPUT_SIZE * 3;
/// Bytes of one video's cache file.
pub const VIDEO_BYTES: usize = T * FRAME_BYTES;

/// The cache folder of a run.
pub struct FrameCache {
    pub dir: PathBuf,
    pub seed: u64,
}

impl FrameCache {
    pub fn file(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.rgb"))
    }

    /// Decodes every video not cached yet (in parallel). Returns `(id, error)` for the videos
    /// that could not be decoded or are shorter than 10 seconds; they are not cached.
    pub fn fill(
        &self,
        videos: &[Video],
        bar: Option<&indicatif::ProgressBar>,
    ) -> Result<Vec<(String, String)>> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let cached = |v: &Video| {
            std::fs::metadata(self.file(&v.id)).is_ok_and(|m| m.len() == VIDEO_BYTES as u64)
        };
        if !crate::encoders::decode::available() && !videos.iter().all(cached) {
            bail!("{}", crate::encoders::decode::NOT_BUILT);
        }
        let failures = videos
            .par_iter()
            .filter_map(|v| {
                let result = if cached(v) {
                    Ok(())
                } else {
                    self.dump(v, &self.file(&v.id))
                };
                if let Some(bar) = bar {
                    bar.inc(1);
                }
                result.err().map(|e| (v.id.clone(), format!("{e:#}")))
            })
            .collect();
        Ok(failures)
    }

    fn dump(&self, video: &Video, file: &Path) -> Result<()> {
        let mut reader = VideoFrames::open(&video.path)?;
        if reader.seconds() < T {
            bail!(
                "{}: {} s long; fine-tuning needs {T} s",
                video.path.display(),
                reader.seconds()
            );
        }
        let mut pixels = Vec::with_capacity(VIDEO_BYTES);
        for s in 0..T {
            let frames = reader
                .next_second()?
                .with_context(|| format!("{}: no frames for second {s}", video.path.display()))?;
            let pick = pick(self.seed, &video.id, s) % frames.len().min(FRAMES_PER_SECOND);
            let crop = Preprocess::ResNet50
                .crop_u8(&frames[pick])
                .with_context(|| format!("{}: second {s}", video.path.display()))?;
            pixels.extend_from_slice(&crop);
        }
        crate::fsutil::write_file(file, &pixels)
    }

    /// The normalised frames of `videos` as `[B, T, 3, 224, 224]`.
    pub fn batch(&self, videos: &[&Video], device: &Device) -> Result<Tensor<5>> {
        let per_video = T * 3 * INPUT_SIZE * INPUT_SIZE;
        let mut data = vec![0f32; videos.len() * per_video];
        data.par_chunks_mut(per_video)
            .zip(videos.par_iter())
            .try_for_each(|(out, v)| {
                let file = self.file(&v.id);
                let bytes = std::fs::read(&file)
                    .with_context(|| format!("reading cached frames {}", file.display()))?;
                if bytes.len() != VIDEO_BYTES {
                    bail!("{}: {} bytes, expected {VIDEO_BYTES} (delete it to decode the video again)", file.display(), bytes.len());
                }
                for (dst, frame) in out.chunks_exact_mut(per_video / T).zip(bytes.chunks_exact(FRAME_BYTES)) {
                    dst.copy_from_slice(&normalise(frame));
                }
                Ok(())
            })?;
        let shape = [videos.len(), T, 3, INPUT_SIZE, INPUT_SIZE];
        Ok(Tensor::from_data(TensorData::new(data, shape), device))
    }
}

/// A uniform draw for second `s` of video `id` under `seed` (SplitMix64 of an FNV-1a hash):
/// independent of the list order, so adding videos does not change the others' frames.
fn pick(seed: u64, id: &str, s: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes().chain((s as u32).to_le_bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    // `mix` adds the golden-ratio increment first; taking it off keeps the draws this
    // function made before it used the shared finaliser.
    const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
    let z = (h ^ seed.wrapping_mul(GOLDEN)).wrapping_sub(GOLDEN);
    (crate::model::dropout::mix(z) >> 33) as usize
}

#[cfg(test)]
mod tests {
    use super::pick;

    #[test]
    fn picks_cover_the_second_evenly_and_depend_on_seed_and_id() {
        let mut counts = [0usize; 16];
        for v in 0..400 {
            for s in 0..10 {
                counts[pick(7, &format!("video{v}"), s) % 16] += 1;
            }
        }
        // 4000 draws, 250 expected per frame; a fair die stays within ±25 % here.
        assert!(
            counts.iter().all(|&c| (187..=313).contains(&c)),
            "{counts:?}"
        );
        let a: Vec<usize> = (0..10).map(|s| pick(7, "abc", s) % 16).collect();
        let b: Vec<usize> = (0..10).map(|s| pick(8, "abc", s) % 16).collect();
        let c: Vec<usize> = (0..10).map(|s| pick(7, "abd", s) % 16).collect();
        assert!(a != b && a != c);
        assert_eq!(
            a,
            (0..10).map(|s| pick(7, "abc", s) % 16).collect::<Vec<_>>()
        );
    }
}
