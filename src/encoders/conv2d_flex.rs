//! The encoders' k×k convolutions on the CPU (`flex`), forward and backward, each run by the
//! kernel that measured fastest for its geometry ([`Method`]).
//!
//! Why our own: burn computes a convolution's weight gradient as another convolution, with the
//! output gradient as its kernel; on burn-flex that lands on GEMM tiles one to six columns wide
//! (the kernel's k·k outputs). Measured at 20 images (2 videos): layer1's 3×3 convolution
//! 194 ms against PyTorch's 95 ms, the 7×7 stem 472 ms against 96 ms. burn-flex's forward and
//! input gradient copy the input to NHWC on one thread and scatter im2col tiles. Here:
//! - stride 1 from 14×14 up: k² shifted products over a padded image ([`Shifted`]);
//! - 7×7 outputs: `Y = W [O, C·k·k] × cols`, `dW = dY [O, N·L] × colsᵀ`, `dx = col2im(Wᵀ × dY)`,
//!   with `cols [C·k·k, N·L]` the input patches written by [`im2col`] in parallel for a group
//!   of images (L = output pixels);
//! - strided from 14×14 up: burn-flex's forward and input gradient, the im2col weight gradient.
//!
//! Other backends use burn's `conv2d` unchanged ([`super::backbone`] chooses). Tested against
//! burn's output and gradients below, and through the fine-tuning golden test
//! (tests/finetune_golden.rs).

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Dispatch, Flex, backend_extension};
use burn::tensor::Tensor;
use burn::tensor::ops::ConvOptions;
use burn_flex::FlexTensor;
use core::ops::Range;
use rayon::prelude::*;

use super::conv2d_shifted::Shifted;
use crate::flex;
use crate::strided::{self, Mat, View};

#[backend_extension(Flex, Autodiff)]
pub trait Conv2dGemmGrad: burn::backend::Backend {
    /// `x [N, C, H, W]`, `weight [O, C, k, k]` → burn's `conv2d` (no bias, square stride and
    /// zero padding), with the weight gradient computed as above.
    fn conv2d_gemm_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: usize,
        padding: usize,
    ) -> FloatTensor<Self>;
}

/// `conv2d(x, weight)` without bias, `stride` and zero `padding` on both axes.
pub fn conv2d(x: Tensor<4>, weight: Tensor<4>, stride: usize, padding: usize) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as Conv2dGemmGrad>::conv2d_gemm_grad(
        x.into_dispatch(),
        weight.into_dispatch(),
        stride,
        padding,
    ))
}

impl Conv2dGemmGrad for Flex {
    fn conv2d_gemm_grad(x: FlexTensor, w: FlexTensor, stride: usize, padding: usize) -> FlexTensor {
        forward(&x.to_contiguous(), &w.to_contiguous(), stride, padding)
    }
}

fn options(stride: usize, padding: usize) -> ConvOptions<2> {
    ConvOptions::new([stride; 2], [padding; 2], [1, 1], 1)
}

/// The stride-1 kernel for `x [N, C, H, W]`, `weight [O, C, k, k]`.
fn shifted(x: &FlexTensor, weight: &FlexTensor, padding: usize) -> Shifted {
    let [_, c, h, w] = x.layout().shape().dims::<4>();
    let [o, _, k, _] = weight.layout().shape().dims::<4>();
    Shifted {
        c,
        h,
        w,
        o,
        k,
        p: padding,
    }
}

/// Which kernel runs a convolution, by its output size and stride, as measured layer by layer
/// at 20 images (BENCHMARKS.md): 7×7 outputs (ResNet-50's layer4) as im2col products over
/// groups of images; stride 1 from 14×14 up (the 3×3s of layer1–3, all of VGG19's) as shifted
/// products (`conv2d_shifted.rs`); strided ones from 14×14 up (the stem, the first 3×3 of
/// layer2 and layer3) burn-flex's forward and input gradient, the im2col weight gradient.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Method {
    Im2col,
    Shifted,
    Burn,
}

impl Geometry {
    fn method(&self) -> Method {
        if self.ho * self.wo < 14 * 14 {
            Method::Im2col
        } else if self.stride == 1 {
            Method::Shifted
        } else {
            Method::Burn
        }
    }
}

fn geometry(x: &FlexTensor, weight: &FlexTensor, stride: usize, padding: usize) -> Geometry {
    Geometry::new(
        x.layout().shape().dims(),
        weight.layout().shape()[2],
        stride,
        padding,
    )
}

fn forward(x: &FlexTensor, weight: &FlexTensor, stride: usize, padding: usize) -> FlexTensor {
    let method = geometry(x, weight, stride, padding).method();
    forward_by(method, x, weight, stride, padding)
}

fn forward_by(
    method: Method,
    x: &FlexTensor,
    weight: &FlexTensor,
    stride: usize,
    padding: usize,
) -> FlexTensor {
    let g = geometry(x, weight, stride, padding);
    match method {
        Method::Im2col => forward_im2col(x, weight, g),
        Method::Burn => Flex::conv2d(x.clone(), weight.clone(), None, options(stride, padding)),
        Method::Shifted => {
            let s = shifted(x, weight, padding);
            let n = x.layout().shape()[0];
            let y = s.forward(flex::values(x), flex::values(weight));
            flex::tensor(y, [n, s.o, s.ho(), s.wo()])
        }
    }
}

/// `[dx, dW]` by `method`, each only when asked for.
fn backward_by(
    method: Method,
    (x, weight, dy): (&FlexTensor, &FlexTensor, &FlexTensor),
    stride: usize,
    padding: usize,
    need: [bool; 2],
) -> [Option<FlexTensor>; 2] {
    let g = geometry(x, weight, stride, padding);
    match method {
        Method::Im2col => backward_im2col(x, weight, dy, g, need),
        Method::Burn => {
            let dx = need[0].then(|| {
                let opts = options(stride, padding);
                Flex::conv2d_x_backward(x.clone(), weight.clone(), dy.clone(), opts)
            });
            let [_, dw] = backward_im2col(x, weight, dy, g, [false, need[1]]);
            [dx, dw]
        }
        Method::Shifted => {
            let s = shifted(x, weight, padding);
            let (xs, ws, dys) = (flex::values(x), flex::values(weight), flex::values(dy));
            let (dx, dw) = s.backward(xs, ws, dys, need);
            [
                dx.map(|dx| flex::tensor(dx, x.layout().shape().clone())),
                dw.map(|dw| flex::tensor(dw, weight.layout().shape().clone())),
            ]
        }
    }
}

/// The geometry of one convolution.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    padding: usize,
    ho: usize,
    wo: usize,
}

impl Geometry {
    fn new(x: [usize; 4], k: usize, stride: usize, padding: usize) -> Self {
        let [_, c, h, w] = x;
        let out = |len: usize| (len + 2 * padding - k) / stride + 1;
        Geometry {
            c,
            h,
            w,
            k,
            stride,
            padding,
            ho: out(h),
            wo: out(w),
        }
    }

    fn rows(&self) -> usize {
        self.c * self.k * self.k
    }

    /// The output positions along an axis of `len` inputs whose input at kernel tap `tap`
    /// (`position · stride + tap − padding`) lies inside the image.
    fn inside(&self, len: usize, len_out: usize, tap: usize) -> Range<usize> {
        let (s, p) = (self.stride, self.padding);
        let first = p.saturating_sub(tap).div_ceil(s);
        let end = (len + p).saturating_sub(tap).div_ceil(s).min(len_out);
        first..end.max(first)
    }
}

/// Images `x[n0..n0+count]` (`[N, C, H, W]`, contiguous) → `cols [C·k·k, count·Ho·Wo]`: row
/// `(c, i, j)` holds, image after image, the input each output pixel sees at kernel tap `(i, j)`
/// (0 in the padding). Rows are written in parallel.
fn im2col(x: &[f32], g: Geometry, n0: usize, count: usize) -> Vec<f32> {
    let l = g.ho * g.wo;
    let mut cols = vec![0f32; g.rows() * count * l];
    cols.par_chunks_mut(count * l)
        .enumerate()
        .for_each(|(row, out)| {
            let (c, i, j) = (row / (g.k * g.k), row / g.k % g.k, row % g.k);
            let (ys, xs) = (g.inside(g.h, g.ho, i), g.inside(g.w, g.wo, j));
            for n in 0..count {
                let plane = &x[((n0 + n) * g.c + c) * g.h * g.w..][..g.h * g.w];
                for oy in ys.clone() {
                    let src = &plane[(oy * g.stride + i - g.padding) * g.w..][..g.w];
                    let dst = &mut out[n * l + oy * g.wo..][..g.wo];
                    for ox in xs.clone() {
                        dst[ox] = src[ox * g.stride + j - g.padding];
                    }
                }
            }
        });
    cols
}

/// The adjoint of [`im2col`]: adds `dcols [C·k·k, count·L]` into `dx [count, C, H, W]`,
/// each image plane written by one task (the k·k rows of its channel).
fn col2im(dcols: &[f32], g: Geometry, count: usize, dx: &mut [f32]) {
    let l = g.ho * g.wo;
    dx.par_chunks_mut(g.h * g.w)
        .enumerate()
        .for_each(|(plane, out)| {
            let (n, c) = (plane / g.c, plane % g.c);
            for (i, j) in (0..g.k).flat_map(|i| (0..g.k).map(move |j| (i, j))) {
                let row = (c * g.k + i) * g.k + j;
                let src = &dcols[row * count * l + n * l..][..l];
                let xs = g.inside(g.w, g.wo, j);
                for oy in g.inside(g.h, g.ho, i) {
                    let dst = &mut out[(oy * g.stride + i - g.padding) * g.w..][..g.w];
                    let src = &src[oy * g.wo..][..g.wo];
                    for ox in xs.clone() {
                        dst[ox * g.stride + j - g.padding] += src[ox];
                    }
                }
            }
        });
}

/// `[a, b, L]` → `[b, a, L]` into `dst`, blocks of `L` copied in parallel.
fn swap_outer(src: &[f32], a: usize, b: usize, l: usize, dst: &mut [f32]) {
    dst.par_chunks_mut(l)
        .with_min_len(64)
        .enumerate()
        .for_each(|(idx, block)| {
            let (bi, ai) = (idx / a, idx % a);
            block.copy_from_slice(&src[(ai * b + bi) * l..][..l]);
        });
}

/// Images per im2col buffer: the buffer stays under ~64 MB (the fine-tuning shares are up to
/// 160 images; all of them at once would be 1.2 GB for layer1).
fn images_per_group(g: Geometry, n: usize) -> usize {
    let per_image = g.rows() * g.ho * g.wo * 4;
    ((64usize << 20) / per_image.max(1)).clamp(1, n)
}

/// The groups of images `(first, count)` that share an im2col buffer.
fn groups(g: Geometry, n: usize) -> impl Iterator<Item = (usize, usize)> {
    let group = images_per_group(g, n);
    (0..n).step_by(group).map(move |n0| (n0, group.min(n - n0)))
}

/// `y [N, O, Ho, Wo]`: per group of images `W [O, C·k·k] × cols [C·k·k, count·L]`, whose
/// `[O, count, L]` result is copied to `[count, O, L]`.
fn forward_im2col(x: &FlexTensor, weight: &FlexTensor, g: Geometry) -> FlexTensor {
    let xs = flex::values(x);
    let n = x.layout().shape()[0];
    let o = weight.layout().shape()[0];
    let l = g.ho * g.wo;
    let (w, r) = (flex::values(weight), g.rows());
    let mut y = vec![0f32; n * o * l];
    for (n0, count) in groups(g, n) {
        let cols = im2col(xs, g, n0, count);
        let part = strided::product(
            View::new(w, r, 1),
            View::new(&cols, count * l, 1),
            [o, count * l, r],
        );
        let dst = &mut y[n0 * o * l..(n0 + count) * o * l];
        swap_outer(&part, o, count, l, dst);
    }
    flex::tensor(y, [n, o, g.ho, g.wo])
}

/// The gradients of [`forward`] for the output gradient `dy`, each only when asked for: per
/// group, `dy` as `[O, count·L]`; `dW += dY × colsᵀ`, `dx = col2im(Wᵀ × dY)`.
fn backward_im2col(
    x: &FlexTensor,
    weight: &FlexTensor,
    dy: &FlexTensor,
    g: Geometry,
    need: [bool; 2],
) -> [Option<FlexTensor>; 2] {
    let (xs, dys) = (flex::values(x), flex::values(dy));
    let n = x.layout().shape()[0];
    let o = weight.layout().shape()[0];
    let l = g.ho * g.wo;
    let (w, r) = (flex::values(weight), g.rows());
    let mut dx = need[0].then(|| vec![0f32; n * g.c * g.h * g.w]);
    let mut dw = need[1].then(|| vec![0f32; o * r]);
    for (i, (n0, count)) in groups(g, n).enumerate() {
        let mut dy_group = vec![0f32; o * count * l];
        swap_outer(
            &dys[n0 * o * l..(n0 + count) * o * l],
            count,
            o,
            l,
            &mut dy_group,
        );
        let dy_view = View::new(&dy_group, count * l, 1);
        if let Some(dx) = dx.as_mut() {
            // Wᵀ's element (p, q) is W[q, p]: row stride 1, column stride C·k·k.
            let dcols = strided::product(View::new(w, 1, r), dy_view, [r, count * l, o]);
            let planes = g.c * g.h * g.w;
            col2im(&dcols, g, count, &mut dx[n0 * planes..][..count * planes]);
        }
        if let Some(dw) = dw.as_mut() {
            let cols = im2col(xs, g, n0, count);
            // colsᵀ's element (p, q) is cols[q, p]: row stride 1, column stride count·L.
            let cols_t = View::new(&cols, 1, count * l);
            let dims = [o, r, count * l];
            let par = strided::parallelism(dims);
            strided::gemm_into(Mat::new(dw, r, 1), dy_view, cols_t, dims, i > 0, par);
        }
    }
    [
        dx.map(|dx| flex::tensor(dx, [n, g.c, g.h, g.w])),
        dw.map(|dw| flex::tensor(dw, [o, g.c, g.k, g.k])),
    ]
}

#[derive(Debug)]
struct ConvBackward;

#[derive(Debug, Clone)]
struct Saved {
    x: FlexTensor,
    weight: FlexTensor,
    stride: usize,
    padding: usize,
}

impl Backward<Flex, 2> for ConvBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node).to_contiguous();
        let Saved {
            x,
            weight,
            stride,
            padding,
        } = ops.state;
        let need = [node_x.is_some(), node_w.is_some()];
        let method = geometry(&x, &weight, stride, padding).method();
        let [dx, dw] = backward_by(method, (&x, &weight, &dy), stride, padding, need);
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<Flex>(node.id, dx);
        }
        if let (Some(node), Some(dw)) = (node_w, dw) {
            grads.register::<Flex>(node.id, dw);
        }
    }
}

impl<C: CheckpointStrategy> Conv2dGemmGrad for Autodiff<Flex, C> {
    fn conv2d_gemm_grad(
        x: FloatTensor<Autodiff<Flex>>,
        weight: FloatTensor<Autodiff<Flex>>,
        stride: usize,
        padding: usize,
    ) -> FloatTensor<Autodiff<Flex>> {
        let nodes = [x.node(), weight.node()];
        let (x, w) = (
            x.into_primitive().to_contiguous(),
            weight.into_primitive().to_contiguous(),
        );
        let out = forward(&x, &w, stride, padding);
        let saved = Saved {
            x,
            weight: w,
            stride,
            padding,
        };
        match ConvBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(saved, out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    fn flex_of(t: &Tensor<4>) -> FlexTensor {
        flex::tensor(crate::to_vec(t.clone()), t.dims())
    }

    /// Largest difference relative to the largest magnitude of `reference` (at least 1).
    fn rel_diff(ours: &FlexTensor, reference: &Tensor<4>) -> f32 {
        let r = crate::to_vec(reference.clone());
        let scale = r.iter().fold(1f32, |m, v| m.max(v.abs()));
        let ours = flex::values(ours);
        assert_eq!(ours.len(), r.len());
        ours.iter()
            .zip(&r)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
            / scale
    }

    /// Output and both gradients of every kernel, and of the one [`conv2d`] chooses through
    /// autodiff, against burn's `conv2d` (cases: images, C, O, size, k, stride, padding): the
    /// stem's geometry, 3×3 stride 1 and 2, images too large to share an im2col buffer (three
    /// groups of one), a 5×5 stride 3 (taps whose first inside output is not the first), a 2×2
    /// image under a 7×7 kernel (taps that never land inside), one image (parallel products),
    /// 5×5 without padding, padding wider than the kernel's half, and 20 images (eight runs of
    /// weight-gradient sums).
    #[test]
    fn every_kernel_matches_burns_conv2d_and_its_gradients() {
        let device = Device::flex().autodiff();
        let cases = [
            (3, 3, 4, 19, 7, 2, 3),
            (3, 5, 6, 9, 3, 1, 1),
            (3, 4, 3, 10, 3, 2, 1),
            (3, 64, 2, 121, 3, 1, 1),
            (3, 2, 3, 11, 5, 3, 2),
            (3, 2, 2, 2, 7, 2, 3),
            (1, 3, 4, 8, 3, 1, 1),
            (2, 3, 2, 6, 5, 1, 0),
            (2, 3, 2, 5, 3, 1, 2),
            (20, 2, 3, 16, 3, 1, 1),
        ];
        for (n, c, o, hw, k, s, p) in cases {
            let x = Tensor::<4>::random([n, c, hw, hw], Distribution::Normal(0.0, 1.0), &device)
                .require_grad();
            let w = Tensor::<4>::random([o, c, k, k], Distribution::Normal(0.0, 1.0), &device)
                .require_grad();
            let theirs = burn::tensor::module::conv2d(x.clone(), w.clone(), None, options(s, p));
            let probe = Tensor::<4>::random(theirs.dims(), Distribution::Normal(0.0, 1.0), &device);
            let grads = |y: Tensor<4>| {
                let g = (y * probe.clone()).sum().backward();
                [x.grad(&g).unwrap(), w.grad(&g).unwrap()]
            };
            let reference = [theirs.clone().inner()];
            let [dx_ref, dw_ref] = grads(theirs);
            // Through autodiff, with the kernel the geometry chooses.
            let ours = conv2d(x.clone(), w.clone(), s, p);
            assert!(rel_diff(&flex_of(&ours.clone().inner()), &reference[0]) < 1e-5);
            let [dx, dw] = grads(ours);
            assert!(rel_diff(&flex_of(&dx), &dx_ref) < 1e-5, "input gradient");
            assert!(rel_diff(&flex_of(&dw), &dw_ref) < 1e-5, "weight gradient");
            // Every kernel that applies, directly.
            let (xf, wf, pf) = (
                flex_of(&x.clone().inner()),
                flex_of(&w.clone().inner()),
                flex_of(&probe),
            );
            let shifted = (s == 1).then_some(Method::Shifted);
            for method in [Some(Method::Im2col), Some(Method::Burn), shifted]
                .into_iter()
                .flatten()
            {
                let y = forward_by(method, &xf, &wf, s, p);
                assert!(rel_diff(&y, &reference[0]) < 1e-5, "{method:?} output");
                let [dx, dw] = backward_by(method, (&xf, &wf, &pf), s, p, [true, true]);
                let case = (method, n, c, hw, k, s, p);
                assert!(
                    rel_diff(&dx.unwrap(), &dx_ref) < 1e-5,
                    "{case:?} input gradient"
                );
                assert!(
                    rel_diff(&dw.unwrap(), &dw_ref) < 1e-5,
                    "{case:?} weight gradient"
                );
                let [none, dw] = backward_by(method, (&xf, &wf, &pf), s, p, [false, true]);
                assert!(none.is_none() && rel_diff(&dw.unwrap(), &dw_ref) < 1e-5);
            }
        }
    }

    #[test]
    fn image_groups_stay_small() {
        let g = Geometry {
            c: 64,
            h: 56,
            w: 56,
            k: 3,
            stride: 1,
            padding: 1,
            ho: 56,
            wo: 56,
        };
        // 576 rows × 3136 pixels × 4 B = 7.2 MB an image: 9 images under 64 MB.
        assert_eq!(images_per_group(g, 160), 9);
        assert_eq!(images_per_group(g, 4), 4);
    }
}
