//! The weight gradient of the encoders' k×k convolutions on the CPU (`flex`) as one
//! well-shaped matrix product per group of images (im2col), instead of burn's default.
//!
//! Why our own: burn computes a convolution's weight gradient as another convolution, with the
//! output gradient as its kernel; on burn-flex that lands on GEMM tiles one to six columns wide
//! (the kernel's k·k outputs). Measured at 20 images (2 videos): layer1's 3×3 convolution
//! 194 ms against PyTorch's 95 ms, the 7×7 stem 472 ms against 96 ms. Here
//! `dW [O, C·k·k] = dY [O, N·L] × cols [C·k·k, N·L]ᵀ`, with `cols` the input patches written
//! by [`im2col`] in parallel (L = output pixels). The forward and the input gradient stay
//! burn-flex's (`conv2d`, `conv2d_x_backward`), close to PyTorch's. Other backends use
//! burn's `conv2d` unchanged ([`super::backbone`] chooses). Tested against burn's gradients
//! below and through the fine-tuning golden test (tests/finetune_golden.rs).

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::{FloatTensorOps, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Dispatch, Flex, backend_extension};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Shape, Tensor};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use crate::flex;

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

fn options(stride: usize, padding: usize) -> ConvOptions<2> {
    ConvOptions::new([stride; 2], [padding; 2], [1, 1], 1)
}

impl Conv2dGemmGrad for Flex {
    fn conv2d_gemm_grad(x: FlexTensor, w: FlexTensor, stride: usize, padding: usize) -> FlexTensor {
        Flex::conv2d(x, w, None, options(stride, padding))
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
    fn rows(&self) -> usize {
        self.c * self.k * self.k
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
            for n in 0..count {
                let plane = &x[((n0 + n) * g.c + c) * g.h * g.w..][..g.h * g.w];
                for oy in 0..g.ho {
                    let iy = (oy * g.stride + i) as isize - g.padding as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let src = &plane[iy as usize * g.w..][..g.w];
                    let dst = &mut out[n * l + oy * g.wo..][..g.wo];
                    for (ox, d) in dst.iter_mut().enumerate() {
                        let ix = (ox * g.stride + j) as isize - g.padding as isize;
                        if ix >= 0 && ix < g.w as isize {
                            *d = src[ix as usize];
                        }
                    }
                }
            }
        });
    cols
}

/// Images per im2col buffer: the buffer stays under ~64 MB (the fine-tuning shares are up to
/// 160 images; all of them at once would be 1.2 GB for layer1).
fn images_per_group(g: Geometry, n: usize) -> usize {
    let per_image = g.rows() * g.ho * g.wo * 4;
    ((64usize << 20) / per_image.max(1)).clamp(1, n)
}

/// `dW [O, C, k, k] = Σ over groups of dY_group [O, count·L] × cols_groupᵀ`.
fn weight_grad(x: &FlexTensor, dy: FlexTensor, g: Geometry, o: usize) -> FlexTensor {
    let x = x.to_contiguous();
    let xs = flex::values(&x);
    let n = dy.layout().shape().dims::<4>()[0];
    let l = g.ho * g.wo;
    let group = images_per_group(g, n);
    let mut total: Option<FlexTensor> = None;
    for n0 in (0..n).step_by(group) {
        let count = group.min(n - n0);
        let cols = flex::tensor(im2col(xs, g, n0, count), [g.rows(), count * l]);
        // [count, O, L] → [O, count·L] (a copy), then one product.
        let dy_group = dy.narrow(0, n0, count);
        let dy_group = Flex::float_reshape(dy_group, Shape::new([count, o, l]));
        let dy_group = Flex::float_swap_dims(dy_group, 0, 1).to_contiguous();
        let dy_group = Flex::float_reshape(dy_group, Shape::new([o, count * l]));
        let part = Flex::float_matmul(dy_group, Flex::float_transpose(cols));
        total = Some(match total {
            Some(t) => Flex::float_add(t, part),
            None => part,
        });
    }
    let total = total.expect("at least one image");
    Flex::float_reshape(total, Shape::new([o, g.c, g.k, g.k]))
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
        let dy = grads.consume::<Flex>(&ops.node);
        let Saved {
            x,
            weight,
            stride,
            padding,
        } = ops.state;
        let [_, c, h, w] = x.layout().shape().dims::<4>();
        let [o, _, k, _] = weight.layout().shape().dims::<4>();
        let [_, _, ho, wo] = dy.layout().shape().dims::<4>();
        if let Some(node) = node_x {
            let opts = options(stride, padding);
            let dx = Flex::conv2d_x_backward(x.clone(), weight.clone(), dy.clone(), opts);
            grads.register::<Flex>(node.id, dx);
        }
        if let Some(node) = node_w {
            let g = Geometry {
                c,
                h,
                w,
                k,
                stride,
                padding,
                ho,
                wo,
            };
            grads.register::<Flex>(node.id, weight_grad(&x, dy, g, o));
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
        let out = Flex::conv2d(
            x.primitive().clone(),
            weight.primitive().clone(),
            None,
            options(stride, padding),
        );
        match ConvBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let saved = Saved {
                    x: x.into_primitive(),
                    weight: weight.into_primitive(),
                    stride,
                    padding,
                };
                prep.finish(saved, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    /// Output and both gradients against burn's `conv2d`, for the stem's geometry (7×7,
    /// stride 2, padding 3), a 3×3 one, a strided 3×3 one, and one whose images are too large
    /// to share an im2col buffer (34 MB each: three groups of one).
    #[test]
    fn matches_burns_conv2d_and_its_gradients() {
        let device = Device::flex().autodiff();
        let cases = [
            (3, 4, 19, 7, 2, 3),
            (5, 6, 9, 3, 1, 1),
            (4, 3, 10, 3, 2, 1),
            (64, 2, 121, 3, 1, 1),
        ];
        for (c, o, hw, k, s, p) in cases {
            let x = Tensor::<4>::random([3, c, hw, hw], Distribution::Normal(0.0, 1.0), &device)
                .require_grad();
            let w = Tensor::<4>::random([o, c, k, k], Distribution::Normal(0.0, 1.0), &device)
                .require_grad();
            let ours = conv2d(x.clone(), w.clone(), s, p);
            let theirs = burn::tensor::module::conv2d(x.clone(), w.clone(), None, options(s, p));
            let probe = Tensor::<4>::random(ours.dims(), Distribution::Normal(0.0, 1.0), &device);
            let grads = |y: Tensor<4>| {
                let g = (y * probe.clone()).sum().backward();
                (x.grad(&g).unwrap(), w.grad(&g).unwrap())
            };
            let diff = |a: Tensor<4>, b: Tensor<4>| {
                let scale = b.clone().abs().max().into_scalar::<f32>().max(1.0);
                (a - b).abs().max().into_scalar::<f32>() / scale
            };
            assert!(diff(ours.clone(), theirs.clone()) < 1e-5);
            let ((dx, dw), (dx_ref, dw_ref)) = (grads(ours), grads(theirs));
            assert!(diff(dx.inner(), dx_ref.inner()) < 1e-5, "input gradient");
            assert!(
                diff(dw.inner(), dw_ref.inner()) < 1e-5,
                "weight gradient {c} {k} {s}"
            );
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
