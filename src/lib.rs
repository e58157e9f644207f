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
pub mod inference;
pub mod loss;
pub mod metric;
pub mod model;
pub mod optim;
pub mod plot;
pub mod profile;
pub mod resident;
pub mod train;

/// One-second segments per video.
pub const T: usize = 10;

/// A float tensor's values as `f32`, row-major.
pub fn to_vec<const D: usize>(t: burn::tensor::Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("float tensor")
}

/// Large tensors (a `[64, 10, 7, 7, 512]` activation is 64 MB) are allocated and freed many
/// times per step. glibc returns them to the OS each time and the kernel then zeroes fresh
/// pages on every use: a third of a training step went to page faults. mimalloc, told never to
/// purge freed memory ([`init_runtime`]), reuses it instead.
///
/// Not under `cargo fuzz` (which sets `cfg(fuzzing)`): there the system allocator lets the
/// sanitizer's malloc hooks see every allocation, so libFuzzer reports a single huge one
/// (`-malloc_limit_mb`) instead of mimalloc reserving it unseen.
#[cfg(not(fuzzing))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Process-wide settings for fast numeric work; call once at start-up (the `cace` binary does).
pub fn init_runtime() {
    // -1 = never purge. `MIMALLOC_PURGE_DELAY` in the environment (read by mimalloc itself)
    // takes precedence.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

/// `mi_option_purge_delay`, which libmimalloc-sys does not export: it sits right before
/// `mi_option_use_numa_nodes` in both bundled mimalloc versions (v2 and v3 `mimalloc.h`).
/// libmimalloc-sys is pinned in Cargo.toml, and a test checks the index by its default (1000 ms
/// in the bundled mimalloc v3, `src/options.c`; 10 ms in v2).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t =
    libmimalloc_sys::mi_option_use_numa_nodes - 1;

/// Held by unit tests that seed the device's global random generator and compare what it draws
/// (and by those that draw a lot from it): tests run in parallel, and a draw by another test
/// between the seed and the comparison would make the comparison fail at random.
#[cfg(test)]
pub(crate) fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    #[test]
    fn purge_delay_option_index() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return; // the environment sets the option; its default cannot be seen
        }
        let get = || unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        // options.c: purge_delay defaults to 1000 ms (v3) or 10 ms (v2); its neighbours default to
        // 1 (eager_commit_delay) and 0 (use_numa_nodes), so another index would not give these.
        let default = get();
        assert!(
            default == 1000 || default == 10,
            "the option index no longer names mi_option_purge_delay (default {default})"
        );
        super::init_runtime();
        assert_eq!(get(), -1);
    }
}
