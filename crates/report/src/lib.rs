//! `protoclr_report`: the paper's figures, tables and claim verdicts, rebuilt in seconds from a
//! cached results folder (layout in docs/formats.md), without training.
//!
//! - [`load`]: index CSVs `results/<experiment>.<profile>.csv` and each cell's `metrics.json`
//!   (found by walking `results/cells`) into polars DataFrames; aggregates over seeds (mean,
//!   standard deviation, 95 % t-interval, n).
//! - [`fig3`]: accuracy vs prototype representation bias, with least-squares line and bootstrapped
//!   Spearman ρ / Pearson r.
//! - [`heatmap`]: Fig. 4 / Fig. 5, α × λ heatmaps of mean linear accuracy and of the difference
//!   from NT-Xent (1, 1).
//! - [`tables`]: CIFAR-10 / CIFAR-100 (and long-tail) tables in Markdown, LaTeX and CSV; the paper
//!   column says "not recoverable", never a number.
//! - [`claims`]: `claims.md`, each claim with statistic, interval, n, rule and computed verdict.
//! - [`confirm`]: claim (b) decided by the pre-registered confirmation stage (candidate selected
//!   on validation, paired t-interval over fresh seeds, minimum detectable difference).
//! - [`select`]: every "best of k" choice, on validation accuracy when the cells have it (else on
//!   test, and said so); [`ratio`]: accuracy against α/λ with the diagonal α = λ marked;
//!   [`bounds`]: claim (d) and `table_bounds.*`, the theorems' bounds measured by training;
//!   [`output`]: atomic file writes.
//! - [`stats`]: the statistics, each tested against known answers; [`style`]: the bundled font
//!   (DejaVu Sans, registered with plotters' `ab_glyph` renderer) and colour maps.
//!
//! Only cells the grid would call done and intact are read (`status.json` and its checksums,
//! [`protoclr_formats::CellRecord`]); a `metrics.json` with an impossible value is an error
//! naming it. A figure whose cells are partly missing is drawn from what exists, its title says
//! "partial: k of n cells", and `<figure>.notes.md` lists the missing cells. The notes and
//! `claims.md` state the numerics versions and git commits of the cells; a figure or table whose
//! cells span several numerics versions is refused unless [`Options::allow_mixed_numerics`], and
//! then its title and notes say "mixed numerics".

pub mod bounds;
pub mod claims;
pub mod confirm;
pub mod fig3;
pub mod heatmap;
pub mod load;
pub mod output;
pub mod ratio;
pub mod select;
pub mod stats;
pub mod style;
pub mod tables;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::fig3::{BiasForm, Fig3};
use crate::heatmap::{trim_num, Heatmap};
use crate::load::{Experiment, MissingIndex};
use crate::tables::Table;

/// Experiment of Fig. 3.
pub const FIG3: &str = "fig3";
/// Experiment of Fig. 4 (α × λ, paper's main setting; `cpu` is a stand-in).
pub const FIG4: &str = "fig4";
/// Experiment of Fig. 5 (α × λ on CIFAR-10).
pub const FIG5: &str = "fig5";
/// Table experiments: (experiment = file stem, title).
pub const TABLES: [(&str, &str); 2] = [
    (
        "table_cifar10",
        "CIFAR-10: NT-Xent, balanced loss and supervised prototype objectives",
    ),
    (
        "table_cifar100",
        "CIFAR-100: NT-Xent, balanced loss and supervised prototype objectives",
    ),
];
/// Optional long-tail table (experiment `long_tail`, written as `table_long_tail.*` only when
/// its index exists), with the many / medium / few-shot columns ([`Table::long_tail`]).
pub const LONG_TAIL: (&str, &str) = (
    "long_tail",
    "Long-tailed CIFAR-10 and Imagenette (stand-ins for ImageNet-LT): NT-Xent vs balanced loss",
);

/// What to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Fig3,
    Fig4,
    Fig5,
    Tables,
    Claims,
    All,
}

/// Where to read and write.
#[derive(Debug, Clone)]
pub struct Options {
    /// Results folder (docs/formats.md).
    pub results: PathBuf,
    /// Output folder (created if needed).
    pub out: PathBuf,
    /// Profile of the index files (`cpu`, `paper`).
    pub profile: String,
    /// Draw a figure or table whose cells span several numerics versions (labelled "mixed
    /// numerics"); by default it is refused ([`Experiment::check_numerics`]).
    pub allow_mixed_numerics: bool,
    /// Which prototype bias Fig. 3 plots (claims.md reports claim (a) on both).
    pub bias: BiasForm,
}

impl Options {
    /// Options with the defaults (mixed numerics refused, Fig. 3 on `bias_l2`).
    pub fn new(results: impl Into<PathBuf>, out: impl Into<PathBuf>, profile: impl Into<String>) -> Self {
        Self {
            results: results.into(),
            out: out.into(),
            profile: profile.into(),
            allow_mixed_numerics: false,
            bias: BiasForm::default(),
        }
    }
}

/// Loads an experiment for a figure, table or claim: its done and intact cells, refused when
/// they mix numerics versions and `opts` does not allow it.
pub fn load_experiment(opts: &Options, experiment: &str) -> Result<Experiment> {
    let exp = Experiment::load(&opts.results, experiment, &opts.profile)?;
    exp.check_numerics(opts.allow_mixed_numerics)?;
    Ok(exp)
}

/// What a run wrote, and what it wants the user to know.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub written: Vec<PathBuf>,
    /// Partial data and similar notices (one line each).
    pub notices: Vec<String>,
}

impl Report {
    fn merge(&mut self, other: Report) {
        self.written.extend(other.written);
        self.notices.extend(other.notices);
    }
}

fn write_notes(out: &Path, stem: &str, exp: &Experiment, extra: &str) -> Result<PathBuf> {
    let path = out.join(format!("{stem}.notes.md"));
    let mut s = format!("# {stem}: data coverage\n\n");
    s.push_str(&exp.coverage_markdown());
    s.push_str(extra);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(&path, s).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn partial_notice(stem: &str, exp: &Experiment, out: &Path) -> Vec<String> {
    exp.partial_tag()
        .map(|p| {
            format!(
                "{stem}: {p}; missing cells listed in {}",
                out.join(format!("{stem}.notes.md")).display()
            )
        })
        .into_iter()
        .collect()
}

/// Fig. 3: `fig3.png`, `fig3.svg`, `fig3.notes.md`, with the bias of `opts.bias` on the x axis.
pub fn build_fig3(opts: &Options) -> Result<Report> {
    let exp = load_experiment(opts, FIG3)?;
    let fig = Fig3::from_experiment_with(&exp, opts.bias)?;
    let mut written = style::save(&fig, &opts.out, FIG3)?;
    let mut extra = format!("\nx axis: `{}` ({}).\n", opts.bias.metric(), opts.bias.x_label());
    if !opts.bias.measured(&exp) {
        extra.push_str(&format!(
            "\n`{}` is not measured in any cell (cells written before it existed): no points.\n",
            opts.bias.metric()
        ));
    }
    if !fig.without_data.is_empty() {
        extra.push_str(&format!(
            "\nConfigurations without a point (no cell with both bias and accuracy): {}\n",
            fig.without_data.join(", ")
        ));
    }
    written.push(write_notes(&opts.out, FIG3, &exp, &extra)?);
    Ok(Report {
        written,
        notices: partial_notice(FIG3, &exp, &opts.out),
    })
}

fn heatmap_title(experiment: &str) -> &'static str {
    if experiment == FIG4 {
        "Fig. 4 — impact of α and λ (paper's main setting)"
    } else {
        "Fig. 5 — impact of α and λ on CIFAR-10"
    }
}

/// Fig. 4 or Fig. 5 (`experiment` = `fig4` / `fig5`): PNG, SVG and notes.
pub fn build_heatmap(opts: &Options, experiment: &str) -> Result<Report> {
    let exp = load_experiment(opts, experiment)?;
    let map = Heatmap::from_experiment(&exp, heatmap_title(experiment))?;
    let mut written = style::save(&map, &opts.out, experiment)?;
    let ratio = ratio::RatioTable::from_heatmap(&map, experiment);
    written.extend(ratio.write(&opts.out)?);
    let empty = map.empty_cells();
    let mut extra = format!("\n{}", map.selection_markdown());
    extra.push_str(&format!(
        "\nα/λ ratio vs scale: `{experiment}_ratio.md` (and `.tex`, `.csv`, `.png`, `.svg`).\n"
    ));
    if !empty.is_empty() {
        extra.push_str(&format!(
            "\nGrid points with no data: {}\n",
            empty
                .iter()
                .map(|(a, l)| format!("(α = {}, λ = {})", trim_num(*a), trim_num(*l)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if map.reference_position().is_none() {
        extra.push_str("\nThe grid has no (α, λ) = (1, 1) NT-Xent cell.\n");
    }
    if !map.pooled_axes.is_empty() {
        extra.push_str(&format!(
            "\nOther varied keys pooled within each (α, λ): {}\n",
            map.pooled_axes.join(", ")
        ));
    }
    written.push(write_notes(&opts.out, experiment, &exp, &extra)?);
    Ok(Report {
        written,
        notices: partial_notice(experiment, &exp, &opts.out),
    })
}

/// One table; `long_tail` adds the many / medium / few-shot columns ([`Table::long_tail`]).
fn build_table(opts: &Options, experiment: &str, title: &str, long_tail: bool) -> Result<Report> {
    let exp = load_experiment(opts, experiment)?;
    let stem = if experiment.starts_with("table_") {
        experiment.to_string()
    } else {
        format!("table_{experiment}")
    };
    let table = if long_tail {
        Table::long_tail(&exp, &stem, title)?
    } else {
        Table::from_experiment(&exp, &stem, title)?
    };
    let mut written = table.write(&opts.out)?;
    written.push(write_notes(&opts.out, &stem, &exp, "")?);
    Ok(Report {
        written,
        notices: partial_notice(&stem, &exp, &opts.out),
    })
}

/// The CIFAR-10 and CIFAR-100 tables (and the long-tail one when its index exists). Writes what
/// it can, then fails naming every missing index.
pub fn build_tables(opts: &Options) -> Result<Report> {
    let mut report = Report::default();
    let mut errors = Vec::new();
    for (experiment, title) in TABLES {
        match build_table(opts, experiment, title, false) {
            Ok(r) => report.merge(r),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    let (lt, lt_title) = LONG_TAIL;
    if load::index_path(&opts.results, lt, &opts.profile).is_file() {
        match build_table(opts, lt, lt_title, true) {
            Ok(r) => report.merge(r),
            Err(e) => errors.push(format!("{e:#}")),
        }
    } else {
        report.notices.push(format!(
            "{lt}: no index {}, long-tail table skipped",
            load::index_path(&opts.results, lt, &opts.profile).display()
        ));
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    Ok(report)
}

/// Loads an experiment for the claims: a missing index is "no data" (`Ok(Err(why))`), any other
/// problem is an error.
fn load_for_claims(opts: &Options, experiment: &str) -> Result<std::result::Result<Experiment, String>> {
    match load_experiment(opts, experiment) {
        Ok(e) => Ok(Ok(e)),
        Err(e) => match e.downcast_ref::<MissingIndex>() {
            Some(m) => Ok(Err(format!("missing index {}", m.path.display()))),
            None => Err(e),
        },
    }
}

/// `claims.md`: verdicts of claims (a) on `bias_l2` and on `bias_rel`, (b) on Fig. 4 and Fig. 5,
/// (c) from `ntxent_deviation` (max |balanced(1, 1) − NT-Xent| measured by the loss module) and
/// (d) from the theorem-bound metrics of the Fig. 3/4/5 cells; also `table_bounds.{md,tex,csv}`.
pub fn build_claims(opts: &Options, ntxent_deviation: f64) -> Result<Report> {
    let mut coverage = String::new();
    let mut notices = Vec::new();
    let mut claims_out = Vec::new();

    let fig3_exp = load_for_claims(opts, FIG3)?;
    let fig3 = match &fig3_exp {
        Ok(e) => {
            coverage.push_str(&e.coverage_markdown());
            Ok(Fig3::from_experiment(e)?)
        }
        Err(why) => {
            coverage.push_str(&format!("- {FIG3}: {why}\n"));
            Err(why.clone())
        }
    };
    claims_out.push(claims::claim_a(fig3.as_ref().map_err(String::as_str)));
    claims_out.push(match &fig3_exp {
        Ok(e) if BiasForm::Rel.measured(e) => {
            claims::claim_a(Ok(&Fig3::from_experiment_with(e, BiasForm::Rel)?))
        }
        Ok(_) => claims::claim_a_not_measured(
            BiasForm::Rel,
            "no fig3 cell has `bias_rel` (cells written before the scale-free bias existed)",
        ),
        Err(why) => claims::claim_a_on(BiasForm::Rel, Err(why)),
    });
    let mut bound_sources: Vec<(&str, std::result::Result<Vec<bounds::CellBounds>, String>)> = vec![(
        FIG3,
        match &fig3_exp {
            Ok(e) => Ok(bounds::cell_bounds(e)?),
            Err(why) => Err(why.clone()),
        },
    )];

    for (id, experiment, what) in [
        ("b1", FIG4, "Fig. 4, paper's main setting"),
        ("b2", FIG5, "Fig. 5, CIFAR-10"),
    ] {
        let map = match load_for_claims(opts, experiment)? {
            Ok(e) => {
                coverage.push_str(&e.coverage_markdown());
                bound_sources.push((experiment, Ok(bounds::cell_bounds(&e)?)));
                Ok(Heatmap::from_experiment(&e, heatmap_title(experiment))?)
            }
            Err(why) => {
                coverage.push_str(&format!("- {experiment}: {why}\n"));
                bound_sources.push((experiment, Err(why.clone())));
                Err(why)
            }
        };
        // Decided by the confirmation stage; the grid-wide comparison stays as exploration.
        let grid = claims::claim_b(id, what, map.as_ref().map_err(String::as_str));
        let stage = confirm::load(&opts.results, experiment, &opts.profile)?;
        let none = format!(
            "no confirmation stage yet ({} is written by `protoclr grid run` once the grid is finished)",
            opts.results
                .join(format!("{experiment}.{}.selection.json", opts.profile))
                .display()
        );
        claims_out.push(confirm::claim(grid, stage.as_ref().ok_or(none.as_str())));
    }
    claims_out.push(claims::claim_c(ntxent_deviation));
    claims_out.push(bounds::claim_d(&bound_sources));

    for c in &claims_out {
        if c.reason.starts_with("no data") || c.verdict == claims::Verdict::NotMeasured {
            notices.push(format!("claim ({}): {}", c.id, c.reason));
        }
    }
    let text = claims::markdown(&claims_out, &coverage, &opts.profile);
    let path = opts.out.join("claims.md");
    output::write_atomic(&path, text.as_bytes())?;
    let mut written = vec![path];
    written.extend(bounds::BoundsTable::new(&bound_sources).write(&opts.out)?);
    Ok(Report { written, notices })
}

/// Builds `target`. `All` builds everything it can, then fails listing what could not be built.
pub fn run(target: Target, opts: &Options, ntxent_deviation: f64) -> Result<Report> {
    match target {
        Target::Fig3 => build_fig3(opts),
        Target::Fig4 => build_heatmap(opts, FIG4),
        Target::Fig5 => build_heatmap(opts, FIG5),
        Target::Tables => build_tables(opts),
        Target::Claims => build_claims(opts, ntxent_deviation),
        Target::All => {
            let mut report = Report::default();
            let mut errors = Vec::new();
            for t in [
                Target::Fig3,
                Target::Fig4,
                Target::Fig5,
                Target::Tables,
                Target::Claims,
            ] {
                match run(t, opts, ntxent_deviation) {
                    Ok(r) => report.merge(r),
                    Err(e) => errors.push(format!("{t:?}: {e:#}")),
                }
            }
            if !errors.is_empty() {
                let written: Vec<String> = report.written.iter().map(|p| p.display().to_string()).collect();
                bail!(
                    "{}\n(written anyway: {})",
                    errors.join("\n"),
                    if written.is_empty() {
                        "nothing".into()
                    } else {
                        written.join(", ")
                    }
                );
            }
            Ok(report)
        }
    }
}
