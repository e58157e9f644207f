//! Dense localization of overlapping audio-visual events in untrimmed videos (UnAV-100,
//! issue 15): the UnAV baseline (ActionFormer-based) and its parts.

pub mod model;
