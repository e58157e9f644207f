//! The dense localization (UnAV-100) suites, one test binary (one link instead of six):
//! the data loader, the evaluation and post-processing, the losses, the model, the training
//! step and checkpoints against the official code, and the commands end to end.

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod data;
mod eval;
mod loss;
mod model;
mod train;
