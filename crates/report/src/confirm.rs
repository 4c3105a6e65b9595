//! Claim (b) decided by the confirmation stage: one pre-registered paired comparison.
//!
//! The grid (`protoclr grid run`, `confirm:` section of the experiment) selects a candidate on
//! the grid's seeds by a validation metric and writes `results/<exp>.<profile>.selection.json`;
//! then it trains the candidate and the reference (NT-Xent, α = λ = 1) on fresh seeds, listed in
//! `results/<exp>.<profile>.confirm.csv` (`docs/formats.md`). The same seed gives both arms the
//! same training subset, initialisation and augmentation stream, so the seeds pair the runs.
//!
//! The decision, on test linear top-1 ([`OUTCOME`]) of the confirmation cells:
//! - the differences d_s = candidate − reference per seed s, their mean d̄ and sample SD s_d;
//! - the 95 % t-interval d̄ ± t₀.₉₇₅,ₙ₋₁ · s_d / √n ([`paired_interval`]): one comparison, no
//!   multiplicity correction;
//! - **supported** if the lower bound is > 0; **not supported** otherwise — contradicted when the
//!   upper bound is < 0, else no difference detected, stated with the minimum detectable
//!   difference ([`min_detectable`]): the true mean difference that the rule calls supported
//!   with 80 % probability, given the measured s_d and n (noncentral t, exact);
//! - **inconclusive** while fewer than all pre-registered pairs are complete (the interval on the
//!   complete pairs is shown as provisional), with fewer than 2 pairs, or when the selection no
//!   longer matches the grid's cells.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use statrs::distribution::{ContinuousCDF, Normal};
use statrs::function::gamma::ln_gamma;

use crate::claims::{Claim, Verdict};
use crate::load::{index_path, read_index, short_id};
use crate::stats::t_quantile;
use crate::style::{num, signed};

/// Confidence level of the paired interval.
pub const LEVEL: f64 = 0.95;
/// Power at which the minimum detectable difference is stated.
pub const POWER: f64 = 0.80;
/// The outcome compared on the confirmation seeds (metrics.json `eval`): test linear top-1.
pub const OUTCOME: &str = "linear_top1";

/// The t-interval of the mean of paired differences.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedInterval {
    pub n: usize,
    pub mean: f64,
    /// Sample SD of the differences (denominator n − 1).
    pub sd: f64,
    pub df: f64,
    /// t quantile used.
    pub t: f64,
    pub lo: f64,
    pub hi: f64,
    pub level: f64,
}

/// The `level` t-interval of the mean of `diffs` (n ≥ 2, finite values); None otherwise.
pub fn paired_interval(diffs: &[f64], level: f64) -> Option<PairedInterval> {
    let n = diffs.len();
    if n < 2 || !diffs.iter().all(|d| d.is_finite()) || !(level > 0.0 && level < 1.0) {
        return None;
    }
    let mean = diffs.iter().sum::<f64>() / n as f64;
    let sd = (diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
    let df = (n - 1) as f64;
    let t = t_quantile(1.0 - (1.0 - level) / 2.0, df)?;
    let half = t * sd / (n as f64).sqrt();
    Some(PairedInterval {
        n,
        mean,
        sd,
        df,
        t,
        lo: mean - half,
        hi: mean + half,
        level,
    })
}

/// P(T' > c) for T' noncentral t with `df` degrees of freedom and noncentrality `ncp`:
/// ∫₀^∞ Φ(ncp − c·w) f_W(w) dw with W = √(χ²_df / df), by composite Simpson on [0, 12] with
/// 20 000 intervals (the density of W is smooth for df ≥ 1 and negligible beyond 12).
pub fn noncentral_t_sf(c: f64, df: f64, ncp: f64) -> f64 {
    let normal = Normal::new(0.0, 1.0).expect("standard normal");
    let half = df / 2.0;
    let ln_k = std::f64::consts::LN_2 + half * half.ln() - ln_gamma(half);
    let f = |w: f64| -> f64 {
        if w <= 0.0 {
            // w^(df−1) → 0 for df > 1; for df = 1 the density at 0 is 2·(1/2)^(1/2)/Γ(1/2).
            return if df == 1.0 {
                ln_k.exp() * normal.cdf(ncp)
            } else {
                0.0
            };
        }
        let ln_density = ln_k + (df - 1.0) * w.ln() - df * w * w / 2.0;
        ln_density.exp() * normal.cdf(ncp - c * w)
    };
    let (a, b, m) = (0.0, 12.0, 20_000usize);
    let h = (b - a) / m as f64;
    let mut s = f(a) + f(b);
    for i in 1..m {
        let w = a + i as f64 * h;
        s += if i % 2 == 1 { 4.0 } else { 2.0 } * f(w);
    }
    (s * h / 3.0).clamp(0.0, 1.0)
}

/// Probability that the rule calls the claim supported (lower bound of the `level` paired
/// interval > 0) when the true mean difference is `delta`, with paired SD `sd` over `n` pairs:
/// P(T' > t_{(1+level)/2, n−1}), T' noncentral t with ncp = delta·√n / sd. (R's
/// `power.t.test(type = "paired", strict = FALSE)`.)
pub fn power(delta: f64, sd: f64, n: usize, level: f64) -> Option<f64> {
    if !(n >= 2 && sd > 0.0 && sd.is_finite()) {
        return None;
    }
    let df = (n - 1) as f64;
    let c = t_quantile(1.0 - (1.0 - level) / 2.0, df)?;
    Some(noncentral_t_sf(c, df, delta * (n as f64).sqrt() / sd))
}

/// The minimum detectable difference: the true mean difference with [`power`] = `target`
/// (bisection on the noncentrality to 1e-10). None for n < 2 or sd not > 0.
pub fn min_detectable(sd: f64, n: usize, level: f64, target: f64) -> Option<f64> {
    if !(n >= 2 && sd > 0.0 && sd.is_finite() && target > 0.0 && target < 1.0) {
        return None;
    }
    let df = (n - 1) as f64;
    let c = t_quantile(1.0 - (1.0 - level) / 2.0, df)?;
    let (mut lo, mut hi) = (0.0f64, c + 10.0);
    while noncentral_t_sf(c, df, hi) < target {
        hi *= 2.0;
        if hi > 1e6 {
            return None;
        }
    }
    while hi - lo > 1e-10 * hi.max(1.0) {
        let mid = 0.5 * (lo + hi);
        if noncentral_t_sf(c, df, mid) < target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(0.5 * (lo + hi) * sd / (n as f64).sqrt())
}

/// The verdict of the paired comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Complete pairs used.
    pub pairs: usize,
    /// Pre-registered pairs (confirmation seeds).
    pub expected: usize,
    pub interval: Option<PairedInterval>,
    /// Minimum detectable difference at [`POWER`] from the measured paired SD.
    pub mdd: Option<f64>,
    pub verdict: Verdict,
    pub reason: String,
}

/// The verdict alone (pure and cheap, for simulations): see [`decide`].
pub fn verdict(diffs: &[f64], expected: usize) -> Verdict {
    match paired_interval(diffs, LEVEL) {
        _ if diffs.len() < expected => Verdict::Inconclusive,
        None => Verdict::Inconclusive,
        Some(i) if i.lo > 0.0 => Verdict::Supported,
        Some(_) => Verdict::NotSupported,
    }
}

/// The rule (pure): `diffs` = candidate − reference per complete pair, `expected` = the number of
/// pre-registered pairs.
pub fn decide(diffs: &[f64], expected: usize) -> Decision {
    let interval = paired_interval(diffs, LEVEL);
    let mdd = interval.and_then(|i| min_detectable(i.sd, i.n, LEVEL, POWER));
    let pairs = diffs.len();
    let mdd_text = |m: Option<f64>| {
        match m {
        Some(m) => format!(
            "with the measured paired SD the test calls a true gain of {} points supported with {:.0} % probability (minimum detectable difference)",
            num(m, 2),
            POWER * 100.0
        ),
        None => "the paired SD is 0, so no minimum detectable difference can be stated".into(),
    }
    };
    let (verdict, reason) = match interval {
        _ if pairs < expected => (
            Verdict::Inconclusive,
            format!("{pairs} of the {expected} pre-registered pairs are complete; the verdict waits for all of them"),
        ),
        None => (
            Verdict::Inconclusive,
            format!("{pairs} complete pair(s); the paired interval needs ≥ 2"),
        ),
        Some(i) if i.lo > 0.0 => (
            Verdict::Supported,
            format!(
                "the candidate beats NT-Xent on the fresh seeds: the whole 95 % interval of the paired difference is above 0 ({})",
                mdd_text(mdd)
            ),
        ),
        Some(i) if i.hi < 0.0 => (
            Verdict::NotSupported,
            "contradicted: NT-Xent beats the candidate on the fresh seeds (the whole 95 % interval is below 0)".into(),
        ),
        Some(_) => (
            Verdict::NotSupported,
            format!(
                "no difference detected: the 95 % interval of the paired difference includes 0; {}",
                mdd_text(mdd)
            ),
        ),
    };
    Decision {
        pairs,
        expected,
        interval,
        mdd,
        verdict,
        reason,
    }
}

/// One confirmation seed.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub seed: i64,
    pub candidate: Option<f64>,
    pub reference: Option<f64>,
    /// Why a value is missing (cell and status), empty when both are there.
    pub missing: Vec<String>,
}

/// What the report knows about an experiment's confirmation stage.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfirmData {
    pub selection_path: String,
    /// Candidate and reference as `key=value …`.
    pub candidate: String,
    pub reference: String,
    pub metric: String,
    pub maximize: bool,
    pub grid_seeds: Vec<u64>,
    /// Mean of the selection metric over the grid's seeds (candidate, reference when known).
    pub candidate_mean: Option<f64>,
    pub reference_mean: Option<f64>,
    /// Eligible configurations the candidate was the best of.
    pub eligible: usize,
    /// Why the selection does not match the grid's index (None: it does).
    pub stale: Option<String>,
    /// One per confirmation seed, in index order.
    pub pairs: Vec<Pair>,
    /// The confirmation index is absent (the stage has not been expanded yet).
    pub no_index: bool,
}

/// Reads `eval.<OUTCOME>` of a cell the grid calls done and intact
/// ([`protoclr_formats::CellRecord::read`], the rule every metric of the report goes through;
/// the index's status column is not trusted); Err(why) otherwise.
fn outcome_of(results: &Path, id: &str) -> std::result::Result<f64, String> {
    let dir = results.join("cells").join(id);
    let (_, bytes) = protoclr_formats::CellRecord::read(&dir)
        .done_and_intact()
        .map_err(|why| format!("`{}` {why}", short_id(id)))?;
    let m = protoclr_formats::metrics::Metrics::parse(&bytes)
        .map_err(|e| format!("`{}` has an unreadable metrics.json ({e})", short_id(id)))?;
    if m.status != protoclr_formats::metrics::Status::Completed {
        return Err(format!("`{}` did not complete", short_id(id)));
    }
    m.eval_number(OUTCOME)
        .ok_or_else(|| format!("`{}` has no eval.{OUTCOME}", short_id(id)))
}

/// Path of an experiment's confirmation-stage index CSV (`<experiment>.<profile>.confirm.csv`).
pub fn confirm_index_path(results: &Path, experiment: &str, profile: &str) -> PathBuf {
    results.join(format!("{experiment}.{profile}.confirm.csv"))
}

/// Loads the confirmation stage of `experiment`; Ok(None) when there is no selection file.
pub fn load(results: &Path, experiment: &str, profile: &str) -> Result<Option<ConfirmData>> {
    let sel_path = results.join(format!("{experiment}.{profile}.selection.json"));
    let bytes = match std::fs::read(&sel_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", sel_path.display())),
    };
    let sel: serde_json::Value =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", sel_path.display()))?;
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    let grid_cells: Vec<String> = sel["grid_cells"]
        .as_array()
        .map(|a| a.iter().map(text).collect())
        .unwrap_or_default();
    // The selection belongs to the grid whose index lists exactly its cells.
    let grid_index = index_path(results, experiment, profile);
    let stale = if grid_index.is_file() {
        let idx = read_index(&grid_index)?;
        let mut ids: Vec<String> = idx
            .column("cell_id")?
            .str()?
            .iter()
            .map(|s| s.unwrap_or("").to_string())
            .collect();
        ids.sort();
        ids.dedup();
        (ids != grid_cells).then(|| {
            format!(
                "{} lists other grid cells than the selection was made from: rerun `protoclr grid run experiments/{experiment}.yaml --profile {profile}`",
                grid_index.display()
            )
        })
    } else {
        Some(format!("no grid index {}", grid_index.display()))
    };
    let mut data = ConfirmData {
        selection_path: sel_path.display().to_string(),
        candidate: text(&sel["candidate"]["describe"]),
        reference: text(&sel["reference"]["describe"]),
        metric: text(&sel["metric"]),
        maximize: sel["maximize"].as_bool().unwrap_or(true),
        grid_seeds: sel["grid_seeds"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s.as_u64()).collect())
            .unwrap_or_default(),
        candidate_mean: sel["candidate"]["mean"].as_f64(),
        reference_mean: sel["reference"]["mean"].as_f64(),
        eligible: sel["ranking"].as_array().map(Vec::len).unwrap_or(0),
        stale,
        pairs: Vec::new(),
        no_index: false,
    };
    let confirm_index = confirm_index_path(results, experiment, profile);
    if !confirm_index.is_file() {
        data.no_index = true;
        return Ok(Some(data));
    }
    let idx = read_index(&confirm_index)?;
    let col = |name: &str| -> Result<Vec<String>> {
        Ok(idx
            .column(name)
            .with_context(|| format!("{} has no `{name}` column", confirm_index.display()))?
            .str()?
            .iter()
            .map(|s| s.unwrap_or("").trim().to_string())
            .collect())
    };
    let (ids, arms, seeds) = (col("cell_id")?, col("arm")?, col("seed")?);
    for i in 0..ids.len() {
        let seed: i64 = seeds[i].parse().with_context(|| {
            format!(
                "{}: row {}: seed {:?} is not an integer",
                confirm_index.display(),
                i + 2,
                seeds[i]
            )
        })?;
        let pos = match data.pairs.iter().position(|p| p.seed == seed) {
            Some(p) => p,
            None => {
                data.pairs.push(Pair {
                    seed,
                    candidate: None,
                    reference: None,
                    missing: Vec::new(),
                });
                data.pairs.len() - 1
            }
        };
        let pair = &mut data.pairs[pos];
        let value = outcome_of(results, &ids[i]);
        let slot = match arms[i].as_str() {
            "candidate" => &mut pair.candidate,
            "reference" => &mut pair.reference,
            other => anyhow::bail!(
                "{}: row {}: arm {other:?} is neither `candidate` nor `reference`",
                confirm_index.display(),
                i + 2
            ),
        };
        match value {
            Ok(v) => *slot = Some(v),
            Err(why) => pair.missing.push(format!("{} {why}", arms[i])),
        }
    }
    Ok(Some(data))
}

/// The paired differences of the complete pairs.
pub fn differences(data: &ConfirmData) -> Vec<f64> {
    data.pairs
        .iter()
        .filter_map(|p| Some(p.candidate? - p.reference?))
        .collect()
}

const RULE: &str = "Pre-registered confirmation (experiment file, `confirm:`): the grid selects the \
    configuration (α, λ) ≠ (1, 1) with the best mean validation metric over the grid's seeds, then \
    trains it and NT-Xent (1, 1) on fresh seeds; the same seed gives both the same training \
    subset, initialisation and augmentation stream. Per seed, the difference of test linear top-1 \
    (candidate − NT-Xent); 95 % Student-t interval of the mean paired difference (df = n − 1; one \
    comparison, no multiplicity correction). Supported if the lower bound is > 0; not supported \
    otherwise (contradicted if the upper bound is < 0), stated with the minimum detectable \
    difference: the true gain that this rule calls supported with 80 % probability given the \
    measured paired SD (noncentral t); inconclusive until every pre-registered pair is complete.";

/// Claim (b) on one experiment: decided by the confirmation stage `data` (Err: why there is
/// none); `grid` is the exploratory comparison of the whole grid (claims::claim_b), kept as
/// details, never the verdict.
pub fn claim(grid: Claim, data: std::result::Result<&ConfirmData, &str>) -> Claim {
    let mut c = Claim {
        id: grid.id,
        title: grid.title.clone(),
        statistic: "—".into(),
        interval: "—".into(),
        n: "0 pairs".into(),
        rule: RULE.into(),
        verdict: Verdict::Inconclusive,
        reason: String::new(),
        details: String::new(),
    };
    let exploratory = format!(
        "Exploratory, not the decision — the whole grid against NT-Xent on the grid's seeds: {} \
         (verdict by that rule: {}; {}). Interval: {}. Rule: {}\n\n{}",
        grid.statistic, grid.verdict, grid.reason, grid.interval, grid.rule, grid.details
    );
    let data = match data {
        Ok(d) => d,
        Err(why) => {
            c.reason = format!("no data: {why}");
            c.details = exploratory;
            return c;
        }
    };
    let selected_on = if data.metric.starts_with("val_") {
        "validation".to_string()
    } else {
        format!(
            "`{}`, not a validation metric: the selection saw the test images, which the confirmation also uses",
            data.metric
        )
    };
    c.details = format!(
        "Candidate: **{}**, selected on {selected_on} (`{}`, {} mean over grid seeds {:?}: {}; best of {} eligible configurations; {}). Reference: {} (grid mean {}).\n\n",
        data.candidate,
        data.metric,
        if data.maximize { "highest" } else { "lowest" },
        data.grid_seeds,
        data.candidate_mean.map(|m| num(m, 2)).unwrap_or_else(|| "—".into()),
        data.eligible,
        data.selection_path,
        data.reference,
        data.reference_mean.map(|m| num(m, 2)).unwrap_or_else(|| "—".into()),
    );
    if let Some(why) = &data.stale {
        c.reason = format!("the selection is stale: {why}");
        c.details.push_str(&exploratory);
        return c;
    }
    if data.no_index {
        c.reason =
            "no data: the confirmation cells have not been expanded yet (run `protoclr grid run` again)"
                .into();
        c.details.push_str(&exploratory);
        return c;
    }
    let diffs = differences(data);
    let d = decide(&diffs, data.pairs.len());
    c.verdict = d.verdict;
    c.reason = d.reason.clone();
    c.n = format!(
        "{} of {} pre-registered pairs complete (fresh seeds {})",
        d.pairs,
        d.expected,
        data.pairs
            .iter()
            .map(|p| p.seed.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(i) = d.interval {
        c.statistic = format!(
            "{} − NT-Xent: mean paired difference of test linear top-1 {} points (paired SD {}, n = {})",
            data.candidate,
            signed(i.mean, 2),
            num(i.sd, 2),
            i.n
        );
        c.interval = format!(
            "[{}, {}] points (paired t, 95 %, df = {}, t = {:.3}){}",
            signed(i.lo, 2),
            signed(i.hi, 2),
            i.df,
            i.t,
            if d.pairs < d.expected { "; provisional" } else { "" }
        );
    }
    if let Some(m) = d.mdd {
        c.details.push_str(&format!(
            "Minimum detectable difference at {:.0} % power: {} points (from the measured paired SD over {} pairs).\n\n",
            POWER * 100.0,
            num(m, 2),
            d.pairs
        ));
    }
    c.details
        .push_str("| seed | candidate (%) | NT-Xent (%) | difference (points) |\n|---|---|---|---|\n");
    for p in &data.pairs {
        let f = |v: Option<f64>| v.map(|v| num(v, 2)).unwrap_or_else(|| "—".into());
        let diff = match (p.candidate, p.reference) {
            (Some(a), Some(b)) => signed(a - b, 2),
            _ => format!("missing: {}", p.missing.join("; ")),
        };
        c.details.push_str(&format!(
            "| {} | {} | {} | {diff} |\n",
            p.seed,
            f(p.candidate),
            f(p.reference)
        ));
    }
    c.details.push('\n');
    c.details.push_str(&exploratory);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    // Known answers computed with SciPy 1.17 (`scipy.stats.ttest_rel(...).confidence_interval()`,
    // `scipy.stats.nct.sf`, `scipy.optimize.brentq`); the power definition is R's
    // `power.t.test(type = "paired")`.

    #[test]
    fn paired_interval_of_students_sleep_data() {
        // Cushny & Peebles via Student (1908): extra sleep, drug 2 − drug 1, 10 patients.
        let d = [1.2, 2.4, 1.3, 1.3, 0.0, 1.0, 1.8, 0.8, 4.6, 1.4];
        let i = paired_interval(&d, 0.95).unwrap();
        assert!((i.mean - 1.58).abs() < 1e-12);
        assert!((i.sd - 1.229_995_483_279_873).abs() < 1e-12);
        assert!((i.t - 2.262_157_162_798_205).abs() < 1e-9);
        assert!((i.lo - 0.700_114_236_723_017_5).abs() < 1e-8, "{}", i.lo);
        assert!((i.hi - 2.459_885_763_276_982).abs() < 1e-8, "{}", i.hi);
        assert_eq!(i.df, 9.0);
        assert!(paired_interval(&[1.0], 0.95).is_none());
        assert!(paired_interval(&[1.0, f64::NAN], 0.95).is_none());
    }

    #[test]
    fn power_and_minimum_detectable_difference() {
        // (n, sd, MDD at 80 %, power at a true difference of 1).
        let known = [
            (8, 1.0, 1.156_035_494_354_791_5, 0.680_830_149_549_934_5),
            (8, 0.9, 1.040_431_944_919_312_7, 0.768_778_890_241_479_9),
            (10, 1.0, 0.996_002_254_306_952_2, 0.803_096_208_690_404_1),
            (2, 1.0, 11.549_888_435_882_336, 0.090_579_718_650_594_18),
            (30, 2.5, 1.323_090_611_939_500_7, 0.562_791_228_228_686),
        ];
        for (n, sd, mdd, p1) in known {
            let m = min_detectable(sd, n, 0.95, 0.8).unwrap();
            assert!((m - mdd).abs() < 1e-6 * mdd, "n {n} sd {sd}: {m} vs {mdd}");
            let p = power(1.0, sd, n, 0.95).unwrap();
            assert!((p - p1).abs() < 1e-7, "n {n} sd {sd}: {p} vs {p1}");
        }
        // At δ = 0 the rule says "supported" with probability 2.5 %.
        assert!((power(0.0, 1.0, 8, 0.95).unwrap() - 0.025).abs() < 1e-9);
        assert!(min_detectable(0.0, 8, 0.95, 0.8).is_none());
        assert!(min_detectable(1.0, 1, 0.95, 0.8).is_none());
    }

    #[test]
    fn verdict_rule() {
        let up = decide(&[1.0, 1.2, 0.8, 1.1], 4);
        assert_eq!(up.verdict, Verdict::Supported, "{}", up.reason);
        let down = decide(&[-1.0, -1.2, -0.8, -1.1], 4);
        assert_eq!(down.verdict, Verdict::NotSupported);
        assert!(down.reason.starts_with("contradicted"), "{}", down.reason);
        let null = decide(&[0.5, -0.4, 0.1, -0.3], 4);
        assert_eq!(null.verdict, Verdict::NotSupported);
        assert!(
            null.reason.contains("minimum detectable difference"),
            "{}",
            null.reason
        );
        let m = null.mdd.unwrap();
        let sd = null.interval.unwrap().sd;
        assert!((m - min_detectable(sd, 4, 0.95, 0.8).unwrap()).abs() < 1e-12);
        // A missing pre-registered pair: inconclusive, whatever the interval says.
        assert_eq!(decide(&[1.0, 1.2, 0.8], 4).verdict, Verdict::Inconclusive);
        assert_eq!(decide(&[1.0], 1).verdict, Verdict::Inconclusive);
        // The cheap verdict of the simulations is the same rule.
        for (d, e) in [
            (&[1.0, 1.2, 0.8, 1.1][..], 4),
            (&[-1.0, -1.2, -0.8, -1.1][..], 4),
            (&[0.5, -0.4, 0.1, -0.3][..], 4),
            (&[1.0, 1.2, 0.8][..], 4),
            (&[1.0][..], 1),
            (&[2.0, 2.0][..], 2),
        ] {
            assert_eq!(verdict(d, e), decide(d, e).verdict, "{d:?}");
        }
        // Identical differences: a zero-width interval, supported, no MDD.
        let same = decide(&[2.0, 2.0], 2);
        assert_eq!(same.verdict, Verdict::Supported);
        assert!(same.mdd.is_none());
    }
}
