//! AVE dataset directory (HDF5 feature, label and split files) — reader, validator and writer.
//!
//! Layout (REFERENCE §1.1), one dataset per file:
//!
//! | file | key | shape | dtype |
//! |---|---|---|---|
//! | `visual_feature.h5` | `avadataset` | `[N,10,7,7,Cv]` or pooled `[N,10,Cv]` | float32 / float64 |
//! | `audio_feature.h5` | `avadataset` | `[N,10,Ca]` | float32 / float64 |
//! | `labels.h5` (optional) | `avadataset` | `[N,10,29]` one-hot, 28 = background | float / integer |
//! | `{train,val,test}_order.h5` | `order` | `[len]` row indices into `0..N` | integer |
//!
//! Without `labels.h5`, labels come from `Annotations.txt` in the directory, else from the
//! built-in AVE annotations when `N == 4143`. Missing order files fall back to the built-in AVE
//! splits when `N == 4143`. Features are read per contiguous run of rows (hyperslabs), never the
//! whole file, and always returned as `f32`.
//!
//! This file holds the layout's names, the split and dtype types and the built-in orders;
//! `read.rs` opens and reads a directory ([`AveDir`]), `validate.rs` holds the checks the reader
//! and the writer share, `write.rs` writes a directory ([`write_features`]).

mod read;
mod validate;
mod write;

use std::fmt;
use std::str::FromStr;

pub use super::error::DataError;
pub use read::AveDir;
pub use write::{FeatureSlice, write_features};

use super::annotations::BACKGROUND;

pub const VISUAL_FILE: &str = "visual_feature.h5";
pub const AUDIO_FILE: &str = "audio_feature.h5";
pub const LABELS_FILE: &str = "labels.h5";
pub const ANNOTATIONS_FILE: &str = "Annotations.txt";
/// Dataset key of the feature and label files.
pub const FEATURE_KEY: &str = "avadataset";
/// Dataset key of the order (split) files.
pub const ORDER_KEY: &str = "order";
/// Number of rows of the real AVE dataset (lines of `Annotations.txt`).
pub const AVE_ROWS: usize = 4143;
/// Width of a one-hot label vector (28 categories + background).
pub const NUM_LABELS: usize = BACKGROUND + 1;
/// Spatial grid of the unpooled visual features.
pub const GRID: usize = 7;

// ------------------------------------------------------------------------------------------------
// Split, dtype

/// A data split, backed by `{train,val,test}_order.h5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }

    /// File name of the split's order file, e.g. `train_order.h5`.
    pub fn order_file(self) -> &'static str {
        match self {
            Split::Train => "train_order.h5",
            Split::Val => "val_order.h5",
            Split::Test => "test_order.h5",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Split {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, DataError> {
        match s {
            "train" => Ok(Split::Train),
            "val" => Ok(Split::Val),
            "test" => Ok(Split::Test),
            other => Err(DataError::UnknownSplit(other.to_string())),
        }
    }
}

/// Storage type of the feature datasets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeatureDType {
    F32,
    F64,
}

impl FeatureDType {
    fn size(self) -> usize {
        match self {
            FeatureDType::F32 => 4,
            FeatureDType::F64 => 8,
        }
    }
}

impl fmt::Display for FeatureDType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FeatureDType::F32 => "float32",
            FeatureDType::F64 => "float64",
        })
    }
}

/// Where the labels of an [`AveDir`] come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelSource {
    /// `labels.h5` in the directory.
    LabelsFile,
    /// `Annotations.txt` in the directory.
    AnnotationsFile,
    /// The built-in AVE annotations (directory has `N == 4143` rows and neither file).
    Builtin,
}

// ------------------------------------------------------------------------------------------------
// Built-in split orders

const BUILTIN_TRAIN_ORDER: &[u8] = include_bytes!("../../assets/ave/train_order.h5");
const BUILTIN_VAL_ORDER: &[u8] = include_bytes!("../../assets/ave/val_order.h5");
const BUILTIN_TEST_ORDER: &[u8] = include_bytes!("../../assets/ave/test_order.h5");
const HDF5_SIGNATURE: &[u8; 8] = b"\x89HDF\r\n\x1a\n";
/// The shipped order files (h5py, superblock v0, contiguous, no compression) store their int64
/// little-endian payload at this offset up to the end of the file. A unit test checks this
/// decoding against the HDF5 library.
const BUILTIN_ORDER_DATA_OFFSET: usize = 2144;

/// The official AVE split order (shipped `{train,val,test}_order.h5`, for `N == 4143`).
pub fn builtin_order(split: Split) -> Vec<usize> {
    let (bytes, len) = match split {
        Split::Train => (BUILTIN_TRAIN_ORDER, 3339),
        Split::Val => (BUILTIN_VAL_ORDER, 402),
        Split::Test => (BUILTIN_TEST_ORDER, 402),
    };
    assert!(
        bytes.starts_with(HDF5_SIGNATURE) && bytes.len() == BUILTIN_ORDER_DATA_OFFSET + 8 * len,
        "built-in {} is not the expected file",
        split.order_file()
    );
    bytes[BUILTIN_ORDER_DATA_OFFSET..]
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as usize)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_parse_and_display() {
        for s in Split::ALL {
            assert_eq!(s.to_string().parse::<Split>().unwrap(), s);
        }
        assert_eq!("val".parse::<Split>().unwrap(), Split::Val);
        assert_eq!(Split::Test.order_file(), "test_order.h5");
        let msg = "Train".parse::<Split>().unwrap_err().to_string();
        assert!(msg.contains("\"Train\""), "{msg}");
    }
}
