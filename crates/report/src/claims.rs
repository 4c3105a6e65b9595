//! Claim verdicts (`figures/claims.md`), computed from the data with rules stated in the file.
//!
//! - (a) Lower prototype bias goes with higher accuracy: Spearman ρ over Fig. 3's configuration
//!   means; supported if its bootstrap 95 % interval lies entirely below 0, not supported if it
//!   lies entirely at or above 0, inconclusive otherwise. Evaluated twice: on `bias_l2` (a) and on
//!   the scale-free `bias_rel` (a-rel; "not measured" when no cell has it).
//! - (b) Some (α, λ) ≠ (1, 1) beats NT-Xent by more than the seed noise: Welch intervals of
//!   mean(cell) − mean(NT-Xent), Bonferroni-adjusted over the m cells compared (family-wise 95 %);
//!   supported if one lies entirely above 0, not supported if no cell has a higher mean than
//!   NT-Xent, inconclusive otherwise.
//! - (c) The balanced loss at (1, 1) equals NT-Xent: supported if the measured maximum absolute
//!   deviation is ≤ 1e-5.
//! - (d) The reconstructed bounds of Theorems 4.1/4.2 hold: see [`crate::bounds`].

use std::fmt;

use crate::heatmap::{trim_num, Heatmap};
use crate::scatter::{corr_text, BiasForm, Scatter};
use crate::stats::{welch_interval, Summary, WelchInterval, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED};
use crate::style::{num, signed};

/// Tolerance of claim (c) on max |balanced(1, 1) − NT-Xent|.
pub const EQUALITY_TOLERANCE: f64 = 1e-5;
/// Family-wise confidence level of claim (b).
pub const FAMILY_LEVEL: f64 = 0.95;

/// A verdict computed from data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Supported,
    NotSupported,
    Inconclusive,
    /// The metrics the claim needs are absent from every cell (older cells).
    NotMeasured,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Supported => "supported",
            Verdict::NotSupported => "not supported",
            Verdict::Inconclusive => "inconclusive",
            Verdict::NotMeasured => "not measured",
        })
    }
}

/// One claim, evaluated.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub id: String,
    pub title: String,
    pub statistic: String,
    pub interval: String,
    pub n: String,
    pub rule: String,
    pub verdict: Verdict,
    /// Why, in one sentence.
    pub reason: String,
    /// Extra Markdown (e.g. the table of comparisons).
    pub details: String,
}

impl Claim {
    /// Markdown section of the claim.
    pub fn markdown(&self) -> String {
        let mut s = format!("## ({}) {}\n\n", self.id, self.title);
        s.push_str(&format!("- **Verdict: {}** — {}\n", self.verdict, self.reason));
        s.push_str(&format!("- Statistic: {}\n", self.statistic));
        s.push_str(&format!("- Interval: {}\n", self.interval));
        s.push_str(&format!("- n: {}\n", self.n));
        s.push_str(&format!("- Rule: {}\n", self.rule));
        if !self.details.is_empty() {
            s.push('\n');
            s.push_str(&self.details);
        }
        s.push('\n');
        s
    }
}

fn rule_a(form: BiasForm) -> String {
    format!(
        "Spearman ρ between the per-configuration mean prototype bias (`{}`) and mean linear \
         top-1 accuracy, with a percentile-bootstrap 95 % interval over configurations. \
         Supported if the interval lies entirely below 0; not supported if it lies entirely at or \
         above 0; inconclusive otherwise (interval straddles 0, fewer than 3 configurations, or \
         interval undefined).",
        form.metric()
    )
}

/// The empty claim (a) on one bias form.
fn claim_a_shell(form: BiasForm) -> Claim {
    let (id, title) = match form {
        BiasForm::L2 => (
            "a",
            "Lower prototype representation bias goes with higher accuracy (Fig. 3, bias_l2)",
        ),
        BiasForm::Rel => (
            "a-rel",
            "Lower scale-free prototype bias goes with higher accuracy (Fig. 3, bias_rel)",
        ),
    };
    Claim {
        id: id.into(),
        title: title.into(),
        statistic: "—".into(),
        interval: "—".into(),
        n: "0 configurations".into(),
        rule: rule_a(form),
        verdict: Verdict::Inconclusive,
        reason: String::new(),
        details: String::new(),
    }
}

/// Claim (a) on `form` when no cell of Fig. 3 has that bias: "not measured", with `why`.
pub fn claim_a_not_measured(form: BiasForm, why: &str) -> Claim {
    let mut c = claim_a_shell(form);
    c.verdict = Verdict::NotMeasured;
    c.reason = format!("not measured: {why}");
    c
}

/// Claim (a) from Fig. 3's data, on the bias form the figure plots (`fig.view.x`); `Err` data (no
/// index) is inconclusive with `why` (on `bias_l2`).
pub fn claim_a(fig: Result<&Scatter, &str>) -> Claim {
    claim_a_on(
        fig.map(|f| f.view.bias().unwrap_or_default()).unwrap_or_default(),
        fig,
    )
}

/// Claim (a) on `form`: from `fig` (built with that form), or inconclusive with `why` when there
/// is no data (no index).
pub fn claim_a_on(form: BiasForm, fig: Result<&Scatter, &str>) -> Claim {
    let fig = match fig {
        Ok(f) => f,
        Err(why) => {
            let mut c = claim_a_shell(form);
            c.reason = format!("no data: {why}");
            return c;
        }
    };
    let mut c = claim_a_shell(fig.view.bias().unwrap_or_default());
    let s = &fig.spearman;
    c.n = format!(
        "{} configurations (points), from {} of {} cells",
        s.n, fig.cells.0, fig.cells.1
    );
    c.statistic = if s.estimate.is_finite() {
        format!("Spearman ρ = {}", num(s.estimate, 3))
    } else {
        "Spearman ρ undefined".into()
    };
    c.interval = match s.ci95 {
        Some((lo, hi)) => format!(
            "[{}, {}] (percentile bootstrap over configurations, B = {}, seed {}, {} valid \
             resamples)",
            num(lo, 3),
            num(hi, 3),
            s.resamples,
            s.seed,
            s.valid
        ),
        None => "undefined".into(),
    };
    c.details = format!(
        "For reference: {}; least-squares slope {}.\n",
        corr_text("Pearson r", &fig.pearson),
        fig.fit
            .map(|(_, b)| format!("{} accuracy points per unit of bias", num(b, 2)))
            .unwrap_or_else(|| "undefined".into())
    );
    if let Some(p) = &fig.partial {
        c.details.push_str(&format!("Computed on partial data ({p}).\n"));
    }
    (c.verdict, c.reason) = match s.ci95 {
        _ if s.n < 3 => (
            Verdict::Inconclusive,
            format!("only {} configurations with data (need ≥ 3)", s.n),
        ),
        Some((_, hi)) if hi < 0.0 => (Verdict::Supported, "the whole interval of ρ is below 0".into()),
        Some((lo, _)) if lo >= 0.0 => (
            Verdict::NotSupported,
            "the whole interval of ρ is at or above 0".into(),
        ),
        Some(_) => (Verdict::Inconclusive, "the interval of ρ includes 0".into()),
        None => (Verdict::Inconclusive, "ρ or its interval is undefined".into()),
    };
    c
}

/// One (α, λ) cell compared with NT-Xent.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub alpha: f64,
    pub lambda: f64,
    pub cell: Summary,
    /// Welch 95 % interval (unadjusted).
    pub plain: WelchInterval,
    /// Welch interval at the Bonferroni-adjusted level 1 − 0.05/m.
    pub adjusted: WelchInterval,
}

/// The comparisons of claim (b): every cell with ≥ 2 seeds against NT-Xent (≥ 2 seeds), and the
/// cells left out for having fewer than 2 seeds.
pub fn comparisons(map: &Heatmap) -> (Vec<Comparison>, Vec<(f64, f64, usize)>) {
    let Some(reference) = map.reference().filter(|r| r.n >= 2 && r.std.is_some()) else {
        return (Vec::new(), Vec::new());
    };
    let (usable, few): (Vec<_>, Vec<_>) = map
        .others()
        .into_iter()
        .partition(|(_, _, s)| s.n >= 2 && s.std.is_some());
    let m = usable.len().max(1) as f64;
    let level = 1.0 - (1.0 - FAMILY_LEVEL) / m;
    let out = usable
        .into_iter()
        .filter_map(|(alpha, lambda, cell)| {
            Some(Comparison {
                alpha,
                lambda,
                cell,
                plain: welch_interval(&cell, &reference, 0.95)?,
                adjusted: welch_interval(&cell, &reference, level)?,
            })
        })
        .collect();
    (out, few.into_iter().map(|(a, l, s)| (a, l, s.n)).collect())
}

const RULE_B: &str = "For every (α, λ) ≠ (1, 1) with ≥ 2 seeds: the difference of mean linear \
    top-1 accuracy, cell − NT-Xent (1, 1), with Welch's t-interval (unequal variances, \
    Welch–Satterthwaite df) at level 1 − 0.05/m, m = number of cells compared (Bonferroni: \
    family-wise 95 %). Seed noise = the spread of the seeds in both cells, as used by that \
    interval. Supported if at least one interval lies entirely above 0; not supported if no cell \
    has a higher mean than NT-Xent; inconclusive otherwise (higher means, but every interval \
    reaches 0), or when NT-Xent has fewer than 2 seeds or no cell can be compared.";

/// Claim (b) on one α × λ experiment.
pub fn claim_b(id: &str, what: &str, map: Result<&Heatmap, &str>) -> Claim {
    let mut c = Claim {
        id: id.into(),
        title: format!("Some (α, λ) ≠ (1, 1) beats NT-Xent by more than the seed noise ({what})"),
        statistic: "—".into(),
        interval: "—".into(),
        n: "0 cells compared".into(),
        rule: RULE_B.into(),
        verdict: Verdict::Inconclusive,
        reason: String::new(),
        details: String::new(),
    };
    let map = match map {
        Ok(m) => m,
        Err(why) => {
            c.reason = format!("no data: {why}");
            return c;
        }
    };
    let Some(reference) = map.reference() else {
        c.reason = "no NT-Xent (α = λ = 1) cell with data on the grid".into();
        return c;
    };
    if reference.n < 2 {
        c.reason = format!("NT-Xent has {} seed(s); the seed noise needs ≥ 2", reference.n);
        return c;
    }
    let (comps, few) = comparisons(map);
    let m = comps.len();
    c.n = format!(
        "{m} cells compared against NT-Xent (n = {} seeds); cell seeds: {}",
        reference.n,
        comps
            .iter()
            .map(|x| x.cell.n)
            .min()
            .zip(comps.iter().map(|x| x.cell.n).max())
            .map(|(a, b)| if a == b {
                format!("{a}")
            } else {
                format!("{a}–{b}")
            })
            .unwrap_or_else(|| "—".into())
    );
    if let Some(p) = &map.partial {
        c.details
            .push_str(&format!("Computed on partial data ({p}).\n\n"));
    }
    if !few.is_empty() {
        c.details.push_str(&format!(
            "Left out (fewer than 2 seeds): {}.\n\n",
            few.iter()
                .map(|(a, l, n)| format!("(α = {}, λ = {}, n = {n})", trim_num(*a), trim_num(*l)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let Some(best) = comps
        .iter()
        .max_by(|a, b| a.adjusted.lo.total_cmp(&b.adjusted.lo))
    else {
        c.reason = "no (α, λ) ≠ (1, 1) cell with ≥ 2 seeds".into();
        return c;
    };
    let selected = map
        .selected_other()
        .map(|x| {
            format!(
                "cell selected {} ({}): α = {}, λ = {}, test difference {} points",
                x.basis.short(),
                match x.basis {
                    crate::select::Basis::Validation => "best mean validation accuracy",
                    crate::select::Basis::Test => "no validation metrics, so selection on test: optimistic",
                },
                trim_num(x.alpha),
                trim_num(x.lambda),
                signed(x.test.mean - reference.mean, 2)
            )
        })
        .unwrap_or_else(|| "no cell selected".into());
    c.statistic = format!(
        "cell with the largest adjusted lower bound: α = {}, λ = {}, difference {} points ({} vs \
         NT-Xent {}); {selected}",
        trim_num(best.alpha),
        trim_num(best.lambda),
        signed(best.plain.diff, 2),
        num(best.cell.mean, 2),
        num(reference.mean, 2),
    );
    c.interval = format!(
        "[{}, {}] points (Welch, level 1 − 0.05/{m} = {:.4}, df = {:.1}); unadjusted 95 %: [{}, {}]",
        signed(best.adjusted.lo, 2),
        signed(best.adjusted.hi, 2),
        best.adjusted.level,
        best.adjusted.df,
        signed(best.plain.lo, 2),
        signed(best.plain.hi, 2)
    );
    let winners = comps.iter().filter(|x| x.adjusted.lo > 0.0).count();
    (c.verdict, c.reason) = if winners > 0 {
        (
            Verdict::Supported,
            format!("{winners} of {m} cells beat NT-Xent with the adjusted interval above 0"),
        )
    } else if comps.iter().all(|x| x.plain.diff <= 0.0) {
        (
            Verdict::NotSupported,
            format!("none of the {m} cells has a higher mean than NT-Xent"),
        )
    } else {
        (
            Verdict::Inconclusive,
            "some cells have a higher mean than NT-Xent, but within the seed noise".into(),
        )
    };
    c.details.push_str(
        "| α | λ | n | mean (%) | − NT-Xent (points) | Welch 95 % | Welch adjusted |\n\
         |---|---|---|---|---|---|---|\n",
    );
    let mut sorted: Vec<&Comparison> = comps.iter().collect();
    sorted.sort_by(|a, b| b.plain.diff.total_cmp(&a.plain.diff));
    for x in sorted {
        c.details.push_str(&format!(
            "| {} | {} | {} | {} | {} | [{}, {}] | [{}, {}] |\n",
            trim_num(x.alpha),
            trim_num(x.lambda),
            x.cell.n,
            num(x.cell.mean, 2),
            signed(x.plain.diff, 2),
            signed(x.plain.lo, 2),
            signed(x.plain.hi, 2),
            signed(x.adjusted.lo, 2),
            signed(x.adjusted.hi, 2)
        ));
    }
    c
}

/// Claim (c) from the measured max |balanced(1, 1) − NT-Xent| deviation.
pub fn claim_c(deviation: f64) -> Claim {
    let (verdict, reason) = if !deviation.is_finite() {
        (
            Verdict::Inconclusive,
            "the deviation was not measured (not finite)".to_string(),
        )
    } else if deviation <= EQUALITY_TOLERANCE {
        (
            Verdict::Supported,
            format!("{deviation:.3e} ≤ {EQUALITY_TOLERANCE:e}"),
        )
    } else {
        (
            Verdict::NotSupported,
            format!("{deviation:.3e} > {EQUALITY_TOLERANCE:e}"),
        )
    };
    Claim {
        id: "c".into(),
        title: "The balanced loss at (α, λ) = (1, 1) equals NT-Xent".into(),
        statistic: format!(
            "max |L_balanced(α = 1, λ = 1) − L_NT-Xent| = {deviation:.3e}, measured by \
             `protoclr_train::loss` on the same batches"
        ),
        interval: "none: a deterministic floating-point measurement, no sampling".into(),
        n: "one measurement (the batches are chosen by the loss module)".into(),
        rule: format!(
            "supported if the deviation is ≤ {EQUALITY_TOLERANCE:e} (floating-point agreement); \
             not supported if larger; inconclusive if not measured."
        ),
        verdict,
        reason,
        details: String::new(),
    }
}

/// The whole claims.md.
pub fn markdown(claims: &[Claim], coverage: &str, profile: &str) -> String {
    let mut s = String::from("# Claims: what the data support\n\n");
    s.push_str(&format!(
        "Generated by `protoclr report claims` (profile `{profile}`). Every verdict is computed \
         from the results with the rule stated beside it: **supported**, **not supported** or \
         **inconclusive**. Bootstrap: B = {BOOTSTRAP_RESAMPLES}, seed {BOOTSTRAP_SEED}. The \
         paper's own numbers could not be recovered, so nothing here compares against them.\n\n"
    ));
    s.push_str("| Claim | Verdict | Statistic |\n|---|---|---|\n");
    for c in claims {
        s.push_str(&format!(
            "| ({}) {} | **{}** | {} |\n",
            c.id,
            c.title.replace('|', "\\|"),
            c.verdict,
            c.statistic.replace('|', "\\|")
        ));
    }
    s.push('\n');
    for c in claims {
        s.push_str(&c.markdown());
    }
    s.push_str("## Data coverage\n\n");
    s.push_str(coverage);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_c_threshold() {
        assert_eq!(claim_c(3e-7).verdict, Verdict::Supported);
        assert_eq!(claim_c(1e-5).verdict, Verdict::Supported);
        assert_eq!(claim_c(2e-5).verdict, Verdict::NotSupported);
        assert_eq!(claim_c(f64::NAN).verdict, Verdict::Inconclusive);
    }
}
