//! UnAV-100 data as the official loader reads it (`ttgeng233/UnAV`,
//! `libs/datasets/unav100.py`, `data_utils.py`, defaults in `libs/core/config.py`).
//!
//! One file per concept: [`annotations`] (`unav100_annotations.json`, label dictionary,
//! subsets), [`features`] (the three `.npy` files of a video, concatenated and aligned),
//! [`dataset`] (the config, the items on the feature grid), [`truncate`] (training windows and
//! crops; [`pyrandom`] replays Python's `random` for them), [`error`] (named errors: file, video id, problem).

pub mod annotations;
pub mod dataset;
pub mod error;
pub mod features;
pub mod pyrandom;
pub mod truncate;

pub use dataset::{ANNOTATION_FILE, DenseDataConfig, DenseItem, UnavDataset, UnavPaths};
pub use error::DenseDataError;
