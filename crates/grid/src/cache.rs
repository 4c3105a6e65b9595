//! The results folder: cell entries, their status files, integrity checks and the index CSV.

use crate::lock::{peek, LockInfo};
use crate::plan::{Plan, Stage};
use crate::value::flow;
use crate::CELL_FORMAT_VERSION;
use anyhow::{Context, Result};
use protoclr_formats::fsutil::{atomic_write, hostname, now_unix};
use protoclr_formats::sha256_file;
use protoclr_formats::CellRecord;
use std::fs;
use std::path::{Path, PathBuf};

/// `status.json` and its outcome are defined in `protoclr_formats` (shared with the report);
/// re-exported here so that `protoclr_grid::cache::{Outcome, StatusFile}` keep working.
pub use protoclr_formats::{Outcome, StatusFile};

/// Why a cell is pending.
#[derive(Debug, Clone, PartialEq)]
pub enum Pending {
    /// Never started.
    New,
    /// Started (config written) but not finished: a rerun resumes from its checkpoints.
    Interrupted,
    /// A status file whose checks fail, or that cannot be read: redone.
    Corrupt(String),
}

/// The state of a cell in the results folder.
#[derive(Debug, Clone, PartialEq)]
pub enum CellState {
    Done(StatusFile),
    Diverged(StatusFile),
    Failed(StatusFile),
    Running(LockInfo),
    Pending(Pending),
}

impl CellState {
    /// The status word of the index CSV.
    pub fn word(&self) -> &'static str {
        match self {
            CellState::Done(_) => "done",
            CellState::Diverged(_) => "diverged",
            CellState::Failed(_) => "failed",
            CellState::Running(_) => "running",
            CellState::Pending(_) => "pending",
        }
    }

    /// Finished with a recorded outcome (done, diverged or failed).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            CellState::Done(_) | CellState::Diverged(_) | CellState::Failed(_)
        )
    }
}

/// A results folder.
#[derive(Debug, Clone)]
pub struct Results {
    pub root: PathBuf,
}

impl Results {
    pub fn new(root: impl Into<PathBuf>) -> Results {
        Results { root: root.into() }
    }

    pub fn cell_dir(&self, id: &str) -> PathBuf {
        self.root.join("cells").join(id)
    }

    pub fn checkpoint_dir(&self, id: &str) -> PathBuf {
        self.root.join("checkpoints").join(id)
    }

    pub fn lock_path(&self, id: &str) -> PathBuf {
        self.root.join("locks").join(format!("{id}.lock"))
    }

    pub fn index_path(&self, experiment: &str, profile: &str) -> PathBuf {
        self.root.join(format!("{experiment}.{profile}.csv"))
    }

    /// The index of the confirmation stage (`docs/formats.md`).
    pub fn confirm_index_path(&self, experiment: &str, profile: &str) -> PathBuf {
        self.root.join(format!("{experiment}.{profile}.confirm.csv"))
    }

    /// The selection of the confirmation stage (`docs/formats.md`).
    pub fn selection_path(&self, experiment: &str, profile: &str) -> PathBuf {
        self.root.join(format!("{experiment}.{profile}.selection.json"))
    }

    /// The index file of a plan: the grid's or the confirmation stage's.
    pub fn plan_index_path(&self, plan: &Plan) -> PathBuf {
        match plan.stage {
            Stage::Grid => self.index_path(&plan.experiment.name, &plan.profile),
            Stage::Confirm => self.confirm_index_path(&plan.experiment.name, &plan.profile),
        }
    }

    /// The state of a cell: a live lock means running; else the verified status file.
    pub fn state(&self, id: &str) -> CellState {
        if let Some((info, age)) = peek(&self.lock_path(id)) {
            if info.alive(age) {
                return CellState::Running(info);
            }
        }
        self.recorded_state(id)
    }

    /// The state recorded in the cell folder, ignoring locks: the shared definition of "done and
    /// intact" ([`CellRecord::read`]), which the report applies too.
    pub fn recorded_state(&self, id: &str) -> CellState {
        match CellRecord::read(&self.cell_dir(id)) {
            CellRecord::New => CellState::Pending(Pending::New),
            CellRecord::Interrupted => CellState::Pending(Pending::Interrupted),
            CellRecord::Corrupt(why) => CellState::Pending(Pending::Corrupt(why)),
            CellRecord::Finished(f) => match f.status.status {
                Outcome::Done => CellState::Done(f.status),
                Outcome::Diverged => CellState::Diverged(f.status),
                Outcome::Failed => CellState::Failed(f.status),
            },
        }
    }

    /// Reads a cell's `metrics.json`.
    pub fn metrics(&self, id: &str) -> Option<serde_json::Value> {
        let bytes = fs::read(self.cell_dir(id).join("metrics.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Records the outcome of a cell (atomically; the checksums are computed from the files).
    pub fn write_status(&self, id: &str, mut status: StatusFile) -> Result<StatusFile> {
        let dir = self.cell_dir(id);
        status.cell_format_version = CELL_FORMAT_VERSION;
        status.config_sha256 = sha256_file(&dir.join("config.yaml"));
        status.metrics_sha256 = match status.status {
            Outcome::Failed => None,
            _ => Some(sha256_file(&dir.join("metrics.json")).context("metrics.json vanished")?),
        };
        status.host = hostname();
        status.finished_unix = now_unix();
        atomic_write(&dir.join("status.json"), &serde_json::to_vec_pretty(&status)?)?;
        Ok(status)
    }

    /// Writes the index CSV of a plan (`docs/formats.md`), atomically.
    pub fn write_index(&self, plan: &Plan) -> Result<PathBuf> {
        let path = self.plan_index_path(plan);
        atomic_write(&path, self.index_csv(plan).as_bytes())?;
        Ok(path)
    }

    /// The index CSV text of a plan (the confirmation stage's has an `arm` column after
    /// `status`).
    pub fn index_csv(&self, plan: &Plan) -> String {
        let mut out = String::new();
        let confirm = plan.stage == Stage::Confirm;
        // `cell_id,status,[arm,]label,seed` (protoclr_formats::INDEX_KEY_COLUMNS).
        let [id, status, label, seed] = protoclr_formats::INDEX_KEY_COLUMNS;
        let mut header = vec![id.to_string(), status.into()];
        if confirm {
            header.push("arm".into());
        }
        header.extend([label.to_string(), seed.into()]);
        header.extend(plan.experiment.columns.iter().cloned());
        header.extend(crate::spec::METRIC_COLUMNS.iter().map(|s| s.to_string()));
        out.push_str(&csv_row(&header));
        for cell in &plan.cells {
            let state = self.state(&cell.id);
            let seed = cell.seed_text();
            let mut row = vec![cell.id.clone(), state.word().to_string()];
            if confirm {
                row.push(cell.arm.map(|a| a.as_str().to_string()).unwrap_or_default());
            }
            row.extend([cell.spec.label.clone().unwrap_or_default(), seed]);
            for col in &plan.experiment.columns {
                let v = cell
                    .spec
                    .assignments
                    .iter()
                    .find(|(k, _)| k == col)
                    .map(|(_, v)| flow(v));
                row.push(v.unwrap_or_default());
            }
            let metrics = match state {
                CellState::Done(_) => self.metrics(&cell.id),
                _ => None,
            };
            row.extend(metric_fields(metrics.as_ref()));
            out.push_str(&csv_row(&row));
        }
        out
    }
}

/// The metric columns of the index from a `metrics.json` (empty strings when absent).
pub fn metric_fields(m: Option<&serde_json::Value>) -> Vec<String> {
    let num = |v: Option<&serde_json::Value>| -> String {
        v.and_then(|x| x.as_f64())
            .map(|f| format!("{f}"))
            .unwrap_or_default()
    };
    let Some(m) = m else {
        return vec![String::new(); crate::spec::METRIC_COLUMNS.len()];
    };
    let e = m.get("eval");
    let ev = |k: &str| e.and_then(|e| e.get(k));
    let ci = |k: &str, i: usize| e.and_then(|e| e.get(k)).and_then(|c| c.get(i));
    vec![
        num(ev("linear_top1")),
        num(ev("linear_top5")),
        num(ev("knn_top1")),
        num(ev("knn_top5")),
        num(ev("bias_l2")),
        num(ci("bias_l2_ci95", 0)),
        num(ci("bias_l2_ci95", 1)),
        num(ev("bias_cos")),
        num(m.get("wall_time_s")),
    ]
}

/// One CSV line (RFC 4180 quoting).
pub fn csv_row(fields: &[String]) -> String {
    let quoted: Vec<String> = fields
        .iter()
        .map(|f| {
            if f.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", f.replace('"', "\"\""))
            } else {
                f.clone()
            }
        })
        .collect();
    format!("{}\n", quoted.join(","))
}

/// Whether a `metrics.json` on disk is a finished run's (valid JSON with a final status); used to
/// adopt a result whose status file was not written (a crash between the two writes).
pub fn finished_metrics(path: &Path) -> Option<Outcome> {
    let m = protoclr_formats::metrics::Metrics::parse(&fs::read(path).ok()?).ok()?;
    Some(m.status.outcome())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoting() {
        let row = csv_row(&[
            "a".into(),
            "[crop, flip]".into(),
            "say \"x\"".into(),
            String::new(),
        ]);
        assert_eq!(row, "a,\"[crop, flip]\",\"say \"\"x\"\"\",\n");
    }

    #[test]
    fn metric_fields_follow_the_format() {
        let m: serde_json::Value = serde_json::from_str(
            r#"{"eval": {"linear_top1": 61.5, "linear_top5": 95.0, "knn_top1": 55.0, "knn_top5": 93.0,
                "bias_l2": 0.42, "bias_l2_ci95": [0.41, 0.43], "bias_cos": 0.09}, "wall_time_s": 312.5}"#,
        )
        .unwrap();
        assert_eq!(
            metric_fields(Some(&m)),
            vec!["61.5", "95", "55", "93", "0.42", "0.41", "0.43", "0.09", "312.5"]
        );
        assert!(metric_fields(None).iter().all(String::is_empty));
        let diverged: serde_json::Value =
            serde_json::from_str(r#"{"eval": null, "wall_time_s": 3}"#).unwrap();
        assert_eq!(metric_fields(Some(&diverged))[0], "");
    }

    #[test]
    fn status_checksums_detect_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let r = Results::new(dir.path());
        let id = "ab".repeat(32);
        let cell = r.cell_dir(&id);
        assert_eq!(r.state(&id), CellState::Pending(Pending::New));
        atomic_write(&cell.join("config.yaml"), b"seed: 0\n").unwrap();
        assert_eq!(r.state(&id), CellState::Pending(Pending::Interrupted));
        atomic_write(&cell.join("metrics.json"), br#"{"status": "completed"}"#).unwrap();
        let blank = StatusFile {
            status: Outcome::Done,
            metrics_sha256: None,
            config_sha256: None,
            cell_format_version: 0,
            exit_code: Some(0),
            signal: None,
            error: None,
            runner_wall_s: None,
            finished_unix: 0,
            host: String::new(),
        };
        r.write_status(&id, blank).unwrap();
        assert!(matches!(r.state(&id), CellState::Done(_)));
        // Truncated metrics: detected.
        fs::write(cell.join("metrics.json"), br#"{"status": "compl"#).unwrap();
        assert!(matches!(r.state(&id), CellState::Pending(Pending::Corrupt(_))));
        fs::remove_file(cell.join("metrics.json")).unwrap();
        assert!(matches!(r.state(&id), CellState::Pending(Pending::Corrupt(_))));
        // Unreadable status file.
        fs::write(cell.join("status.json"), b"{").unwrap();
        assert!(matches!(r.state(&id), CellState::Pending(Pending::Corrupt(_))));
    }
}
