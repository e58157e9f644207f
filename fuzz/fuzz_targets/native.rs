//! Native checkpoints and the files of a training run directory, as `cace eval` and
//! `cace train --resume` read them: `model.safetensors` + `config.json` (`checkpoint::native`),
//! `optimizer.safetensors`, `state.json`, `train_config.json` and `metrics.jsonl`
//! (`train::run_dir`, `train::optimizer_io`).
//!
//! Input: `JSON text, 0x00, safetensors bytes`. JSON never holds a raw NUL, so the split is at
//! the first 0 byte (none: everything is JSON, no weights). The JSON part is written as every
//! JSON file, the safetensors part as both weight files.
#![no_main]

use std::path::Path;

use burn::tensor::Device;
use cace_net::checkpoint::native;
use cace_net::model::state::ParamList;
use cace_net::optim::AdamConfig;
use cace_net::train::run_dir::{self, RunDir};
use cace_net::train::{EpochMetrics, TrainConfig, optimizer_io};
use cace_net_fuzz::{assert_names, debug, put, scratch_dir};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (json, weights) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let dir = scratch_dir("native");
    checkpoint(dir, json, weights);
    run_files(dir, json, weights);
});

/// `model.safetensors` + `config.json` read as a checkpoint directory, then validated.
fn checkpoint(dir: &Path, json: &[u8], weights: &[u8]) {
    put(&dir.join(native::CONFIG_FILE), json);
    put(&dir.join(native::WEIGHTS_FILE), weights);
    let result = native::read(dir);
    debug("checkpoint", &result);
    match result {
        Ok((sd, config)) => {
            for (key, t) in &sd.entries {
                let numel: usize = t.shape.iter().product();
                assert_eq!(t.data.len(), numel, "{key}: {:?}", t.shape);
            }
            let _ = config.validate();
        }
        Err(e) => assert_names(&format!("{e:#}"), dir),
    }
}

/// The readers of `cace train --resume`, each given the same bytes.
fn run_files(dir: &Path, json: &[u8], weights: &[u8]) {
    let run = RunDir {
        path: dir.to_path_buf(),
    };
    let state = dir.join(run_dir::STATE_FILE);
    put(&state, json);
    let result = run_dir::read_state(dir);
    debug("state.json", &result);
    if let Err(e) = result {
        assert_names(&format!("{e:#}"), &state);
    }
    let config = dir.join(run_dir::CONFIG_FILE);
    put(&config, json);
    let result = run.saved_config::<TrainConfig>();
    debug("train_config.json", &result);
    match result {
        Ok(c) => {
            let _ = c.validate();
        }
        Err(e) => assert_names(&format!("{e:#}"), &config),
    }
    let metrics = dir.join(run_dir::METRICS_FILE);
    put(&metrics, json);
    let result = run.history::<EpochMetrics>(usize::MAX);
    debug("metrics.jsonl", &result);
    if let Err(e) = result {
        assert_names(&format!("{e:#}"), &metrics);
    }
    let optimizer = dir.join("optimizer.safetensors");
    put(&optimizer, weights);
    let result = optimizer_io::load(
        &optimizer,
        AdamConfig::default(),
        &params(),
        &Device::flex(),
    );
    debug("optimizer.safetensors", &result);
    if let Err(e) = result {
        assert_names(&format!("{e:#}"), &optimizer);
    }
}

/// The parameters the optimizer state is checked against: those of the seed
/// (`tools/make_fuzz_seeds.py`), so that valid moments exist to mutate.
fn params() -> ParamList {
    let entries = [
        ("v_fc.weight", vec![4, 3]),
        ("v_fc.bias", vec![4]),
        ("localize_module.classifier.bias", vec![1]),
    ];
    ParamList {
        entries: entries
            .into_iter()
            .map(|(k, shape)| (k.to_string(), true, shape))
            .collect(),
    }
}
