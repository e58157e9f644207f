//! The training losses (official `libs/modeling/losses.py` and `PtTransformer.losses`):
//! sigmoid focal loss on every valid point and class, the centre-DIoU regression loss on the
//! positive (point, class) pairs, both summed and divided by an EMA of the number of positive
//! points, and combined as `cls + w · reg`.
//!
//! The official code gathers the valid / positive rows with boolean indexing; here every row is
//! computed and weighted by a 0/1 mask, which gives the same sums (and gradients) without
//! dynamic shapes.

use burn::tensor::Tensor;
use burn::tensor::activation::sigmoid;

/// Element-wise sigmoid focal loss (RetinaNet; official `sigmoid_focal_loss` with
/// `reduction="none"`): `α_t · BCE(x, y) · (1 − p_t)^γ`, `p_t = p·y + (1 − p)(1 − y)`,
/// `α_t = α·y + (1 − α)(1 − y)`; the official call uses α 0.25, γ 2.
pub fn sigmoid_focal_loss<const D: usize>(
    logits: Tensor<D>,
    targets: Tensor<D>,
    alpha: f64,
    gamma: f64,
) -> Tensor<D> {
    let p = sigmoid(logits.clone());
    // Stable BCE with logits: max(x, 0) − x·y + log(1 + e^−|x|).
    let ce = logits.clone().clamp_min(0.0) - logits.clone() * targets.clone()
        + logits.abs().neg().exp().log1p();
    let one_minus_y = targets.clone().neg().add_scalar(1.0);
    let p_t = p.clone() * targets.clone() + p.neg().add_scalar(1.0) * one_minus_y.clone();
    let loss = ce * p_t.neg().add_scalar(1.0).powf_scalar(gamma);
    if alpha >= 0.0 {
        let alpha_t = targets.mul_scalar(alpha) + one_minus_y.mul_scalar(1.0 - alpha);
        loss * alpha_t
    } else {
        loss
    }
}

/// Element-wise centre-DIoU loss for 1-D segments given as distances from one point
/// (official `ctr_diou_loss_1d`, eps 1e-8): `pred`, `target` `[..., 2]` (left, right ≥ 0) →
/// `[...]` of `1 − IoU + (ρ / len_c)²`, ρ the centre offset and len_c the enclosing length.
pub fn ctr_diou_loss<const D: usize, const E: usize>(
    pred: Tensor<D>,
    target: Tensor<D>,
) -> Tensor<E> {
    let eps = 1e-8;
    let last = D - 1;
    let split = |x: Tensor<D>| {
        let mut dims = x.dims().to_vec();
        dims.pop();
        let shape: [usize; E] = dims.try_into().expect("E = D - 1");
        (
            x.clone().narrow(last, 0, 1).reshape(shape),
            x.narrow(last, 1, 1).reshape(shape),
        )
    };
    let (lp, rp) = split(pred);
    let (lg, rg) = split(target);
    let lkis = lp.clone().min_pair(lg.clone());
    let rkis = rp.clone().min_pair(rg.clone());
    let intsctk = rkis + lkis;
    let unionk = (lp.clone() + rp.clone()) + (lg.clone() + rg.clone()) - intsctk.clone();
    let iouk = intsctk / unionk.clamp_min(eps);
    let lc = lp.clone().max_pair(lg.clone());
    let rc = rp.clone().max_pair(rg.clone());
    let len_c = lc + rc;
    let rho = (rp - lp - rg + lg).mul_scalar(0.5);
    iouk.neg().add_scalar(1.0) + (rho / len_c.clamp_min(eps)).powi_scalar(2)
}

/// The official EMA of the number of positive points (initial `init_loss_norm`, 250;
/// momentum 0.9), updated once per training step before the losses are divided by it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossNormalizer {
    pub value: f64,
    pub momentum: f64,
}

impl LossNormalizer {
    pub fn new(init: f64) -> Self {
        Self {
            value: init,
            momentum: 0.9,
        }
    }

    pub fn update(&mut self, num_pos: usize) -> f64 {
        self.value = self.momentum * self.value + (1.0 - self.momentum) * num_pos.max(1) as f64;
        self.value
    }
}

/// The three official loss values (scalar tensors `[1]`).
pub struct DenseLosses {
    pub cls: Tensor<1>,
    pub reg: Tensor<1>,
    pub total: Tensor<1>,
    pub num_pos: usize,
}

/// Official `PtTransformer.losses` (class-aware regression):
/// - `cls_logits` per level `[B, T_l, C]`, `offsets` per level `[B, T_l, C, 2]`, `masks` per
///   level `[B, T_l]` (the model's outputs);
/// - `gt_cls` `[B, FT, C]` and `gt_offsets` `[B, FT, C, 2]` ([`super::labels::label_points`]
///   per video, stacked);
/// - `loss_weight` > 0 is the regression weight (UnAV: 1); ≤ 0 balances automatically with
///   `cls / max(reg, 0.01)` (values only, no gradient through the weight);
/// - `label_smoothing` ε: targets `y·(1 − ε) + ε/(C + 1)` (UnAV: 0).
pub fn dense_losses(
    cls_logits: &[Tensor<3>],
    offsets: &[Tensor<4>],
    masks: &[Tensor<2>],
    gt_cls: Tensor<3>,
    gt_offsets: Tensor<4>,
    normalizer: &mut LossNormalizer,
    loss_weight: f64,
    label_smoothing: f64,
) -> DenseLosses {
    let valid = Tensor::cat(masks.to_vec(), 1); // [B, FT]
    let num_classes = gt_cls.dims()[2];
    let has_label = gt_cls
        .clone()
        .sum_dim(2)
        .squeeze_dim::<2>(2)
        .greater_elem(0.0)
        .float();
    let pos = has_label * valid.clone(); // [B, FT]
    let num_pos = crate::to_vec(pos.clone().sum())[0].round() as usize;
    let norm = normalizer.update(num_pos);

    // 1. Classification: focal loss summed over valid points and all classes.
    let logits = Tensor::cat(cls_logits.to_vec(), 1); // [B, FT, C]
    let target = gt_cls
        .mul_scalar(1.0 - label_smoothing)
        .add_scalar(label_smoothing / (num_classes as f64 + 1.0));
    let focal = sigmoid_focal_loss(logits, target, 0.25, 2.0) * valid.unsqueeze_dim::<3>(2);
    let cls = focal.sum().div_scalar(norm);

    // 2. Regression: DIoU over positive points, and within them the classes with a target.
    let pred = Tensor::cat(offsets.to_vec(), 1); // [B, FT, C, 2]
    let reg = if num_pos == 0 {
        pred.sum().mul_scalar(0.0)
    } else {
        let left = gt_offsets.clone().narrow(3, 0, 1).squeeze_dim::<3>(3);
        let right = gt_offsets.clone().narrow(3, 1, 1).squeeze_dim::<3>(3);
        let has_target = left
            .greater_elem(0.0)
            .float()
            .max_pair(right.greater_elem(0.0).float());
        let weight = has_target * pos.unsqueeze_dim::<3>(2); // [B, FT, C]
        let loss: Tensor<3> = ctr_diou_loss(pred, gt_offsets);
        (loss * weight).sum().div_scalar(norm)
    };
    let w = if loss_weight > 0.0 {
        loss_weight
    } else {
        let c = crate::to_vec(cls.clone())[0] as f64;
        let r = crate::to_vec(reg.clone())[0] as f64;
        c / r.max(0.01)
    };
    let total = cls.clone() + reg.clone().mul_scalar(w);
    DenseLosses {
        cls,
        reg,
        total,
        num_pos,
    }
}
