//! The golden run that ties the training numerics to [`NUMERICS_VERSION`].
//!
//! A tiny fixed run (`tests/golden/config.yaml` on the synthetic CIFAR-10 of
//! `tests/golden/shared.rs`: a width-8 ResNet-18 on the custom CPU kernels, every augmentation
//! transform, the seeded initialisation, the balanced loss, SGD with warm-up and cosine decay)
//! is trained for 6 steps on 1 and on 2 threads. The two must be bit-identical; their per-step
//! losses (f32 bits) and the SHA-256 of the final parameters and batch-norm statistics must
//! equal those recorded in `tests/golden/numerics.json` for the current numerics version and
//! CPU path. Numbers that change while the version does not fail the test with what to do:
//! bump [`NUMERICS_VERSION`] (cached grid cells are then retrained) and regenerate the file
//! with `PROTOCLR_BLESS=1 cargo test -p protoclr-train --test golden_numerics`. Blessing
//! refuses to overwrite the numbers of an unchanged version.
//!
//! The loop below is the step of `protoclr_train::run::train` (sample order and views from
//! `TrainSource::epoch`, `SimClrModel::train_step`, `Optimizer::step` at `lr_at`), without the
//! checkpoints and the evaluation. `crates/cli/tests/determinism.rs` checks that the real
//! `protoclr train` run of the same config logs the same per-step losses, so the two cannot
//! drift apart unnoticed.

#[path = "golden/shared.rs"]
mod shared;

use candle_core::{Device, Tensor};
use protoclr_train::augment::Pipeline;
use protoclr_train::config::{self, Config};
use protoclr_train::loss;
use protoclr_train::model::SimClrModel;
use protoclr_train::optim::{lr_at, Optimizer};
use protoclr_train::source::TrainSource;
use protoclr_train::NUMERICS_VERSION;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

/// `tests/golden/numerics.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Golden {
    numerics_version: u32,
    about: String,
    records: Vec<Record>,
}

/// The golden numbers of one CPU path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    cpu_path: String,
    /// Per-step losses as f32 bit patterns (hex), the exact values.
    loss_bits: Vec<String>,
    /// The same losses in decimal, for reading.
    losses: Vec<f32>,
    weights_sha256: String,
}

/// What one run computes.
#[derive(Debug, PartialEq)]
struct Run {
    losses: Vec<f32>,
    weights_sha256: String,
}

fn golden_config() -> Config {
    config::load(Some(&shared::golden_dir().join("config.yaml")), &[]).unwrap()
}

/// SHA-256 over the parameters and batch-norm statistics, by name in sorted order: the name,
/// the shape, then the values as little-endian f32.
fn weights_sha256(model: &SimClrModel) -> String {
    let state = model.state().unwrap();
    let mut names: Vec<&String> = state.keys().collect();
    names.sort();
    let mut h = Sha256::new();
    for name in names {
        let t = &state[name];
        h.update(format!("{name} {:?}\n", t.dims()));
        for v in t.flatten_all().unwrap().to_vec1::<f32>().unwrap() {
            h.update(v.to_le_bytes());
        }
    }
    hex::encode(h.finalize())
}

/// The golden run on the current rayon pool (mirrors the loop of `run::train`).
fn train_golden(cfg: &Config, data_root: &Path) -> Run {
    let source = TrainSource::open(cfg, data_root).unwrap();
    let (mean, std) = source.mean_std(&cfg.data.dataset);
    let pipeline = Pipeline::new(&cfg.augment, mean, std).unwrap();
    let model = SimClrModel::new(&cfg.model, cfg.seed).unwrap();
    assert!(
        model.encoder.custom,
        "the golden run must use the custom CPU kernels"
    );
    let mut opt = Optimizer::new(&cfg.optim);
    let b = cfg.train.batch_size;
    let steps = (source.n_train() / b).min(cfg.train.steps_per_epoch.unwrap_or(usize::MAX));
    let total = steps * cfg.train.epochs;
    let warmup = (cfg.optim.warmup_epochs * steps as f64).round() as usize;
    let (alpha, lambda) = cfg.loss_weights();
    let size = cfg.augment.size;
    let mut losses = vec![];
    for epoch in 0..cfg.train.epochs {
        let mut batches = source.epoch(cfg, &pipeline, epoch, steps);
        for step in 0..steps {
            let (buf, _) = batches.next_batch().unwrap();
            let x = Tensor::from_vec(buf, (2 * b, 3, size, size), &Device::Cpu).unwrap();
            let out = model
                .train_step(&x, |z| {
                    loss::balanced(z, cfg.loss.tau, alpha, lambda, cfg.loss.decoupled)
                })
                .unwrap();
            let grads = out.grads.expect("finite loss");
            let lr = lr_at(cfg.optim.lr, epoch * steps + step, total, warmup);
            opt.step(&model.params.vars, grads, lr)
                .unwrap()
                .expect("finite gradients");
            losses.push(out.loss);
        }
    }
    Run {
        losses,
        weights_sha256: weights_sha256(&model),
    }
}

fn on_threads(threads: usize, f: impl FnOnce() -> Run + Send) -> Run {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

fn record_of(run: &Run) -> Record {
    Record {
        cpu_path: shared::cpu_path(),
        loss_bits: run
            .losses
            .iter()
            .map(|l| format!("{:#010x}", l.to_bits()))
            .collect(),
        losses: run.losses.clone(),
        weights_sha256: run.weights_sha256.clone(),
    }
}

fn golden_path() -> std::path::PathBuf {
    shared::golden_dir().join("numerics.json")
}

fn read_golden() -> Option<Golden> {
    let text = std::fs::read_to_string(golden_path()).ok()?;
    Some(serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "{}: not a golden file ({e}); regenerate with `{}`",
            golden_path().display(),
            shared::BLESS
        )
    }))
}

/// Records `rec` for the current version: added beside the records of other CPU paths of the
/// same version, or replacing a file of another version. Refuses to change the numbers of a
/// version and path already recorded.
fn bless(rec: &Record) {
    let old = read_golden().filter(|g| g.numerics_version == NUMERICS_VERSION);
    let mut records = old.map(|g| g.records).unwrap_or_default();
    match records.iter().position(|r| r.cpu_path == rec.cpu_path) {
        Some(i) if records[i] == *rec => {
            eprintln!(
                "golden file already up to date for version {NUMERICS_VERSION}, {}",
                rec.cpu_path
            );
            return;
        }
        Some(_) => panic!(
            "refusing to bless: {} already records other numbers for NUMERICS_VERSION \
             {NUMERICS_VERSION} on this CPU path ({}). Numbers that change need a new version: bump \
             NUMERICS_VERSION in crates/train/src/lib.rs (cached grid cells will be retrained), then \
             bless again.",
            golden_path().display(),
            rec.cpu_path
        ),
        None => records.push(rec.clone()),
    }
    let golden = Golden {
        numerics_version: NUMERICS_VERSION,
        about: format!(
            "Golden numbers of crates/train/tests/golden_numerics.rs (config.yaml, 6 steps on \
             synthetic CIFAR-10), one record per CPU path. Regenerate after bumping \
             protoclr_train::NUMERICS_VERSION: {}",
            shared::BLESS
        ),
        records,
    };
    let path = golden_path();
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&golden).unwrap() + "\n").unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    eprintln!(
        "wrote {} (version {NUMERICS_VERSION}, {})",
        path.display(),
        rec.cpu_path
    );
}

fn first_difference(got: &Record, want: &Record) -> String {
    for (step, (g, w)) in got.loss_bits.iter().zip(&want.loss_bits).enumerate() {
        if g != w {
            return format!(
                "step {}: loss {} ({g}), recorded {} ({w})",
                step + 1,
                got.losses[step],
                want.losses[step]
            );
        }
    }
    if got.loss_bits.len() != want.loss_bits.len() {
        return format!("{} steps, recorded {}", got.loss_bits.len(), want.loss_bits.len());
    }
    format!(
        "equal losses, final weights SHA-256 {} where {} is recorded",
        got.weights_sha256, want.weights_sha256
    )
}

#[test]
fn golden_run_matches_the_numerics_version() {
    let tmp = tempfile::tempdir().unwrap();
    shared::write_cifar10(tmp.path());
    let cfg = golden_config();
    let one = on_threads(1, || train_golden(&cfg, tmp.path()));
    let two = on_threads(2, || train_golden(&cfg, tmp.path()));
    assert_eq!(
        one, two,
        "the golden run differs between 1 and 2 threads: results must not depend on the thread \
         count (a determinism bug, not a reason to bump NUMERICS_VERSION)"
    );
    assert!(one.losses.iter().all(|l| l.is_finite()), "{:?}", one.losses);
    assert!(
        one.losses.windows(2).any(|w| w[0] != w[1]),
        "the loss does not change: {:?}",
        one.losses
    );
    let rec = record_of(&one);
    if std::env::var("PROTOCLR_BLESS").is_ok_and(|v| v == "1") {
        bless(&rec);
        return;
    }
    let golden = read_golden().unwrap_or_else(|| {
        panic!(
            "{} is missing; create it with `{}`",
            golden_path().display(),
            shared::BLESS
        )
    });
    assert!(
        golden.numerics_version == NUMERICS_VERSION,
        "{} holds the numbers of NUMERICS_VERSION {}, the code is at {NUMERICS_VERSION}: after a \
         bump, regenerate it with `{}`",
        golden_path().display(),
        golden.numerics_version,
        shared::BLESS
    );
    let same_numbers = |r: &&Record| r.loss_bits == rec.loss_bits && r.weights_sha256 == rec.weights_sha256;
    let Some(want) = golden.records.iter().find(|r| r.cpu_path == rec.cpu_path) else {
        if let Some(r) = golden.records.iter().find(same_numbers) {
            // Another label (e.g. other cache sizes) but the same numbers: this path is pinned.
            eprintln!(
                "golden numbers equal those recorded on `{}` (this machine: `{}`)",
                r.cpu_path, rec.cpu_path
            );
            return;
        }
        let known: Vec<&str> = golden.records.iter().map(|r| r.cpu_path.as_str()).collect();
        panic!(
            "no golden numbers for this CPU path `{}` (recorded: {known:?}). The numbers depend on \
             the CPU: the direct convolution kernels run only with AVX-512F (elsewhere im2col + \
             gemm sums in another order) and the gemm crate picks its kernels and blocking by CPU \
             feature and cache size, so runs on this machine are not bit-comparable with the \
             recorded ones. To pin this path too, add its record (the recorded ones are kept) with \
             `{}`.",
            rec.cpu_path,
            shared::BLESS
        )
    };
    assert!(
        rec == *want,
        "the training numerics changed while NUMERICS_VERSION is still {NUMERICS_VERSION} ({}). \
         If the change is intended, bump NUMERICS_VERSION in crates/train/src/lib.rs (cached grid \
         cells will no longer be found and will be retrained) and regenerate the golden file with \
         `{}`. If it is not intended, the change broke bit-reproducibility.",
        first_difference(&rec, want),
        shared::BLESS
    );
}
