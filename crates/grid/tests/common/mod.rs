//! A fake training backend for the runner tests: the real runner, locks and cache, with
//! `protoclr train` replaced by a bash script that follows `docs/formats.md` (JSON progress lines,
//! checkpoints in the checkpoint folder, resume from them, metrics.json written atomically at the
//! end, exit 0 / 3 / other).

#![allow(dead_code)]

use anyhow::{bail, Result};
use protoclr_grid::value::merge;
use protoclr_grid::Backend;
use serde_norway::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The fake `protoclr train CELL CKPT THREADS`. Config keys (flat): epochs, sleep (seconds per
/// step, two steps an epoch), fail, diverge, x (the linear accuracy, test and validation). Appends `start ID`, `epoch ID N` and `complete ID`
/// lines to `$FAKE_LOG`.
pub const FAKE_TRAIN: &str = r#"#!/bin/bash
set -euo pipefail
cell=$1; ckpt=$2; threads=$3
id=$(basename "$cell")
cfg="$cell/config.yaml"
val() { sed -n "s/^$1: *//p" "$cfg" | head -n 1; }
epochs=$(val epochs); sleep_s=$(val sleep); fail=$(val fail); diverge=$(val diverge); x=$(val x)
mkdir -p "$ckpt"
start=0
if [ -f "$ckpt/epoch" ]; then start=$(cat "$ckpt/epoch"); fi
echo "start $id $start" >> "$FAKE_LOG"
echo "fake train: resuming after epoch $start with $threads threads" >&2
for ((e = start + 1; e <= epochs; e++)); do
  for s in 1 2; do
    echo "{\"event\":\"step\",\"epoch\":$e,\"epochs\":$epochs,\"step\":$s,\"steps\":2,\"loss\":1.5}"
    sleep "$sleep_s"
  done
  echo "$e" > "$ckpt/epoch.tmp"; mv "$ckpt/epoch.tmp" "$ckpt/epoch"
  echo "epoch $id $e" >> "$FAKE_LOG"
  echo "{\"event\":\"epoch\",\"epoch\":$e,\"epochs\":$epochs,\"loss\":1.4,\"images_per_sec\":100.0}"
done
if [ "$fail" = "true" ]; then echo "boom: this cell is configured to fail" >&2; exit 1; fi
status=completed; code=0; eval_json="{\"linear_top1\": $x, \"val_linear_top1\": $x, \"linear_top5\": 90.0, \"knn_top1\": 40.5, \"knn_top5\": 88.0, \"bias_l2\": 0.4, \"bias_l2_ci95\": [0.35, 0.45], \"bias_cos\": 0.1, \"n_train\": 100, \"n_test\": 100}"
if [ "$diverge" = "true" ]; then status=diverged; code=3; eval_json=null; fi
cat > "$cell/.metrics.tmp" <<JSON
{"schema": 1, "status": "$status", "epochs_planned": $epochs, "epochs": [], "eval": $eval_json,
 "reference": null, "diverged": null, "wall_time_s": 2.5, "train_images_per_sec": 100.0,
 "threads": $threads, "git_commit": "test", "dataset": "fake", "dataset_fingerprint": "fp",
 "dataset_verified": true, "protoclr_version": "0.1.0"}
JSON
mv "$cell/.metrics.tmp" "$cell/metrics.json"
echo "complete $id" >> "$FAKE_LOG"
echo "{\"event\":\"done\",\"status\":\"$status\"}"
exit $code
"#;

/// The fake backend: defaults for the flat fake config, unknown keys rejected by name.
pub struct Fake {
    pub script: PathBuf,
    pub log: PathBuf,
    /// What [`Backend::numerics_version`] returns (7 unless changed).
    pub numerics: u32,
}

const KEYS: &[&str] = &["seed", "x", "epochs", "sleep", "fail", "diverge", "group"];

impl Fake {
    /// Writes the script into `dir`.
    pub fn new(dir: &Path) -> Fake {
        let script = dir.join("fake_train.sh");
        std::fs::write(&script, FAKE_TRAIN).unwrap();
        Fake {
            script,
            log: dir.join("fake.log"),
            numerics: 7,
        }
    }

    /// The lines of the fake log.
    pub fn log_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// How many times each cell completed.
    pub fn completions(&self, id: &str) -> usize {
        self.log_lines()
            .iter()
            .filter(|l| **l == format!("complete {id}"))
            .count()
    }
}

impl Backend for Fake {
    fn resolve(&self, partial: Value, origin: &str) -> Result<Value> {
        let mut v: Value =
            serde_norway::from_str("{seed: 0, x: 50, epochs: 2, sleep: 0.01, fail: false, diverge: false}")?;
        if let Some(m) = partial.as_mapping() {
            for (k, _) in m {
                let k = k.as_str().unwrap_or("");
                if !KEYS.contains(&k) {
                    bail!("{origin}: key `{k}`: unknown field");
                }
            }
        }
        merge(&mut v, &partial)?;
        Ok(v)
    }

    fn fingerprint(&self, _resolved: &Value) -> Result<String> {
        Ok("fake-dataset".into())
    }

    fn numerics_version(&self) -> u32 {
        self.numerics
    }

    fn train_command(&self, cell_dir: &Path, checkpoint_dir: &Path, threads: usize) -> Command {
        let mut c = Command::new("bash");
        c.arg(&self.script)
            .arg(cell_dir)
            .arg(checkpoint_dir)
            .arg(threads.to_string())
            .env("FAKE_LOG", &self.log);
        c
    }
}

/// Writes an experiment file.
pub fn write_exp(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    let text = format!(
        "name: {name}\ndescription: test grid\nprofiles:\n  cpu: {{}}\n  paper: {{}}\nreport: {{kind: table, title: T, rows: [label], metrics: [linear_top1]}}\n{body}"
    );
    std::fs::write(&p, text).unwrap();
    p
}
