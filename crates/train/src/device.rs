//! The compute device of a run: `cpu` (the default; our custom CPU kernels) or `cuda[:N]`
//! (candle's CUDA backend, in builds with the `cuda` cargo feature).
//!
//! On a CUDA device every layer runs on candle's stock ops ([`crate::model::uses_custom_ops`]);
//! data loading, augmentation, the optimiser update (flat host buffers, one device ↔ host copy of
//! parameters and gradients per step), the linear probe and kNN stay on the host.

use anyhow::{bail, Context, Result};
use candle_core::Device;

/// Parses `cpu`, `cuda` (= `cuda:0`) or `cuda:N` and opens the device. In a build without the
/// `cuda` feature a CUDA device is an error that says how to build one.
pub fn parse(spec: &str) -> Result<Device> {
    match check(spec)? {
        None => Ok(Device::Cpu),
        Some(n) => Device::new_cuda(n)
            .with_context(|| format!("--device {}: cannot open CUDA device {n}", spec.trim())),
    }
}

/// Checks a device spec without opening the device (a Slurm login node has no GPU): `None` for
/// the CPU, the CUDA ordinal otherwise. Errors on a malformed spec, and on a CUDA device in a
/// build without the `cuda` feature.
pub fn check(spec: &str) -> Result<Option<usize>> {
    let s = spec.trim();
    if s.eq_ignore_ascii_case("cpu") {
        return Ok(None);
    }
    let ordinal = match s.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => match rest.strip_prefix(':').map(str::parse::<usize>) {
            Some(Ok(n)) => n,
            _ => bail!("--device `{spec}`: expected `cpu`, `cuda` or `cuda:N` (N = 0, 1, …)"),
        },
        None => bail!("--device `{spec}`: expected `cpu`, `cuda` or `cuda:N` (N = 0, 1, …)"),
    };
    if !cfg!(feature = "cuda") {
        bail!(
            "--device {s}: this protoclr was built without CUDA support; rebuild it with \
             `cargo build --release --features cuda --bin protoclr` (README, \"GPU build\")"
        );
    }
    Ok(Some(ordinal))
}

/// `cpu` or `cuda:N`, as recorded in `metrics.json`.
pub fn label(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_rejects_malformed_specs() {
        assert!(parse("cpu").unwrap().is_cpu());
        assert_eq!(check("cpu").unwrap(), None);
        assert!(parse(" CPU ").unwrap().is_cpu());
        assert_eq!(label(&parse("cpu").unwrap()), "cpu");
        for bad in ["gpu", "cuda:", "cuda:x", "cuda0", "cuda:-1", ""] {
            let e = check(bad).unwrap_err().to_string();
            assert!(e.contains("expected `cpu`, `cuda` or `cuda:N`"), "{bad}: {e}");
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_build_it() {
        for spec in ["cuda", "cuda:1"] {
            let e = parse(spec).unwrap_err().to_string();
            assert!(e.contains("--features cuda"), "{e}");
        }
    }
}
