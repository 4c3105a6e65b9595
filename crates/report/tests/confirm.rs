//! Claim (b) from the confirmation stage: the claim read from files as `protoclr grid run` writes
//! them, and planted-effect simulations of the whole chain (selection on the grid's seeds, then
//! the paired test on fresh seeds).

mod common;

use common::*;
use protoclr_grid::confirm::rank;
use protoclr_report::claims::{claim_b, Verdict};
use protoclr_report::confirm::{self, decide, min_detectable, verdict};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::path::Path;

const PROFILE: &str = "cpu";

fn grid_claim() -> protoclr_report::claims::Claim {
    claim_b("b2", "Fig. 5, CIFAR-10", Err("not read in this test"))
}

fn write_grid(results: &Path) {
    let g = grid3(|a, _| if a == 1.5 { (62.0, 1.0) } else { (59.0, 1.0) });
    write_experiment(
        results,
        "fig5",
        PROFILE,
        &["loss.alpha", "loss.lambda"],
        &alpha_lambda_cells("fig5", &g),
    );
}

fn claim_from(results: &Path) -> protoclr_report::claims::Claim {
    let data = confirm::load(results, "fig5", PROFILE).unwrap();
    confirm::claim(grid_claim(), data.as_ref().ok_or("none"))
}

#[test]
fn claim_from_files_supported_not_supported_partial_and_stale() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    write_grid(&results);
    // No selection file yet: no data.
    assert!(confirm::load(&results, "fig5", PROFILE).unwrap().is_none());

    // +2 points on each seed, ±0.3: supported, with the candidate and its selection stated.
    let cand: Vec<Option<f64>> = (0..8).map(|i| Some(62.0 + [0.3, -0.3][i % 2])).collect();
    let refr: Vec<Option<f64>> = (0..8).map(|_| Some(60.0)).collect();
    write_confirmation(&results, "fig5", PROFILE, &cand, &refr);
    let c = claim_from(&results);
    assert_eq!(c.verdict, Verdict::Supported, "{}", c.reason);
    assert!(c.statistic.contains("+2.00 points"), "{}", c.statistic);
    assert!(c.interval.contains("paired t, 95 %, df = 7"), "{}", c.interval);
    assert!(
        c.details.contains("loss.alpha=1.5 loss.lambda=1") && c.details.contains("selected on validation")
    );
    assert!(
        c.details.contains("Minimum detectable difference at 80 % power"),
        "{}",
        c.details
    );
    assert!(c.details.contains("Exploratory, not the decision"));
    assert!(c.n.starts_with("8 of 8 pre-registered pairs"), "{}", c.n);

    // No gain: not supported, and the reason states the minimum detectable difference.
    let cand: Vec<Option<f64>> = (0..8)
        .map(|i| Some(60.0 + [0.4, -0.4, 0.1, -0.1][i % 4]))
        .collect();
    write_confirmation(&results, "fig5", PROFILE, &cand, &refr);
    let c = claim_from(&results);
    assert_eq!(c.verdict, Verdict::NotSupported);
    assert!(c.reason.contains("minimum detectable difference"), "{}", c.reason);

    // One pair pending: inconclusive, the interval marked provisional.
    let mut partial = cand.clone();
    partial[5] = None;
    write_confirmation(&results, "fig5", PROFILE, &partial, &refr);
    let c = claim_from(&results);
    assert_eq!(c.verdict, Verdict::Inconclusive);
    assert!(c.reason.contains("7 of the 8"), "{}", c.reason);
    assert!(c.interval.contains("provisional"));
    assert!(c.details.contains("missing: candidate"), "{}", c.details);

    // A selection without its confirmation index (the stage not expanded yet): no data.
    std::fs::remove_file(results.join("fig5.cpu.confirm.csv")).unwrap();
    let c = claim_from(&results);
    assert_eq!(c.verdict, Verdict::Inconclusive);
    assert!(c.reason.contains("not been expanded"), "{}", c.reason);

    // The grid's index lists other cells than the selection was made from: stale.
    write_confirmation(&results, "fig5", PROFILE, &cand, &refr);
    let g = grid3(|_, _| (59.0, 1.0));
    let mut cells = alpha_lambda_cells("fig5", &g);
    cells[0].id = id("another cell");
    write_experiment(&results, "fig5", PROFILE, &["loss.alpha", "loss.lambda"], &cells);
    let c = claim_from(&results);
    assert_eq!(c.verdict, Verdict::Inconclusive);
    assert!(c.reason.contains("stale"), "{}", c.reason);
}

/// The confirmation stage reads its cells as every figure does: only done and intact ones (the
/// checksums of status.json), never on the word of the confirmation index.
#[test]
fn a_confirmation_cell_that_is_not_intact_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    write_grid(&results);
    let cand: Vec<Option<f64>> = (0..8).map(|i| Some(62.0 + [0.3, -0.3][i % 2])).collect();
    let refr: Vec<Option<f64>> = (0..8).map(|_| Some(60.0)).collect();
    write_confirmation(&results, "fig5", PROFILE, &cand, &refr);
    assert!(claim_from(&results).n.starts_with("8 of 8 pre-registered pairs"));
    // The candidate of seed 103 edited after it was sealed: the index still says `done`.
    let cell = id("fig5 confirm candidate 103");
    edit_metrics(&results, &cell, false, |m| {
        m["eval"]["linear_top1"] = serde_json::json!(99.0)
    });
    let c = claim_from(&results);
    assert!(c.n.starts_with("7 of 8 pre-registered pairs"), "{}", c.n);
    assert!(
        c.details
            .contains("corrupt: metrics.json does not match its checksum"),
        "{}",
        c.details
    );
    assert_eq!(c.verdict, Verdict::Inconclusive, "{}", c.reason);
    // Its status file gone (an unfinished cell whose index row says done): pending.
    edit_metrics(&results, &cell, true, |_| {});
    std::fs::remove_file(results.join("cells").join(&cell).join("status.json")).unwrap();
    let c = claim_from(&results);
    assert!(
        c.details.contains("pending (started, not finished)"),
        "{}",
        c.details
    );
}

/// Seed noise of linear top-1 (points) per cell, and the correlation of two cells on one seed
/// (same data subset, initialisation and augmentation stream): paired SD = 0.9·√(2·(1 − 0.5)) = 0.9.
const SIGMA: f64 = 0.9;
const RHO: f64 = 0.5;
const GRID_SEEDS: usize = 2;
const CONFIRM_SEEDS: usize = 8;
const REPS: usize = 2000;

fn z(rng: &mut ChaCha8Rng) -> f64 {
    StandardNormal.sample(rng)
}

/// A metric of a cell: its true value plus a seed component shared by every cell on that seed
/// and its own noise.
fn noisy(rng: &mut ChaCha8Rng, truth: f64, shared: f64) -> f64 {
    truth + SIGMA * (RHO.sqrt() * shared + (1.0 - RHO).sqrt() * z(rng))
}

/// One experiment: 24 candidates with true gains `gains` over the reference (60 %); selection by
/// `rank` on the validation mean over the grid's seeds; the paired test on fresh seeds. Returns
/// the selected candidate and the verdict.
fn chain(rng: &mut ChaCha8Rng, gains: &[f64]) -> (usize, Verdict) {
    let shared: Vec<f64> = (0..GRID_SEEDS).map(|_| z(rng)).collect();
    let means: Vec<f64> = gains
        .iter()
        .map(|g| shared.iter().map(|&s| noisy(rng, 60.0 + g, s)).sum::<f64>() / GRID_SEEDS as f64)
        .collect();
    let chosen = rank(&means, true)[0];
    let diffs: Vec<f64> = (0..CONFIRM_SEEDS)
        .map(|_| {
            let s = z(rng);
            noisy(rng, 60.0 + gains[chosen], s) - noisy(rng, 60.0, s)
        })
        .collect();
    (chosen, verdict(&diffs, CONFIRM_SEEDS))
}

#[test]
fn planted_gain_of_two_points_comes_out_supported() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let mut gains = vec![0.0; 24];
    gains[7] = 2.0;
    let (mut picked, mut supported) = (0, 0);
    for _ in 0..REPS {
        let (chosen, v) = chain(&mut rng, &gains);
        picked += (chosen == 7) as usize;
        supported += (v == Verdict::Supported) as usize;
    }
    // Theory: the planted cell wins the selection almost always (its lead of 2 points against
    // a between-cell SD of 0.45), and the paired test then has power 0.9996 (SciPy nct.sf).
    eprintln!("planted +2: selected {picked}, supported {supported} of {REPS}");
    assert!(
        picked as f64 / REPS as f64 > 0.95,
        "selected in {picked} of {REPS}"
    );
    assert!(
        supported as f64 / REPS as f64 >= 0.95,
        "supported in {supported} of {REPS}"
    );
}

#[test]
fn null_grid_comes_out_not_supported_despite_the_winners_curse() {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let gains = vec![0.0; 24];
    let mut not_supported = 0;
    for _ in 0..REPS {
        let (_, v) = chain(&mut rng, &gains);
        not_supported += (v == Verdict::NotSupported) as usize;
    }
    // Theory: 97.5 % (the best of 24 on the grid's seeds is no better on fresh ones).
    let rate = not_supported as f64 / REPS as f64;
    eprintln!("null grid: not supported {not_supported} of {REPS}");
    assert!(rate >= 0.95, "not supported in {not_supported} of {REPS}");
    assert!(rate <= 0.99, "the rule is not blind: {rate}");
}

#[test]
fn power_at_the_minimum_detectable_difference_is_80_percent_by_simulation() {
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    let sd_d = SIGMA * (2.0 * (1.0 - RHO)).sqrt();
    let delta = min_detectable(sd_d, CONFIRM_SEEDS, 0.95, 0.8).unwrap();
    let reps = 4000;
    let mut supported = 0;
    for _ in 0..reps {
        let diffs: Vec<f64> = (0..CONFIRM_SEEDS)
            .map(|_| {
                let s = z(&mut rng);
                noisy(&mut rng, 60.0 + delta, s) - noisy(&mut rng, 60.0, s)
            })
            .collect();
        supported += (verdict(&diffs, CONFIRM_SEEDS) == Verdict::Supported) as usize;
    }
    // Binomial SD at 4000 repetitions: 0.0063; ± 0.025 is 4 SD.
    let rate = supported as f64 / reps as f64;
    eprintln!("at the MDD {delta:.4}: supported {supported} of {reps}");
    assert!((rate - 0.8).abs() < 0.025, "{rate} at δ = {delta}");
    // The decision on one such draw states that MDD for its own measured SD.
    let d = decide(&[1.0, 0.2, 1.9, 0.4, 1.5, -0.3, 1.1, 0.8], 8);
    assert!(d.mdd.unwrap() > 0.0 && d.interval.is_some());
}
