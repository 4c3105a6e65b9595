//! The paper's tables from cached results: one row per method (index `label`), linear and kNN
//! top-1 accuracy as mean ± std (n), in Markdown, LaTeX (booktabs) and CSV, with a "paper"
//! column that never holds an invented number.
//!
//! Rows follow the index's first-appearance order of labels. A label run at several settings
//! (e.g. the balanced loss over an (α, λ) grid) shows one setting, chosen by [`crate::select`]:
//! the highest mean validation linear accuracy when every setting has one (its test accuracy is
//! shown), else the highest mean test accuracy, and the table says which.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use polars::prelude::*;

use crate::heatmap::trim_num;
use crate::load::{axis_number, Experiment, CONFIG};
use crate::select::{combined_basis, select_best, Basis, TEST_METRIC, VALIDATION_METRIC};
use crate::stats::Summary;

/// What the "paper" column says for every row: the paper's table values could not be recovered
/// (see /work/shared/docs/paper.md, "Not recoverable").
pub const PAPER_NOT_RECOVERABLE: &str = "not recoverable";

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
            rows.push(Row {
                method,
                setting,
                settings: candidates.len(),
                selected_on: selection.filter(|_| candidates.len() > 1).map(|s| s.basis),
                val_linear: best.and_then(|b| b.get(VALIDATION_METRIC).copied()),
                linear: best.and_then(|b| b.get(TEST_METRIC).copied()),
                knn: best.and_then(|b| b.get("knn_top1").copied()),
                paper: PAPER_NOT_RECOVERABLE,
            });
        }
        Ok(Self {
            stem: stem.into(),
            title: format!("{title} ({}, profile {})", exp.name, exp.profile),
            rows,
            partial: exp.title_tag(),
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
        s.push_str(
            "Paper: the paper's table values could not be recovered (its code and numbers are not \
             public), so no paper number is given.",
        );
        s
    }

    /// Markdown version.
    pub fn markdown(&self) -> String {
        let mut s = format!("### {}\n\n", self.full_title());
        s.push_str(
            "| Method | Setting | Linear top-1 (%) | kNN top-1 (%) | Paper |\n\
             |---|---|---|---|---|\n",
        );
        for r in &self.rows {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                md_escape(&r.method),
                md_escape(&Self::setting_text(r)),
                pm_text(r.linear.as_ref()),
                pm_text(r.knn.as_ref()),
                r.paper
            ));
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
        s.push_str("\\begin{tabular}{llccl}\n\\toprule\n");
        s.push_str("Method & Setting & Linear top-1 (\\%) & $k$NN top-1 (\\%) & Paper \\\\\n\\midrule\n");
        for r in &self.rows {
            s.push_str(&format!(
                "{} & {} & {} & {} & {} \\\\\n",
                tex_escape(&r.method),
                tex_escape(&Self::setting_text(r)),
                pm_tex(r.linear.as_ref()),
                pm_tex(r.knn.as_ref()),
                tex_escape(r.paper)
            ));
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
        let df = DataFrame::new_infer_height(vec![
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
            Column::new(
                "paper".into(),
                self.rows.iter().map(|r| r.paper).collect::<Vec<_>>(),
            ),
        ])?;
        Ok(df)
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
