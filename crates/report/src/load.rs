//! Loading a results folder (docs/formats.md) into polars DataFrames, and aggregating over seeds.
//!
//! The per-experiment index `results/<experiment>.<profile>.csv` says which cells belong to the
//! experiment and their axis values (a row repeated with the same cell id counts once; a repeat
//! with different content is an error). The metrics come only from cells the grid would call done
//! and intact — `status.json` says done and the checksums of `metrics.json` and `config.yaml`
//! match, the one definition in [`protoclr_formats::CellRecord`] — never from the index's
//! headline columns. Every other cell is listed as missing, with the reason. A `metrics.json`
//! with an impossible value (an accuracy outside [0, 100], a negative bias, a non-finite number)
//! is an error naming the file.
//!
//! Each cell's provenance (`numerics_version`, absent in old files: "unversioned"; `git_commit`)
//! is kept: [`Experiment::provenance`] summarises it for the notes, and
//! [`Experiment::check_numerics`] refuses an experiment whose cells span several numerics
//! versions unless mixing is allowed explicitly.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use polars::prelude::*;
use protoclr_formats::metrics::{Metrics, Status};
use protoclr_formats::{check_plain_name, CellRecord, Finished, Outcome};

use crate::stats::{t_quantile, Summary};

/// Metrics the reports use, as named in metrics.json's `eval`: [`protoclr_formats::EVAL_METRICS`]
/// (the first five are also index CSV columns; the others are optional, null in cells written
/// before they existed and, for the class groups, in cells trained on a balanced set).
pub const METRICS: [&str; 19] = protoclr_formats::EVAL_METRICS;

/// `eval` keys counting the classes of a long-tail group: non-negative integers.
const CLASS_COUNT_KEYS: [&str; 3] = ["n_many", "n_medium", "n_few"];

/// Whether an index column is one of the fixed ones (not a varied key): docs/formats.md,
/// [`protoclr_formats::INDEX_KEY_COLUMNS`] and [`protoclr_formats::INDEX_METRIC_COLUMNS`].
fn is_fixed_column(name: &str) -> bool {
    protoclr_formats::INDEX_KEY_COLUMNS.contains(&name)
        || protoclr_formats::INDEX_METRIC_COLUMNS.contains(&name)
}

/// Column of the loaded cell frame describing the configuration (label, else the axis values).
pub const CONFIG: &str = "config";
/// Column of the loaded cell frame: whether the cell has usable metrics.
pub const HAS_METRICS: &str = "has_metrics";
/// Column of the loaded cell frame: the cell's numerics version as [`numerics_label`] writes it
/// (empty for cells without metrics).
pub const NUMERICS: &str = "numerics";
/// Column of the loaded cell frame: the cell's `git_commit` (empty when unknown or no metrics).
pub const GIT_COMMIT: &str = "git_commit";

/// How a cell's numerics version is written: `v<N>`, or `unversioned` for a `metrics.json`
/// written before the field existed.
pub fn numerics_label(version: Option<u32>) -> String {
    match version {
        Some(v) => format!("v{v}"),
        None => "unversioned".into(),
    }
}

/// The index of an experiment is missing: nothing has been run (or the profile is wrong).
#[derive(Debug, Clone)]
pub struct MissingIndex {
    pub path: PathBuf,
    pub experiment: String,
    pub profile: String,
}

impl fmt::Display for MissingIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "missing index {}: no results for experiment `{}` with profile `{}` \
             (run `protoclr grid run experiments/{}.yaml --profile {}` first)",
            self.path.display(),
            self.experiment,
            self.profile,
            self.experiment,
            self.profile
        )
    }
}

impl std::error::Error for MissingIndex {}

/// Path of an experiment's index CSV.
pub fn index_path(results: &Path, experiment: &str, profile: &str) -> PathBuf {
    results.join(format!("{experiment}.{profile}.csv"))
}

/// A cell of the index without usable metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct MissingCell {
    pub cell_id: String,
    pub config: String,
    pub seed: Option<i64>,
    /// Why: the index status (`pending`, `failed`, …), or what metrics.json says.
    pub reason: String,
}

/// One experiment's cells, with their metrics.
#[derive(Debug, Clone)]
pub struct Experiment {
    pub name: String,
    pub profile: String,
    pub index_path: PathBuf,
    /// Varied dotted keys, in index column order (e.g. `loss.alpha`).
    pub axes: Vec<String>,
    /// One row per distinct cell of the index: `cell_id, status, label, seed, <axes…>, config,
    /// has_metrics, <METRICS…>, source, numerics, git_commit` (metrics null where absent;
    /// `source` is `metrics.json` or empty; `status` is the index's word, the cell folder decides
    /// `has_metrics`).
    pub cells: DataFrame,
    pub missing: Vec<MissingCell>,
    /// Numerics versions and commits of the cells with metrics.
    pub provenance: Provenance,
}

/// Numerics versions and git commits of an experiment's cells with metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Provenance {
    /// Numerics version (None: unversioned) → commit (`unknown` when absent) → cells.
    pub versions: BTreeMap<Option<u32>, BTreeMap<String, usize>>,
}

impl Provenance {
    fn add(&mut self, version: Option<u32>, commit: Option<&str>) {
        let commit = commit.filter(|c| !c.is_empty()).unwrap_or("unknown");
        *self
            .versions
            .entry(version)
            .or_default()
            .entry(commit.to_string())
            .or_default() += 1;
    }

    /// Whether the cells span more than one numerics version (unversioned counts as one).
    pub fn is_mixed(&self) -> bool {
        self.versions.len() > 1
    }

    /// `v2 (24 cells), unversioned (3 cells)`, or `no cells` when empty.
    pub fn versions_text(&self) -> String {
        if self.versions.is_empty() {
            return "no cells".into();
        }
        // Newest first; unversioned last.
        self.versions
            .iter()
            .rev()
            .map(|(v, commits)| {
                format!(
                    "{} ({} cells)",
                    numerics_label(*v),
                    commits.values().sum::<usize>()
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Markdown lines: each numerics version with its cells and commits (12 hex digits).
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        if self.is_mixed() {
            s.push_str(&format!(
                "  - **mixed numerics**: these cells were trained by {} numerics versions\n",
                self.versions.len()
            ));
        }
        for (v, commits) in self.versions.iter().rev() {
            let n: usize = commits.values().sum();
            let list: Vec<String> = commits
                .iter()
                .map(|(c, k)| format!("`{}` ({k})", &c[..c.len().min(12)]))
                .collect();
            s.push_str(&format!(
                "  - numerics {}: {n} cells; commits {}\n",
                numerics_label(*v),
                list.join(", ")
            ));
        }
        s
    }
}

impl Experiment {
    /// Reads `results/<name>.<profile>.csv` and the metrics of its done and intact cells.
    pub fn load(results: &Path, name: &str, profile: &str) -> Result<Self> {
        check_plain_name("experiment name", name)?;
        check_plain_name("profile", profile)?;
        let path = index_path(results, name, profile);
        if !path.is_file() {
            return Err(MissingIndex {
                path,
                experiment: name.into(),
                profile: profile.into(),
            }
            .into());
        }
        let index = dedup_rows(&path, read_index(&path)?)?;
        build(name, profile, &path, &index, &results.join("cells"))
            .with_context(|| format!("reading {}", path.display()))
    }

    /// Refuses (an error naming the index) an experiment whose cells with metrics span more
    /// than one numerics version, unless `allow_mixed`; then the figure's title says "mixed
    /// numerics" ([`Experiment::title_tag`]) and its notes list the versions.
    pub fn check_numerics(&self, allow_mixed: bool) -> Result<()> {
        if self.provenance.is_mixed() && !allow_mixed {
            bail!(
                "{}: the cells of `{}` (profile {}) were trained by different numerics versions: {}. \
                 A figure or table mixes them only with --allow-mixed-numerics (it is then labelled \
                 \"mixed numerics\"); or retrain the old cells with one binary",
                self.index_path.display(),
                self.name,
                self.profile,
                self.provenance.versions_text()
            );
        }
        Ok(())
    }

    /// What a figure or table title adds: "partial: k of n cells" and/or "mixed numerics: …".
    pub fn title_tag(&self) -> Option<String> {
        let mixed = self
            .provenance
            .is_mixed()
            .then(|| format!("mixed numerics: {}", self.provenance.versions_text()));
        match (self.partial_tag(), mixed) {
            (Some(p), Some(m)) => Some(format!("{p}; {m}")),
            (p, m) => p.or(m),
        }
    }

    /// Number of cells in the index.
    pub fn total(&self) -> usize {
        self.cells.height()
    }

    /// Number of cells with usable metrics.
    pub fn with_metrics(&self) -> usize {
        self.total() - self.missing.len()
    }

    /// `Some("partial: k of n cells")` when some cells have no metrics.
    pub fn partial_tag(&self) -> Option<String> {
        (!self.missing.is_empty())
            .then(|| format!("partial: {} of {} cells", self.with_metrics(), self.total()))
    }

    /// Seed aggregates grouped by `keys` (columns of `cells`): see [`aggregate`].
    pub fn aggregate(&self, keys: &[&str]) -> Result<DataFrame> {
        aggregate(&self.cells, keys)
    }

    /// Seed aggregates grouped by `keys`, as plain structs in first-appearance order.
    pub fn groups(&self, keys: &[&str]) -> Result<Vec<Group>> {
        groups_from_frame(&self.aggregate(keys)?, keys)
    }

    /// Markdown notes: data coverage and the missing cells.
    pub fn coverage_markdown(&self) -> String {
        let mut s = format!(
            "- `{}`: {} of {} cells with metrics{}\n",
            self.index_path.display(),
            self.with_metrics(),
            self.total(),
            if self.missing.is_empty() {
                " (complete)".to_string()
            } else {
                format!(" (**{}**)", self.partial_tag().unwrap_or_default())
            }
        );
        s.push_str(&self.provenance.markdown());
        for m in &self.missing {
            let seed = m.seed.map(|v| v.to_string()).unwrap_or_else(|| "?".into());
            s.push_str(&format!(
                "  - missing `{}` {} seed {}: {}\n",
                short_id(&m.cell_id),
                m.config,
                seed,
                m.reason
            ));
        }
        s
    }
}

/// First 12 hex digits of a cell id.
pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Reads an index CSV with every column as a string (axis values such as `[crop]` stay
/// verbatim), and checks the fixed columns are there.
pub fn read_index(path: &Path) -> Result<DataFrame> {
    let df = CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(Some(0))
        .with_raise_if_empty(false)
        .try_into_reader_with_file_path(Some(path.to_path_buf()))
        .and_then(|r| r.finish())
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot parse index {}", path.display()))?;
    let names: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
    for need in ["cell_id", "status", "seed"] {
        if !names.iter().any(|n| n == need) {
            bail!(
                "index {} has no `{need}` column (columns: {}); see docs/formats.md",
                path.display(),
                names.join(",")
            );
        }
    }
    Ok(df)
}

/// Checks every row's cell id (a plain name: it names a folder under `cells/`) and drops rows
/// that repeat an earlier row's cell id with the same content (a cell counts once); a repeat
/// with different content is an error naming the index file and both lines.
/// Line numbers assume no field spans lines (the grid never writes one that does).
pub fn dedup_rows(path: &Path, df: DataFrame) -> Result<DataFrame> {
    let names: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
    let cols: Vec<Vec<Option<&str>>> = names.iter().map(|n| str_col(&df, n)).collect::<Result<_>>()?;
    let id_col = names
        .iter()
        .position(|n| n == "cell_id")
        .expect("checked by read_index");
    let mut first: HashMap<&str, usize> = HashMap::new();
    let mut keep = Vec::with_capacity(df.height());
    for i in 0..df.height() {
        let id = cols[id_col][i].unwrap_or("");
        // Cell ids name folders: an id that is not a plain name would leave `cells/`.
        check_plain_name("cell_id", id).with_context(|| format!("{}: line {}", path.display(), i + 2))?;
        match first.get(id) {
            None => {
                first.insert(id, i);
                keep.push(true);
            }
            Some(&j) => {
                if let Some(c) = (0..names.len()).find(|&c| cols[c][i] != cols[c][j]) {
                    bail!(
                        "{}: line {}: cell {} is also on line {} with a different `{}` ({:?} vs {:?}); \
                         an index lists each cell once (rewrite it with `protoclr grid status`)",
                        path.display(),
                        i + 2,
                        short_id(id),
                        j + 2,
                        names[c],
                        cols[c][i].unwrap_or(""),
                        cols[c][j].unwrap_or("")
                    );
                }
                keep.push(false);
            }
        }
    }
    let mask = BooleanChunked::from_slice("keep".into(), &keep);
    Ok(df.filter(&mask)?)
}

/// Metrics of one cell, or why there are none.
enum CellMetrics {
    Values(CellValues),
    Missing(String),
}

/// What the report takes from a done and intact cell's `metrics.json`.
struct CellValues {
    metrics: BTreeMap<&'static str, Option<f64>>,
    numerics_version: Option<u32>,
    git_commit: Option<String>,
}

/// A number as an error message writes it (no 300-digit expansions of 1e300).
fn show_num(x: f64) -> String {
    if x != 0.0 && !(1e-4..1e6).contains(&x.abs()) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

/// Keys of `eval` (and `reference`) holding accuracies in percent: every `*_top1`/`*_top5`
/// (test and validation, linear and kNN) and the long-tail per-group accuracies.
fn is_accuracy_key(k: &str) -> bool {
    k.ends_with("_top1")
        || k.ends_with("_top5")
        || matches!(k, "linear_many" | "linear_medium" | "linear_few")
}

/// Checks the values of an `eval`-shaped object: numbers finite, accuracies in [0, 100], the
/// L2 bias and its interval non-negative, class counts (`n_many|medium|few`) non-negative
/// integers. `at` is `eval` or `reference`.
fn check_eval(path: &Path, at: &str, eval: &serde_json::Map<String, serde_json::Value>) -> Result<()> {
    for (k, v) in eval {
        let nums: Vec<f64> = match v {
            serde_json::Value::Number(n) => n.as_f64().into_iter().collect(),
            serde_json::Value::Array(a) => a.iter().filter_map(|x| x.as_f64()).collect(),
            _ => Vec::new(),
        };
        for x in nums {
            let bad = if !x.is_finite() {
                Some("not a finite number")
            } else if is_accuracy_key(k) && !(0.0..=100.0).contains(&x) {
                Some("outside [0, 100] (an accuracy in percent)")
            } else if k.starts_with("bias_l2") && x < 0.0 {
                Some("negative (a distance)")
            } else if CLASS_COUNT_KEYS.contains(&k.as_str()) && (x < 0.0 || x.fract() != 0.0) {
                Some("not a non-negative integer (a number of classes)")
            } else {
                None
            };
            if let Some(why) = bad {
                bail!(
                    "{}: `{at}.{k}` is {}: {why}; this metrics.json is not a possible result",
                    path.display(),
                    show_num(x)
                );
            }
        }
    }
    Ok(())
}

/// Parses the checked bytes of a cell's `metrics.json` (`path` names it in errors).
fn read_metrics_json(path: &Path, bytes: &[u8]) -> Result<CellMetrics> {
    let m = Metrics::parse(bytes).with_context(|| format!("parsing {}", path.display()))?;
    if m.status != Status::Completed {
        let why = match &m.diverged {
            Some(d) => format!(
                "{} (epoch {}, {})",
                m.status.as_str(),
                d.epoch.map(|e| e.to_string()).unwrap_or_default(),
                d.what
            ),
            None => format!("metrics.json status `{}`", m.status.as_str()),
        };
        return Ok(CellMetrics::Missing(why));
    }
    let Some(eval) = &m.eval else {
        return Ok(CellMetrics::Missing("metrics.json has no eval".into()));
    };
    check_eval(path, "eval", eval)?;
    if let Some(r) = &m.reference {
        check_eval(path, "reference", r)?;
    }
    let numerics_version = m.numerics().map_err(|n| {
        anyhow::anyhow!(
            "{}: `numerics_version` is {n}, not a version number",
            path.display()
        )
    })?;
    let mut metrics = BTreeMap::new();
    for k in METRICS {
        metrics.insert(k, eval.get(k).and_then(|x| x.as_f64()));
    }
    if metrics["linear_top1"].is_none() {
        return Ok(CellMetrics::Missing(
            "metrics.json eval has no linear_top1".into(),
        ));
    }
    Ok(CellMetrics::Values(CellValues {
        metrics,
        numerics_version,
        git_commit: m.git_commit,
    }))
}

/// The metrics of the cell folder `dir` when the grid would call it done and intact
/// ([`CellRecord::read`]), else why not.
fn read_cell(dir: &Path) -> Result<CellMetrics> {
    let path = dir.join("metrics.json");
    Ok(match CellRecord::read(dir) {
        CellRecord::Finished(Finished {
            status,
            metrics: Some(bytes),
        }) => match status.status {
            Outcome::Done => read_metrics_json(&path, &bytes)?,
            // Diverged: say where, from the (checked) metrics.json.
            _ => match read_metrics_json(&path, &bytes) {
                Ok(CellMetrics::Missing(why)) => CellMetrics::Missing(why),
                _ => CellMetrics::Missing(status.status.as_str().into()),
            },
        },
        other => CellMetrics::Missing(other.why_not_done()),
    })
}

fn str_col<'a>(df: &'a DataFrame, name: &str) -> Result<Vec<Option<&'a str>>> {
    Ok(df.column(name)?.str()?.iter().collect())
}

fn parse_opt_f64(s: Option<&str>) -> Option<f64> {
    s.map(str::trim)
        .filter(|s| !s.is_empty())
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|v| v.is_finite())
}

fn build(name: &str, profile: &str, path: &Path, index: &DataFrame, cells_dir: &Path) -> Result<Experiment> {
    let names: Vec<String> = index.get_column_names().iter().map(|s| s.to_string()).collect();
    let axes: Vec<String> = names
        .iter()
        .filter(|n| !is_fixed_column(n) && !METRICS.contains(&n.as_str()))
        .cloned()
        .collect();
    let n = index.height();
    let ids = str_col(index, "cell_id")?;
    let status = str_col(index, "status")?;
    let labels = match names.iter().any(|c| c == "label") {
        true => str_col(index, "label")?,
        false => vec![None; n],
    };
    let seeds: Vec<Option<i64>> = str_col(index, "seed")?
        .into_iter()
        .map(|s| s.and_then(|s| s.trim().parse().ok()))
        .collect();
    let axis_vals: Vec<Vec<Option<&str>>> = axes.iter().map(|a| str_col(index, a)).collect::<Result<_>>()?;
    let mut configs = Vec::with_capacity(n);
    let mut has = Vec::with_capacity(n);
    let mut source = Vec::with_capacity(n);
    let mut numerics: Vec<String> = Vec::with_capacity(n);
    let mut commits: Vec<String> = Vec::with_capacity(n);
    let mut provenance = Provenance::default();
    let mut metric_cols: BTreeMap<&str, Vec<Option<f64>>> =
        METRICS.iter().map(|&m| (m, Vec::with_capacity(n))).collect();
    let mut missing = Vec::new();
    for i in 0..n {
        let id = ids[i].unwrap_or("").to_string();
        let label = labels[i].unwrap_or("").trim();
        let config = if !label.is_empty() {
            label.to_string()
        } else if axes.is_empty() {
            "default".to_string()
        } else {
            axes.iter()
                .zip(&axis_vals)
                .map(|(a, v)| format!("{a}={}", v[i].unwrap_or("")))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match read_cell(&cells_dir.join(&id))? {
            CellMetrics::Values(v) => {
                has.push(true);
                source.push("metrics.json");
                for k in METRICS {
                    metric_cols.get_mut(k).expect("metric").push(v.metrics[k]);
                }
                provenance.add(v.numerics_version, v.git_commit.as_deref());
                numerics.push(numerics_label(v.numerics_version));
                commits.push(v.git_commit.unwrap_or_default());
            }
            CellMetrics::Missing(reason) => {
                has.push(false);
                source.push("");
                numerics.push(String::new());
                commits.push(String::new());
                for k in METRICS {
                    metric_cols.get_mut(k).expect("metric").push(None);
                }
                missing.push(MissingCell {
                    cell_id: id.clone(),
                    config: config.clone(),
                    seed: seeds[i],
                    reason,
                });
            }
        }
        configs.push(config);
    }

    let mut cols: Vec<Column> = vec![
        Column::new("cell_id".into(), ids.clone()),
        Column::new("status".into(), status.clone()),
        Column::new(
            "label".into(),
            labels.iter().map(|l| l.unwrap_or("").trim()).collect::<Vec<_>>(),
        ),
        Column::new("seed".into(), seeds),
    ];
    for (a, v) in axes.iter().zip(&axis_vals) {
        cols.push(Column::new(
            a.as_str().into(),
            v.iter().map(|s| s.unwrap_or("").trim()).collect::<Vec<_>>(),
        ));
    }
    cols.push(Column::new(CONFIG.into(), configs));
    cols.push(Column::new(HAS_METRICS.into(), has));
    for k in METRICS {
        cols.push(Column::new(k.into(), metric_cols.remove(k).expect("metric")));
    }
    cols.push(Column::new("source".into(), source));
    cols.push(Column::new(NUMERICS.into(), numerics));
    cols.push(Column::new(GIT_COMMIT.into(), commits));
    let cells = DataFrame::new_infer_height(cols)?;
    Ok(Experiment {
        name: name.into(),
        profile: profile.into(),
        index_path: path.to_path_buf(),
        axes,
        cells,
        missing,
        provenance,
    })
}

/// Aggregates the cells with metrics over seeds, grouped by `keys`, with polars' group-by (in
/// order of first appearance). Columns: the keys, `n` (cells in the group), then per metric
/// `<m>_mean`, `<m>_std` (sample, null for n < 2), `<m>_n` (cells with that metric) and
/// `<m>_ci95` (half-width of the 95 % t-interval of the mean, null for n < 2).
#[allow(deprecated)] // polars' eager group-by aggregations: the lazy engine is not compiled in.
pub fn aggregate(cells: &DataFrame, keys: &[&str]) -> Result<DataFrame> {
    let done = cells.filter(cells.column(HAS_METRICS)?.bool()?)?;
    // Indicator columns, summed per group, count the non-null values of each metric.
    let mut with_ind = done.clone();
    for m in METRICS {
        let ind: Vec<f64> = done
            .column(m)?
            .f64()?
            .iter()
            .map(|v| if v.is_some() { 1.0 } else { 0.0 })
            .collect();
        with_ind.with_column(Column::new(format!("{m}__present").into(), ind))?;
    }
    let gb = with_ind.group_by_stable(keys.iter().copied())?;
    let means = gb.clone().select(METRICS).mean()?;
    let stds = gb.clone().select(METRICS).std(1)?;
    let present: Vec<String> = METRICS.iter().map(|m| format!("{m}__present")).collect();
    let counts = gb.clone().select(present.iter().map(String::as_str)).sum()?;
    let sizes = gb.select([METRICS[0]]).count()?;

    let mut cols: Vec<Column> = keys
        .iter()
        .map(|k| means.column(k).cloned())
        .collect::<PolarsResult<_>>()?;
    let n: Vec<u32> = sizes
        .column(&format!("{}_count", METRICS[0]))?
        .cast(&DataType::UInt32)?
        .u32()?
        .iter()
        .map(|v| v.unwrap_or(0))
        .collect();
    cols.push(Column::new("n".into(), n));
    for m in METRICS {
        let mean: Vec<Option<f64>> = means.column(&format!("{m}_mean"))?.f64()?.iter().collect();
        let std: Vec<Option<f64>> = stds
            .column(&format!("{m}_agg_std"))?
            .f64()?
            .iter()
            .map(|v| v.filter(|x| x.is_finite()))
            .collect();
        let cnt: Vec<u32> = counts
            .column(&format!("{m}__present_sum"))?
            .f64()?
            .iter()
            .map(|v| v.unwrap_or(0.0) as u32)
            .collect();
        let ci: Vec<Option<f64>> = std
            .iter()
            .zip(&cnt)
            .map(|(s, &k)| {
                let s = (*s)?;
                (k >= 2).then(|| t_quantile(0.975, (k - 1) as f64).map(|t| t * s / (k as f64).sqrt()))?
            })
            .collect();
        let std: Vec<Option<f64>> = std.iter().zip(&cnt).map(|(s, &k)| s.filter(|_| k >= 2)).collect();
        cols.push(Column::new(format!("{m}_mean").into(), mean));
        cols.push(Column::new(format!("{m}_std").into(), std));
        cols.push(Column::new(format!("{m}_n").into(), cnt));
        cols.push(Column::new(format!("{m}_ci95").into(), ci));
    }
    Ok(DataFrame::new_infer_height(cols)?)
}

/// One group of cells (e.g. one augmentation configuration, or one (α, λ)) with the seed
/// summaries of its metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Values of the grouping keys, in the order asked for.
    pub key: Vec<String>,
    /// Cells in the group.
    pub n: usize,
    summaries: BTreeMap<&'static str, Summary>,
}

impl Group {
    /// Summary over seeds of a metric (one of [`METRICS`]); `None` if no cell has it.
    pub fn get(&self, metric: &str) -> Option<&Summary> {
        self.summaries.get(metric)
    }

    /// Builds a group from summaries (for tests and callers outside a results folder).
    pub fn new(key: Vec<String>, n: usize, summaries: Vec<(&'static str, Summary)>) -> Self {
        Self {
            key,
            n,
            summaries: summaries.into_iter().collect(),
        }
    }
}

/// Converts an [`aggregate`] frame into [`Group`]s.
pub fn groups_from_frame(agg: &DataFrame, keys: &[&str]) -> Result<Vec<Group>> {
    let key_cols: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            Ok(agg
                .column(k)?
                .cast(&DataType::String)?
                .str()?
                .iter()
                .map(|s| s.unwrap_or("").to_string())
                .collect())
        })
        .collect::<Result<_>>()?;
    let ns: Vec<u32> = agg.column("n")?.u32()?.iter().flatten().collect();
    let mut out = Vec::with_capacity(agg.height());
    for i in 0..agg.height() {
        let mut summaries = BTreeMap::new();
        for m in METRICS {
            let mean = agg.column(&format!("{m}_mean"))?.f64()?.get(i);
            let std = agg.column(&format!("{m}_std"))?.f64()?.get(i);
            let n = agg.column(&format!("{m}_n"))?.u32()?.get(i).unwrap_or(0) as usize;
            if let (Some(mean), true) = (mean, n > 0) {
                summaries.insert(m, Summary { mean, std, n });
            }
        }
        out.push(Group {
            key: key_cols.iter().map(|c| c[i].clone()).collect(),
            n: ns[i] as usize,
            summaries,
        });
    }
    Ok(out)
}

/// Parses an axis value written in the index (`1`, `0.75`, `1.0`) as a number.
pub fn axis_number(s: &str) -> Option<f64> {
    parse_opt_f64(Some(s))
}
