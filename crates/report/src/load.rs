//! Loading a results folder (docs/formats.md) into polars DataFrames, and aggregating over seeds.
//!
//! The per-experiment index `results/<experiment>.<profile>.csv` says which cells belong to the
//! experiment and their axis values; each cell's own `results/cells/<id>/metrics.json` (found by
//! walking `results/cells`) is the source of its metrics. A cell whose index row says `done` but
//! whose metrics.json is absent falls back to the index's headline columns (noted as such).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use polars::prelude::*;
use walkdir::WalkDir;

use crate::stats::{t_quantile, Summary};

/// Metrics the reports use, as named in metrics.json's `eval`. The first five are also index CSV
/// columns; the others are optional `eval` keys (validation accuracy, scale-free bias, theorem
/// bounds; docs/formats.md), null in cells written before they existed.
pub const METRICS: [&str; 13] = [
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
];

/// Index columns that are not varied keys (docs/formats.md).
const FIXED_COLUMNS: [&str; 13] = [
    "cell_id",
    "status",
    "label",
    "seed",
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

/// Column of the loaded cell frame describing the configuration (label, else the axis values).
pub const CONFIG: &str = "config";
/// Column of the loaded cell frame: whether the cell has usable metrics.
pub const HAS_METRICS: &str = "has_metrics";

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
    /// One row per index row: `cell_id, status, label, seed, <axes…>, config, has_metrics,
    /// <METRICS…>, source` (metrics null where absent; `source` is `metrics.json`, `index` or
    /// empty).
    pub cells: DataFrame,
    pub missing: Vec<MissingCell>,
}

impl Experiment {
    /// Reads `results/<name>.<profile>.csv` and the metrics of its cells.
    pub fn load(results: &Path, name: &str, profile: &str) -> Result<Self> {
        let path = index_path(results, name, profile);
        if !path.is_file() {
            return Err(MissingIndex {
                path,
                experiment: name.into(),
                profile: profile.into(),
            }
            .into());
        }
        let index = read_index(&path)?;
        let metric_files = find_metric_files(&results.join("cells"))?;
        build(name, profile, &path, &index, &metric_files)
            .with_context(|| format!("reading {}", path.display()))
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

/// `cell id → results/cells/<id>/metrics.json`, walking `cells_dir` (absent folder: empty map).
pub fn find_metric_files(cells_dir: &Path) -> Result<HashMap<String, PathBuf>> {
    let mut out = HashMap::new();
    if !cells_dir.is_dir() {
        return Ok(out);
    }
    for entry in WalkDir::new(cells_dir).min_depth(2).max_depth(2) {
        let entry = entry.with_context(|| format!("walking {}", cells_dir.display()))?;
        if entry.file_type().is_file() && entry.file_name() == "metrics.json" {
            if let Some(id) = entry
                .path()
                .parent()
                .and_then(|p| p.file_name())
                .and_then(|s| s.to_str())
            {
                out.insert(id.to_string(), entry.path().to_path_buf());
            }
        }
    }
    Ok(out)
}

/// Metrics of one cell, or why there are none.
enum CellMetrics {
    Values(BTreeMap<&'static str, Option<f64>>, &'static str),
    Missing(String),
}

fn read_metrics_json(path: &Path) -> Result<CellMetrics> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let status = v.get("status").and_then(|s| s.as_str()).unwrap_or("");
    if status != "completed" {
        let why = match v.get("diverged").and_then(|d| d.as_object()) {
            Some(d) => format!(
                "{status} (epoch {}, {})",
                d.get("epoch").map(|e| e.to_string()).unwrap_or_default(),
                d.get("what").and_then(|w| w.as_str()).unwrap_or("")
            ),
            None => format!("metrics.json status `{status}`"),
        };
        return Ok(CellMetrics::Missing(why));
    }
    let Some(eval) = v.get("eval").and_then(|e| e.as_object()) else {
        return Ok(CellMetrics::Missing("metrics.json has no eval".into()));
    };
    let mut m = BTreeMap::new();
    for k in METRICS {
        m.insert(k, eval.get(k).and_then(|x| x.as_f64()));
    }
    if m["linear_top1"].is_none() {
        return Ok(CellMetrics::Missing(
            "metrics.json eval has no linear_top1".into(),
        ));
    }
    Ok(CellMetrics::Values(m, "metrics.json"))
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

fn build(
    name: &str,
    profile: &str,
    path: &Path,
    index: &DataFrame,
    metric_files: &HashMap<String, PathBuf>,
) -> Result<Experiment> {
    let names: Vec<String> = index.get_column_names().iter().map(|s| s.to_string()).collect();
    let axes: Vec<String> = names
        .iter()
        .filter(|n| !FIXED_COLUMNS.contains(&n.as_str()) && !METRICS.contains(&n.as_str()))
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
    let index_metrics: BTreeMap<&str, Vec<Option<f64>>> = METRICS
        .iter()
        .map(|&m| {
            let v = if names.iter().any(|c| c == m) {
                str_col(index, m)?.into_iter().map(parse_opt_f64).collect()
            } else {
                vec![None; n]
            };
            Ok((m, v))
        })
        .collect::<Result<_>>()?;

    let mut configs = Vec::with_capacity(n);
    let mut has = Vec::with_capacity(n);
    let mut source = Vec::with_capacity(n);
    let mut metric_cols: BTreeMap<&str, Vec<Option<f64>>> =
        METRICS.iter().map(|&m| (m, Vec::with_capacity(n))).collect();
    let mut missing = Vec::new();
    for i in 0..n {
        let id = ids[i].unwrap_or("").to_string();
        if id.is_empty() {
            bail!("row {} of {} has an empty cell_id", i + 2, path.display());
        }
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
        let st = status[i].unwrap_or("").trim();
        let got = match metric_files.get(&id) {
            Some(p) => read_metrics_json(p)?,
            None if st == "done" && index_metrics["linear_top1"][i].is_some() => CellMetrics::Values(
                METRICS.iter().map(|&m| (m, index_metrics[m][i])).collect(),
                "index",
            ),
            None => CellMetrics::Missing(if st.is_empty() {
                "no status".into()
            } else {
                st.to_string()
            }),
        };
        match got {
            CellMetrics::Values(m, src) => {
                has.push(true);
                source.push(src);
                for k in METRICS {
                    metric_cols.get_mut(k).expect("metric").push(m[k]);
                }
            }
            CellMetrics::Missing(reason) => {
                has.push(false);
                source.push("");
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
    let cells = DataFrame::new_infer_height(cols)?;
    Ok(Experiment {
        name: name.into(),
        profile: profile.into(),
        index_path: path.to_path_buf(),
        axes,
        cells,
        missing,
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
