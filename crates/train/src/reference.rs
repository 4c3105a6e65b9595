//! The random-init reference's evaluation, computed once and shared by the runs that would
//! compute the same one (`eval.random_init_reference`; `protoclr train --reference-cache DIR`).
//!
//! The reference encoder is a fresh initialisation under `seed` and `model`, scored by the run's
//! own protocol ([`crate::protocol`]). Nothing it computes depends on what the run trains with, so
//! every cell of an α × λ grid with the same seed scores the same reference: about a tenth of a
//! cpu-profile cell's time, spent again in each. With a cache folder, the first run stores its
//! [`EvalResult`] under a key and the others read it back.
//!
//! The key is the SHA-256 of everything the reference can depend on ([`inputs`]): the config
//! without `optim`, `train` and the loss's training choices (`loss.tau` stays: the theorem bounds
//! use it), the dataset fingerprint, [`crate::NUMERICS_VERSION`], the device, the worker threads
//! and the SHA-256 of the running executable. The last one makes a cached entry valid only for
//! the binary that wrote it, so a change of the evaluation code can never be answered from an
//! older entry; a grid run (one binary) still computes each reference once. An entry that cannot
//! be read, does not parse or does not repeat its key is ignored and written again; entries are
//! written atomically, so concurrent runs that compute the same one both write the same bytes.

use crate::config::Config;
use crate::metrics::EvalResult;
use anyhow::{Context, Result};
use protoclr_formats::fsutil::atomic_write;
use protoclr_formats::sha256_hex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Format of a cache entry.
const FORMAT: u32 = 1;

/// The loss keys that shape training only; every other `loss` key stays in the key.
const TRAINING_ONLY_LOSS_KEYS: [&str; 7] =
    ["name", "alpha", "lambda", "decoupled", "max", "prototypes", "ema"];

/// One cache file, `<dir>/<key>.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    format: u32,
    key: String,
    /// What the key is the hash of (for a reader who wants to know).
    inputs: Value,
    reference: EvalResult,
}

/// SHA-256 of the running executable (once per process).
fn executable_sha256() -> Result<String> {
    static SHA: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    SHA.get_or_init(|| {
        let exe = protoclr_formats::fsutil::running_executable()
            .map_err(|e| format!("cannot locate the running executable: {e}"))?;
        protoclr_formats::sha256_of_file(&exe).map_err(|e| format!("{e:#}"))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// What the reference evaluation of a run with `cfg` can depend on: the config less what only
/// training reads, and the run's context (dataset `fingerprint`, `device`, `threads`).
pub fn inputs(cfg: &Config, fingerprint: &str, device: &str, threads: usize) -> Result<Value> {
    let mut c = serde_json::to_value(cfg).context("cannot serialise the config")?;
    let obj = c.as_object_mut().context("the config is not a mapping")?;
    obj.remove("optim");
    obj.remove("train");
    if let Some(loss) = obj.get_mut("loss").and_then(Value::as_object_mut) {
        for k in TRAINING_ONLY_LOSS_KEYS {
            loss.remove(k);
        }
    }
    Ok(serde_json::json!({
        "config": c,
        "dataset_fingerprint": fingerprint,
        "numerics_version": crate::NUMERICS_VERSION,
        "device": device,
        "threads": threads,
        "executable_sha256": executable_sha256()?,
    }))
}

/// The cache key of `inputs` (serde_json writes object keys sorted, so the text is canonical).
pub fn key(inputs: &Value) -> String {
    sha256_hex(inputs.to_string().as_bytes())
}

fn entry_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{key}.json"))
}

/// The cached reference under `key`, if a valid entry exists.
pub fn load(dir: &Path, key: &str) -> Option<EvalResult> {
    let bytes = std::fs::read(entry_path(dir, key)).ok()?;
    let e: Entry = serde_json::from_slice(&bytes).ok()?;
    (e.format == FORMAT && e.key == key && self::key(&e.inputs) == key).then_some(e.reference)
}

/// Stores `reference` under the key of `inputs`, atomically.
pub fn store(dir: &Path, inputs: &Value, reference: &EvalResult) -> Result<()> {
    let key = key(inputs);
    let entry = Entry {
        format: FORMAT,
        key: key.clone(),
        inputs: inputs.clone(),
        reference: reference.clone(),
    };
    let mut text = serde_json::to_string_pretty(&entry)?;
    text.push('\n');
    atomic_write(&entry_path(dir, &key), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(linear: f64) -> EvalResult {
        serde_json::from_value(serde_json::json!({
            "linear_top1": linear, "linear_top5": 90.0, "knn_top1": 30.0, "knn_top5": 80.0,
            "bias_l2": 0.06, "bias_l2_ci95": [0.05, 0.07], "bias_cos": 0.002, "bias_cos_ci95": null,
            "n_train": 100, "n_test": 100
        }))
        .unwrap()
    }

    fn key_of(edit: impl FnOnce(&mut Config)) -> String {
        let mut cfg = Config::default();
        edit(&mut cfg);
        key(&inputs(&cfg, "fp", "cpu", 2).unwrap())
    }

    #[test]
    fn training_choices_share_a_key_and_evaluation_inputs_do_not() {
        let base = key_of(|_| {});
        // What only training reads: one reference for all of them.
        assert_eq!(base, key_of(|c| c.loss.alpha = 0.5));
        assert_eq!(base, key_of(|c| c.loss.lambda = 1.5));
        assert_eq!(base, key_of(|c| c.optim.lr = 0.01));
        assert_eq!(base, key_of(|c| c.train.epochs = 99));
        // What the reference depends on: its own entry each.
        assert_ne!(base, key_of(|c| c.seed += 1));
        assert_ne!(base, key_of(|c| c.model.width *= 2));
        assert_ne!(base, key_of(|c| c.eval.bias_views += 1));
        assert_ne!(base, key_of(|c| c.augment.flip_p = 0.0));
        assert_ne!(base, key_of(|c| c.loss.tau = 0.2)); // the bounds use τ
        let cfg = Config::default();
        assert_ne!(base, key(&inputs(&cfg, "other data", "cpu", 2).unwrap()));
        assert_ne!(base, key(&inputs(&cfg, "fp", "cpu", 1).unwrap()));
    }

    #[test]
    fn an_entry_round_trips_and_a_bad_one_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let inp = inputs(&Config::default(), "fp", "cpu", 2).unwrap();
        let k = key(&inp);
        assert_eq!(load(dir.path(), &k), None);
        store(dir.path(), &inp, &result(31.5)).unwrap();
        assert_eq!(load(dir.path(), &k), Some(result(31.5)));
        // Under another key's name (a copied or renamed file): not used.
        std::fs::copy(entry_path(dir.path(), &k), entry_path(dir.path(), "other")).unwrap();
        assert_eq!(load(dir.path(), "other"), None);
        // Inputs edited by hand so that they no longer hash to the key: not used.
        let p = entry_path(dir.path(), &k);
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace("\"threads\": 2", "\"threads\": 3");
        std::fs::write(&p, text).unwrap();
        assert_eq!(load(dir.path(), &k), None);
        // Truncated: not used.
        std::fs::write(&p, b"{\"format\": 1, \"key\"").unwrap();
        assert_eq!(load(dir.path(), &k), None);
    }
}
