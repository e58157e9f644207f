//! Building blocks with PyTorch semantics: linear layers initialised like `nn.Linear`,
//! `nn.MultiheadAttention` with its packed `in_proj_weight`, and `nn.LSTM` with its packed gates.
//!
//! Tensors here are batch-first (`[B, L, E]`); the official relation modules run sequence-first,
//! which changes nothing numerically (attention and LayerNorm act per batch element).

use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};

use super::bmm_flex::bmm;
use super::dropout::Dropout;
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Distribution, Tensor};

use super::state::{HasState, Layout, Prefix, StateVisitor};
use super::trace::Trace;

/// `nn.Linear(d_in, d_out)`: weights and bias uniform in ±1/√d_in, as PyTorch initialises them.
pub fn linear(d_in: usize, d_out: usize, device: &Device) -> Linear {
    LinearConfig::new(d_in, d_out).init(device)
}

/// `nn.LayerNorm`'s default ε.
pub const LAYER_NORM_EPS: f64 = 1e-5;

/// `nn.LayerNorm(d)`: eps 1e-5, weight 1, bias 0.
pub fn layer_norm(d: usize, device: &Device) -> LayerNorm {
    LayerNormConfig::new(d)
        .with_epsilon(LAYER_NORM_EPS)
        .init(device)
}

pub fn dropout(p: f64) -> Dropout {
    Dropout::new(p)
}

fn uniform_param<const D: usize>(
    shape: [usize; D],
    bound: f64,
    device: &Device,
) -> Param<Tensor<D>> {
    Param::from_tensor(Tensor::random(
        shape,
        Distribution::Uniform(-bound, bound),
        device,
    ))
}

/// `l.forward(x)` on `x` flattened to `[rows, d_in]` and shaped back, in the thread's
/// [`crate::precision`].
///
/// burn keeps `[B, L, d_in] × [d_in, d_out]` as a batched product against the broadcast weight
/// when `L` does not fill its row tiles (AVCA's 49 cells), and the autodiff backward of that
/// product forms the weight gradient per batch element before summing: `[640, 512, 512]`, 671 MB
/// at batch 64, for one `[512, 512]` weight. Flattened, the backward is one `[d_in, rows] ×
/// [rows, d_out]` product.
pub fn flat<const D: usize>(l: &Linear, x: Tensor<D>) -> Tensor<D> {
    flat_parts(x, l.weight.val(), l.bias.as_ref().map(|b| b.val()))
}

/// [`flat`] with the weight `[d_in, d_out]` and bias given apart (the multi-head attention's
/// packed projection, the LSTM's input projection).
pub fn flat_parts<const D: usize>(x: Tensor<D>, w: Tensor<2>, b: Option<Tensor<1>>) -> Tensor<D> {
    let (x, dims) = to_rows(x);
    from_rows(crate::precision::linear_parts(x, w, b), dims)
}

/// `[..., C]` → `[rows, C]`, and the shape to give back to [`from_rows`].
fn to_rows<const D: usize>(x: Tensor<D>) -> (Tensor<2>, [usize; D]) {
    let dims = x.dims();
    let rows = dims[..D - 1].iter().product::<usize>();
    (x.reshape([rows, dims[D - 1]]), dims)
}

/// `[rows, C']` → `[..., C']` with the leading axes of `dims`.
fn from_rows<const D: usize>(y: Tensor<2>, mut dims: [usize; D]) -> Tensor<D> {
    dims[D - 1] = y.dims()[1];
    y.reshape(dims)
}

/// Several linear layers that read the same input, as one wide multiply (their weights are
/// concatenated along the output axis); returns the outputs in order. One wide matrix product
/// is faster than several narrow ones.
///
/// Not in training: burn-autodiff's backward of each output (a slice of the wide one) builds a
/// zero gradient of the whole wide output and adds it to the others' — for AVCA's six
/// projections of X six `[B·T, 49, 1536]` buffers (192 MB each at batch 64): 640 MB more peak
/// memory, and no faster than separate layers (BENCHMARKS.md, issue 16).
pub fn fused_linear<const D: usize>(x: Tensor<D>, layers: &[&Linear]) -> Vec<Tensor<D>> {
    if x.device().is_autodiff() {
        return layers.iter().map(|l| flat(l, x.clone())).collect();
    }
    let weight = Tensor::cat(layers.iter().map(|l| l.weight.val()).collect(), 1);
    let bias = Tensor::cat(
        layers
            .iter()
            .map(|l| l.bias.as_ref().expect("linear bias").val())
            .collect(),
        0,
    );
    let widths = layers.iter().map(|l| l.weight.dims()[1]).collect();
    // Flattened for the reason given at [`flat`] (here: one product instead of B·T small ones).
    let (x, dims) = to_rows(x);
    from_rows(crate::precision::linear_parts(x, weight, Some(bias)), dims)
        .split_with_sizes(widths, D - 1)
}

/// Re-creates every parameter with a fresh id and the same values. The official encoders are
/// `deepcopy`s of one template layer, so their layers start equal but train independently.
pub fn fresh_copy<M: Module>(m: &M) -> M {
    m.clone().map(&mut FreshIds)
}

struct FreshIds;

impl burn::module::ModuleMapper for FreshIds {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        // `detach` keeps the autodiff association (unlike `inner`), so the copy is trainable.
        Param::from_tensor(param.val().detach())
    }
}

/// `nn.MultiheadAttention(E, heads)` without masks, with weights averaged over heads like
/// PyTorch's `need_weights=True`.
#[derive(Module, Debug)]
pub struct MultiheadAttention {
    /// `[E, 3E]` = PyTorch `in_proj_weight` `[3E, E]` (rows `[W_q; W_k; W_v]`) transposed.
    pub in_proj_weight: Param<Tensor<2>>,
    pub in_proj_bias: Param<Tensor<1>>,
    pub out_proj: Linear,
    pub attn_dropout: Dropout,
    heads: usize,
}

impl MultiheadAttention {
    pub fn new(d: usize, heads: usize, attn_dropout: f64, device: &Device) -> Self {
        // PyTorch: xavier_uniform_ on in_proj_weight, zero in_proj_bias and out_proj.bias.
        let bound = (6.0 / (d + 3 * d) as f64).sqrt();
        let out_proj = linear(d, d, device);
        let out_proj = Linear {
            bias: Some(Param::from_tensor(Tensor::zeros([d], device))),
            ..out_proj
        };
        Self {
            in_proj_weight: uniform_param([d, 3 * d], bound, device),
            in_proj_bias: Param::from_tensor(Tensor::zeros([3 * d], device)),
            out_proj,
            attn_dropout: dropout(attn_dropout),
            heads,
        }
    }

    /// `query [B, Lq, E]`, `memory [B, Lk, E]` (keys = values) → `[B, Lq, E]`.
    /// Records `<name>:attn_output` and `<name>:attn_weights` (`[B, Lq, Lk]`, head mean).
    pub fn forward(
        &self,
        query: Tensor<3>,
        memory: Option<Tensor<3>>,
        name: &str,
        trace: &mut Trace,
    ) -> Tensor<3> {
        let [b, lq, e] = query.dims();
        let w = self.in_proj_weight.val();
        let bias = self.in_proj_bias.val();
        let (q, k, v) = match memory {
            // Self-attention: one [E, 3E] multiply instead of three.
            None => {
                let qkv = flat_parts(query, w, Some(bias));
                let mut parts = qkv.chunk(3, 2).into_iter();
                (
                    parts.next().unwrap(),
                    parts.next().unwrap(),
                    parts.next().unwrap(),
                )
            }
            Some(memory) => {
                let q = flat_parts(
                    query,
                    w.clone().narrow(1, 0, e),
                    Some(bias.clone().narrow(0, 0, e)),
                );
                let kv = flat_parts(
                    memory,
                    w.narrow(1, e, 2 * e),
                    Some(bias.narrow(0, e, 2 * e)),
                );
                let mut parts = kv.chunk(2, 2).into_iter();
                (q, parts.next().unwrap(), parts.next().unwrap())
            }
        };
        let lk = k.dims()[1];
        let h = self.heads;
        let dh = e / h;
        let split = |x: Tensor<3>, l: usize| x.reshape([b, l, h, dh]).swap_dims(1, 2); // [B, H, L, dh]
        let q = split(q, lq).mul_scalar(1.0 / (dh as f64).sqrt());
        let (k, v) = (split(k, lk), split(v, lk));
        let weights = softmax(bmm(q, k.swap_dims(2, 3)), 3); // [B, H, Lq, Lk]
        if trace.is_on() {
            trace.record(
                (name, ":attn_weights"),
                &weights.clone().mean_dim(1).reshape([b, lq, lk]),
            );
        }
        let ctx = bmm(self.attn_dropout.forward(weights), v); // [B, H, Lq, dh]
        let out = flat(&self.out_proj, ctx.swap_dims(1, 2).reshape([b, lq, e]));
        trace.record((name, ":attn_output"), &out);
        out
    }
}

impl HasState for MultiheadAttention {
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        v.visit(
            &at.key("in_proj_weight"),
            at.used,
            &mut self.in_proj_weight,
            Layout::Transposed,
        );
        v.visit(
            &at.key("in_proj_bias"),
            at.used,
            &mut self.in_proj_bias,
            Layout::Same,
        );
        self.out_proj.visit_state(&at.child("out_proj"), v);
    }
}

/// One direction of a one-layer `nn.LSTM`, gates packed in PyTorch order i, f, g, o.
#[derive(Module, Debug)]
pub struct LstmDirection {
    /// `[in, 4H]` = PyTorch `weight_ih_l0` `[4H, in]` transposed.
    pub weight_ih: Param<Tensor<2>>,
    /// `[H, 4H]` = PyTorch `weight_hh_l0` transposed.
    pub weight_hh: Param<Tensor<2>>,
    pub bias_ih: Param<Tensor<1>>,
    pub bias_hh: Param<Tensor<1>>,
    hidden: usize,
}

impl LstmDirection {
    pub fn new(d_in: usize, hidden: usize, device: &Device) -> Self {
        // PyTorch initialises every LSTM tensor uniform in ±1/√H.
        let bound = 1.0 / (hidden as f64).sqrt();
        Self {
            weight_ih: uniform_param([d_in, 4 * hidden], bound, device),
            weight_hh: uniform_param([hidden, 4 * hidden], bound, device),
            bias_ih: uniform_param([4 * hidden], bound, device),
            bias_hh: uniform_param([4 * hidden], bound, device),
            hidden,
        }
    }

    /// `x [B, T, in]` → `[B, T, H]`, zero initial state; `reverse` runs t = T-1 → 0 and places
    /// the output of step t at t.
    pub fn forward(&self, x: Tensor<3>, reverse: bool) -> Tensor<3> {
        // Input projection of all steps at once; both biases folded in.
        let bias = self.bias_ih.val() + self.bias_hh.val();
        let xp = flat_parts(x, self.weight_ih.val(), Some(bias)); // [B, T, 4H]
        super::lstm_flex::recurrence(xp, self.weight_hh.val(), reverse)
    }

    fn visit_state_suffixed<V: StateVisitor>(&mut self, at: &Prefix, suffix: &str, v: &mut V) {
        v.visit(
            &at.key(&format!("weight_ih_l0{suffix}")),
            at.used,
            &mut self.weight_ih,
            Layout::Transposed,
        );
        v.visit(
            &at.key(&format!("weight_hh_l0{suffix}")),
            at.used,
            &mut self.weight_hh,
            Layout::Transposed,
        );
        v.visit(
            &at.key(&format!("bias_ih_l0{suffix}")),
            at.used,
            &mut self.bias_ih,
            Layout::Same,
        );
        v.visit(
            &at.key(&format!("bias_hh_l0{suffix}")),
            at.used,
            &mut self.bias_hh,
            Layout::Same,
        );
    }
}

/// One-layer LSTM, batch-first; bidirectional outputs are `[forward ‖ backward]`.
#[derive(Module, Debug)]
pub struct Lstm {
    pub forward_dir: LstmDirection,
    pub reverse_dir: Option<LstmDirection>,
}

impl Lstm {
    pub fn new(d_in: usize, hidden: usize, bidirectional: bool, device: &Device) -> Self {
        let forward_dir = LstmDirection::new(d_in, hidden, device);
        let reverse_dir = bidirectional.then(|| LstmDirection::new(d_in, hidden, device));
        Self {
            forward_dir,
            reverse_dir,
        }
    }

    /// `[B, T, in]` → `[B, T, H]` or `[B, T, 2H]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        match &self.reverse_dir {
            None => self.forward_dir.forward(x, false),
            Some(rev) => {
                let fwd = self.forward_dir.forward(x.clone(), false);
                let bwd = rev.forward(x, true);
                Tensor::cat(vec![fwd, bwd], 2)
            }
        }
    }
}

impl HasState for Lstm {
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        self.forward_dir.visit_state_suffixed(at, "", v);
        if let Some(rev) = self.reverse_dir.as_mut() {
            rev.visit_state_suffixed(at, "_reverse", v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`flat`] gives `Linear::forward`'s output and gradients, and its backward needs a
    /// fraction of the memory: at `[200, 49, 512] × [512, 512]` burn's batched product forms 200
    /// weight gradients of 1 MB before summing them. The peaks are measured on the process-wide
    /// heap count, where a test allocating at the same moment can only add: `flat`'s is the
    /// least of three tries.
    #[test]
    fn flat_linear_matches_burns_and_keeps_its_backward_small() {
        let _rng = crate::rng_lock(); // draws from the device generator
        let device = Device::flex().autodiff();
        let l = linear(512, 512, &device);
        let x = Tensor::<3>::random([200, 49, 512], Distribution::Normal(0.0, 1.0), &device)
            .require_grad();
        let run = |y: Tensor<3>| {
            crate::heap::reset_peak();
            let before = crate::heap::live_bytes();
            let g = y.sum().backward();
            let extra = crate::heap::peak_bytes().saturating_sub(before) >> 20;
            let grads = [
                x.grad(&g).unwrap().flatten::<1>(0, 2),
                l.weight.grad(&g).unwrap().flatten::<1>(0, 1),
            ];
            (extra, grads.map(crate::to_vec))
        };
        let (burn_mb, theirs) = run(l.forward(x.clone()));
        let (mut flat_mb, ours) = run(flat(&l, x.clone()));
        for _ in 0..2 {
            flat_mb = flat_mb.min(run(flat(&l, x.clone())).0);
        }
        assert!(
            burn_mb > 150,
            "burn's backward took {burn_mb} MB more: the case no longer tests anything"
        );
        assert!(
            flat_mb < 80,
            "flat backward took {flat_mb} MB more (burn's: {burn_mb} MB)"
        );
        for (a, b) in ours.iter().zip(&theirs) {
            let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
            let diff = a.iter().zip(b).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                diff / scale < 1e-5,
                "gradients differ by {diff} (scale {scale})"
            );
        }
    }
}
