//! Choosing the compute device at run time: `cpu` (burn's `flex` backend) or `cuda[:N]`
//! (with the `cuda` cargo feature).

use anyhow::{Result, bail};
use burn::tensor::Device;

pub fn parse_device(name: &str) -> Result<Device> {
    match name {
        "cpu" | "flex" => Ok(Device::flex()),
        s if s == "cuda" || s.starts_with("cuda:") => cuda(s.strip_prefix("cuda:").unwrap_or("0")),
        other => bail!("unknown device `{other}`: use `cpu` or `cuda[:N]`"),
    }
}

#[cfg(feature = "cuda")]
fn cuda(index: &str) -> Result<Device> {
    let i: usize = index
        .parse()
        .map_err(|_| anyhow::anyhow!("bad CUDA device index `{index}`"))?;
    Ok(Device::cuda(i))
}

#[cfg(not(feature = "cuda"))]
fn cuda(_index: &str) -> Result<Device> {
    bail!(
        "this `cace` was built without CUDA support: rebuild with `cargo build --release --features cuda`"
    )
}
