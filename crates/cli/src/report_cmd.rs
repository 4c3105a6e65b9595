//! `protoclr report fig3|fig4|fig5|tables|claims|all`: the paper's figures, tables and claim
//! verdicts from cached results (no training), via `protoclr_report`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use protoclr_report::fig3::BiasForm;
use protoclr_report::{Options, Target};

/// What `protoclr report` builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum What {
    /// Fig. 3: accuracy vs prototype representation bias (fig3.png, fig3.svg).
    Fig3,
    /// Fig. 4: α × λ heatmaps, paper's main setting (fig4.png, fig4.svg).
    Fig4,
    /// Fig. 5: α × λ heatmaps on CIFAR-10 (fig5.png, fig5.svg).
    Fig5,
    /// CIFAR-10 / CIFAR-100 (and long-tail) tables in Markdown, LaTeX and CSV.
    Tables,
    /// claims.md: each claim with its statistic, interval, n and verdict.
    Claims,
    /// Everything above.
    All,
}

impl From<What> for Target {
    fn from(w: What) -> Self {
        match w {
            What::Fig3 => Target::Fig3,
            What::Fig4 => Target::Fig4,
            What::Fig5 => Target::Fig5,
            What::Tables => Target::Tables,
            What::Claims => Target::Claims,
            What::All => Target::All,
        }
    }
}

/// Which prototype bias Fig. 3 plots.
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
    /// What to build.
    #[arg(value_enum)]
    pub what: What,
    /// Results folder written by `protoclr grid` (index CSVs and cells/).
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    /// Output folder for figures, tables, notes and claims.md.
    #[arg(long, default_value = "figures")]
    pub out: PathBuf,
    /// Profile of the index files to read (`results/<experiment>.<profile>.csv`).
    #[arg(long, default_value = "cpu", value_parser = crate::grid_cmd::profile_name)]
    pub profile: String,
    /// Draw figures and tables whose cells were trained by different numerics versions (refused
    /// by default); their titles and notes then say "mixed numerics".
    #[arg(long)]
    pub allow_mixed_numerics: bool,
    /// Prototype bias on Fig. 3's x axis (claims.md reports claim (a) on both forms).
    #[arg(long, value_enum, default_value = "l2")]
    pub bias: Bias,
}

/// Runs `protoclr report`. `ntxent_deviation` is the measured max |balanced(1, 1) − NT-Xent|
/// loss deviation, the statistic of claim (c).
pub fn run(args: ReportArgs, ntxent_deviation: f64) -> anyhow::Result<()> {
    let opts = Options {
        results: args.results,
        out: args.out,
        profile: args.profile,
        allow_mixed_numerics: args.allow_mixed_numerics,
        bias: args.bias.into(),
    };
    let report = protoclr_report::run(args.what.into(), &opts, ntxent_deviation)?;
    for notice in &report.notices {
        eprintln!("note: {notice}");
    }
    for path in &report.written {
        println!("wrote {}", path.display());
    }
    Ok(())
}
