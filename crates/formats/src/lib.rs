//! `protoclr_formats`: the parts of the results-folder format (docs/formats.md) that the grid
//! (which writes it) and the report (which reads it) must agree on, defined once.
//!
//! - [`StatusFile`] and [`Outcome`]: `results/cells/<id>/status.json`.
//! - [`sha256_file`]: the checksum recorded there.
//! - [`CellRecord::read`]: **the** definition of "done and intact". A cell folder is done and
//!   intact when `status.json` parses, says `done`, and the SHA-256 of `metrics.json` and of
//!   `config.yaml` equal the ones it records. The grid redoes every other cell; the report
//!   ignores every other cell and says why.
//! - [`check_plain_name`]: experiment and profile names become file names in the results folder
//!   (`<experiment>.<profile>.csv`); this is the rule that keeps them inside it.
//! - [`dotted`]: setting and reading `dotted.keys` of nested YAML mappings, and the leaf paths
//!   a value sets.
//! - [`fsutil`]: the atomic file write (temporary sibling, fsync, rename, fsync of the folder).
//! - [`metrics`]: `metrics.json` as the grid and the report read it, its [`metrics::Status`].
//! - [`claims`]: which entry set each leaf of a nested mapping (dotted vs nested keys).
//! - [`temps`]: how atomic writes name their temporary files, and the sweep of a killed
//!   writer's leftovers (training outputs, checkpoints and the results folder alike).
//! - [`report`]: the `report:` section of an experiment file, what `protoclr report` draws.
//! - [`INDEX_KEY_COLUMNS`], [`INDEX_METRIC_COLUMNS`]: the index CSV's columns other than the
//!   varied keys; [`EVAL_METRICS`]: the `eval` keys of metrics.json the report reads.
//! - [`yamlscan`]: the nesting-depth pre-scan that every YAML input (experiment files, training
//!   configs, `--set` values) passes before the parser, shared by the grid and training.
//!
//! This crate has no protoclr dependency, so that neither side needs the other.

pub mod claims;
pub mod dotted;
pub mod fsutil;
pub mod metrics;
pub mod report;
pub mod temps;
pub mod yamlscan;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::Path;

/// Index CSV columns before the varied keys: `cell_id,status,label,seed` (docs/formats.md).
pub const INDEX_KEY_COLUMNS: [&str; 4] = ["cell_id", "status", "label", "seed"];

/// Index CSV columns after the varied keys, copied from each cell's metrics.json for a quick
/// look (the report reads the metrics from the cells, not from these).
pub const INDEX_METRIC_COLUMNS: [&str; 9] = [
    "linear_top1",
    "linear_top5",
    "knn_top1",
    "knn_top5",
    "bias_l2",
    "bias_l2_lo",
    "bias_l2_hi",
    "bias_cos",
    "wall_time_s",
];

/// The `eval` keys of metrics.json that the report reads, and that a `report:` section may
/// name as a metric. The first five are also index columns; the others are optional (validation
/// accuracy, scale-free bias, theorem bounds, long-tail class groups; docs/formats.md), absent in
/// cells written before they existed and, for the class groups, in cells trained on a balanced
/// set.
pub const EVAL_METRICS: [&str; 19] = [
    "linear_top1",
    "linear_top5",
    "knn_top1",
    "knn_top5",
    "bias_l2",
    "val_linear_top1",
    "val_knn_top1",
    "bias_rel",
    "bound_attract_holds",
    "bound_attract_slack",
    "bound_repel_holds",
    "bound_repel_slack",
    "bound_n",
    "linear_many",
    "linear_medium",
    "linear_few",
    "n_many",
    "n_medium",
    "n_few",
];

/// Final outcome of a cell run, as recorded in `status.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Done,
    Failed,
    Diverged,
}

impl Outcome {
    /// The word written in `status.json` and in the index CSV.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Failed => "failed",
            Outcome::Diverged => "diverged",
        }
    }
}

/// `cells/<id>/status.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusFile {
    pub status: Outcome,
    /// SHA-256 of `metrics.json` (None for failed cells).
    pub metrics_sha256: Option<String>,
    /// SHA-256 of `config.yaml`.
    pub config_sha256: Option<String>,
    pub cell_format_version: u32,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Last lines of the log for failed cells.
    pub error: Option<String>,
    /// Wall time of the attempt as seen by the runner.
    pub runner_wall_s: Option<f64>,
    pub finished_unix: u64,
    pub host: String,
}

/// SHA-256 (hex) of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// SHA-256 (hex) of a file's content; None when it cannot be read.
pub fn sha256_file(path: &Path) -> Option<String> {
    sha256_of_file(path).ok()
}

/// SHA-256 (hex) of a file's content; the error names the file.
pub fn sha256_of_file(path: &Path) -> anyhow::Result<String> {
    use anyhow::Context;
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(sha256_hex(&bytes))
}

/// A cell whose `status.json` is readable and whose every recorded checksum matches.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub status: StatusFile,
    /// The bytes of `metrics.json` that matched the recorded checksum (None for failed cells).
    /// Callers parse these bytes, not a second read of the file, so what they use is what was
    /// checked.
    pub metrics: Option<Vec<u8>>,
}

/// What a cell folder `results/cells/<id>/` records (locks are not looked at).
#[derive(Debug, Clone, PartialEq)]
pub enum CellRecord {
    /// No `status.json` and no `config.yaml`: never started.
    New,
    /// No `status.json` but a `config.yaml`: started and not finished (a rerun resumes).
    Interrupted,
    /// A `status.json` that cannot be parsed, or a file that does not match its checksum (the
    /// reason says which).
    Corrupt(String),
    /// Finished with a recorded outcome; every checksum matches.
    Finished(Finished),
}

impl CellRecord {
    /// Reads and checks the cell folder `dir`: see the [crate] docs for the rule.
    pub fn read(dir: &Path) -> CellRecord {
        let bytes = match fs::read(dir.join("status.json")) {
            Ok(b) => b,
            Err(_) if dir.join("config.yaml").exists() => return CellRecord::Interrupted,
            Err(_) => return CellRecord::New,
        };
        let status: StatusFile = match serde_json::from_slice(&bytes) {
            Ok(s) => s,
            Err(e) => return CellRecord::Corrupt(format!("status.json unreadable: {e}")),
        };
        if let Some(want) = &status.config_sha256 {
            if sha256_file(&dir.join("config.yaml")).as_deref() != Some(want.as_str()) {
                return CellRecord::Corrupt("config.yaml does not match its checksum in status.json".into());
            }
        }
        if status.status == Outcome::Failed {
            return CellRecord::Finished(Finished {
                status,
                metrics: None,
            });
        }
        let metrics = match fs::read(dir.join("metrics.json")) {
            Ok(m) => m,
            Err(_) => return CellRecord::Corrupt("metrics.json is missing".into()),
        };
        if status.metrics_sha256.as_deref() != Some(sha256_hex(&metrics).as_str()) {
            return CellRecord::Corrupt("metrics.json does not match its checksum in status.json".into());
        }
        CellRecord::Finished(Finished {
            status,
            metrics: Some(metrics),
        })
    }

    /// The checked `metrics.json` bytes of a done and intact cell, else why the cell is not
    /// (`pending (never started)`, `failed`, `corrupt: …`, …).
    pub fn done_and_intact(self) -> Result<(StatusFile, Vec<u8>), String> {
        match self {
            CellRecord::Finished(Finished {
                status,
                metrics: Some(m),
            }) if status.status == Outcome::Done => Ok((status, m)),
            other => Err(other.why_not_done()),
        }
    }

    /// A short phrase saying what the record is, for the cells that are not done.
    pub fn why_not_done(&self) -> String {
        match self {
            CellRecord::New => "pending (never started)".into(),
            CellRecord::Interrupted => "pending (started, not finished)".into(),
            CellRecord::Corrupt(why) => format!("corrupt: {why}"),
            CellRecord::Finished(f) => f.status.status.as_str().to_string(),
        }
    }
}

/// Checks that `name` can be one dot-separated part of a file name in the results folder
/// (`<experiment>.<profile>.csv`, `slurm/<experiment>.<profile>.<ms>/`) and of a Slurm job name:
/// not empty or blank, no `/` or `\`, not starting with `.`, no control character (newlines
/// included). `what` names it in the error (`profile`, `` `name` ``).
pub fn check_plain_name(what: &str, name: &str) -> anyhow::Result<()> {
    let why = if name.trim().is_empty() {
        Some("it is empty")
    } else if name.contains(['/', '\\']) {
        Some("it contains a path separator")
    } else if name.starts_with('.') {
        Some("it starts with `.`")
    } else if name.chars().any(char::is_control) {
        Some("it contains a control character")
    } else {
        None
    };
    match why {
        Some(why) => anyhow::bail!("{what} must be a plain file-name stem, got {name:?}: {why}"),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(outcome: Outcome, metrics: Option<&[u8]>, config: Option<&[u8]>) -> StatusFile {
        StatusFile {
            status: outcome,
            metrics_sha256: metrics.map(sha256_hex),
            config_sha256: config.map(sha256_hex),
            cell_format_version: 1,
            exit_code: Some(0),
            signal: None,
            error: None,
            runner_wall_s: None,
            finished_unix: 0,
            host: String::new(),
        }
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join(name), bytes).unwrap();
    }

    #[test]
    fn sha256_of_a_known_string() {
        // FIPS 180-2, appendix B.1.
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn done_and_intact_needs_a_status_and_both_checksums() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cell");
        assert_eq!(CellRecord::read(&dir), CellRecord::New);
        write(&dir, "config.yaml", b"seed: 0\n");
        assert_eq!(CellRecord::read(&dir), CellRecord::Interrupted);
        // A finished metrics.json without a status file is not done.
        let metrics = br#"{"status": "completed"}"#;
        write(&dir, "metrics.json", metrics);
        assert_eq!(CellRecord::read(&dir), CellRecord::Interrupted);
        let st = status(Outcome::Done, Some(metrics), Some(b"seed: 0\n"));
        write(&dir, "status.json", &serde_json::to_vec(&st).unwrap());
        assert_eq!(
            CellRecord::read(&dir).done_and_intact(),
            Ok((st.clone(), metrics.to_vec()))
        );
        // One byte of metrics.json changed.
        write(&dir, "metrics.json", br#"{"status": "completeD"}"#);
        let why = CellRecord::read(&dir).done_and_intact().unwrap_err();
        assert!(why.starts_with("corrupt: metrics.json does not match"), "{why}");
        write(&dir, "metrics.json", metrics);
        // config.yaml changed.
        write(&dir, "config.yaml", b"seed: 1\n");
        let why = CellRecord::read(&dir).done_and_intact().unwrap_err();
        assert!(why.starts_with("corrupt: config.yaml does not match"), "{why}");
        write(&dir, "config.yaml", b"seed: 0\n");
        // metrics.json gone.
        fs::remove_file(dir.join("metrics.json")).unwrap();
        assert_eq!(
            CellRecord::read(&dir),
            CellRecord::Corrupt("metrics.json is missing".into())
        );
        write(&dir, "metrics.json", metrics);
        // A done status without a metrics checksum is not intact.
        let st = status(Outcome::Done, None, Some(b"seed: 0\n"));
        write(&dir, "status.json", &serde_json::to_vec(&st).unwrap());
        assert!(matches!(CellRecord::read(&dir), CellRecord::Corrupt(_)));
        // Unparsable status.
        write(&dir, "status.json", b"{");
        assert!(
            matches!(CellRecord::read(&dir), CellRecord::Corrupt(w) if w.starts_with("status.json unreadable"))
        );
    }

    #[test]
    fn failed_and_diverged_are_finished_but_not_done() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cell");
        write(&dir, "config.yaml", b"x: 1\n");
        let st = status(Outcome::Failed, None, Some(b"x: 1\n"));
        write(&dir, "status.json", &serde_json::to_vec(&st).unwrap());
        assert_eq!(
            CellRecord::read(&dir),
            CellRecord::Finished(Finished {
                status: st,
                metrics: None
            })
        );
        assert_eq!(CellRecord::read(&dir).done_and_intact().unwrap_err(), "failed");
        let m = br#"{"status": "diverged"}"#;
        write(&dir, "metrics.json", m);
        let st = status(Outcome::Diverged, Some(m), Some(b"x: 1\n"));
        write(&dir, "status.json", &serde_json::to_vec(&st).unwrap());
        assert!(matches!(
            CellRecord::read(&dir),
            CellRecord::Finished(Finished { metrics: Some(_), .. })
        ));
        assert_eq!(CellRecord::read(&dir).done_and_intact().unwrap_err(), "diverged");
    }

    #[test]
    fn plain_names() {
        for ok in ["cpu", "paper", "fig3", "a-b_c.d", "gpu 2"] {
            check_plain_name("profile", ok).unwrap();
        }
        for (bad, why) in [
            ("", "empty"),
            ("  ", "empty"),
            ("/../../../escaped2", "separator"),
            ("a/b", "separator"),
            ("a\\b", "separator"),
            ("..", "starts with"),
            (".hidden", "starts with"),
            ("debug\necho INJECTED", "control"),
            ("a\tb", "control"),
            ("a\0b", "control"),
        ] {
            let e = check_plain_name("profile", bad).unwrap_err().to_string();
            assert!(
                e.starts_with("profile must be a plain file-name stem") && e.contains(why),
                "{bad:?}: {e}"
            );
        }
    }
}
