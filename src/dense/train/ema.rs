//! The exponential moving average of the weights the UnAV baseline keeps while training
//! (official `ModelEma`, decay 0.999, updated after every optimizer step): `eval.py` scores
//! the average, not the last weights.
//!
//! The official average runs over the whole state dict; the model's only buffer is the fixed
//! sinusoidal position table, whose average is itself, so only the parameters are averaged.

use crate::model::state::{HasState, map_params, param_values};

/// `ema ← decay · ema + (1 − decay) · model`, parameter by parameter (matched by state-dict
/// key); `ema` lives on the plain device, `model` may be on the autodiff one.
pub fn update<M: HasState + Clone>(ema: &mut M, model: &M, decay: f64) {
    let current = param_values(model);
    map_params(ema, |key, e| {
        Some(e.mul_scalar(decay) + current[key].clone().mul_scalar(1.0 - decay))
    });
}
