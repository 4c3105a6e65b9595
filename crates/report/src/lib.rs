//! `protoclr_report`: the paper's figures, tables and claim verdicts, rebuilt in seconds from a
//! cached results folder (layout in docs/formats.md), without training.
//!
//! What is drawn is what each experiment file's `report:` section asks for
//! ([`protoclr_formats::report::ReportSpec`], docs/formats.md): `protoclr report EXPERIMENT.yaml`
//! builds one, `report all` every `*.yaml` of the experiments folder, then `claims.md`. The
//! paper's figures and tables are plain users of the four kinds:
//!
//! - [`load`]: the index CSV `results/<experiment>.<profile>.csv` says which cells belong to the
//!   experiment (and their varied keys); the metrics come from each listed cell's folder
//!   `results/cells/<id>/` when it is done and intact, never from the index's columns; polars
//!   DataFrames, aggregated over seeds (mean, standard deviation, 95 % t-interval, n).
//! - [`scatter`]: metric against metric, one point per group, least-squares line and
//!   bootstrapped Spearman ρ / Pearson r (Fig. 3: accuracy vs prototype representation bias).
//! - [`heatmap`]: a metric over two varied keys and its difference from a reference cell
//!   (Fig. 4 / Fig. 5: α × λ against NT-Xent (1, 1)).
//! - [`tables`]: rows × metrics in Markdown, LaTeX and CSV (the CIFAR-10 / CIFAR-100 and long-tail
//!   tables; their paper column says "not recoverable", never a number).
//! - [`curve`]: a metric over one varied key, one line per value of another.
//! - [`claims`]: `claims.md` (from the experiments whose `report:` has a `claim:`), each claim with statistic, interval, n, rule and computed verdict.
//! - [`confirm`]: claim (b) decided by the pre-registered confirmation stage (candidate selected
//!   on validation, paired t-interval over fresh seeds, minimum detectable difference).
//! - [`select`]: every "best of k" choice, on validation accuracy when the cells have it (else on
//!   test, and said so); [`ratio`]: accuracy against α/λ with the diagonal α = λ marked;
//!   [`bounds`]: claim (d) and `table_bounds.*`, the theorems' bounds measured by training;
//!   [`compute`]: `compute.*`, the training time the committed cells took (what `make
//!   reproduce-all` costs from an empty `results/`); [`output`]: atomic file writes.
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
pub mod compute;
pub mod confirm;
pub mod curve;
pub mod heatmap;
pub mod load;
pub mod output;
pub mod ratio;
pub mod scatter;
pub mod select;
pub mod stats;
pub mod style;
pub mod tables;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use protoclr_formats::report::{ReportFile, ReportKind, ReportSpec};

use crate::curve::Curve;
use crate::heatmap::Heatmap;
use crate::load::{Experiment, MissingIndex};
use crate::scatter::{BiasForm, Scatter};
use crate::tables::Table;

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The experiment file `<experiments>/<name>.yaml`.
    Experiment(String),
    /// An experiment file anywhere.
    File(PathBuf),
    /// Every experiment of kind `table` in the experiments folder.
    Tables,
    /// `claims.md` and `table_bounds.*`.
    Claims,
    /// Every experiment of the experiments folder, then the claims and `compute.*`.
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
    /// Folder of the experiment files (`report all`, named targets, the claims).
    pub experiments: PathBuf,
    /// Draw a figure or table whose cells span several numerics versions (labelled "mixed
    /// numerics"); by default it is refused ([`Experiment::check_numerics`]).
    pub allow_mixed_numerics: bool,
    /// The prototype bias on the x axis of a scatter of one (None: the experiment file's; claims.md
    /// reports claim (a) on both).
    pub bias: Option<BiasForm>,
}

impl Options {
    /// Options with the defaults (experiment files in `experiments/`, mixed numerics refused,
    /// each scatter's x axis as its file says).
    pub fn new(results: impl Into<PathBuf>, out: impl Into<PathBuf>, profile: impl Into<String>) -> Self {
        Self {
            results: results.into(),
            out: out.into(),
            profile: profile.into(),
            experiments: PathBuf::from("experiments"),
            allow_mixed_numerics: false,
            bias: None,
        }
    }
}

impl Options {
    /// The same options with the experiment files in `dir`.
    pub fn with_experiments(mut self, dir: impl Into<PathBuf>) -> Self {
        self.experiments = dir.into();
        self
    }
}

/// An experiment file: where it is, its name and its `report:` section.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentFile {
    pub path: PathBuf,
    pub name: String,
    pub spec: ReportSpec,
}

impl ExperimentFile {
    /// Reads the file's `name` and `report:` ([`ReportFile::load`]).
    pub fn load(path: &Path) -> Result<Self> {
        let ReportFile { name, report } = ReportFile::load(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            name,
            spec: report,
        })
    }

    /// File stem of what it writes: the name; a table's starts with `table_`.
    pub fn stem(&self) -> String {
        if self.spec.kind() == ReportKind::Table && !self.name.starts_with("table_") {
            format!("table_{}", self.name)
        } else {
            self.name.clone()
        }
    }
}

/// Every `*.yaml` of `dir` (not its sub-folders), in file-name order.
pub fn experiment_files(dir: &Path) -> Result<Vec<ExperimentFile>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the experiments folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    paths.iter().map(|p| ExperimentFile::load(p)).collect()
}

/// The experiment file `<experiments>/<name>.yaml`.
fn named(opts: &Options, name: &str) -> Result<ExperimentFile> {
    protoclr_formats::check_plain_name("experiment name", name)?;
    let path = opts.experiments.join(format!("{name}.yaml"));
    if !path.is_file() {
        bail!(
            "no experiment file {} (give the path of an experiment file, or the name of one in {})",
            path.display(),
            opts.experiments.display()
        );
    }
    ExperimentFile::load(&path)
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
    output::write_atomic(&path, s.as_bytes())?;
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

/// The scatter view of a file, with `opts.bias` on the x axis when it is a prototype bias.
fn scatter_view(opts: &Options, spec: &ReportSpec) -> scatter::View {
    let view = scatter::View::from_spec(spec);
    match (opts.bias, view.bias()) {
        (Some(form), Some(_)) => view.with_bias(form),
        _ => view,
    }
}

/// What one experiment file asks for: its figure or table and `<stem>.notes.md`.
pub fn build(opts: &Options, file: &ExperimentFile) -> Result<Report> {
    let exp = load_experiment(opts, &file.name)?;
    let stem = file.stem();
    let spec = &file.spec;
    let mut extra = String::new();
    let mut written = match spec.kind() {
        ReportKind::Scatter => {
            let view = scatter_view(opts, spec);
            let fig = Scatter::from_view(&exp, &spec.title, &stem, view)?;
            let v = &fig.view;
            extra.push_str(&format!("\nx axis: `{}` ({}).\n", v.x, v.x_label));
            // The y metric goes unmeasured only when no cell has metrics (say nothing then).
            for (m, always) in [(&v.x, true), (&v.y, false)] {
                if (always || exp.with_metrics() > 0) && !scatter::measured(&exp, m) {
                    extra.push_str(&format!(
                        "\n`{m}` is not measured in any cell (cells written before it existed): no points.\n"
                    ));
                }
            }
            if !fig.without_data.is_empty() {
                extra.push_str(&format!(
                    "\nConfigurations without a point (no cell with both {} and {}): {}\n",
                    v.x_name,
                    v.y_name,
                    fig.without_data.join(", ")
                ));
            }
            style::save(&fig, &opts.out, &stem)?
        }
        ReportKind::Heatmap => {
            let map = Heatmap::from_spec(&exp, spec)?;
            if spec.ratio && !map.numeric {
                bail!(
                    "{}: report.ratio needs numeric `{}` and `{}` values (the index {} has others)",
                    file.path.display(),
                    map.view.x,
                    map.view.y,
                    exp.index_path.display()
                );
            }
            let mut written = style::save(&map, &opts.out, &stem)?;
            let v = &map.view;
            extra.push_str(&format!("\n{}", map.selection_markdown()));
            if spec.ratio {
                let ratio = ratio::RatioTable::from_heatmap(&map, &stem);
                written.extend(ratio.write(&opts.out)?);
                extra.push_str(&format!(
                    "\n{}/{} ratio vs scale: `{stem}_ratio.md` (and `.tex`, `.csv`, `.png`, `.svg`).\n",
                    v.x_symbol, v.y_symbol
                ));
            }
            let empty = map.empty_cells();
            if !empty.is_empty() {
                extra.push_str(&format!(
                    "\nGrid points with no data: {}\n",
                    empty
                        .iter()
                        .map(|(x, y)| format!("({})", v.cell_eq(x, y)))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if v.reference.is_some() && map.reference_position().is_none() {
                extra.push_str(&format!(
                    "\nThe grid has no {} = {} {} cell.\n",
                    v.pair(),
                    v.reference_pair(),
                    v.reference_name
                ));
            }
            if !map.pooled_axes.is_empty() {
                extra.push_str(&format!(
                    "\nOther varied keys pooled within each {}: {}\n",
                    v.pair(),
                    map.pooled_axes.join(", ")
                ));
            }
            written
        }
        ReportKind::Table => Table::from_spec(&exp, spec, &stem)?.write(&opts.out)?,
        ReportKind::Curve => {
            let curve = Curve::from_spec(&exp, spec)?;
            extra.push_str(&curve.markdown());
            style::save(&curve, &opts.out, &stem)?
        }
    };
    written.push(write_notes(&opts.out, &stem, &exp, &extra)?);
    Ok(Report {
        written,
        notices: partial_notice(&stem, &exp, &opts.out),
    })
}

/// Builds each file in order (an `optional` one without an index is skipped with a notice),
/// then fails naming every one that could not be built.
fn build_each(opts: &Options, files: &[ExperimentFile], report: &mut Report, errors: &mut Vec<String>) {
    for f in files {
        let index = load::index_path(&opts.results, &f.name, &opts.profile);
        if f.spec.optional && !index.is_file() {
            report.notices.push(format!(
                "{}: no index {}, skipped (the report section says `optional: true`)",
                f.name,
                index.display()
            ));
            continue;
        }
        match build(opts, f) {
            Ok(r) => report.merge(r),
            Err(e) => errors.push(format!("{}: {e:#}", f.name)),
        }
    }
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

/// `claims.md`: verdicts of claims (a) on `bias_l2` and on `bias_rel` (from the scatter whose
/// `report:` has `claim: {id: a}`), (b) (each heatmap with `claim: {id: b<k>}`, in id order),
/// (c) from `ntxent_deviation` (max |balanced(1, 1) − NT-Xent| measured by the loss module) and
/// (d) from the theorem-bound metrics of those experiments' cells; also
/// `table_bounds.{md,tex,csv}`.
pub fn build_claims(opts: &Options, files: &[ExperimentFile], ntxent_deviation: f64) -> Result<Report> {
    let mut coverage = String::new();
    let mut notices = Vec::new();
    let mut claims_out = Vec::new();
    let hook = |f: &ExperimentFile| f.spec.claim.as_ref().map(|c| c.id.clone());

    let mut bound_sources: Vec<(&str, std::result::Result<Vec<bounds::CellBounds>, String>)> = Vec::new();
    match files.iter().find(|f| hook(f).as_deref() == Some("a")) {
        Some(f) => {
            let name = f.name.as_str();
            let stem = f.stem();
            let view = scatter::View::from_spec(&f.spec);
            let exp = load_for_claims(opts, name)?;
            let fig = match &exp {
                Ok(e) => {
                    coverage.push_str(&e.coverage_markdown());
                    Ok(Scatter::from_view(
                        e,
                        &f.spec.title,
                        &stem,
                        view.clone().with_bias(BiasForm::L2),
                    )?)
                }
                Err(why) => {
                    coverage.push_str(&format!("- {name}: {why}\n"));
                    Err(why.clone())
                }
            };
            claims_out.push(claims::claim_a(fig.as_ref().map_err(String::as_str)));
            claims_out.push(match &exp {
                Ok(e) if BiasForm::Rel.measured(e) => claims::claim_a(Ok(&Scatter::from_view(
                    e,
                    &f.spec.title,
                    &stem,
                    view.with_bias(BiasForm::Rel),
                )?)),
                Ok(_) => claims::claim_a_not_measured(
                    BiasForm::Rel,
                    &format!(
                        "no {name} cell has `bias_rel` (cells written before the scale-free bias existed)"
                    ),
                ),
                Err(why) => claims::claim_a_on(BiasForm::Rel, Err(why)),
            });
            bound_sources.push((
                name,
                match &exp {
                    Ok(e) => Ok(bounds::cell_bounds(e)?),
                    Err(why) => Err(why.clone()),
                },
            ));
        }
        None => {
            let why = format!(
                "no experiment file in {} has a scatter with `claim: {{id: a}}`",
                opts.experiments.display()
            );
            coverage.push_str(&format!("- claim (a): {why}\n"));
            claims_out.push(claims::claim_a(Err(&why)));
            claims_out.push(claims::claim_a_on(BiasForm::Rel, Err(&why)));
        }
    }

    let mut heatmaps: Vec<&ExperimentFile> = files
        .iter()
        .filter(|f| f.spec.kind() == ReportKind::Heatmap && hook(f).is_some())
        .collect();
    heatmaps.sort_by_key(|f| hook(f));
    for f in heatmaps {
        let experiment = f.name.as_str();
        let claim = f.spec.claim.as_ref().expect("filtered on a claim");
        let what = claim.what.clone().unwrap_or_else(|| experiment.to_string());
        let map = match load_for_claims(opts, experiment)? {
            Ok(e) => {
                coverage.push_str(&e.coverage_markdown());
                bound_sources.push((experiment, Ok(bounds::cell_bounds(&e)?)));
                Ok(Heatmap::from_spec(&e, &f.spec)?)
            }
            Err(why) => {
                coverage.push_str(&format!("- {experiment}: {why}\n"));
                bound_sources.push((experiment, Err(why.clone())));
                Err(why)
            }
        };
        // Decided by the confirmation stage; the grid-wide comparison stays as exploration.
        let grid = claims::claim_b(&claim.id, &what, map.as_ref().map_err(String::as_str));
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
    let sources = bound_sources;
    claims_out.push(bounds::claim_d(&sources));

    for c in &claims_out {
        if c.reason.starts_with("no data") || c.verdict == claims::Verdict::NotMeasured {
            notices.push(format!("claim ({}): {}", c.id, c.reason));
        }
    }
    let text = claims::markdown(&claims_out, &coverage, &opts.profile);
    let path = opts.out.join("claims.md");
    output::write_atomic(&path, text.as_bytes())?;
    let mut written = vec![path];
    written.extend(bounds::BoundsTable::new(&sources).write(&opts.out)?);
    Ok(Report { written, notices })
}

/// Builds `target`. `Tables` and `All` build everything they can, then fail listing what could
/// not be built.
pub fn run(target: Target, opts: &Options, ntxent_deviation: f64) -> Result<Report> {
    match target {
        Target::Experiment(name) => build(opts, &named(opts, &name)?),
        Target::File(path) => build(opts, &ExperimentFile::load(&path)?),
        Target::Claims => build_claims(opts, &experiment_files(&opts.experiments)?, ntxent_deviation),
        Target::Tables | Target::All => {
            let files = experiment_files(&opts.experiments)?;
            let mut report = Report::default();
            let mut errors = Vec::new();
            if target == Target::Tables {
                let tables: Vec<ExperimentFile> = files
                    .into_iter()
                    .filter(|f| f.spec.kind() == ReportKind::Table)
                    .collect();
                build_each(opts, &tables, &mut report, &mut errors);
                if !errors.is_empty() {
                    bail!("{}", errors.join("\n"));
                }
                return Ok(report);
            }
            build_each(opts, &files, &mut report, &mut errors);
            match build_claims(opts, &files, ntxent_deviation) {
                Ok(r) => report.merge(r),
                Err(e) => errors.push(format!("claims: {e:#}")),
            }
            let names: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
            match compute::Compute::load(&opts.results, &names, &opts.profile)
                .and_then(|c| c.write(&opts.out))
            {
                Ok(w) => report.written.extend(w),
                Err(e) => errors.push(format!("compute: {e:#}")),
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
