//! Dense localization of overlapping audio-visual events (UnAV-100, issue 15).

pub mod metrics;
pub mod nms;
pub mod postprocess;
