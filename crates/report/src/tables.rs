//! The `table` kind: one row per `rows` group (e.g. the index `label`), one column per metric of
//! `metrics` as mean ± std (n) over seeds, in Markdown, LaTeX (booktabs) and CSV; optionally a
//! "paper" column that never holds an invented number (`paper_column`). The paper's tables are
//! its users.
//!
//! Rows follow the index's first-appearance order. A row run at several settings (e.g. the
//! balanced loss over an (α, λ) grid) shows one setting, chosen by [`crate::select`] on the first
//! metric: the highest mean of its validation form (`val_<metric>`) when every setting has one
//! (its test value is shown), else the highest mean of the metric itself, and the table says
//! which.
//!
//! With `class_groups` (the long-tail table) the table also shows, for the shown setting, the
//! linear top-1 of ImageNet-LT's many / medium / few-shot class groups (`linear_many|medium|few`,
//! mean ± std (n) over seeds) and the number of classes in each (`n_many|medium|few`, which every
//! seed of a setting must agree on); "—" where not measured (a balanced training set, or a group
//! with no class).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use polars::prelude::*;
use protoclr_formats::report::ReportSpec;

use crate::heatmap::trim_num;
use crate::load::{axis_number, short_id, Experiment, HAS_METRICS};
use crate::scatter::group_names;
use crate::select::{combined_basis, select_best, Basis};
use crate::stats::Summary;

/// What the "paper" column says for every row: the paper's table values could not be recovered
/// (see /work/shared/docs/paper.md, "Not recoverable").
pub const PAPER_NOT_RECOVERABLE: &str = "not recoverable";

/// ImageNet-LT's class groups, in column order: (name, accuracy key, class-count key) of
/// metrics.json's `eval`.
pub const SHOT_GROUPS: [(&str, &str, &str); 3] = [
    ("many", "linear_many", "n_many"),
    ("medium", "linear_medium", "n_medium"),
    ("few", "linear_few", "n_few"),
];

/// Column headers of a metric: (Markdown, LaTeX).
pub fn metric_header(metric: &str) -> (String, String) {
    match metric {
        "linear_top1" => ("Linear top-1 (%)".into(), "Linear top-1 (\\%)".into()),
        "knn_top1" => ("kNN top-1 (%)".into(), "$k$NN top-1 (\\%)".into()),
        "linear_top5" => ("Linear top-5 (%)".into(), "Linear top-5 (\\%)".into()),
        "knn_top5" => ("kNN top-5 (%)".into(), "$k$NN top-5 (\\%)".into()),
        other => (other.to_string(), tex_escape(other)),
    }
}

/// Whether a metric is an accuracy in percent (its values are checked to lie in [0, 100]).
pub fn is_accuracy(metric: &str) -> bool {
    metric.ends_with("_top1")
        || metric.ends_with("_top5")
        || matches!(metric, "linear_many" | "linear_medium" | "linear_few")
}

/// Per-class-group results of one row, in [`SHOT_GROUPS`] order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shots {
    /// Linear top-1 of the group over seeds; `None` where no cell measured it.
    pub accuracy: [Option<Summary>; 3],
    /// Classes in the group (the same in every seed); `None` where no cell measured it.
    pub classes: [Option<u32>; 3],
}

/// One row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The row's group (its label, else its `rows` values).
    pub method: String,
    /// The chosen setting (`α = 0.75, λ = 1.25`) when the row ran at several; else empty.
    pub setting: String,
    /// Settings the row ran at (with data).
    pub settings: usize,
    /// What the setting was chosen on, when there were several.
    pub selected_on: Option<Basis>,
    /// Validation form of the first metric for the shown setting, when measured.
    pub val_first: Option<Summary>,
    /// The metrics of the shown setting, in [`Table::metrics`] order.
    pub values: Vec<Option<Summary>>,
    /// Many / medium / few-shot results of the shown setting (filled with `class_groups`).
    pub shots: Shots,
}

/// A table ready to be written.
#[derive(Debug, Clone)]
pub struct Table {
    /// File stem, e.g. `table_cifar10`.
    pub stem: String,
    pub title: String,
    /// Metric columns.
    pub metrics: Vec<String>,
    pub rows: Vec<Row>,
    pub partial: Option<String>,
    /// Whether the many / medium / few-shot columns are shown (the long-tail table).
    pub shot_groups: bool,
    /// Whether the "paper" column is shown.
    pub paper_column: bool,
}

impl Row {
    /// The shown setting's summary of `metric` (a column of the table).
    pub fn value(&self, metrics: &[String], metric: &str) -> Option<Summary> {
        metrics
            .iter()
            .position(|m| m == metric)
            .and_then(|i| self.values[i])
    }

    fn first(&self) -> Option<&Summary> {
        self.values.first().and_then(Option::as_ref)
    }
}

impl Table {
    /// Builds the rows of a `table` spec; `stem` names its files.
    pub fn from_spec(exp: &Experiment, spec: &ReportSpec, stem: &str) -> Result<Self> {
        let rows = spec.rows.clone().unwrap_or_else(|| vec!["label".into()]);
        let metrics = spec.metrics.clone().unwrap_or_default();
        let names = group_names(exp, &rows)?;
        let first = metrics.first().cloned().unwrap_or_else(|| "linear_top1".into());
        let val_metric = format!("val_{first}");
        let val_metric = protoclr_formats::EVAL_METRICS
            .contains(&val_metric.as_str())
            .then_some(val_metric);
        // The varied keys not in `rows`: the settings a row may have run at.
        let settings_axes: Vec<&String> = exp.axes.iter().filter(|a| !rows.contains(a)).collect();
        let mut cells = exp.cells.clone();
        cells.with_column(Column::new("__row".into(), names.clone()))?;
        let mut keys: Vec<&str> = vec!["__row"];
        keys.extend(settings_axes.iter().map(|s| s.as_str()));
        let groups = crate::load::groups_from_frame(&crate::load::aggregate(&cells, &keys)?, &keys)?;

        // Rows in first-appearance order (including ones with no data yet).
        let mut methods: Vec<String> = Vec::new();
        for m in &names {
            if !methods.iter().any(|x| x == m) {
                methods.push(m.to_string());
            }
        }
        let mut out = Vec::new();
        for method in methods {
            let candidates: Vec<_> = groups
                .iter()
                .filter(|g| g.key[0] == method && g.get(&first).is_some())
                .collect();
            let selection = select_best(
                &candidates,
                |g| val_metric.as_deref().and_then(|m| g.get(m)).map(|s| s.mean),
                |g| g.get(&first).map(|s| s.mean),
            );
            let best = selection.map(|s| candidates[s.index]);
            let setting = match best {
                Some(b) if candidates.len() > 1 => {
                    // Name only the keys that differ between the candidates.
                    settings_axes
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| candidates.iter().any(|c| c.key[i + 1] != b.key[i + 1]))
                        .map(|(i, a)| {
                            let v = &b.key[i + 1];
                            let v = axis_number(v).map(trim_num).unwrap_or_else(|| v.clone());
                            format!("{} = {v}", crate::heatmap::symbol(spec, a))
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                }
                _ => String::new(),
            };
            let shots = match best {
                Some(b) if spec.class_groups => Shots {
                    accuracy: SHOT_GROUPS.map(|(_, acc, _)| b.get(acc).copied()),
                    classes: class_counts(exp, &cells, &keys, &b.key)?,
                },
                _ => Shots::default(),
            };
            out.push(Row {
                method,
                setting,
                settings: candidates.len(),
                selected_on: selection.filter(|_| candidates.len() > 1).map(|s| s.basis),
                val_first: best.and_then(|b| val_metric.as_deref().and_then(|m| b.get(m)).copied()),
                values: metrics
                    .iter()
                    .map(|m| best.and_then(|b| b.get(m).copied()))
                    .collect(),
                shots,
            });
        }
        Ok(Self {
            stem: stem.into(),
            title: format!("{} ({}, profile {})", spec.title, exp.name, exp.profile),
            metrics,
            rows: out,
            partial: exp.title_tag(),
            shot_groups: spec.class_groups,
            paper_column: spec.paper_column,
        })
    }

    fn full_title(&self) -> String {
        match &self.partial {
            Some(p) => format!("{} — {p}", self.title),
            None => self.title.clone(),
        }
    }

    fn setting_text(r: &Row) -> String {
        match (r.settings > 1, r.selected_on) {
            (true, Some(b)) => format!("best of {} {}: {}", r.settings, b.short(), r.setting),
            (true, None) => format!("best of {}: {}", r.settings, r.setting),
            _ => "—".into(),
        }
    }

    /// What the "best of k" rows were chosen on (`None` when no row chose among settings).
    pub fn selection_basis(&self) -> Option<Basis> {
        combined_basis(self.rows.iter().filter_map(|r| r.selected_on))
    }

    /// Footnote shared by the Markdown and LaTeX versions.
    pub fn footnote(&self) -> String {
        let mut s = if self.metrics.iter().all(|m| is_accuracy(m)) {
            String::from(
                "Top-1 accuracy in %, mean ± sample standard deviation over seeds (n = seeds with \
                 metrics), on the test set. ",
            )
        } else {
            String::from("Mean ± sample standard deviation over seeds (n = seeds with metrics). ")
        };
        s.push_str("\"best of k\": the method ran at k settings and one is shown. ");
        let first = self.metrics.first().map(String::as_str).unwrap_or("");
        let on = |b: Basis| self.rows.iter().any(|r| r.selected_on == Some(b));
        if on(Basis::Validation) {
            if first == "linear_top1" {
                s.push_str(
                    "\"on validation\": chosen by the highest mean validation linear top-1 \
                     (val_linear_top1, a split of the training set disjoint from the probe bank); \
                     the test accuracy of the chosen setting is shown. ",
                );
            } else {
                s.push_str(&format!(
                    "\"on validation\": chosen by the highest mean val_{first} (a split of the \
                     training set disjoint from the probe bank); the test value of the chosen \
                     setting is shown. "
                ));
            }
        }
        if on(Basis::Test) {
            if first == "linear_top1" {
                s.push_str(
                    "\"on test\": selection on test, because these cells have no validation \
                     metrics: the highest mean test linear top-1 is shown, hence optimistic. ",
                );
            } else {
                s.push_str(&format!(
                    "\"on test\": selection on test, because these cells have no validation \
                     metrics: the highest mean {first} is shown, hence optimistic. "
                ));
            }
        }
        if self.shot_groups {
            s.push_str(SHOT_FOOTNOTE);
        }
        if self.paper_column {
            s.push_str(
                "Paper: the paper's table values could not be recovered (its code and numbers are \
                 not public), so no paper number is given.",
            );
        }
        s.trim_end().to_string()
    }

    /// Markdown version.
    pub fn markdown(&self) -> String {
        let mut s = format!("### {}\n\n", self.full_title());
        let mut header = vec!["Method".to_string(), "Setting".to_string()];
        header.extend(self.metrics.iter().map(|m| metric_header(m).0));
        if self.shot_groups {
            header.extend(
                [
                    "Many-shot linear (%)",
                    "Medium-shot linear (%)",
                    "Few-shot linear (%)",
                    "Classes (many / medium / few)",
                ]
                .map(String::from),
            );
        }
        if self.paper_column {
            header.push("Paper".into());
        }
        let line = |cells: &[String]| {
            let mut l = String::from("|");
            for c in cells {
                l.push_str(&format!(" {c} |"));
            }
            l.push('\n');
            l
        };
        s.push_str(&line(&header));
        s.push('|');
        s.push_str(&"---|".repeat(header.len()));
        s.push('\n');
        for r in &self.rows {
            let mut cells = vec![md_escape(&r.method), md_escape(&Self::setting_text(r))];
            cells.extend(r.values.iter().map(|v| pm_text(v.as_ref())));
            if self.shot_groups {
                for a in &r.shots.accuracy {
                    cells.push(shot_cell(r, a.as_ref(), pm_text, "—"));
                }
                cells.push(classes_text(r));
            }
            if self.paper_column {
                cells.push(PAPER_NOT_RECOVERABLE.into());
            }
            s.push_str(&line(&cells));
        }
        s.push_str(&format!("\n{}\n", self.footnote()));
        s
    }

    /// LaTeX (booktabs) version.
    pub fn latex(&self) -> String {
        let mut s = String::from("% Generated by `protoclr report tables`; needs \\usepackage{booktabs}.\n");
        s.push_str("\\begin{table}[t]\n\\centering\n");
        s.push_str(&format!("\\caption{{{}}}\n", tex_escape(&self.full_title())));
        s.push_str(&format!("\\label{{tab:{}}}\n", self.stem.replace('_', "-")));
        let mut header = vec!["Method".to_string(), "Setting".to_string()];
        header.extend(self.metrics.iter().map(|m| metric_header(m).1));
        if self.shot_groups {
            header.extend(
                [
                    "Many-shot (\\%)",
                    "Medium-shot (\\%)",
                    "Few-shot (\\%)",
                    "Classes (many/medium/few)",
                ]
                .map(String::from),
            );
        }
        let centred = header.len() - 2;
        if self.paper_column {
            header.push("Paper".into());
        }
        s.push_str(&format!(
            "\\begin{{tabular}}{{ll{}{}}}\n\\toprule\n",
            "c".repeat(centred),
            if self.paper_column { "l" } else { "" }
        ));
        s.push_str(&format!("{} \\\\\n\\midrule\n", header.join(" & ")));
        for r in &self.rows {
            let mut cells = vec![tex_escape(&r.method), tex_escape(&Self::setting_text(r))];
            cells.extend(r.values.iter().map(|v| pm_tex(v.as_ref())));
            if self.shot_groups {
                for a in &r.shots.accuracy {
                    cells.push(shot_cell(r, a.as_ref(), pm_tex, "---"));
                }
                cells.push(tex_escape(&classes_text(r)));
            }
            if self.paper_column {
                cells.push(tex_escape(PAPER_NOT_RECOVERABLE));
            }
            s.push_str(&format!("{} \\\\\n", cells.join(" & ")));
        }
        s.push_str("\\bottomrule\n\\end{tabular}\n");
        s.push_str(&format!(
            "\\par\\smallskip{{\\footnotesize {}}}\n",
            tex_escape(&self.footnote())
        ));
        s.push_str("\\end{table}\n");
        s
    }

    /// Machine-readable version as a polars DataFrame (written as the CSV).
    pub fn frame(&self) -> Result<DataFrame> {
        let get = |f: &dyn Fn(&Row) -> Option<f64>| self.rows.iter().map(f).collect::<Vec<_>>();
        let n = |f: &dyn Fn(&Row) -> Option<&Summary>| {
            self.rows
                .iter()
                .map(|r| f(r).map(|s| s.n as u32).unwrap_or(0))
                .collect::<Vec<_>>()
        };
        let mut cols = vec![
            Column::new(
                "method".into(),
                self.rows.iter().map(|r| r.method.as_str()).collect::<Vec<_>>(),
            ),
            Column::new(
                "setting".into(),
                self.rows.iter().map(|r| r.setting.as_str()).collect::<Vec<_>>(),
            ),
            Column::new(
                "settings".into(),
                self.rows.iter().map(|r| r.settings as u32).collect::<Vec<_>>(),
            ),
            Column::new(
                "selected_on".into(),
                self.rows
                    .iter()
                    .map(|r| r.selected_on.map(|b| b.to_string()).unwrap_or_default())
                    .collect::<Vec<_>>(),
            ),
        ];
        if let Some(first) = self.metrics.first() {
            let val = format!("val_{first}");
            // A table that lists the validation metric among its own columns has its mean
            // there already (a second `<val>_mean` column would be a duplicate name).
            if protoclr_formats::EVAL_METRICS.contains(&val.as_str()) && !self.metrics.contains(&val) {
                cols.push(Column::new(
                    format!("{val}_mean").into(),
                    get(&|r| r.val_first.map(|s| s.mean)),
                ));
            }
        }
        for (i, m) in self.metrics.iter().enumerate() {
            cols.push(Column::new(
                format!("{m}_mean").into(),
                get(&|r| r.values[i].map(|s| s.mean)),
            ));
            cols.push(Column::new(
                format!("{m}_std").into(),
                get(&|r| r.values[i].and_then(|s| s.std)),
            ));
            cols.push(Column::new(format!("{m}_n").into(), n(&|r| r.values[i].as_ref())));
        }
        if self.shot_groups {
            for (g, (_, acc, _)) in SHOT_GROUPS.iter().enumerate() {
                cols.push(Column::new(
                    format!("{acc}_mean").into(),
                    get(&|r| r.shots.accuracy[g].map(|s| s.mean)),
                ));
                cols.push(Column::new(
                    format!("{acc}_std").into(),
                    get(&|r| r.shots.accuracy[g].and_then(|s| s.std)),
                ));
                cols.push(Column::new(
                    format!("{acc}_n").into(),
                    n(&|r| r.shots.accuracy[g].as_ref()),
                ));
            }
            for (g, (_, _, count)) in SHOT_GROUPS.iter().enumerate() {
                cols.push(Column::new(
                    (*count).into(),
                    self.rows.iter().map(|r| r.shots.classes[g]).collect::<Vec<_>>(),
                ));
            }
        }
        if self.paper_column {
            cols.push(Column::new(
                "paper".into(),
                vec![PAPER_NOT_RECOVERABLE; self.rows.len()],
            ));
        }
        Ok(DataFrame::new_infer_height(cols)?)
    }

    /// Writes `<stem>.md`, `<stem>.tex` and `<stem>.csv` into `out`, each atomically.
    pub fn write(&self, out: &Path) -> Result<Vec<PathBuf>> {
        crate::output::write_table(out, &self.stem, &self.markdown(), &self.latex(), self.frame()?)
    }
}

/// Footnote of the many / medium / few-shot columns.
const SHOT_FOOTNOTE: &str = "Many / medium / few-shot: test linear top-1 averaged over the classes \
     with more than 100 / 20 to 100 / fewer than 20 images in the self-supervised training set \
     (ImageNet-LT's groups; the thresholds scaled by n_max/1280, n_max the largest class), mean ± \
     std (n) over seeds; \"Classes\": the number of classes in each group; \"—\": not measured (a \
     balanced training set, or a group with no class). ";

/// Classes in each group of the cells of one setting (`key`: values of `keys`, a group of
/// [`Experiment::groups`]); an error naming the index when two cells disagree.
fn class_counts(
    exp: &Experiment,
    cells: &DataFrame,
    keys: &[&str],
    key: &[String],
) -> Result<[Option<u32>; 3]> {
    let key_cols: Vec<Vec<Option<&str>>> = keys
        .iter()
        .map(|k| Ok(cells.column(k)?.str()?.iter().collect()))
        .collect::<Result<_>>()?;
    let has: Vec<bool> = cells
        .column(HAS_METRICS)?
        .bool()?
        .iter()
        .map(|v| v.unwrap_or(false))
        .collect();
    let ids: Vec<Option<&str>> = cells.column("cell_id")?.str()?.iter().collect();
    let rows: Vec<usize> = (0..cells.height())
        .filter(|&i| has[i] && key_cols.iter().zip(key).all(|(c, k)| c[i].unwrap_or("") == k))
        .collect();
    let mut out = [None; 3];
    for (g, (_, _, count)) in SHOT_GROUPS.iter().enumerate() {
        let values: Vec<Option<f64>> = cells.column(count)?.f64()?.iter().collect();
        let mut seen: Option<(u32, usize)> = None;
        for &i in &rows {
            // metrics.json was checked: a class count is a non-negative integer.
            let Some(v) = values[i].map(|v| v as u32) else {
                continue;
            };
            match seen {
                None => seen = Some((v, i)),
                Some((w, j)) if w != v => bail!(
                    "{}: `{}` has cells with different numbers of {} classes: `{count}` = {w} \
                     (cell {}) and {v} (cell {}); the seeds of one setting must train on the same \
                     class sizes for their group accuracies to be averaged",
                    exp.index_path.display(),
                    key.join(", "),
                    SHOT_GROUPS[g].0,
                    short_id(ids[j].unwrap_or("")),
                    short_id(ids[i].unwrap_or(""))
                ),
                Some(_) => {}
            }
        }
        out[g] = seen.map(|(v, _)| v);
    }
    Ok(out)
}

/// A group accuracy cell: `no data` when the row has none, `dash` when the group is not
/// measured.
fn shot_cell(r: &Row, s: Option<&Summary>, fmt: fn(Option<&Summary>) -> String, dash: &str) -> String {
    match (r.first().is_some(), s) {
        (false, _) => fmt(None),
        (true, None) => dash.into(),
        (true, Some(s)) => fmt(Some(s)),
    }
}

/// `5 / 4 / 1`, "—" when no group is measured, `no data` when the row has none.
fn classes_text(r: &Row) -> String {
    if r.first().is_none() {
        return "no data".into();
    }
    if r.shots.classes.iter().all(Option::is_none) {
        return "—".into();
    }
    r.shots
        .classes
        .iter()
        .map(|c| c.map(|c| c.to_string()).unwrap_or_else(|| "—".into()))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// `61.30 ± 0.45 (n=3)`, `61.30 (n=1)` or `no data`.
pub fn pm_text(s: Option<&Summary>) -> String {
    match s {
        None => "no data".into(),
        Some(s) => match s.std {
            Some(sd) => format!("{:.2} ± {:.2} (n={})", s.mean, sd, s.n),
            None => format!("{:.2} (n={})", s.mean, s.n),
        },
    }
}

fn pm_tex(s: Option<&Summary>) -> String {
    match s {
        None => "no data".into(),
        Some(s) => match s.std {
            Some(sd) => format!("${:.2} \\pm {:.2}$ ({})", s.mean, sd, s.n),
            None => format!("${:.2}$ ({})", s.mean, s.n),
        },
    }
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

/// Escapes LaTeX specials and maps the Unicode symbols the reports use to math mode.
pub fn tex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\textbackslash{}"),
            '&' | '%' | '$' | '#' | '_' | '{' | '}' => {
                out.push('\\');
                out.push(c);
            }
            '~' => out.push_str("\\textasciitilde{}"),
            '^' => out.push_str("\\textasciicircum{}"),
            'α' => out.push_str("$\\alpha$"),
            'λ' => out.push_str("$\\lambda$"),
            'ρ' => out.push_str("$\\rho$"),
            '±' => out.push_str("$\\pm$"),
            '−' => out.push_str("$-$"),
            '—' => out.push_str("---"),
            '–' => out.push_str("--"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tex_escape_specials() {
        assert_eq!(tex_escape("a_b & 5% — α"), "a\\_b \\& 5\\% --- $\\alpha$");
    }

    fn summary(mean: f64) -> Option<Summary> {
        Some(Summary {
            mean,
            std: Some(0.5),
            n: 2,
        })
    }

    fn table(metrics: &[&str]) -> Table {
        Table {
            stem: "t".into(),
            title: "t".into(),
            metrics: metrics.iter().map(|m| m.to_string()).collect(),
            rows: vec![Row {
                method: "NT-Xent".into(),
                setting: String::new(),
                settings: 1,
                selected_on: None,
                val_first: summary(40.0),
                values: (0..metrics.len()).map(|i| summary(50.0 + i as f64)).collect(),
                shots: Shots::default(),
            }],
            partial: None,
            shot_groups: false,
            paper_column: false,
        }
    }

    fn names(t: &Table) -> Vec<String> {
        t.frame()
            .unwrap()
            .get_column_names()
            .iter()
            .map(|n| n.to_string())
            .collect()
    }

    #[test]
    fn validation_column_is_shown_once() {
        // The first metric's validation form gets its own column ...
        let plain = names(&table(&["linear_top1", "knn_top1"]));
        assert_eq!(
            plain.iter().filter(|n| *n == "val_linear_top1_mean").count(),
            1,
            "{plain:?}"
        );
        // ... unless the table lists it among its metrics: then that is the one column.
        let t = table(&["linear_top1", "val_linear_top1"]);
        let listed = names(&t);
        assert_eq!(
            listed.iter().filter(|n| *n == "val_linear_top1_mean").count(),
            1,
            "{listed:?}"
        );
        let col = t
            .frame()
            .unwrap()
            .column("val_linear_top1_mean")
            .unwrap()
            .f64()
            .unwrap()
            .get(0);
        assert_eq!(
            col,
            Some(51.0),
            "the listed metric's own mean, not the selection's"
        );
    }

    #[test]
    fn pm_formats() {
        let s = Summary {
            mean: 61.234,
            std: Some(0.456),
            n: 3,
        };
        assert_eq!(pm_text(Some(&s)), "61.23 ± 0.46 (n=3)");
        assert_eq!(pm_text(None), "no data");
    }
}
