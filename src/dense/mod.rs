//! Dense localization of overlapping audio-visual events in untrimmed videos (UnAV-100,
//! issue 15): the data layer ([`data`]) and the synthetic UnAV-layout generator ([`synth`]).

pub mod data;
pub mod synth;
