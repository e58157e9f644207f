//! The relation modules', attention blocks' and LSTM input linears (`[rows, d_in] × [d_in,
//! d_out]` at batch 64) timed through our product (`precision::linear_parts`: f32 and bf16)
//! and burn's `linear`, 200 products each after 20 warm-up ones (BENCHMARKS.md, twelfth
//! session: why these layers go through `nn::flat`).
//!
//!     cargo run --release --example linear_shapes

use burn::tensor::{Distribution, Tensor};
use cace_net::precision::{self, Precision};

fn main() {
    cace_net::init_runtime();
    let device = cace_net::device::parse_device("cpu").expect("the CPU device");
    let shapes = [
        (640, 256, 768),
        (640, 256, 1024),
        (640, 1024, 256),
        (1280, 256, 512),
        (640, 512, 1024),
    ];
    for (m, k, n) in shapes {
        let normal =
            |s: [usize; 2]| Tensor::<2>::random(s, Distribution::Normal(0.0, 1.0), &device);
        let (x, w) = (normal([m, k]), normal([k, n]));
        let b = Tensor::<1>::random([n], Distribution::Normal(0.0, 1.0), &device);
        let time = |f: &(dyn Fn() -> Tensor<2> + Sync)| {
            cace_net::pool::run(|| {
                for _ in 0..20 {
                    let _ = f().into_data();
                }
                let start = std::time::Instant::now();
                for _ in 0..200 {
                    let _ = f().into_data();
                }
                start.elapsed().as_secs_f64() * 1e3 / 200.0
            })
        };
        let mut row = format!("{m}×{k}×{n}:");
        for p in [Precision::F32, Precision::Bf16] {
            if precision::check(p, &device).is_err() {
                continue;
            }
            let _scope = precision::scope(p);
            let ours = time(&|| precision::linear_parts(x.clone(), w.clone(), Some(b.clone())));
            row += &format!("  ours {p} {ours:.3} ms");
        }
        let burns = time(&|| burn::tensor::module::linear(x.clone(), w.clone(), Some(b.clone())));
        println!("{row}  burn f32 {burns:.3} ms");
    }
}
