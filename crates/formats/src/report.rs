//! The `report:` section of an experiment file: what `protoclr report` draws from the
//! experiment's cells (docs/formats.md, "The `report:` section"). The grid parses and validates
//! it with the rest of the file (and checks the named keys against the varied ones); the report
//! reads it from the same file through [`ReportFile::load`]. Nothing here enters a cell id: the
//! grid hashes the resolved training config only.
//!
//! Kinds ([`ReportKind`]), each a figure or table of seed means over the experiment's cells:
//! - `heatmap`: `value` (a metric) over two varied keys `x` × `y`; with `reference`, the
//!   reference cell is outlined and a second panel shows every cell's difference from it;
//! - `scatter`: one point per `rows` group, metric `x` against metric `y`, 95 % intervals on
//!   both, least-squares line and Spearman / Pearson correlations with bootstrap intervals;
//! - `table`: one row per `rows` group, one column per metric of `metrics` (mean ± std (n)), in
//!   Markdown, LaTeX and CSV;
//! - `curve`: `value` against the varied key `x`, one line per value of the varied key `series`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// What `protoclr report` draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportKind {
    Scatter,
    Heatmap,
    Table,
    Curve,
}

impl ReportKind {
    /// The word of the YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportKind::Scatter => "scatter",
            ReportKind::Heatmap => "heatmap",
            ReportKind::Table => "table",
            ReportKind::Curve => "curve",
        }
    }
}

/// How a scatter's points are labelled (`labels:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PointLabels {
    /// Each label right of and above its point, moved apart where points cluster, with a leader
    /// line when moved (the default).
    #[default]
    Spread,
    /// Each label right of and above its point, never moved.
    Fixed,
    /// No labels.
    None,
}

/// A claim of `claims.md` this experiment decides (`claim:`): `a` on a scatter (accuracy
/// against prototype bias), `b<k>` on a heatmap with a reference (a balanced-loss grid against
/// NT-Xent, decided by the confirmation stage).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimHook {
    pub id: String,
    /// How claims.md names the experiment (e.g. `Fig. 5, CIFAR-10`); default: its name.
    #[serde(default)]
    pub what: Option<String>,
}

/// The `report:` section. Column names are those of the index CSV (`label`, `seed`, the varied
/// dotted keys); metric names are the `eval` keys of metrics.json in [`crate::EVAL_METRICS`].
/// Every option is documented in docs/formats.md; which kinds take which is [`OPTIONS`].
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReportSpec {
    pub kind: Option<ReportKind>,
    pub title: String,
    /// `report all` skips the experiment (with a notice) when it has no index yet.
    #[serde(default)]
    pub optional: bool,
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub rows: Option<Vec<String>>,
    #[serde(default)]
    pub metrics: Option<Vec<String>>,
    /// Curve: the varied key whose values are the lines.
    #[serde(default)]
    pub series: Option<String>,
    /// Axis descriptions (default: the key or metric, in backquotes).
    #[serde(default)]
    pub x_label: Option<String>,
    #[serde(default)]
    pub y_label: Option<String>,
    /// Heatmap, table: short names of varied keys in captions, notes and settings
    /// (`{loss.alpha: α}`; default: the keys).
    #[serde(default)]
    pub symbols: Option<BTreeMap<String, String>>,
    /// Heatmap: caption of the value panel; `unit` captions its colour bar.
    #[serde(default)]
    pub value_label: Option<String>,
    #[serde(default)]
    pub unit: Option<String>,
    /// Heatmap, curve: how the notes name the value (default: the metric).
    #[serde(default)]
    pub value_name: Option<String>,
    /// Heatmap: the reference cell, `{x key: value, y key: value}`.
    #[serde(default)]
    pub reference: Option<BTreeMap<String, f64>>,
    /// Heatmap: how the figure and notes name the reference cell (default `reference`).
    #[serde(default)]
    pub reference_name: Option<String>,
    /// Heatmap: the difference-from-reference panel (default: on when there is a reference).
    #[serde(default)]
    pub difference: Option<bool>,
    /// Heatmap: the x/y ratio analysis `<stem>_ratio.{md,tex,csv,png,svg}`.
    #[serde(default)]
    pub ratio: bool,
    /// Scatter: how the legend's fit and the notes name the x and y metrics.
    #[serde(default)]
    pub x_name: Option<String>,
    #[serde(default)]
    pub y_name: Option<String>,
    /// Scatter: the group drawn in the accent colour (e.g. `base`).
    #[serde(default)]
    pub highlight: Option<String>,
    /// Scatter: point label placement.
    #[serde(default)]
    pub labels: Option<PointLabels>,
    /// Scatter: least-squares line and correlations (default on).
    #[serde(default)]
    pub fit: Option<bool>,
    /// Table: the many / medium / few-shot columns of a long-tailed training set.
    #[serde(default)]
    pub class_groups: bool,
    /// Table: a "Paper" column saying the paper's value is not recoverable.
    #[serde(default)]
    pub paper_column: bool,
    /// The claim of claims.md this experiment decides.
    #[serde(default)]
    pub claim: Option<ClaimHook>,
}

/// Options beyond `kind`, `title` and `optional`, with the kinds that take them.
pub const OPTIONS: &[(&str, &[ReportKind])] = {
    use ReportKind::*;
    &[
        ("x", &[Scatter, Heatmap, Curve]),
        ("y", &[Scatter, Heatmap]),
        ("value", &[Heatmap, Curve]),
        ("rows", &[Scatter, Table]),
        ("metrics", &[Table]),
        ("series", &[Curve]),
        ("x_label", &[Scatter, Heatmap, Curve]),
        ("y_label", &[Scatter, Heatmap, Curve]),
        ("symbols", &[Heatmap, Table]),
        ("value_label", &[Heatmap]),
        ("unit", &[Heatmap]),
        ("value_name", &[Heatmap, Curve]),
        ("reference", &[Heatmap]),
        ("reference_name", &[Heatmap]),
        ("difference", &[Heatmap]),
        ("ratio", &[Heatmap]),
        ("x_name", &[Scatter]),
        ("y_name", &[Scatter]),
        ("highlight", &[Scatter]),
        ("labels", &[Scatter]),
        ("fit", &[Scatter]),
        ("class_groups", &[Table]),
        ("paper_column", &[Table]),
        ("claim", &[Scatter, Heatmap]),
    ]
};

/// Options each kind needs.
pub fn required(kind: ReportKind) -> &'static [&'static str] {
    match kind {
        ReportKind::Scatter => &["x", "y"],
        ReportKind::Heatmap => &["x", "y", "value"],
        ReportKind::Table => &["rows", "metrics"],
        ReportKind::Curve => &["x", "value"],
    }
}

/// What a field of the spec names, for the checks against an experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    /// A varied key (or `label`, `seed`).
    Column,
    /// A metric of [`crate::EVAL_METRICS`].
    Metric,
}

/// A problem in a `report:` section: the key it is at (`report.x`) and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecError {
    /// Path under `report` (`["x"]`, `["rows", "1"]`, `["kind"]`).
    pub path: Vec<String>,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "report.{}: {}", self.path.join("."), self.message)
    }
}

fn err(path: &[&str], message: impl Into<String>) -> SpecError {
    SpecError {
        path: path.iter().map(|s| s.to_string()).collect(),
        message: message.into(),
    }
}

impl ReportSpec {
    /// The kind (checked present by [`ReportSpec::check`]).
    pub fn kind(&self) -> ReportKind {
        self.kind.unwrap_or(ReportKind::Table)
    }

    /// Which options are set.
    fn set_options(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut add = |name: &'static str, set: bool| {
            if set {
                out.push(name)
            }
        };
        add("x", self.x.is_some());
        add("y", self.y.is_some());
        add("value", self.value.is_some());
        add("rows", self.rows.is_some());
        add("metrics", self.metrics.is_some());
        add("series", self.series.is_some());
        add("x_label", self.x_label.is_some());
        add("y_label", self.y_label.is_some());
        add("symbols", self.symbols.is_some());
        add("value_label", self.value_label.is_some());
        add("unit", self.unit.is_some());
        add("value_name", self.value_name.is_some());
        add("reference", self.reference.is_some());
        add("reference_name", self.reference_name.is_some());
        add("difference", self.difference.is_some());
        add("ratio", self.ratio);
        add("x_name", self.x_name.is_some());
        add("y_name", self.y_name.is_some());
        add("highlight", self.highlight.is_some());
        add("labels", self.labels.is_some());
        add("fit", self.fit.is_some());
        add("class_groups", self.class_groups);
        add("paper_column", self.paper_column);
        add("claim", self.claim.is_some());
        out
    }

    /// The fields that name columns or metrics, with their paths: `(path, what, name)`.
    pub fn named(&self) -> Vec<(Vec<String>, Names, &str)> {
        let kind = self.kind();
        let mut out: Vec<(Vec<String>, Names, &str)> = Vec::new();
        fn one<'a>(
            field: &str,
            v: &'a Option<String>,
            what: Names,
            out: &mut Vec<(Vec<String>, Names, &'a str)>,
        ) {
            if let Some(v) = v {
                out.push((vec![field.to_string()], what, v.as_str()));
            }
        }
        let xy = if kind == ReportKind::Scatter {
            Names::Metric
        } else {
            Names::Column
        };
        one("x", &self.x, xy, &mut out);
        one("y", &self.y, xy, &mut out);
        one("value", &self.value, Names::Metric, &mut out);
        one("series", &self.series, Names::Column, &mut out);
        for (field, list, what) in [
            ("rows", &self.rows, Names::Column),
            ("metrics", &self.metrics, Names::Metric),
        ] {
            for (i, v) in list.iter().flatten().enumerate() {
                out.push((vec![field.to_string(), i.to_string()], what, v.as_str()));
            }
        }
        for (field, map) in [
            (
                "reference",
                self.reference.as_ref().map(|m| m.keys().collect::<Vec<_>>()),
            ),
            ("symbols", self.symbols.as_ref().map(|m| m.keys().collect())),
        ] {
            for k in map.into_iter().flatten() {
                out.push((vec![field.into(), k.clone()], Names::Column, k.as_str()));
            }
        }
        out
    }

    /// Checks what can be checked without the experiment's varied keys: a kind, its required
    /// options, no option of another kind, metric names known, lists not empty, a reference on
    /// exactly the x and y keys, a claim id the kind can decide.
    pub fn check(&self) -> Result<(), SpecError> {
        let Some(kind) = self.kind else {
            return Err(err(&["kind"], "missing (one of heatmap, scatter, table, curve)"));
        };
        if self.title.trim().is_empty() {
            return Err(err(&["title"], "empty"));
        }
        let set = self.set_options();
        for need in required(kind) {
            if !set.contains(need) {
                return Err(err(
                    &["kind"],
                    format!("report kind `{}` needs `{need}`", kind.as_str()),
                ));
            }
        }
        for name in &set {
            let kinds = OPTIONS
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, k)| *k)
                .unwrap_or(&[]);
            if !kinds.contains(&kind) {
                let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
                return Err(err(
                    &[name],
                    format!(
                        "not an option of kind `{}` (it is one of {})",
                        kind.as_str(),
                        names.join(", ")
                    ),
                ));
            }
        }
        for (field, list) in [("rows", &self.rows), ("metrics", &self.metrics)] {
            if list.as_ref().is_some_and(|l| l.is_empty()) {
                return Err(err(&[field], "empty list"));
            }
        }
        for (path, what, name) in self.named() {
            if what == Names::Metric && !crate::EVAL_METRICS.contains(&name) {
                let p: Vec<&str> = path.iter().map(String::as_str).collect();
                return Err(err(
                    &p,
                    format!(
                        "unknown metric `{name}` (metrics: {})",
                        crate::EVAL_METRICS.join(", ")
                    ),
                ));
            }
        }
        if kind == ReportKind::Heatmap && self.x == self.y {
            return Err(err(&["y"], "the same key as `x`"));
        }
        if kind == ReportKind::Curve && self.series.is_some() && self.series == self.x {
            return Err(err(&["series"], "the same key as `x`"));
        }
        if let Some(r) = &self.reference {
            let want: Vec<&str> = [self.x.as_deref(), self.y.as_deref()]
                .into_iter()
                .flatten()
                .collect();
            let mut keys: Vec<&str> = r.keys().map(String::as_str).collect();
            let mut sorted = want.clone();
            sorted.sort();
            keys.sort();
            if keys != sorted {
                return Err(err(
                    &["reference"],
                    format!(
                        "must give exactly the x and y keys ({}), got {}",
                        want.join(", "),
                        r.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            if r.values().any(|v| !v.is_finite()) {
                return Err(err(&["reference"], "values must be finite numbers"));
            }
        }
        if self.difference == Some(true) && self.reference.is_none() {
            return Err(err(&["difference"], "needs `reference`"));
        }
        if let Some(c) = &self.claim {
            let ok = match kind {
                ReportKind::Scatter => c.id == "a",
                ReportKind::Heatmap => {
                    c.id.len() > 1
                        && c.id.starts_with('b')
                        && c.id[1..].chars().all(|ch| ch.is_ascii_digit())
                        && self.reference.is_some()
                }
                _ => false,
            };
            if !ok {
                return Err(err(
                    &["claim", "id"],
                    format!(
                        "`{}` is not a claim a {} decides (scatter: `a`; heatmap with a \
                         reference: `b1`, `b2`, …)",
                        c.id,
                        kind.as_str()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The parts of an experiment file the report reads: its name and its `report:` section.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportFile {
    pub name: String,
    pub report: ReportSpec,
}

#[derive(Deserialize)]
struct Head {
    name: String,
    report: ReportSpec,
}

impl ReportFile {
    /// Reads `name` and `report:` of the experiment file `path` (other sections are the grid's
    /// and are not looked at), checked by [`ReportSpec::check`]; errors name the file and key.
    pub fn load(path: &Path) -> anyhow::Result<ReportFile> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        Self::parse(path, &text)
    }

    /// As [`ReportFile::load`], from the file's text.
    pub fn parse(path: &Path, text: &str) -> anyhow::Result<ReportFile> {
        if let Some((line, column)) = crate::yamlscan::too_deep(text, crate::yamlscan::MAX_DEPTH) {
            anyhow::bail!(
                "{}:{line}:{column}: {}",
                path.display(),
                crate::yamlscan::DEPTH_MESSAGE
            );
        }
        let head: Head = serde_norway::from_str(text).map_err(|e| {
            let msg = e.to_string();
            match e.location() {
                Some(l) => anyhow::anyhow!(
                    "{}:{}:{}: {}",
                    path.display(),
                    l.line(),
                    l.column(),
                    msg.split(" at line ").next().unwrap_or(&msg)
                ),
                None => anyhow::anyhow!("{}: {msg}", path.display()),
            }
        })?;
        crate::check_plain_name("`name`", &head.name)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        head.report
            .check()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(ReportFile {
            name: head.name,
            report: head.report,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(report: &str) -> anyhow::Result<ReportFile> {
        let text = format!("name: e\ndescription: d\nprofiles: {{cpu: {{}}}}\nreport:\n{report}");
        ReportFile::parse(Path::new("exp.yaml"), &text)
    }

    fn err_of(report: &str) -> String {
        format!("{:#}", parse(report).unwrap_err())
    }

    #[test]
    fn every_kind_parses_with_its_options() {
        let h = parse(
            "  kind: heatmap\n  title: T\n  x: loss.tau\n  y: train.batch_size\n  value: knn_top1\n  \
             reference: {loss.tau: 0.5, train.batch_size: 256}\n  ratio: true\n",
        )
        .unwrap();
        assert_eq!(h.report.kind, Some(ReportKind::Heatmap));
        assert_eq!(h.report.reference.unwrap()["loss.tau"], 0.5);
        let c = parse("  kind: curve\n  title: T\n  x: loss.tau\n  value: linear_top1\n  series: seed\n")
            .unwrap();
        assert_eq!(c.report.series.as_deref(), Some("seed"));
        parse(
            "  kind: scatter\n  title: T\n  x: bias_l2\n  y: linear_top1\n  labels: none\n  claim: {id: a}\n",
        )
        .unwrap();
        parse("  kind: table\n  title: T\n  rows: [label]\n  metrics: [linear_top1]\n  paper_column: true\n")
            .unwrap();
    }

    #[test]
    fn bad_sections_name_the_file_and_the_key() {
        for (report, want) in [
            ("  title: T\n  x: a\n", "exp.yaml: report.kind: missing"),
            (
                "  kind: pie\n  title: T\n",
                "exp.yaml:5:9: report.kind: unknown variant `pie`",
            ),
            (
                "  kind: heatmap\n  title: T\n  x: a\n  y: b\n",
                "report.kind: report kind `heatmap` needs `value`",
            ),
            (
                "  kind: table\n  title: T\n  rows: [label]\n  metrics: [linear_top1]\n  ratio: true\n",
                "report.ratio: not an option of kind `table`",
            ),
            (
                "  kind: table\n  title: T\n  rows: [label]\n  metrics: [linear_top1, accuracy]\n",
                "report.metrics.1: unknown metric `accuracy`",
            ),
            (
                "  kind: heatmap\n  title: T\n  x: a\n  y: b\n  value: linear_top1\n  reference: {a: 1}\n",
                "report.reference: must give exactly the x and y keys (a, b), got a",
            ),
            (
                "  kind: curve\n  title: T\n  x: a\n  value: linear_top1\n  colour: red\n",
                "unknown field `colour`",
            ),
            (
                "  kind: heatmap\n  title: T\n  x: a\n  y: b\n  value: linear_top1\n  claim: {id: b1}\n",
                "report.claim.id: `b1` is not a claim a heatmap decides",
            ),
            (
                "  kind: table\n  title: T\n  rows: []\n  metrics: [knn_top1]\n",
                "report.rows: empty list",
            ),
        ] {
            let e = err_of(report);
            assert!(e.contains(want), "{report:?}: {e}");
            assert!(e.starts_with("exp.yaml"), "{e}");
        }
    }
}
