//! `cells/<id>/metrics.json` as the grid and the report read it (docs/formats.md, "metrics.json";
//! `protoclr train` writes it). Fields the readers do not use are ignored; `eval` and `reference`
//! stay JSON objects, since their keys grow with the metrics (the report checks their values).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Outcome;

/// The run's final status, `metrics.json` `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Trained and evaluated.
    Completed,
    /// Stopped on a non-finite loss or gradient, or runaway weights (`diverged` says where).
    Diverged,
}

impl Status {
    /// The word written in metrics.json.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Completed => "completed",
            Status::Diverged => "diverged",
        }
    }

    /// The outcome the grid records in `status.json` for a run that wrote this status.
    pub fn outcome(self) -> Outcome {
        match self {
            Status::Completed => Outcome::Done,
            Status::Diverged => Outcome::Diverged,
        }
    }
}

/// Where a diverged run stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diverged {
    #[serde(default)]
    pub epoch: Option<u64>,
    #[serde(default)]
    pub step: Option<u64>,
    #[serde(default)]
    pub what: String,
}

/// The parts of `metrics.json` that cross from training to the grid and the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub status: Status,
    /// Evaluation of the trained encoder (null for a diverged run).
    #[serde(default)]
    pub eval: Option<Map<String, Value>>,
    /// Evaluation of the reference encoder, when the run has one.
    #[serde(default)]
    pub reference: Option<Map<String, Value>>,
    #[serde(default)]
    pub diverged: Option<Diverged>,
    /// Version of the training numerics (absent in files written before it existed). Kept as
    /// JSON so that a reader can say what is wrong with a value that is not a version.
    #[serde(default)]
    pub numerics_version: Option<Value>,
    #[serde(default)]
    pub git_commit: Option<String>,
    #[serde(default)]
    pub wall_time_s: Option<f64>,
}

impl Metrics {
    /// Parses metrics.json bytes.
    pub fn parse(bytes: &[u8]) -> Result<Metrics, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// `numerics_version`: `Ok(None)` when absent or null, `Err(value)` when not a version.
    pub fn numerics(&self) -> Result<Option<u32>, String> {
        match &self.numerics_version {
            None | Some(Value::Null) => Ok(None),
            Some(n) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| n.to_string()),
        }
    }

    /// A number of `eval`, when present and finite.
    pub fn eval_number(&self, key: &str) -> Option<f64> {
        self.eval.as_ref()?.get(key)?.as_f64().filter(|x| x.is_finite())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_train_writes() {
        let m = Metrics::parse(
            br#"{"schema": 1, "status": "completed", "eval": {"linear_top1": 61.5, "bias_l2_ci95": [0.1, 0.2]},
                 "reference": null, "diverged": null, "numerics_version": 2, "git_commit": "abc",
                 "wall_time_s": 3.5, "epochs": []}"#,
        )
        .unwrap();
        assert_eq!(m.status, Status::Completed);
        assert_eq!(m.status.outcome(), Outcome::Done);
        assert_eq!(m.eval_number("linear_top1"), Some(61.5));
        assert_eq!(m.eval_number("knn_top1"), None);
        assert_eq!(m.numerics(), Ok(Some(2)));
        let d = Metrics::parse(
            br#"{"status": "diverged", "eval": null, "diverged": {"epoch": 1, "step": 3, "what": "loss is NaN"}}"#,
        )
        .unwrap();
        assert_eq!(d.status.outcome(), Outcome::Diverged);
        assert_eq!(d.diverged.as_ref().unwrap().what, "loss is NaN");
        assert_eq!(d.numerics(), Ok(None));
        let bad = Metrics::parse(br#"{"status": "completed", "numerics_version": "two"}"#).unwrap();
        assert_eq!(bad.numerics(), Err("\"two\"".into()));
        assert!(Metrics::parse(br#"{"status": "running"}"#).is_err());
    }
}
