//! The dense model's 1-D convolutions as shifted views and one matrix multiply (im2col),
//! instead of burn's `conv1d`.
//!
//! Why our own: on burn-flex, `conv1d`'s backward computes the weight gradient as a
//! convolution with the output gradient as its kernel, which lands on narrow GEMM tiles (a
//! profile of the dense training step: 50 % of it in gemm's one- and four-column
//! micro-kernels; the step took 1.9× PyTorch's, BENCHMARKS.md). Written with `narrow`, `cat`
//! and `matmul`, both directions are large, well-shaped GEMMs (matmul's backward) plus copies.
//! Depthwise convolutions (one group per channel) are a weighted sum of K shifted views.
//! The same form for the 2-D convolutions of the fine-tuned ResNet-50 was measured slower
//! than burn's (BENCHMARKS.md) and is not used. tests/dense/model.rs compares the whole model
//! with the official one, and the unit test below this with burn's `conv1d`.

use burn::tensor::Tensor;

/// `x [B, C, T]`, `weight [O, C/groups, K]` (PyTorch's layout), optional `bias [O]`, zero
/// padding `padding` on both sides → `[B, O, (T + 2·padding − K) / stride + 1]`.
/// `groups` must be 1 or C (= O: depthwise).
pub fn conv1d(
    x: Tensor<3>,
    weight: Tensor<3>,
    bias: Option<Tensor<1>>,
    stride: usize,
    padding: usize,
    groups: usize,
) -> Tensor<3> {
    let [b, c, t] = x.dims();
    let [o, c_per_group, k] = weight.dims();
    let t_out = (t + 2 * padding - k) / stride + 1;
    let x = if padding > 0 {
        let zeros = Tensor::<3>::zeros([b, c, padding], &x.device());
        Tensor::cat(vec![zeros.clone(), x, zeros], 2)
    } else {
        x
    };
    // View k: the inputs the k-th kernel tap sees at each output position, [B, C, T_out].
    let view = |tap: usize| -> Tensor<3> {
        let span = (t_out - 1) * stride + 1;
        let v = x.clone().narrow(2, tap, span);
        if stride == 1 {
            return v;
        }
        let v = Tensor::cat(vec![v, Tensor::zeros([b, c, stride - 1], &x.device())], 2);
        v.reshape([b, c, t_out, stride])
            .narrow(3, 0, 1)
            .reshape([b, c, t_out])
    };
    let out = if groups == 1 {
        assert_eq!(
            c_per_group, c,
            "conv1d: weight has {c_per_group} input channels, x has {c}"
        );
        // [B, C, K, T_out] → [B, C·K, T_out] (the weight's flattening order).
        let training = x.device().is_autodiff();
        let cols = Tensor::stack::<4>((0..k).map(view).collect(), 2).reshape([b, c * k, t_out]);
        if training {
            // One [B·T_out, C·K] × [C·K, O] product: the weight's gradient is one GEMM too. (The
            // batched form below would keep a weight gradient per video before summing them:
            // +1.7 GB at the official sizes, batch 4.)
            let cols = cols.swap_dims(1, 2).reshape([b * t_out, c * k]);
            let w = weight.reshape([o, c * k]).transpose();
            cols.matmul(w).reshape([b, t_out, o]).swap_dims(1, 2)
        } else {
            // Per video [O, C·K] × [C·K, T_out], no layout copies (evaluation 20 % faster).
            weight.reshape([1, o, c * k]).matmul(cols)
        }
    } else {
        assert!(
            groups == c && o == c && c_per_group == 1,
            "conv1d: only depthwise groups"
        );
        let w = weight.reshape([1, c, k]);
        (0..k)
            .map(|tap| view(tap) * w.clone().narrow(2, tap, 1))
            .reduce(|a, b| a + b)
            .expect("a kernel tap")
    };
    match bias {
        Some(bias) => out + bias.reshape([1, o, 1]),
        None => out,
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::module::conv1d as burn_conv1d;
    use burn::tensor::ops::ConvOptions;
    use burn::tensor::{Device, Distribution, Tensor};

    #[test]
    fn equals_burns_conv1d_forward_and_backward() {
        let device = Device::default().autodiff();
        device.seed(3);
        let cases = [
            (5, 7, 3, 1, 1, 1),
            (6, 4, 3, 2, 1, 1),
            (4, 4, 3, 1, 1, 4),
            (4, 4, 3, 2, 1, 4),
            (3, 5, 1, 1, 0, 1),
        ];
        for (c, o, k, stride, pad, groups) in cases {
            let rand = |shape: [usize; 3]| {
                Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), &device).require_grad()
            };
            let x = rand([2, c, 8]);
            let w = rand([o, c / groups, k]);
            let bias =
                Tensor::<1>::random([o], Distribution::Normal(0.0, 1.0), &device).require_grad();
            let ours = super::conv1d(
                x.clone(),
                w.clone(),
                Some(bias.clone()),
                stride,
                pad,
                groups,
            );
            let reference = burn_conv1d(
                x.clone(),
                w.clone(),
                Some(bias.clone()),
                ConvOptions::new([stride], [pad], [1], groups),
            );
            assert_eq!(ours.dims(), reference.dims());
            let close = |a: Tensor<3>, b: Tensor<3>, what: &str| {
                let (a, b) = (crate::to_vec(a), crate::to_vec(b));
                let err = a
                    .iter()
                    .zip(&b)
                    .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                assert!(
                    err < 1e-4,
                    "{what} (c {c}, o {o}, stride {stride}, groups {groups}): {err}"
                );
            };
            close(ours.clone().inner(), reference.clone().inner(), "forward");
            // Without autodiff (evaluation) the product is batched per video instead.
            let plain = super::conv1d(
                x.clone().inner(),
                w.clone().inner(),
                Some(bias.clone().inner()),
                stride,
                pad,
                groups,
            );
            close(plain, reference.clone().inner(), "forward without autodiff");
            let g = Tensor::<3>::random(ours.dims(), Distribution::Normal(0.0, 1.0), &device);
            let ga = (ours * g.clone()).sum().backward();
            let gb = (reference * g).sum().backward();
            close(x.grad(&ga).unwrap(), x.grad(&gb).unwrap(), "input gradient");
            close(
                w.grad(&ga).unwrap(),
                w.grad(&gb).unwrap(),
                "weight gradient",
            );
        }
    }
}
