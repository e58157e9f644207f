//! cace-net: CACE-Net (He et al., ACM MM 2024) for audio-visual event localization, on burn.
//!
//! Follow one video through the crate: [`data`] (AVE HDF5 layout, annotations, synthetic sets,
//! batches) → [`model`] (AVCA → temporal encoder → relation attention → head with BECE) →
//! [`loss`] and [`metric`] → [`train`] (objective, schedule, [`optim`], resumable runs) and
//! [`inference`]; [`checkpoint`] reads official `.pth.tar` files and our native format.
//! `REFERENCE §N` in comments means section N of `docs/REFERENCE.md` (notes on the official code).

pub mod ablate;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod conv;
pub mod data;
pub mod dense;
pub mod device;
pub mod encoders;
pub mod extract;
pub mod finetune;
pub mod flex;
pub mod fsutil;
pub mod heap;
pub mod inference;
pub mod loss;
pub mod metric;
pub mod model;
pub mod optim;
pub mod plot;
pub mod pool;
pub mod precision;
pub mod profile;
pub mod resident;
pub mod strided;
pub mod train;

pub use heap::init_runtime;

/// One-second segments per video.
pub const T: usize = 10;

/// A float tensor's values as `f32`, row-major.
pub fn to_vec<const D: usize>(t: burn::tensor::Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("float tensor")
}

/// Held by unit tests that seed the device's global random generator and compare what it draws
/// (and by those that draw a lot from it): tests run in parallel, and a draw by another test
/// between the seed and the comparison would make the comparison fail at random.
#[cfg(test)]
pub(crate) fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
