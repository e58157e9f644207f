//! Dense localization of overlapping audio-visual events in untrimmed videos (UnAV-100,
//! issue 15): the data layer ([`data`]), the synthetic UnAV-layout generator ([`synth`]), the
//! UnAV baseline (ActionFormer-based) with its label assignment and losses ([`model`]), its
//! training ([`train`]), checkpoints ([`checkpoint`]), inference ([`infer`]) and the official
//! evaluation: mAP at tIoU 0.1–0.9 ([`metrics`]), soft-NMS ([`nms`]) and the inference
//! post-processing ([`postprocess`]).

pub mod ablate;
pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod infer;
pub mod metrics;
pub mod model;
pub mod nms;
pub mod postprocess;
pub mod synth;
pub mod train;
pub mod video;
