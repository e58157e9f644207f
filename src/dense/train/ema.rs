//! The exponential moving average of the weights the UnAV baseline keeps while training
//! (official `ModelEma`, decay 0.999, updated after every optimizer step): `eval.py` scores
//! the average, not the last weights.
//!
//! The official average runs over the whole state dict; the model's only buffer is the fixed
//! sinusoidal position table, whose average is itself, so only the parameters are averaged.

use std::collections::HashMap;

use burn::module::Param;
use burn::tensor::Tensor;

use crate::model::state::{HasState, Layout, Prefix, StateVisitor};

/// `ema ← decay · ema + (1 − decay) · model`, parameter by parameter (matched by state-dict
/// key); `ema` lives on the plain device, `model` may be on the autodiff one.
pub fn update<M: HasState + Clone>(ema: &mut M, model: &M, decay: f64) {
    let current = values(model);
    struct Blend<'a> {
        current: &'a HashMap<String, Tensor<1>>,
        decay: f64,
    }
    impl StateVisitor for Blend<'_> {
        fn visit<const D: usize>(
            &mut self,
            key: &str,
            _used: bool,
            param: &mut Param<Tensor<D>>,
            _layout: Layout,
        ) {
            let m = &self.current[key];
            let e = param.val();
            let dims = e.dims();
            let new =
                e.mul_scalar(self.decay) + m.clone().reshape(dims).mul_scalar(1.0 - self.decay);
            *param = Param::initialized(param.id, new);
        }
    }
    ema.visit_state(
        &Prefix::root(),
        &mut Blend {
            current: &current,
            decay,
        },
    );
}

/// Every parameter of `model`, detached from autodiff and flattened, by key.
fn values<M: HasState + Clone>(model: &M) -> HashMap<String, Tensor<1>> {
    struct Collect(HashMap<String, Tensor<1>>);
    impl StateVisitor for Collect {
        fn visit<const D: usize>(
            &mut self,
            key: &str,
            _used: bool,
            param: &mut Param<Tensor<D>>,
            _layout: Layout,
        ) {
            let v = param.val().inner().detach();
            let n = v.shape().num_elements();
            self.0.insert(key.to_string(), v.reshape([n]));
        }
    }
    let mut c = Collect(HashMap::new());
    model.clone().visit_state(&Prefix::root(), &mut c);
    c.0
}
