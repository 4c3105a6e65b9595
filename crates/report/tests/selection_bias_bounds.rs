//! Validation-based selection, claim (a) on both bias forms, claim (d) with the theorem bounds,
//! and the α/λ ratio table, on results folders with planted answers.

mod common;

use std::path::Path;

use common::*;
use protoclr_report::bounds;
use protoclr_report::claims::{self, Verdict};
use protoclr_report::heatmap::Heatmap;
use protoclr_report::load::Experiment;
use protoclr_report::ratio::{self, RatioTable};
use protoclr_report::scatter::{self as fig3, BiasForm, Scatter};
use protoclr_report::select::Basis;
use protoclr_report::tables::Table;
use protoclr_report::{run, Options, Target};
use serde_json::{json, Value};

const PROFILE: &str = "cpu";

fn opts(root: &Path) -> Options {
    Options::new(root.join("results"), root.join("figures"), PROFILE).with_experiments(experiments())
}

/// Adds `keys` to the `eval` object of cell `id`'s metrics.json (the optional metrics newer
/// training writes), resealing the cell as the grid would have written it.
fn add_eval(results: &Path, id: &str, keys: &[(&str, Value)]) {
    edit_metrics(results, id, true, |v| {
        let eval = v["eval"].as_object_mut().expect("eval object");
        for (k, x) in keys {
            eval.insert((*k).to_string(), x.clone());
        }
    });
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

// ---- selection on validation ------------------------------------------------------------

/// Table cells where validation prefers balanced (1, 1.5) (test 61) over (1.5, 1) (test 63, the
/// test-set maximum).
fn write_table_with_val(results: &Path, skip_val_of: Option<(f64, f64)>) {
    let cells = table_cells("table_cifar10");
    write_experiment(
        results,
        "table_cifar10",
        PROFILE,
        &["loss.alpha", "loss.lambda", "loss.name"],
        &cells,
    );
    for c in &cells {
        let (a, l): (f64, f64) = (c.axes[0].parse().unwrap(), c.axes[1].parse().unwrap());
        if Some((a, l)) == skip_val_of && c.label == "balanced" {
            continue;
        }
        let val = if c.label != "balanced" {
            40.0
        } else if (a, l) == (1.5, 1.0) {
            55.0
        } else if (a, l) == (1.0, 1.5) {
            62.0
        } else {
            50.0
        } + c.seed as f64;
        add_eval(results, &c.id, &[("val_linear_top1", json!(val))]);
    }
}

#[test]
fn table_best_of_k_is_chosen_on_validation_and_shows_its_test_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    write_table_with_val(&results, None);
    let exp = Experiment::load(&results, "table_cifar10", PROFILE).unwrap();
    let t = Table::from_spec(&exp, &spec("table_cifar10"), "table_cifar10").unwrap();
    let bal = &t.rows[1];
    assert_eq!(bal.method, "balanced");
    assert_eq!(
        bal.setting, "α = 1, λ = 1.5",
        "validation's pick, not test's (1.5, 1)"
    );
    assert_eq!(bal.selected_on, Some(Basis::Validation));
    assert!(
        close(bal.value(&t.metrics, "linear_top1").unwrap().mean, 61.0),
        "test accuracy of the pick"
    );
    assert!(close(bal.val_first.unwrap().mean, 63.0));
    assert_eq!(t.rows[0].selected_on, None, "a single setting is no selection");
    let md = t.markdown();
    assert!(
        md.contains("| balanced | best of 3 on validation: α = 1, λ = 1.5 | 61.00 ± 0.50 (n=3) |"),
        "{md}"
    );
    assert!(
        md.contains("val_linear_top1") && !md.contains("selection on test"),
        "{md}"
    );
    let out = dir.path().join("figures");
    t.write(&out).unwrap();
    let csv = read(&out.join("table_cifar10.csv"));
    assert!(
        csv.contains("balanced,\"α = 1, λ = 1.5\",3,validation,63.0,61.0,"),
        "{csv}"
    );
}

#[test]
fn a_candidate_without_validation_makes_the_selection_on_test_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    write_table_with_val(&results, Some((0.5, 1.0)));
    let exp = Experiment::load(&results, "table_cifar10", PROFILE).unwrap();
    let t = Table::from_spec(&exp, &spec("table_cifar10"), "table_cifar10").unwrap();
    let bal = &t.rows[1];
    assert_eq!(bal.setting, "α = 1.5, λ = 1");
    assert_eq!(bal.selected_on, Some(Basis::Test));
    assert!(t.markdown().contains("selection on test"));
}

/// α × λ grid where test's best (α, λ) ≠ (1, 1) is (1.5, 0.5) but validation's is (0.5, 1.5).
fn write_grid_with_val(results: &Path) -> Vec<Cell> {
    let g = grid3(|a, l| {
        if (a, l) == (1.5, 0.5) {
            (64.0, 1.0)
        } else if (a, l) == (0.5, 1.5) {
            (62.0, 1.0)
        } else {
            (58.0, 1.0)
        }
    });
    let cells = alpha_lambda_cells("fig5", &g);
    write_experiment(results, "fig5", PROFILE, &["loss.alpha", "loss.lambda"], &cells);
    for c in &cells {
        let val = match (c.axes[0].as_str(), c.axes[1].as_str()) {
            ("0.5", "1.5") => 66.0,
            ("1.5", "0.5") => 52.0,
            _ => 55.0,
        };
        add_eval(results, &c.id, &[("val_linear_top1", json!(val))]);
    }
    cells
}

#[test]
fn heatmap_best_cell_is_selected_on_validation_in_notes_and_claim_b() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    write_grid_with_val(&o.results);
    let exp = Experiment::load(&o.results, "fig5", PROFILE).unwrap();
    let map = Heatmap::from_spec(&exp, &spec("fig5")).unwrap();
    let s = map.selected_other().unwrap();
    assert_eq!(
        (s.alpha, s.lambda, s.basis, s.candidates),
        (0.5, 1.5, Basis::Validation, 8)
    );
    assert!(close(s.test.mean, 62.0) && close(s.val.unwrap().mean, 66.0));

    run(target("fig5"), &o, 0.0).unwrap();
    let notes = read(&o.out.join("fig5.notes.md"));
    assert!(
        notes.contains(
            "Selected (α, λ) ≠ (1, 1), on validation among 8 cells: α = 0.5, λ = 1.5 — test \
             linear top-1 62.00 (n=3), +2.00 points vs NT-Xent's 60.00; validation 66.00 (n=3)."
        ),
        "{notes}"
    );
    let c = claims::claim_b("b2", "Fig. 5", Ok(&map));
    assert!(
        c.statistic.contains("cell selected on validation (best mean validation accuracy): α = 0.5, λ = 1.5, test difference +2.00 points"),
        "{}",
        c.statistic
    );

    // The same grid without validation metrics: the test maximum, said to be on test.
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    let g = grid3(|a, l| {
        if (a, l) == (1.5, 0.5) {
            (64.0, 1.0)
        } else {
            (58.0, 1.0)
        }
    });
    write_experiment(
        &o.results,
        "fig5",
        PROFILE,
        &["loss.alpha", "loss.lambda"],
        &alpha_lambda_cells("fig5", &g),
    );
    run(target("fig5"), &o, 0.0).unwrap();
    let notes = read(&o.out.join("fig5.notes.md"));
    assert!(
        notes.contains("on test among 8 cells: α = 1.5, λ = 0.5") && notes.contains("Selection on test"),
        "{notes}"
    );
}

// ---- claim (a) on bias_l2 and bias_rel ------------------------------------------------------

/// Fig. 3 where `bias_l2` rises with accuracy (ρ = +1) but the planted `bias_rel` falls with it
/// (ρ = −1): claim (a) not supported on l2, supported on rel.
fn write_fig3_with_rel(results: &Path) {
    let points: Vec<_> = fig3_monotone()
        .into_iter()
        .map(|(l, o, b, _)| (l, o, b, 40.0 + 50.0 * b))
        .collect();
    let cells = fig3_cells(&points);
    write_experiment(results, "fig3", PROFILE, &["augment.ops"], &cells);
    for c in &cells {
        let (lin, _, _) = c.metrics.unwrap();
        // Strictly decreasing in accuracy, per cell.
        add_eval(results, &c.id, &[("bias_rel", json!(3.0 - lin / 50.0))]);
    }
}

#[test]
fn claim_a_is_reported_on_both_bias_forms() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    write_fig3_with_rel(&o.results);
    let exp = Experiment::load(&o.results, "fig3", PROFILE).unwrap();
    assert!(BiasForm::Rel.measured(&exp) && BiasForm::L2.measured(&exp));
    let l2 = Scatter::from_spec(&exp, &spec("fig3"), "fig3").unwrap();
    let rel = Scatter::from_view(
        &exp,
        "t",
        "fig3",
        fig3::View::from_spec(&spec("fig3")).with_bias(BiasForm::Rel),
    )
    .unwrap();
    assert!(close(l2.spearman.estimate, 1.0));
    assert!(close(rel.spearman.estimate, -1.0));
    // Means of bias_rel are exactly 3 − mean(acc)/50.
    let base = rel.points.iter().find(|p| p.label == "base").unwrap();
    assert!(close(base.x.mean, 3.0 - (40.0 + 50.0 * 0.30) / 50.0));
    assert_eq!(claims::claim_a(Ok(&l2)).verdict, Verdict::NotSupported);
    let c = claims::claim_a(Ok(&rel));
    assert_eq!((c.id.as_str(), c.verdict), ("a-rel", Verdict::Supported));
    assert!(c.rule.contains("`bias_rel`"));

    run(Target::Claims, &o, 0.0).unwrap();
    let md = read(&o.out.join("claims.md"));
    assert!(md.contains("## (a) Lower prototype representation bias"), "{md}");
    assert!(md.contains("## (a-rel) Lower scale-free prototype bias"), "{md}");
    let section = |id: &str| {
        let start = md.find(&format!("## ({id})")).unwrap();
        md[start..].lines().nth(2).unwrap().to_string()
    };
    assert!(section("a").contains("**Verdict: not supported**"), "{md}");
    assert!(section("a-rel").contains("**Verdict: supported**"), "{md}");

    // fig3 --bias rel: the axis label says which bias.
    let mut o_rel = o.clone();
    o_rel.bias = Some(BiasForm::Rel);
    run(target("fig3"), &o_rel, 0.0).unwrap();
    let svg = read(&o.out.join("fig3.svg"));
    assert!(
        svg.contains(fig3::X_LABEL_REL) && !svg.contains(fig3::X_LABEL),
        "rel axis label"
    );
    assert!(svg.contains("Spearman ρ = −1.00"));
    assert!(read(&o.out.join("fig3.notes.md")).contains("x axis: `bias_rel`"));
    run(target("fig3"), &o, 0.0).unwrap();
    let svg = read(&o.out.join("fig3.svg"));
    assert!(
        svg.contains(fig3::X_LABEL) && svg.contains("Spearman ρ = 1.00"),
        "default l2"
    );
}

#[test]
fn claim_a_rel_is_not_measured_on_old_cells() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    write_experiment(
        &o.results,
        "fig3",
        PROFILE,
        &["augment.ops"],
        &fig3_cells(&fig3_monotone()),
    );
    run(Target::Claims, &o, 0.0).unwrap();
    let md = read(&o.out.join("claims.md"));
    let start = md.find("## (a-rel)").unwrap();
    assert!(
        md[start..].contains("**Verdict: not measured** — not measured: no fig3 cell has `bias_rel`"),
        "{md}"
    );
    // Plotting the absent form draws an empty figure and says why in the notes.
    let mut o_rel = o.clone();
    o_rel.bias = Some(BiasForm::Rel);
    run(target("fig3"), &o_rel, 0.0).unwrap();
    assert!(read(&o.out.join("fig3.notes.md")).contains("`bias_rel` is not measured"));
}

// ---- claim (d): the theorem bounds --------------------------------------------------------

fn bound_keys(attract: f64, repel: f64, slack_a: f64, slack_r: f64, n: f64) -> Vec<(&'static str, Value)> {
    vec![
        ("bound_attract_holds", json!(attract)),
        ("bound_attract_slack", json!(slack_a)),
        ("bound_repel_holds", json!(repel)),
        ("bound_repel_slack", json!(slack_r)),
        ("bound_n", json!(n)),
    ]
}

/// Fig. 3 cells with both bounds holding everywhere; slack of cell k (0-based, in index order)
/// is 0.1·(k mod 3 + 1) (attracting) and 0.01·(k mod 3 + 1) (repelling), 1000 samples each.
fn write_fig3_with_bounds(results: &Path) -> Vec<Cell> {
    let cells = fig3_cells(&fig3_monotone());
    write_experiment(results, "fig3", PROFILE, &["augment.ops"], &cells);
    for (k, c) in cells.iter().enumerate() {
        let s = (k % 3 + 1) as f64;
        add_eval(results, &c.id, &bound_keys(1.0, 1.0, 0.1 * s, 0.01 * s, 1000.0));
    }
    cells
}

#[test]
fn claim_d_supported_when_every_sample_satisfies_both_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    write_fig3_with_bounds(&o.results);
    run(Target::Claims, &o, 0.0).unwrap();
    let md = read(&o.out.join("claims.md"));
    let start = md
        .find("## (d) The reconstructed bounds of Theorems 4.1/4.2 hold")
        .unwrap();
    assert!(md[start..].contains("**Verdict: supported**"), "{md}");
    assert!(md[start..].contains("15 cells measured"), "{md}");
    // The table: one row per configuration, 3 cells, 3000 samples, mean slack (0.1+0.2+0.3)/3.
    let csv = read(&o.out.join("table_bounds.csv"));
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "experiment,configuration,cells,n,attract_holds_mean,attract_holds_min,attract_slack_mean,repel_holds_mean,repel_holds_min,repel_slack_mean"
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 5, "{csv}");
    assert!(rows[0].starts_with("fig3,base,3,3000.0,1.0,1.0,0.2"), "{csv}");
    let tm = read(&o.out.join("table_bounds.md"));
    assert!(
        tm.contains("| fig3 | base | 3 | 3000 | 1.0000 / 1.0000 | 0.2000 | 1.0000 / 1.0000 | 0.0200 |"),
        "{tm}"
    );
    assert!(read(&o.out.join("table_bounds.tex")).contains("\\toprule"));
}

#[test]
fn claim_d_reports_a_violation_with_its_cell_and_share() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    let cells = write_fig3_with_bounds(&o.results);
    // One cell: 2 % of samples violate the attracting bound (not clipped to 1).
    add_eval(
        &o.results,
        &cells[4].id,
        &bound_keys(0.98, 1.0, -0.001, 0.02, 1000.0),
    );
    run(Target::Claims, &o, 0.0).unwrap();
    let md = read(&o.out.join("claims.md"));
    let start = md.find("## (d)").unwrap();
    let d = &md[start..];
    assert!(
        d.contains("**Verdict: not supported** — 1 of 15 measured cells"),
        "{d}"
    );
    assert!(d.contains(&cells[4].id[..12]) && d.contains("0.9800"), "{d}");
    assert!(
        d.contains("smallest share of samples where the bound holds: attracting 0.9800, repelling 1.0000"),
        "{d}"
    );
    let csv = read(&o.out.join("table_bounds.csv"));
    // cells[4] is "base − crop" seed 1: mean share (1 + 0.98 + 1)/3, min 0.98.
    let row = csv.lines().find(|l| l.starts_with("fig3,base − crop,")).unwrap();
    let f: Vec<&str> = row.split(',').collect();
    assert!(close(f[4].parse().unwrap(), (2.0 + 0.98) / 3.0), "{row}");
    assert_eq!(f[5], "0.98", "{row}");

    // A share outside [0, 1] is an inconsistent file: inconclusive, never a verdict.
    let c = bounds::claim_d(&[(
        "fig3",
        Ok(vec![bounds::CellBounds {
            experiment: "fig3".into(),
            config: "base".into(),
            cell_id: id("x"),
            seed: Some(0),
            holds: [Some(1.2), Some(1.0)],
            slack: [None, None],
            n: Some(10.0),
        }]),
    )]);
    assert_eq!(c.verdict, Verdict::Inconclusive);
}

#[test]
fn claim_d_is_not_measured_on_old_cells() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    write_experiment(
        &o.results,
        "fig3",
        PROFILE,
        &["augment.ops"],
        &fig3_cells(&fig3_monotone()),
    );
    let r = run(Target::Claims, &o, 0.0).unwrap();
    let md = read(&o.out.join("claims.md"));
    let start = md.find("## (d)").unwrap();
    assert!(md[start..].contains("**Verdict: not measured**"), "{md}");
    assert!(
        r.notices.iter().any(|n| n.starts_with("claim (d): not measured")),
        "{:?}",
        r.notices
    );
    assert!(read(&o.out.join("table_bounds.md")).contains("Not measured"));
    let csv = read(&o.out.join("table_bounds.csv"));
    assert_eq!(csv.lines().count(), 1, "header only: {csv}");
}

// ---- α/λ ratio vs scale -------------------------------------------------------------------

fn ratio_of(grid: &[(f64, f64, f64, f64)]) -> RatioTable {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    write_experiment(
        &results,
        "fig5",
        PROFILE,
        &["loss.alpha", "loss.lambda"],
        &alpha_lambda_cells("fig5", grid),
    );
    let exp = Experiment::load(&results, "fig5", PROFILE).unwrap();
    RatioTable::from_heatmap(&Heatmap::from_spec(&exp, &spec("fig5")).unwrap(), "fig5")
}

/// α, λ ∈ {0.5, 1, 2} (ratios 0.5, 1 and 2 occur at several scales), accuracy `f(α, λ)`, 3 seeds
/// with spread 1.
fn grid_half_one_two(f: impl Fn(f64, f64) -> f64) -> Vec<(f64, f64, f64, f64)> {
    let v = [0.5, 1.0, 2.0];
    v.iter()
        .flat_map(|&l| v.iter().map(move |&a| (a, l)))
        .map(|(a, l)| (a, l, f(a, l), 1.0))
        .collect()
}

#[test]
fn ratio_table_separates_ratio_from_scale() {
    // 3 × 3 grid {0.5, 1, 1.5}: seven ratios, the diagonal at scales 0.5, 1, 1.5.
    let t = ratio_of(&grid3(|a, l| (60.0 + 6.0 * (a / l).log2(), 1.0)));
    let ratios: Vec<f64> = t.rows.iter().map(|r| r.ratio).collect();
    let want = [1.0 / 3.0, 0.5, 2.0 / 3.0, 1.0, 1.5, 2.0, 3.0];
    assert_eq!(ratios.len(), want.len());
    assert!(ratios.iter().zip(want).all(|(a, b)| close(*a, b)), "{ratios:?}");
    let d = t.diagonal().unwrap();
    assert_eq!(
        d.cells.iter().map(|c| c.alpha).collect::<Vec<_>>(),
        vec![0.5, 1.0, 1.5]
    );
    assert!(close(d.range().1 - d.range().0, 0.0));
    // Only the diagonal has ≥ 2 cells: η² is undefined, and the text says so.
    assert_eq!(t.eta_squared(), None);
    assert!(t.markdown().contains("η² undefined"));

    // Accuracy a function of the ratio only: η² = 1 over ratios 0.5, 1, 2 (7 cells).
    let t = ratio_of(&grid_half_one_two(|a, l| 60.0 + 6.0 * (a / l).log2()));
    let (e, cells, ratios) = t.eta_squared().unwrap();
    assert!(close(e, 1.0) && cells == 7 && ratios == 3, "{e} {cells} {ratios}");

    // Accuracy a function of the scale only, 60 + 4·(α + λ − 2): ratio means 61, 61⅓, 61 over
    // 7 cells with total sum of squares 776/7 and between-ratio 4/21, so η² = 1/582 (by hand).
    let t = ratio_of(&grid_half_one_two(|a, l| 60.0 + 4.0 * (a + l - 2.0)));
    let (e, _, _) = t.eta_squared().unwrap();
    assert!(close(e, 1.0 / 582.0), "{e}");
    let md = t.markdown();
    assert!(
        md.contains("| 1 | ★ α = λ | 3 | 61.33 | +1.33 | 56.00–68.00 | 12.00 | (0.5, 0.5): 56.00; (1, 1): 60.00; (2, 2): 68.00 |"),
        "{md}"
    );
    assert!(
        md.contains("| 0.25 |  | 1 | 62.00 | +2.00 | 62.00–62.00 | 0.00 | (0.5, 2): 62.00 |"),
        "{md}"
    );
    assert!(
        md.contains("| 2 | 3 | 68.00 | +8.00 |"),
        "diagonal by scale: {md}"
    );
    assert!(md.contains("η² = 0.002"), "{md}");
}

#[test]
fn fig5_report_writes_the_ratio_table_and_figure() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    write_grid_with_val(&o.results);
    let r = run(target("fig5"), &o, 0.0).unwrap();
    for ext in ["md", "tex", "csv", "png", "svg"] {
        let p = o.out.join(format!("fig5_ratio.{ext}"));
        assert!(r.written.contains(&p), "{} not reported written", p.display());
    }
    assert_eq!(png_size(&o.out.join("fig5_ratio.png")), ratio::RATIO_SIZE);
    let svg = read(&o.out.join("fig5_ratio.svg"));
    assert!(svg.contains(ratio::X_LABEL), "ratio axis label");
    assert!(
        svg.contains("Diagonal α = λ: step size only") && svg.contains("scale α = λ"),
        "diagonal panel"
    );
    let csv = read(&o.out.join("fig5_ratio.csv"));
    assert!(
        csv.starts_with("ratio,diagonal,alpha,lambda,linear_top1_mean,"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 1 + 9);
    assert_eq!(
        csv.lines().filter(|l| l.contains(",true,")).count(),
        3,
        "three diagonal cells"
    );
}

// ---- loading the optional metrics ---------------------------------------------------------

#[test]
fn optional_metrics_load_as_null_when_absent_and_are_never_axes() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let cells = fig3_cells(&fig3_monotone()[..1]);
    write_experiment(&results, "fig3", PROFILE, &["augment.ops"], &cells);
    add_eval(
        &results,
        &cells[0].id,
        &[("val_linear_top1", json!(71.5)), ("bound_n", json!(500))],
    );
    // An index that also carries a new metric as a column: still not a varied key.
    let idx = results.join("fig3.cpu.csv");
    let text: String = read(&idx)
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 0 {
                format!("{l},bias_rel\n")
            } else {
                format!("{l},0.5\n")
            }
        })
        .collect();
    std::fs::write(&idx, text).unwrap();
    let exp = Experiment::load(&results, "fig3", PROFILE).unwrap();
    assert_eq!(exp.axes, vec!["augment.ops".to_string()]);
    let col = |m: &str| -> Vec<Option<f64>> { exp.cells.column(m).unwrap().f64().unwrap().iter().collect() };
    assert_eq!(col("val_linear_top1"), vec![Some(71.5), None, None]);
    assert_eq!(col("bound_n"), vec![Some(500.0), None, None]);
    assert_eq!(
        col("bias_rel"),
        vec![None, None, None],
        "read from metrics.json, not the index"
    );
    let g = &exp.groups(&["config"]).unwrap()[0];
    let v = g.get("val_linear_top1").unwrap();
    assert_eq!((v.mean, v.n), (71.5, 1));
    assert!(g.get("bound_attract_holds").is_none());
}
