//! Parameters addressed by their official PyTorch state-dict key.
//!
//! Every module of the model lists its parameters once, in [`HasState::visit_state`], under the
//! names the official checkpoint uses (without the `module.` prefix of `nn.DataParallel`). Loading
//! an official or native checkpoint, saving one, the optimiser and the parameter counts of
//! `cace info` are all visitors over that one list, so the import table reads like the state dict.

use std::collections::HashMap;

use burn::module::Param;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::Tensor;

/// How a stored tensor relates to the burn parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Same shape and element order.
    Same,
    /// A PyTorch `[out, in]` matrix stored by burn as `[in, out]`.
    Transposed,
    /// A 0-dimensional PyTorch tensor (shape `[]`, e.g. `Scale.scale`) held by burn as `[1]`.
    Scalar,
}

/// A position in the state dict: the key prefix, and whether the official forward reads the
/// parameters below it (the official model builds 70 tensors it never uses; they stay in the
/// state dict so checkpoints round-trip and parameter counts match the paper's Table S6).
#[derive(Debug, Clone)]
pub struct Prefix {
    pub path: String,
    pub used: bool,
}

impl Prefix {
    pub fn root() -> Self {
        Self {
            path: String::new(),
            used: true,
        }
    }

    /// A child that the forward pass uses (if its parent is used).
    pub fn child(&self, name: &str) -> Self {
        Self {
            path: self.key(name),
            used: self.used,
        }
    }

    /// A child that the official forward never reads.
    pub fn unused(&self, name: &str) -> Self {
        Self {
            path: self.key(name),
            used: false,
        }
    }

    /// Full key of a tensor named `name` under this prefix.
    pub fn key(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.path, name)
        }
    }
}

/// Visits the float parameters of a module, each with its state-dict key.
pub trait StateVisitor {
    /// `key` is the full state-dict key, `used` whether forward reads it.
    fn visit<const D: usize>(
        &mut self,
        key: &str,
        used: bool,
        param: &mut Param<Tensor<D>>,
        layout: Layout,
    );
}

/// A module whose parameters can be addressed by state-dict key.
pub trait HasState {
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V);
}

impl HasState for Linear {
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        v.visit(
            &at.key("weight"),
            at.used,
            &mut self.weight,
            Layout::Transposed,
        );
        if let Some(bias) = self.bias.as_mut() {
            v.visit(&at.key("bias"), at.used, bias, Layout::Same);
        }
    }
}

impl HasState for LayerNorm {
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        v.visit(&at.key("weight"), at.used, &mut self.gamma, Layout::Same);
        if let Some(beta) = self.beta.as_mut() {
            v.visit(&at.key("bias"), at.used, beta, Layout::Same);
        }
    }
}

/// Every parameter's value by key, flattened and without autodiff (burn's layout).
pub fn param_values<M: HasState + Clone>(module: &M) -> HashMap<String, Tensor<1>> {
    let mut out = HashMap::new();
    let mut collect = |key: &str, value: Tensor<1>| {
        out.insert(key.to_string(), value);
        None
    };
    map_params(&mut module.clone(), &mut collect);
    out
}

/// Replaces every parameter for which `f(key, value)` returns a new value; `value` and the
/// new value are flattened, without autodiff, in burn's layout. The parameter keeps its id and
/// whether autodiff tracks it. The one place parameters are rewritten in place (optimizers,
/// the moving average of weights).
pub fn map_params<M: HasState>(
    module: &mut M,
    f: impl FnMut(&str, Tensor<1>) -> Option<Tensor<1>>,
) {
    struct Map<F>(F);
    impl<F: FnMut(&str, Tensor<1>) -> Option<Tensor<1>>> StateVisitor for Map<F> {
        fn visit<const D: usize>(
            &mut self,
            key: &str,
            _used: bool,
            param: &mut Param<Tensor<D>>,
            _layout: Layout,
        ) {
            let value = param.val();
            let was_tracked = value.is_require_grad();
            let plain = value.inner().detach();
            let dims = plain.dims();
            let flat = plain.reshape([dims.iter().product::<usize>()]);
            let Some(new) = (self.0)(key, flat) else {
                return;
            };
            let new = new.reshape(dims);
            let new = if was_tracked {
                new.autodiff().require_grad()
            } else {
                new
            };
            *param = Param::initialized(param.id, new);
        }
    }
    module.visit_state(&Prefix::root(), &mut Map(f));
}

/// Shape of a parameter as the state dict stores it.
pub fn stored_shape(dims: &[usize], layout: Layout) -> Vec<usize> {
    match layout {
        Layout::Same => dims.to_vec(),
        Layout::Transposed => dims.iter().rev().copied().collect(),
        Layout::Scalar => Vec::new(),
    }
}

/// Collects `(key, used, numel)` for every parameter, in state-dict order.
#[derive(Default)]
pub struct ParamList {
    pub entries: Vec<(String, bool, Vec<usize>)>,
}

impl StateVisitor for ParamList {
    fn visit<const D: usize>(
        &mut self,
        key: &str,
        used: bool,
        param: &mut Param<Tensor<D>>,
        layout: Layout,
    ) {
        let dims = param.lazy_shape().dims::<D>().to_vec();
        self.entries
            .push((key.to_string(), used, stored_shape(&dims, layout)));
    }
}

impl ParamList {
    pub fn of<M: HasState>(module: &mut M) -> Self {
        let mut list = Self::default();
        module.visit_state(&Prefix::root(), &mut list);
        list
    }

    pub fn total(&self) -> usize {
        self.entries
            .iter()
            .map(|(_, _, s)| s.iter().product::<usize>())
            .sum()
    }

    pub fn used(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.1)
            .map(|(_, _, s)| s.iter().product::<usize>())
            .sum()
    }
}
