//! Dense localization of overlapping audio-visual events in untrimmed videos (UnAV-100,
//! issue 15): the data layer ([`data`]), the synthetic UnAV-layout generator ([`synth`]) and
//! the UnAV baseline (ActionFormer-based) with its label assignment and losses ([`model`]).

pub mod data;
pub mod model;
pub mod synth;
