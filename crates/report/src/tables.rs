//! The paper's tables from cached results: one row per method (index `label`), linear and kNN
//! top-1 accuracy as mean ± std (n), in Markdown, LaTeX (booktabs) and CSV, with a "paper"
//! column that never holds an invented number.
//!
//! Rows follow the index's first-appearance order of labels. A label run at several settings
//! (e.g. the balanced loss over an (α, λ) grid) shows one setting, chosen by [`crate::select`]:
//! the highest mean validation linear accuracy when every setting has one (its test accuracy is
//! shown), else the highest mean test accuracy, and the table says which.
//!
//! The long-tail table ([`Table::long_tail`]) also shows, for the shown setting, the linear top-1
//! of ImageNet-LT's many / medium / few-shot class groups (`linear_many|medium|few`, mean ± std
//! (n) over seeds) and the number of classes in each (`n_many|medium|few`, which every seed of a
//! setting must agree on); "—" where not measured (a balanced training set, or a group with no
//! class).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use polars::prelude::*;

use crate::heatmap::trim_num;
use crate::load::{axis_number, short_id, Experiment, CONFIG, HAS_METRICS};
use crate::select::{combined_basis, select_best, Basis, TEST_METRIC, VALIDATION_METRIC};
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

/// Per-class-group results of one row, in [`SHOT_GROUPS`] order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shots {
    /// Linear top-1 of the group over seeds; `None` where no cell measured it.
    pub accuracy: [Option<Summary>; 3],
    /// Classes in the group (the same in every seed); `None` where no cell measured it.
    pub classes: [Option<u32>; 3],
}

/// One method.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub method: String,
    /// The chosen setting (`α = 0.75, λ = 1.25`) when the method ran at several; else empty.
    pub setting: String,
    /// Settings the method ran at (with data).
    pub settings: usize,
    /// What the setting was chosen on, when there were several.
    pub selected_on: Option<Basis>,
    /// Validation linear top-1 of the shown setting, when measured.
    pub val_linear: Option<Summary>,
    /// Test linear top-1 of the shown setting.
    pub linear: Option<Summary>,
    pub knn: Option<Summary>,
    /// Many / medium / few-shot results of the shown setting (filled for the long-tail table).
    pub shots: Shots,
    pub paper: &'static str,
}

/// A table ready to be written.
#[derive(Debug, Clone)]
pub struct Table {
    /// File stem, e.g. `table_cifar10`.
    pub stem: String,
    pub title: String,
    pub rows: Vec<Row>,
    pub partial: Option<String>,
    /// Whether the many / medium / few-shot columns are shown (the long-tail table).
    pub shot_groups: bool,
}

fn axis_label(axis: &str) -> String {
    match axis {
        "loss.alpha" => "α".into(),
        "loss.lambda" => "λ".into(),
        other => other.into(),
    }
}

impl Table {
    /// Builds the rows of a table experiment.
    pub fn from_experiment(exp: &Experiment, stem: &str, title: &str) -> Result<Self> {
        Self::build(exp, stem, title, false)
    }

    /// As [`Table::from_experiment`], with the many / medium / few-shot columns: the long-tail
    /// table. An error (naming the index) when the seeds of a shown setting disagree on a
    /// group's number of classes: their group accuracies would not average one grouping.
    pub fn long_tail(exp: &Experiment, stem: &str, title: &str) -> Result<Self> {
        Self::build(exp, stem, title, true)
    }

    fn build(exp: &Experiment, stem: &str, title: &str, shot_groups: bool) -> Result<Self> {
        let labelled = exp
            .cells
            .column("label")?
            .str()?
            .iter()
            .any(|l| l.is_some_and(|l| !l.is_empty()));
        let method_key = if labelled { "label" } else { CONFIG };
        let mut keys: Vec<&str> = vec![method_key];
        keys.extend(exp.axes.iter().map(String::as_str));
        let groups = exp.groups(&keys)?;

        // Methods in first-appearance order (including ones with no data yet).
        let mut methods: Vec<String> = Vec::new();
        for m in exp.cells.column(method_key)?.str()?.iter().flatten() {
            if !methods.iter().any(|x| x == m) {
                methods.push(m.to_string());
            }
        }
        let mut rows = Vec::new();
        for method in methods {
            let candidates: Vec<_> = groups
                .iter()
                .filter(|g| g.key[0] == method && g.get("linear_top1").is_some())
                .collect();
            let selection = select_best(
                &candidates,
                |g| g.get(VALIDATION_METRIC).map(|s| s.mean),
                |g| g.get(TEST_METRIC).map(|s| s.mean),
            );
            let best = selection.map(|s| candidates[s.index]);
            let setting = match best {
                Some(b) if candidates.len() > 1 => {
                    // Name only the axes that differ between the candidates.
                    exp.axes
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| candidates.iter().any(|c| c.key[i + 1] != b.key[i + 1]))
                        .map(|(i, a)| {
                            let v = &b.key[i + 1];
                            let v = axis_number(v).map(trim_num).unwrap_or_else(|| v.clone());
                            format!("{} = {v}", axis_label(a))
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                }
                _ => String::new(),
            };
            let shots = match best {
                Some(b) if shot_groups => Shots {
                    accuracy: SHOT_GROUPS.map(|(_, acc, _)| b.get(acc).copied()),
                    classes: class_counts(exp, &keys, &b.key)?,
                },
                _ => Shots::default(),
            };
            rows.push(Row {
                method,
                setting,
                settings: candidates.len(),
                selected_on: selection.filter(|_| candidates.len() > 1).map(|s| s.basis),
                val_linear: best.and_then(|b| b.get(VALIDATION_METRIC).copied()),
                linear: best.and_then(|b| b.get(TEST_METRIC).copied()),
                knn: best.and_then(|b| b.get("knn_top1").copied()),
                shots,
                paper: PAPER_NOT_RECOVERABLE,
            });
        }
        Ok(Self {
            stem: stem.into(),
            title: format!("{title} ({}, profile {})", exp.name, exp.profile),
            rows,
            partial: exp.title_tag(),
            shot_groups,
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
        let mut s = String::from(
            "Top-1 accuracy in %, mean ± sample standard deviation over seeds (n = seeds with \
             metrics), on the test set. \"best of k\": the method ran at k settings and one is \
             shown. ",
        );
        let on = |b: Basis| self.rows.iter().any(|r| r.selected_on == Some(b));
        if on(Basis::Validation) {
            s.push_str(
                "\"on validation\": chosen by the highest mean validation linear top-1 \
                 (val_linear_top1, a split of the training set disjoint from the probe bank); the \
                 test accuracy of the chosen setting is shown. ",
            );
        }
        if on(Basis::Test) {
            s.push_str(
                "\"on test\": selection on test, because these cells have no validation \
                 metrics: the highest mean test linear top-1 is shown, hence optimistic. ",
            );
        }
        if self.shot_groups {
            s.push_str(SHOT_FOOTNOTE);
        }
        s.push_str(
            "Paper: the paper's table values could not be recovered (its code and numbers are not \
             public), so no paper number is given.",
        );
        s
    }

    /// Markdown version.
    pub fn markdown(&self) -> String {
        let mut s = format!("### {}\n\n", self.full_title());
        s.push_str("| Method | Setting | Linear top-1 (%) | kNN top-1 (%) |");
        if self.shot_groups {
            s.push_str(
                " Many-shot linear (%) | Medium-shot linear (%) | Few-shot linear (%) | \
                 Classes (many / medium / few) |",
            );
        }
        s.push_str(" Paper |\n|---|---|---|---|");
        if self.shot_groups {
            s.push_str("---|---|---|---|");
        }
        s.push_str("---|\n");
        for r in &self.rows {
            s.push_str(&format!(
                "| {} | {} | {} | {} |",
                md_escape(&r.method),
                md_escape(&Self::setting_text(r)),
                pm_text(r.linear.as_ref()),
                pm_text(r.knn.as_ref()),
            ));
            if self.shot_groups {
                for a in &r.shots.accuracy {
                    s.push_str(&format!(" {} |", shot_cell(r, a.as_ref(), pm_text, "—")));
                }
                s.push_str(&format!(" {} |", classes_text(r)));
            }
            s.push_str(&format!(" {} |\n", r.paper));
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
        if self.shot_groups {
            s.push_str("\\begin{tabular}{llccccccl}\n\\toprule\n");
            s.push_str(
                "Method & Setting & Linear top-1 (\\%) & $k$NN top-1 (\\%) & Many-shot (\\%) & \
                 Medium-shot (\\%) & Few-shot (\\%) & Classes (many/medium/few) & Paper \\\\\n\\midrule\n",
            );
        } else {
            s.push_str("\\begin{tabular}{llccl}\n\\toprule\n");
            s.push_str("Method & Setting & Linear top-1 (\\%) & $k$NN top-1 (\\%) & Paper \\\\\n\\midrule\n");
        }
        for r in &self.rows {
            s.push_str(&format!(
                "{} & {} & {} & {} & ",
                tex_escape(&r.method),
                tex_escape(&Self::setting_text(r)),
                pm_tex(r.linear.as_ref()),
                pm_tex(r.knn.as_ref()),
            ));
            if self.shot_groups {
                for a in &r.shots.accuracy {
                    s.push_str(&format!("{} & ", shot_cell(r, a.as_ref(), pm_tex, "---")));
                }
                s.push_str(&format!("{} & ", tex_escape(&classes_text(r))));
            }
            s.push_str(&format!("{} \\\\\n", tex_escape(r.paper)));
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
            Column::new(
                "val_linear_top1_mean".into(),
                get(&|r| r.val_linear.map(|s| s.mean)),
            ),
            Column::new("linear_top1_mean".into(), get(&|r| r.linear.map(|s| s.mean))),
            Column::new("linear_top1_std".into(), get(&|r| r.linear.and_then(|s| s.std))),
            Column::new("linear_top1_n".into(), n(&|r| r.linear.as_ref())),
            Column::new("knn_top1_mean".into(), get(&|r| r.knn.map(|s| s.mean))),
            Column::new("knn_top1_std".into(), get(&|r| r.knn.and_then(|s| s.std))),
            Column::new("knn_top1_n".into(), n(&|r| r.knn.as_ref())),
        ];
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
        cols.push(Column::new(
            "paper".into(),
            self.rows.iter().map(|r| r.paper).collect::<Vec<_>>(),
        ));
        Ok(DataFrame::new_infer_height(cols)?)
    }

    /// Writes `<stem>.md`, `<stem>.tex` and `<stem>.csv` into `out`.
    pub fn write(&self, out: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let md = out.join(format!("{}.md", self.stem));
        let tex = out.join(format!("{}.tex", self.stem));
        let csv = out.join(format!("{}.csv", self.stem));
        std::fs::write(&md, self.markdown()).with_context(|| format!("writing {}", md.display()))?;
        std::fs::write(&tex, self.latex()).with_context(|| format!("writing {}", tex.display()))?;
        let mut df = self.frame()?;
        let mut file = std::fs::File::create(&csv).with_context(|| format!("writing {}", csv.display()))?;
        CsvWriter::new(&mut file)
            .include_header(true)
            .finish(&mut df)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("writing {}", csv.display()))?;
        Ok(vec![md, tex, csv])
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
fn class_counts(exp: &Experiment, keys: &[&str], key: &[String]) -> Result<[Option<u32>; 3]> {
    let cells = &exp.cells;
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
    match (r.linear.is_some(), s) {
        (false, _) => fmt(None),
        (true, None) => dash.into(),
        (true, Some(s)) => fmt(Some(s)),
    }
}

/// `5 / 4 / 1`, "—" when no group is measured, `no data` when the row has none.
fn classes_text(r: &Row) -> String {
    if r.linear.is_none() {
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
