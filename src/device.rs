//! Choosing the compute device at run time: `cpu` (burn's `flex` backend), `cuda[:N]` (with the
//! `cuda` cargo feature), `wgpu[:ADAPTER]` (with `wgpu`) and `vulkan[:ADAPTER]` (with `vulkan`).
//!
//! Every device runs the same model code in f32; none needs f64 (wgpu has none).

use anyhow::{Result, bail};
use burn::tensor::Device;

/// What `--device` accepts, for help texts and error messages.
pub const DEVICES: &str = "`cpu`, `cuda[:N]`, `wgpu[:ADAPTER]` or `vulkan[:ADAPTER]`";

pub fn parse_device(name: &str) -> Result<Device> {
    let (kind, index) = match name.split_once(':') {
        Some((k, i)) => (k, Some(i)),
        None => (name, None),
    };
    match kind {
        "cpu" | "flex" if index.is_none() => Ok(Device::flex()),
        "cuda" => cuda(index.unwrap_or("0")),
        "wgpu" | "vulkan" => wgpu(kind, index),
        _ => bail!("unknown device `{name}`: use {DEVICES}"),
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
        "this `cace` was built without CUDA support: rebuild with `cargo build --release --features cuda` (README, GPU)"
    )
}

/// The adapter after `wgpu:` / `vulkan:` — `N` (the N-th discrete GPU), `integrated[N]`,
/// `virtual[N]` or `cpu` (a software device such as lavapipe); none = wgpu's pick (a
/// high-power GPU if there is one, else whatever adapter exists).
#[cfg(feature = "wgpu")]
fn adapter(spec: Option<&str>) -> Result<burn::tensor::DeviceKind> {
    use burn::tensor::DeviceKind;
    let Some(spec) = spec else {
        return Ok(DeviceKind::DefaultDevice);
    };
    let numbered = |prefix: &str| -> Option<Result<usize>> {
        let n = spec.strip_prefix(prefix)?;
        Some(if n.is_empty() {
            Ok(0)
        } else {
            n.parse()
                .map_err(|_| anyhow::anyhow!("bad adapter index in `{spec}`"))
        })
    };
    Ok(match spec {
        "cpu" => DeviceKind::Cpu,
        _ if spec.bytes().all(|b| b.is_ascii_digit()) && !spec.is_empty() => {
            DeviceKind::DiscreteGpu(spec.parse()?)
        }
        _ => {
            if let Some(i) = numbered("integrated") {
                DeviceKind::IntegratedGpu(i?)
            } else if let Some(i) = numbered("virtual") {
                DeviceKind::VirtualGpu(i?)
            } else {
                bail!(
                    "unknown adapter `{spec}`: use N (discrete GPU), integratedN, virtualN or cpu"
                )
            }
        }
    })
}

#[cfg(feature = "wgpu")]
fn wgpu(kind: &str, spec: Option<&str>) -> Result<Device> {
    let adapter = adapter(spec)?;
    match kind {
        "vulkan" => vulkan(adapter),
        _ => Ok(Device::wgpu(adapter)),
    }
}

#[cfg(all(feature = "wgpu", feature = "vulkan"))]
fn vulkan(adapter: burn::tensor::DeviceKind) -> Result<Device> {
    Ok(Device::vulkan(adapter))
}

#[cfg(all(feature = "wgpu", not(feature = "vulkan")))]
fn vulkan(_adapter: burn::tensor::DeviceKind) -> Result<Device> {
    bail!(
        "this `cace` was built without the `vulkan` feature: use `--device wgpu` (Vulkan through WGSL) or rebuild with `--features vulkan`"
    )
}

#[cfg(not(feature = "wgpu"))]
fn wgpu(kind: &str, _spec: Option<&str>) -> Result<Device> {
    bail!(
        "this `cace` was built without the `{kind}` feature: rebuild with `cargo build --release --features {kind}` (README, GPU)"
    )
}

/// Whether `device` is a GPU whose burn backend has bf16 tensors and products: CUDA or ROCm
/// (HIP). Read from its name, as burn's dispatch device does not say otherwise which runtime
/// holds a cubecl device.
pub fn has_bf16(device: &Device) -> bool {
    let name = format!("{device:?}");
    name.contains("Cuda(") || name.contains("Hip(")
}

/// Whether burn's `flex` CPU backend runs `device` (with or without autodiff).
pub fn is_flex(device: &Device) -> bool {
    let flex = Device::flex();
    *device == flex || *device == flex.autodiff()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_flex_and_unknown_names_are_refused() {
        assert!(is_flex(&parse_device("cpu").unwrap()));
        assert!(is_flex(&parse_device("flex").unwrap().autodiff()));
        for bad in ["gpu", "cpu:0", "cuda:x", "", "wgpu:foo", "tpu:1"] {
            let e = parse_device(bad);
            assert!(e.is_err(), "`{bad}` accepted");
        }
        let msg = parse_device("gpu").unwrap_err().to_string();
        assert!(msg.contains("wgpu[:ADAPTER]"), "{msg}");
    }

    #[cfg(not(feature = "wgpu"))]
    #[test]
    fn wgpu_without_the_feature_says_how_to_get_it() {
        let msg = parse_device("wgpu").unwrap_err().to_string();
        assert!(msg.contains("--features wgpu"), "{msg}");
    }

    #[cfg(feature = "wgpu")]
    #[test]
    fn wgpu_adapters_parse() {
        use burn::tensor::DeviceKind;
        assert_eq!(adapter(None).unwrap(), DeviceKind::DefaultDevice);
        assert_eq!(adapter(Some("1")).unwrap(), DeviceKind::DiscreteGpu(1));
        assert_eq!(adapter(Some("cpu")).unwrap(), DeviceKind::Cpu);
        assert_eq!(
            adapter(Some("integrated")).unwrap(),
            DeviceKind::IntegratedGpu(0)
        );
        assert_eq!(
            adapter(Some("virtual2")).unwrap(),
            DeviceKind::VirtualGpu(2)
        );
        assert!(adapter(Some("integratedx")).is_err());
        // Constructing the device is lazy: no adapter is opened here.
        assert!(!is_flex(&parse_device("wgpu:cpu").unwrap()));
    }
}
