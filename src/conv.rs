//! Convolutions of the trained models as shifted views and one matrix multiply (im2col),
//! instead of burn's `conv1d` / `conv2d`: the dense model's 1-D ones and the fine-tuned image
//! encoders' 2-D ones.
//!
//! Why our own: on burn-flex, the convolutions' backward computes the weight gradient as a
//! convolution with the output gradient as its kernel, which lands on narrow GEMM tiles (a
//! profile of the dense training step: 50 % of it in gemm's one- and four-column
//! micro-kernels, the step 1.9× PyTorch's; the ResNet-50 fine-tuning step likewise,
//! BENCHMARKS.md). Written with `narrow`, `cat` and `matmul`, both directions are large,
//! well-shaped GEMMs (matmul's backward) plus copies. Depthwise 1-D convolutions (one group
//! per channel) are a weighted sum of K shifted views. The unit tests compare both with burn's
//! convolutions, forward and backward; tests/dense/model.rs and tests/finetune_golden.rs the
//! whole models with the official ones.

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
        // [B, C, K, T_out] → [B·T_out, C·K] (the weight's flattening order), times [C·K, O].
        let cols = Tensor::stack::<4>((0..k).map(view).collect(), 2)
            .reshape([b, c * k, t_out])
            .swap_dims(1, 2)
            .reshape([b * t_out, c * k]);
        let w = weight.reshape([o, c * k]).transpose();
        cols.matmul(w).reshape([b, t_out, o]).swap_dims(1, 2)
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

/// `x [B, C, H, W]`, `weight [O, C, KH, KW]`, optional `bias [O]`, zero padding `padding` on
/// all sides, the same `stride` both ways → `[B, O, H_out, W_out]` (no groups, no dilation).
pub fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    stride: usize,
    padding: usize,
) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let [o, c_in, kh, kw] = weight.dims();
    assert_eq!(
        c_in, c,
        "conv2d: weight has {c_in} input channels, x has {c}"
    );
    let (ho, wo) = (
        (h + 2 * padding - kh) / stride + 1,
        (w + 2 * padding - kw) / stride + 1,
    );
    let x = if padding > 0 {
        let device = x.device();
        let zh = Tensor::<4>::zeros([b, c, padding, w], &device);
        let x = Tensor::cat(vec![zh.clone(), x, zh], 2);
        let zw = Tensor::<4>::zeros([b, c, h + 2 * padding, padding], &device);
        Tensor::cat(vec![zw.clone(), x, zw], 3)
    } else {
        x
    };
    // Tap (i, j): the inputs it sees at every output position, [B, C, H_out, W_out].
    let view = |i: usize, j: usize| -> Tensor<4> {
        let v = x
            .clone()
            .narrow(2, i, (ho - 1) * stride + 1)
            .narrow(3, j, (wo - 1) * stride + 1);
        if stride == 1 {
            return v;
        }
        let device = v.device();
        let [_, _, vh, _] = v.dims();
        let v = Tensor::cat(
            vec![
                v,
                Tensor::zeros([b, c, ho * stride - vh, (wo - 1) * stride + 1], &device),
            ],
            2,
        );
        let v = Tensor::cat(
            vec![
                v,
                Tensor::zeros(
                    [b, c, ho * stride, wo * stride - ((wo - 1) * stride + 1)],
                    &device,
                ),
            ],
            3,
        );
        v.reshape([b, c, ho, stride, wo, stride])
            .narrow(3, 0, 1)
            .narrow(5, 0, 1)
            .reshape([b, c, ho, wo])
    };
    let k = kh * kw;
    let cols = if k == 1 {
        view(0, 0).reshape([b, c, ho * wo])
    } else {
        let taps: Vec<Tensor<4>> = (0..kh)
            .flat_map(|i| (0..kw).map(move |j| (i, j)))
            .map(|(i, j)| view(i, j))
            .collect();
        Tensor::stack::<5>(taps, 2).reshape([b, c * k, ho * wo])
    };
    // [B·H_out·W_out, C·K] times [C·K, O] (the weight's flattening order: c, then i, j).
    let cols = cols.swap_dims(1, 2).reshape([b * ho * wo, c * k]);
    let out = cols
        .matmul(weight.reshape([o, c * k]).transpose())
        .reshape([b, ho * wo, o])
        .swap_dims(1, 2)
        .reshape([b, o, ho, wo]);
    match bias {
        Some(bias) => out + bias.reshape([1, o, 1, 1]),
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

#[cfg(test)]
mod tests_2d {
    use burn::tensor::module::conv2d as burn_conv2d;
    use burn::tensor::ops::ConvOptions;
    use burn::tensor::{Device, Distribution, Tensor};

    #[test]
    fn equals_burns_conv2d_forward_and_backward() {
        let device = Device::default().autodiff();
        device.seed(5);
        // (C, O, K, stride, padding, H, W): ResNet's 3×3, strided 3×3, 1×1, strided 1×1, 7×7 stem.
        let cases = [
            (3, 4, 3, 1, 1, 6, 5),
            (4, 5, 3, 2, 1, 7, 6),
            (5, 3, 1, 1, 0, 4, 4),
            (4, 6, 1, 2, 0, 6, 6),
            (3, 2, 7, 2, 3, 9, 8),
        ];
        for (c, o, k, stride, pad, h, w) in cases {
            let x = Tensor::<4>::random([2, c, h, w], Distribution::Normal(0.0, 1.0), &device)
                .require_grad();
            let wt = Tensor::<4>::random([o, c, k, k], Distribution::Normal(0.0, 1.0), &device)
                .require_grad();
            let bias =
                Tensor::<1>::random([o], Distribution::Normal(0.0, 1.0), &device).require_grad();
            let ours = super::conv2d(x.clone(), wt.clone(), Some(bias.clone()), stride, pad);
            let reference = burn_conv2d(
                x.clone(),
                wt.clone(),
                Some(bias.clone()),
                ConvOptions::new([stride, stride], [pad, pad], [1, 1], 1),
            );
            assert_eq!(ours.dims(), reference.dims(), "case {c} {o} {k} {stride}");
            let close = |a: Vec<f32>, b: Vec<f32>, what: &str| {
                let err = a
                    .iter()
                    .zip(&b)
                    .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                assert!(
                    err < 1e-3,
                    "{what} (c {c}, o {o}, k {k}, stride {stride}): {err}"
                );
            };
            close(
                crate::to_vec(ours.clone().inner()),
                crate::to_vec(reference.clone().inner()),
                "forward",
            );
            let g = Tensor::<4>::random(ours.dims(), Distribution::Normal(0.0, 1.0), &device);
            let ga = (ours * g.clone()).sum().backward();
            let gb = (reference * g).sum().backward();
            close(
                crate::to_vec(x.grad(&ga).unwrap()),
                crate::to_vec(x.grad(&gb).unwrap()),
                "input gradient",
            );
            close(
                crate::to_vec(wt.grad(&ga).unwrap()),
                crate::to_vec(wt.grad(&gb).unwrap()),
                "weight gradient",
            );
            close(
                crate::to_vec(bias.grad(&ga).unwrap()),
                crate::to_vec(bias.grad(&gb).unwrap()),
                "bias gradient",
            );
        }
    }
}
