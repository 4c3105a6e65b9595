//! A lower bound of the memory a config needs, checked before a run allocates anything.
//!
//! Size-like keys (`model.width`, `model.proj_*`, `augment.size`, `train.batch_size`,
//! `augment.blur.kernel_frac`, `eval.bias_views`, `data.prefetch`, …) can ask for more memory
//! than any machine has; the allocator then aborts the process (no error, a backtrace, exit code
//! 134). [`estimate`] adds up the largest buffers a run must hold at once — parameters with their
//! gradients and optimiser state, the activations of one training step kept for the backward
//! pass, the input batches queued by the pipeline, one blur kernel with its padding, the
//! evaluation features — counting only what is certainly allocated, so the sum is a lower bound.
//! [`check`] refuses a config whose bound exceeds the machine's memory (`MemTotal` of
//! `/proc/meminfo`), naming the key behind the largest term and the numbers. On a GPU, the
//! parameters and activations live in device memory, which the device reports itself; only the
//! host terms are checked then.

use crate::augment::blur_kernel_size;
use crate::config::{Arch, Config, DatasetName, OptimName, Stem, Transform};
use anyhow::{bail, Result};

/// One term of the estimate: what it is, the keys that size it, bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    pub what: &'static str,
    pub keys: &'static str,
    pub bytes: f64,
    /// Held in device memory when the run is on a GPU.
    pub on_device: bool,
}

const F32: f64 = 4.0;

/// ResNet shape of `cfg.model`: (parameter count, activation floats per view of side `size`).
fn resnet(cfg: &Config, size: f64) -> (f64, f64) {
    let m = &cfg.model;
    let w = m.width as f64;
    let (bottleneck, depths) = if m.arch == Arch::Resnet50 {
        (true, [3.0, 4.0, 6.0, 3.0])
    } else {
        (false, [2.0, 2.0, 2.0, 2.0])
    };
    let imagenet = m.stem == Stem::Imagenet;
    let k = if imagenet { 7.0 } else { 3.0 };
    let mut params = 3.0 * w * k * k + 2.0 * w;
    // Conv and batch-norm outputs are both kept for the backward pass.
    let stem_side = if imagenet { (size / 2.0).ceil() } else { size };
    let mut acts = 2.0 * w * stem_side * stem_side;
    let mut side = if imagenet {
        (stem_side / 2.0).ceil()
    } else {
        stem_side
    };
    let expansion = if bottleneck { 4.0 } else { 1.0 };
    let mut cin = w;
    for (stage, depth) in depths.iter().enumerate() {
        let planes = w * f64::from(1u32 << stage);
        let cout = planes * expansion;
        for i in 0..*depth as usize {
            let stride2 = stage > 0 && i == 0;
            let in_plane = side * side;
            if stride2 {
                side = (side / 2.0).ceil();
            }
            let plane = side * side;
            if bottleneck {
                params += cin * planes + planes * planes * 9.0 + planes * cout + 2.0 * (2.0 * planes + cout);
                acts += 2.0 * (planes * in_plane + planes * plane + cout * plane);
            } else {
                params += cin * planes * 9.0 + planes * planes * 9.0 + 2.0 * 2.0 * planes;
                acts += 2.0 * 2.0 * planes * plane;
            }
            if stride2 || cin != cout {
                params += cin * cout + 2.0 * cout;
                acts += 2.0 * cout * plane;
            }
            cin = cout;
        }
    }
    let (h, d) = (m.proj_hidden as f64, m.proj_dim as f64);
    params += cin * h + 2.0 * h + h * d + d;
    (params, acts)
}

/// The terms of the lower bound for `cfg` (see the module doc).
pub fn estimate(cfg: &Config) -> Vec<Term> {
    let size = cfg.augment.size as f64;
    let image = 3.0 * size * size * F32;
    let views = 2.0 * cfg.train.batch_size as f64;
    let (params, acts) = resnet(cfg, size);
    let feat_dim = {
        let w = cfg.model.width as f64 * 8.0;
        if cfg.model.arch == Arch::Resnet50 {
            w * 4.0
        } else {
            w
        }
    };
    // Parameters, gradients and the optimiser's state (momentum; AdamW keeps two moments).
    let copies = if cfg.optim.name == OptimName::Adamw {
        4.0
    } else {
        3.0
    };
    let mut terms = vec![
        Term {
            what: "parameters, gradients and optimiser state",
            keys: "model.width, model.proj_hidden, model.proj_dim",
            bytes: params * copies * F32,
            on_device: true,
        },
        Term {
            what: "activations of one training step (2 views per image)",
            keys: "train.batch_size, augment.size, model.width",
            bytes: views * acts * F32,
            on_device: true,
        },
        Term {
            what: "the augmented input batch",
            keys: "train.batch_size, augment.size",
            bytes: views * image,
            on_device: false,
        },
    ];
    if let Some(prefetch) = cfg.data.prefetch {
        terms.push(Term {
            what: "batches decoded ahead",
            keys: "data.prefetch, train.batch_size, augment.size",
            bytes: prefetch as f64 * views * image,
            on_device: false,
        });
    }
    let blur = cfg.augment.add.contains(&Transform::Blur) && !cfg.augment.remove.contains(&Transform::Blur);
    if blur {
        // Kernel, padded row (f32) and row index table (usize) of one blur.
        let k = blur_kernel_size(cfg.augment.size, cfg.augment.blur.kernel_frac) as f64;
        terms.push(Term {
            what: "the blur kernel and its padding",
            keys: "augment.blur.kernel_frac, augment.size",
            bytes: k * (F32 + F32 + 8.0),
            on_device: false,
        });
    }
    let e = &cfg.eval;
    if e.bias_views > 0 && e.bias_images > 0 {
        terms.push(Term {
            what: "prototype-bias features (images × views)",
            keys: "eval.bias_images, eval.bias_views, model.width",
            bytes: e.bias_images as f64 * e.bias_views as f64 * feat_dim * F32,
            on_device: false,
        });
    }
    // The official training split of CIFAR (folder datasets: unknown before listing).
    let full_split =
        matches!(cfg.data.dataset, DatasetName::Cifar10 | DatasetName::Cifar100).then_some(50_000.0);
    let bank = e.train_images.map(|n| n as f64).or(full_split);
    if let Some(n) = bank {
        terms.push(Term {
            what: "evaluation features of the probe/kNN bank",
            keys: "eval.train_images, model.width",
            bytes: n * feat_dim * F32,
            on_device: false,
        });
    }
    terms
}

/// `MemTotal` of `/proc/meminfo`, in bytes (None where it cannot be read).
pub fn mem_total() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0)
}

fn gb(bytes: f64) -> String {
    format!("{:.3} GB", bytes / 1e9)
}

/// Refuses `cfg` when the lower bound of its memory (host terms only when `on_gpu`) exceeds
/// `available` bytes; the error names the keys of the largest term and both numbers.
pub fn check_against(cfg: &Config, on_gpu: bool, available: f64, source: &str) -> Result<()> {
    let terms: Vec<Term> = estimate(cfg)
        .into_iter()
        .filter(|t| !(on_gpu && t.on_device))
        .collect();
    let total: f64 = terms.iter().map(|t| t.bytes).sum();
    if total <= available {
        return Ok(());
    }
    let largest = terms
        .iter()
        .max_by(|a, b| a.bytes.total_cmp(&b.bytes))
        .expect("the estimate has terms");
    bail!(
        "the config needs at least {} of memory but the machine has {} ({source}): the largest part \
         is {} ({}), set by `{}`",
        gb(total),
        gb(available),
        largest.what,
        gb(largest.bytes),
        largest.keys
    )
}

/// [`check_against`] the machine's memory ([`mem_total`]); no check where it is unknown.
pub fn check(cfg: &Config, on_gpu: bool) -> Result<()> {
    match mem_total() {
        Some(total) => check_against(cfg, on_gpu, total, "MemTotal in /proc/meminfo"),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load;
    use crate::model::SimClrModel;

    #[test]
    fn parameter_count_matches_the_built_model() {
        // The estimate's parameter count is the model's own, for both architectures and stems.
        for sets in [
            vec!["model.width=8"],
            vec!["model.width=4", "model.arch=resnet50", "model.stem=imagenet"],
            vec!["model.width=6", "model.proj_hidden=32", "model.proj_dim=16"],
        ] {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            let cfg = load(None, &sets).unwrap();
            let model = SimClrModel::new(&cfg.model, 0).unwrap();
            let (params, _) = resnet(&cfg, 32.0);
            assert_eq!(params as usize, model.params.count(), "{sets:?}");
        }
    }

    #[test]
    fn huge_sizes_are_refused_naming_the_key() {
        // The values (above the static bounds too, set here behind `validate`'s back)
        // and sizes within the bounds that are too big for a 64 GiB machine.
        let gib64 = 64.0 * (1u64 << 30) as f64;
        let base = ["augment.add=[blur]".to_string()];
        type Edit = (&'static str, fn(&mut Config));
        let edits: [Edit; 7] = [
            ("model.width", |c| c.model.width = 1_000_000_000),
            ("model.width", |c| c.model.width = 4096),
            ("augment.blur.kernel_frac", |c| c.augment.blur.kernel_frac = 1e9),
            ("augment.size", |c| c.augment.size = 4096),
            ("augment.size", |c| c.augment.size = 1024),
            ("train.batch_size", |c| c.train.batch_size = 100_000_000),
            ("eval.bias_views", |c| c.eval.bias_views = 1_000_000_000),
        ];
        for (key, edit) in edits {
            let mut cfg = load(None, &base).unwrap();
            edit(&mut cfg);
            let msg = format!("{:#}", check_against(&cfg, false, gib64, "test").unwrap_err());
            assert!(msg.contains(key) && msg.contains("68.719 GB"), "{key}: {msg}");
        }
        // The defaults and the paper's ImageNet shape fit; the machine check passes the defaults.
        let cfg = load(None, &base).unwrap();
        check_against(&cfg, false, gib64, "test").unwrap();
        check(&cfg, false).unwrap();
        let r50 = load(
            None,
            &[
                "model.arch=resnet50".into(),
                "model.stem=imagenet".into(),
                "augment.size=224".into(),
            ],
        )
        .unwrap();
        check_against(&r50, false, 512.0 * (1u64 << 30) as f64, "test").unwrap();
        // On a GPU, parameters and activations are the device's: a huge width passes the host check.
        let mut wide = load(None, &[]).unwrap();
        wide.model.width = 20_000;
        assert!(check_against(&wide, false, gib64, "test").is_err());
        check_against(&wide, true, gib64, "test").unwrap();
    }
}
