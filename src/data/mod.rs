//! Data: the AVE annotations and categories, and the AVE HDF5 layout (read, validate, write).

pub mod annotations;
pub mod ave;
pub mod batch;
pub mod error;
pub mod h5;
pub mod synth;
