//! cace-net: CACE-Net (He et al., ACM MM 2024) for audio-visual event localization, on burn.
//!
//! Follow one video through the crate: [`model`] (AVCA → temporal encoder → relation
//! attention → head with BECE), [`checkpoint`] (official `.pth.tar` and native files).

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod device;
pub mod inference;
pub mod loss;
pub mod metric;
pub mod model;
pub mod optim;
pub mod plot;
pub mod train;

/// One-second segments per video.
pub const T: usize = 10;
