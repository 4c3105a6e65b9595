//! Claim (d): the reconstructed bounds of Theorems 4.1/4.2 (docs/paper.md) hold on trained
//! encoders, and `table_bounds.{md,tex,csv}`.
//!
//! Training measures both sides of each bound per sample on the bias images, with the realistic
//! prototypes, and writes into metrics.json's `eval`: `bound_attract_holds` / `bound_repel_holds`
//! (share of samples in [0, 1] where the bound holds), `bound_attract_slack` /
//! `bound_repel_slack` (mean of right side − left side) and `bound_n` (samples). Here they are
//! read per cell, tabulated per configuration, and judged: supported iff every measured sample
//! satisfies both bounds (share exactly 1 in every measured cell). A share below 1 is a finding:
//! the cells and shares are listed, nothing is clipped. Cells without the keys (written before
//! they existed) are "not measured", not an error.

use std::path::{Path, PathBuf};

use anyhow::Result;
use polars::prelude::*;

use crate::claims::{Claim, Verdict};
use crate::load::{short_id, Experiment, CONFIG, HAS_METRICS};
use crate::style::num;
use crate::tables::tex_escape;

/// File stem of the bounds table.
pub const TABLE_STEM: &str = "table_bounds";

/// The two bounds, with their `eval` key prefix and a name.
pub const BOUNDS: [(&str, &str); 2] = [
    ("bound_attract", "attracting (Thm 4.1)"),
    ("bound_repel", "repelling (Thm 4.2)"),
];

/// One cell's bound measurements.
#[derive(Debug, Clone, PartialEq)]
pub struct CellBounds {
    pub experiment: String,
    pub config: String,
    pub cell_id: String,
    pub seed: Option<i64>,
    /// `[attract, repel]` share of samples where the bound holds.
    pub holds: [Option<f64>; 2],
    /// `[attract, repel]` mean slack (right side − left side).
    pub slack: [Option<f64>; 2],
    /// Samples measured.
    pub n: Option<f64>,
}

impl CellBounds {
    /// Whether the cell measured any bound.
    pub fn measured(&self) -> bool {
        self.holds.iter().any(Option::is_some)
    }

    /// Whether some measured share is below 1 (a sample violates a bound).
    pub fn violates(&self) -> bool {
        self.holds.iter().flatten().any(|&h| h < 1.0)
    }

    /// Whether some share is outside [0, 1] or not finite (the file is inconsistent).
    pub fn invalid(&self) -> bool {
        self.holds.iter().flatten().any(|&h| !(0.0..=1.0).contains(&h))
    }
}

fn f64_col(df: &DataFrame, name: &str) -> Result<Vec<Option<f64>>> {
    Ok(df.column(name)?.f64()?.iter().collect())
}

/// The bound measurements of every cell of `exp` with metrics (measured or not).
pub fn cell_bounds(exp: &Experiment) -> Result<Vec<CellBounds>> {
    let df = &exp.cells;
    let has: Vec<bool> = df
        .column(HAS_METRICS)?
        .bool()?
        .iter()
        .map(|v| v == Some(true))
        .collect();
    let ids: Vec<String> = df
        .column("cell_id")?
        .str()?
        .iter()
        .map(|s| s.unwrap_or("").to_string())
        .collect();
    let configs: Vec<String> = df
        .column(CONFIG)?
        .str()?
        .iter()
        .map(|s| s.unwrap_or("").to_string())
        .collect();
    let seeds: Vec<Option<i64>> = df.column("seed")?.i64()?.iter().collect();
    let col = |suffix: &str, b: usize| f64_col(df, &format!("{}_{suffix}", BOUNDS[b].0));
    let (ha, hr, sa, sr) = (
        col("holds", 0)?,
        col("holds", 1)?,
        col("slack", 0)?,
        col("slack", 1)?,
    );
    let n = f64_col(df, "bound_n")?;
    Ok((0..df.height())
        .filter(|&i| has[i])
        .map(|i| CellBounds {
            experiment: exp.name.clone(),
            config: configs[i].clone(),
            cell_id: ids[i].clone(),
            seed: seeds[i],
            holds: [ha[i], hr[i]],
            slack: [sa[i], sr[i]],
            n: n[i],
        })
        .collect())
}

/// One configuration of the bounds table.
#[derive(Debug, Clone, PartialEq)]
pub struct BoundRow {
    pub experiment: String,
    pub config: String,
    /// Cells of the configuration that measured the bounds.
    pub cells: usize,
    /// Total samples (sum of `bound_n`).
    pub n: f64,
    /// Per bound: mean over cells of the holds share.
    pub holds_mean: [Option<f64>; 2],
    /// Per bound: smallest holds share of a cell.
    pub holds_min: [Option<f64>; 2],
    /// Per bound: mean over cells of the mean slack.
    pub slack_mean: [Option<f64>; 2],
}

fn mean(xs: &[f64]) -> Option<f64> {
    crate::stats::mean(xs)
}

/// Rows per (experiment, configuration) in first-appearance order, measured cells only.
pub fn rows(cells: &[CellBounds]) -> Vec<BoundRow> {
    let mut keys: Vec<(String, String)> = Vec::new();
    for c in cells.iter().filter(|c| c.measured()) {
        let k = (c.experiment.clone(), c.config.clone());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.into_iter()
        .map(|(experiment, config)| {
            let group: Vec<&CellBounds> = cells
                .iter()
                .filter(|c| c.measured() && c.experiment == experiment && c.config == config)
                .collect();
            let per = |f: &dyn Fn(&CellBounds) -> Option<f64>| -> Vec<f64> {
                group.iter().filter_map(|c| f(c)).collect()
            };
            let mut row = BoundRow {
                experiment,
                config,
                cells: group.len(),
                n: per(&|c| c.n).iter().sum(),
                holds_mean: [None; 2],
                holds_min: [None; 2],
                slack_mean: [None; 2],
            };
            for b in 0..2 {
                let h = per(&|c| c.holds[b]);
                row.holds_mean[b] = mean(&h);
                row.holds_min[b] = h.iter().copied().reduce(f64::min);
                row.slack_mean[b] = mean(&per(&|c| c.slack[b]));
            }
            row
        })
        .collect()
}

const RULE_D: &str = "Per trained encoder (cell), on the bias images, training computes both sides \
    of each reconstructed bound per sample with the realistic prototypes (docs/paper.md): \
    Theorem 4.1 (attracting) −s(z, μ_y) ≤ −s(z, μ_x) + ‖μ_x − μ_y‖ for unit z, and Theorem 4.2 \
    (repelling) max_{y'≠y} s(z, μ_{y'}) ≤ τ·log Σ_{y'≠y} exp(s(z, μ_{y'})/τ), and writes the \
    share of samples where each holds (`bound_attract_holds`, `bound_repel_holds`), the mean \
    slack (right − left) and the number of samples (`bound_n`). Supported iff every measured \
    sample satisfies both bounds (share 1.0 in every measured cell); not supported if any cell \
    has a share below 1 — a violation is a finding, listed with its cells and shares, never \
    clipped; not measured if no cell has the bound metrics; inconclusive if a share lies outside \
    [0, 1].";

fn share(v: Option<f64>) -> String {
    v.map(|x| num(x, 4)).unwrap_or_else(|| "—".into())
}

fn slack(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "—".into())
}

fn seed_text(s: Option<i64>) -> String {
    s.map(|v| v.to_string()).unwrap_or_else(|| "?".into())
}

/// Claim (d) from the experiments' cells. `sources`: per experiment, its cells or why there are
/// none (missing index).
pub fn claim_d(sources: &[(&str, std::result::Result<Vec<CellBounds>, String>)]) -> Claim {
    let mut c = Claim {
        id: "d".into(),
        title: "The reconstructed bounds of Theorems 4.1/4.2 hold on trained encoders".into(),
        statistic: "—".into(),
        interval: "none: a count over every measured sample, no sampling model".into(),
        n: "0 cells measured".into(),
        rule: RULE_D.into(),
        verdict: Verdict::NotMeasured,
        reason: String::new(),
        details: String::new(),
    };
    let mut all: Vec<&CellBounds> = Vec::new();
    let mut per_exp = Vec::new();
    let mut without = Vec::new();
    for (name, src) in sources {
        match src {
            Ok(cells) => {
                let measured: Vec<&CellBounds> = cells.iter().filter(|c| c.measured()).collect();
                per_exp.push(format!(
                    "{name}: {} of {} cells with metrics",
                    measured.len(),
                    cells.len()
                ));
                all.extend(measured);
            }
            Err(why) => without.push(format!("{name}: {why}")),
        }
    }
    let samples: f64 = all.iter().filter_map(|c| c.n).sum();
    c.n = format!(
        "{} cells measured ({}), {} samples in all{}",
        all.len(),
        if per_exp.is_empty() {
            "no experiment".to_string()
        } else {
            per_exp.join("; ")
        },
        samples,
        if without.is_empty() {
            String::new()
        } else {
            format!("; no data: {}", without.join("; "))
        }
    );
    if all.is_empty() {
        c.reason = "not measured: no cell has bound_attract_holds or bound_repel_holds (cells \
                    written before the bounds were measured)"
            .into();
        return c;
    }
    let min_of = |b: usize| all.iter().filter_map(|x| x.holds[b]).reduce(f64::min);
    c.statistic = format!(
        "smallest share of samples where the bound holds: attracting {}, repelling {}; mean \
         slack over cells: attracting {}, repelling {}",
        share(min_of(0)),
        share(min_of(1)),
        slack(mean(&all.iter().filter_map(|x| x.slack[0]).collect::<Vec<_>>())),
        slack(mean(&all.iter().filter_map(|x| x.slack[1]).collect::<Vec<_>>())),
    );
    let half: Vec<&&CellBounds> = all
        .iter()
        .filter(|x| x.holds.iter().any(Option::is_none))
        .collect();
    if !half.is_empty() {
        c.details.push_str(&format!(
            "{} measured cells have only one of the two bounds.\n\n",
            half.len()
        ));
    }
    let invalid: Vec<&&CellBounds> = all.iter().filter(|x| x.invalid()).collect();
    let violating: Vec<&&CellBounds> = all.iter().filter(|x| x.violates()).collect();
    (c.verdict, c.reason) = if !invalid.is_empty() {
        (
            Verdict::Inconclusive,
            format!(
                "{} cells report a share outside [0, 1]: {}",
                invalid.len(),
                invalid
                    .iter()
                    .map(|x| format!("`{}` ({})", short_id(&x.cell_id), x.experiment))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    } else if !violating.is_empty() {
        (
            Verdict::NotSupported,
            format!(
                "{} of {} measured cells have samples violating a bound (a finding: see the \
                 list below)",
                violating.len(),
                all.len()
            ),
        )
    } else {
        (
            Verdict::Supported,
            format!(
                "every measured sample satisfies both bounds in all {} cells (share 1.0)",
                all.len()
            ),
        )
    };
    if !violating.is_empty() {
        c.details.push_str(
            "Cells with violations (share of samples where the bound holds, mean slack):\n\n\
             | experiment | configuration | seed | cell | attracting holds | attracting slack | \
             repelling holds | repelling slack | n |\n|---|---|---|---|---|---|---|---|---|\n",
        );
        for x in &violating {
            c.details.push_str(&format!(
                "| {} | {} | {} | `{}` | {} | {} | {} | {} | {} |\n",
                x.experiment,
                x.config.replace('|', "\\|"),
                seed_text(x.seed),
                short_id(&x.cell_id),
                share(x.holds[0]),
                slack(x.slack[0]),
                share(x.holds[1]),
                slack(x.slack[1]),
                x.n.map(|v| v.to_string()).unwrap_or_else(|| "—".into())
            ));
        }
        c.details.push('\n');
    }
    c.details.push_str(&format!(
        "Per configuration: `{TABLE_STEM}.md` (and `.tex`, `.csv`).\n"
    ));
    c
}

/// The bounds table in Markdown, LaTeX and CSV.
#[derive(Debug, Clone)]
pub struct BoundsTable {
    pub rows: Vec<BoundRow>,
    /// Experiments read and what they said (`fig3: 10 of 14 cells measured`, `fig4: missing …`).
    pub coverage: Vec<String>,
}

impl BoundsTable {
    /// Builds the table from the same sources as [`claim_d`].
    pub fn new(sources: &[(&str, std::result::Result<Vec<CellBounds>, String>)]) -> Self {
        let mut cells = Vec::new();
        let mut coverage = Vec::new();
        for (name, src) in sources {
            match src {
                Ok(c) => {
                    coverage.push(format!(
                        "{name}: {} of {} cells with metrics measured the bounds",
                        c.iter().filter(|x| x.measured()).count(),
                        c.len()
                    ));
                    cells.extend(c.iter().cloned());
                }
                Err(why) => coverage.push(format!("{name}: {why}")),
            }
        }
        Self {
            rows: rows(&cells),
            coverage,
        }
    }

    fn footnote(&self) -> String {
        format!(
            "Share of samples where the bound holds (mean over the cells of the configuration, \
             and the smallest cell), mean slack = right side − left side (mean over cells), n = \
             samples (bias images) over all cells; from metrics.json `bound_*`. Both must hold \
             on every sample (share 1) if the reconstruction in docs/paper.md is right. {}.",
            self.coverage.join("; ")
        )
    }

    /// Markdown version.
    pub fn markdown(&self) -> String {
        let mut s = String::from("### Theorems 4.1/4.2: reconstructed bounds on trained encoders\n\n");
        if self.rows.is_empty() {
            s.push_str("Not measured: no cell has the bound metrics.\n\n");
        } else {
            s.push_str(
                "| Experiment | Configuration | Cells | n | Attracting holds (mean / min) | \
                 Attracting slack | Repelling holds (mean / min) | Repelling slack |\n\
                 |---|---|---|---|---|---|---|---|\n",
            );
            for r in &self.rows {
                s.push_str(&format!(
                    "| {} | {} | {} | {} | {} / {} | {} | {} / {} | {} |\n",
                    r.experiment,
                    r.config.replace('|', "\\|"),
                    r.cells,
                    r.n,
                    share(r.holds_mean[0]),
                    share(r.holds_min[0]),
                    slack(r.slack_mean[0]),
                    share(r.holds_mean[1]),
                    share(r.holds_min[1]),
                    slack(r.slack_mean[1]),
                ));
            }
            s.push('\n');
        }
        s.push_str(&self.footnote());
        s.push('\n');
        s
    }

    /// LaTeX (booktabs) version.
    pub fn latex(&self) -> String {
        let mut s = String::from("% Generated by `protoclr report claims`; needs \\usepackage{booktabs}.\n");
        s.push_str("\\begin{table}[t]\n\\centering\n");
        s.push_str("\\caption{Theorems 4.1/4.2: reconstructed bounds on trained encoders}\n");
        s.push_str("\\label{tab:bounds}\n\\begin{tabular}{llrrcccc}\n\\toprule\n");
        s.push_str(
            "Experiment & Configuration & Cells & $n$ & Attr.\\ holds (mean/min) & Attr.\\ slack & \
             Rep.\\ holds (mean/min) & Rep.\\ slack \\\\\n\\midrule\n",
        );
        if self.rows.is_empty() {
            s.push_str("\\multicolumn{8}{c}{not measured: no cell has the bound metrics} \\\\\n");
        }
        for r in &self.rows {
            s.push_str(&format!(
                "{} & {} & {} & {} & {} / {} & {} & {} / {} & {} \\\\\n",
                tex_escape(&r.experiment),
                tex_escape(&r.config),
                r.cells,
                r.n,
                share(r.holds_mean[0]),
                share(r.holds_min[0]),
                tex_escape(&slack(r.slack_mean[0])),
                share(r.holds_mean[1]),
                share(r.holds_min[1]),
                tex_escape(&slack(r.slack_mean[1])),
            ));
        }
        s.push_str("\\bottomrule\n\\end{tabular}\n");
        s.push_str(&format!(
            "\\par\\smallskip{{\\footnotesize {}}}\n\\end{{table}}\n",
            tex_escape(&self.footnote())
        ));
        s
    }

    /// Machine-readable version (written as the CSV).
    pub fn frame(&self) -> Result<DataFrame> {
        let col = |f: &dyn Fn(&BoundRow) -> Option<f64>| self.rows.iter().map(f).collect::<Vec<_>>();
        let mut cols = vec![
            Column::new(
                "experiment".into(),
                self.rows
                    .iter()
                    .map(|r| r.experiment.as_str())
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "configuration".into(),
                self.rows.iter().map(|r| r.config.as_str()).collect::<Vec<_>>(),
            ),
            Column::new(
                "cells".into(),
                self.rows.iter().map(|r| r.cells as u32).collect::<Vec<_>>(),
            ),
            Column::new("n".into(), self.rows.iter().map(|r| r.n).collect::<Vec<_>>()),
        ];
        for (b, name) in ["attract", "repel"].iter().enumerate() {
            cols.push(Column::new(
                format!("{name}_holds_mean").into(),
                col(&|r| r.holds_mean[b]),
            ));
            cols.push(Column::new(
                format!("{name}_holds_min").into(),
                col(&|r| r.holds_min[b]),
            ));
            cols.push(Column::new(
                format!("{name}_slack_mean").into(),
                col(&|r| r.slack_mean[b]),
            ));
        }
        Ok(DataFrame::new_infer_height(cols)?)
    }

    /// Writes `table_bounds.{md,tex,csv}` into `out`.
    pub fn write(&self, out: &Path) -> Result<Vec<PathBuf>> {
        crate::output::write_table(out, TABLE_STEM, &self.markdown(), &self.latex(), self.frame()?)
    }
}
