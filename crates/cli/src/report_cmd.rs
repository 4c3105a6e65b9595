//! `protoclr report EXPERIMENT.yaml|NAME|tables|claims|all`: what each experiment file's
//! `report:` section asks for (docs/formats.md), from cached results (no training), via
//! `protoclr_report`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use protoclr_report::scatter::BiasForm;
use protoclr_report::{Options, Target};

/// Which prototype bias a scatter of one plots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Bias {
    /// `bias_l2`: E‖μ(y) − μ(x)‖ on unit-norm features (the paper's).
    L2,
    /// `bias_rel`: `bias_l2` divided by the spread E‖μ(x) − μ̄‖ (scale-free).
    Rel,
}

impl From<Bias> for BiasForm {
    fn from(b: Bias) -> Self {
        match b {
            Bias::L2 => BiasForm::L2,
            Bias::Rel => BiasForm::Rel,
        }
    }
}

/// Arguments of `protoclr report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// What to build: an experiment file (`experiments/fig5.yaml`, or one of your own), the name
    /// of one in `--experiments` (`fig5`), `tables` (every `kind: table` there), `claims`
    /// (claims.md) or `all` (every experiment there, then claims.md).
    pub what: String,
    /// Results folder written by `protoclr grid` (index CSVs and cells/).
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    /// Output folder for figures, tables, notes and claims.md.
    #[arg(long, default_value = "figures")]
    pub out: PathBuf,
    /// Folder of the experiment files (`all`, `tables`, `claims` and names read it).
    #[arg(long, default_value = "experiments")]
    pub experiments: PathBuf,
    /// Profile of the index files to read (`results/<experiment>.<profile>.csv`).
    #[arg(long, default_value = "cpu", value_parser = crate::grid_cmd::profile_name)]
    pub profile: String,
    /// Draw figures and tables whose cells were trained by different numerics versions (refused
    /// by default); their titles and notes then say "mixed numerics".
    #[arg(long)]
    pub allow_mixed_numerics: bool,
    /// Prototype bias on the x axis of a scatter of one (default: as its file says; claims.md
    /// reports claim (a) on both forms).
    #[arg(long, value_enum)]
    pub bias: Option<Bias>,
}

/// The target `what` names: a file when it is one (or ends in `.yaml`), else a keyword or the
/// name of an experiment file.
fn target(what: &str) -> Target {
    match what {
        "all" => Target::All,
        "tables" => Target::Tables,
        "claims" => Target::Claims,
        _ if what.ends_with(".yaml") || what.ends_with(".yml") || Path::new(what).is_file() => {
            Target::File(PathBuf::from(what))
        }
        name => Target::Experiment(name.to_string()),
    }
}

/// Checks experiment files as the grid does (every section, keys against the varied ones), so
/// that a bad `report:` section is refused at its line and column.
fn validate(path: &Path) -> anyhow::Result<()> {
    protoclr_grid::spec::Experiment::load(path).map(|_| ())
}

/// Runs `protoclr report`. `ntxent_deviation` is the measured max |balanced(1, 1) − NT-Xent|
/// loss deviation, the statistic of claim (c).
pub fn run(args: ReportArgs, ntxent_deviation: f64) -> anyhow::Result<()> {
    let target = target(&args.what);
    match &target {
        Target::File(p) => validate(p)?,
        Target::Experiment(name) => {
            let p = args.experiments.join(format!("{name}.yaml"));
            if p.is_file() {
                validate(&p)?;
            }
        }
        _ => {
            let files = protoclr_report::experiment_files(&args.experiments)?;
            for f in &files {
                validate(&f.path).with_context(|| format!("checking {}", f.path.display()))?;
            }
        }
    }
    let opts = Options {
        results: args.results,
        out: args.out,
        profile: args.profile,
        experiments: args.experiments,
        allow_mixed_numerics: args.allow_mixed_numerics,
        bias: args.bias.map(Into::into),
    };
    let report = protoclr_report::run(target, &opts, ntxent_deviation)?;
    for notice in &report.notices {
        eprintln!("note: {notice}");
    }
    for path in &report.written {
        println!("wrote {}", path.display());
    }
    Ok(())
}
