//! End-to-end tests on results folders written with known numbers.

mod common;

use std::path::Path;

use common::*;
use protoclr_report::claims::{self, Verdict};
use protoclr_report::heatmap::{Heatmap, HEATMAP_SIZE};
use protoclr_report::load::{Experiment, CONFIG};
use protoclr_report::scatter::{self as fig3, Scatter};
use protoclr_report::tables::{Table, PAPER_NOT_RECOVERABLE};
use protoclr_report::{run, Options, Target};

const PROFILE: &str = "cpu";

fn opts(root: &Path) -> Options {
    Options::new(root.join("results"), root.join("figures"), PROFILE).with_experiments(experiments())
}

fn write_fig3(results: &Path, points: &[(&str, &str, f64, f64)]) {
    write_experiment(results, "fig3", PROFILE, &["augment.ops"], &fig3_cells(points));
}

fn write_grid(results: &Path, exp: &str, grid: &[(f64, f64, f64, f64)]) {
    write_experiment(
        results,
        exp,
        PROFILE,
        &["loss.alpha", "loss.lambda"],
        &alpha_lambda_cells(exp, grid),
    );
}

/// A complete results folder: every figure and table has all its cells.
fn write_full(results: &Path) {
    write_fig3(results, &fig3_monotone());
    // (1.5, λ) strongly better than NT-Xent; the rest worse.
    let better = |a: f64, _l: f64| if a == 1.5 { (66.0, 1.0) } else { (57.0, 1.0) };
    write_grid(results, "fig4", &grid3(better));
    write_grid(results, "fig5", &grid3(better));
    // Confirmation stages: the candidate about 2 points above NT-Xent on each of 8 fresh seeds.
    let cand: Vec<Option<f64>> = (0..8).map(|i| Some(62.0 + 0.3 * (i % 3) as f64)).collect();
    let refr: Vec<Option<f64>> = (0..8).map(|i| Some(60.0 + 0.2 * (i % 4) as f64)).collect();
    for e in ["fig4", "fig5"] {
        write_confirmation(results, e, PROFILE, &cand, &refr);
    }
    for t in ["table_cifar10", "table_cifar100"] {
        write_experiment(
            results,
            t,
            PROFILE,
            &["loss.alpha", "loss.lambda", "loss.name"],
            &table_cells(t),
        );
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn aggregates_over_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    write_fig3(&results, &fig3_monotone());
    let exp = Experiment::load(&results, "fig3", PROFILE).unwrap();
    assert_eq!(exp.total(), 15);
    assert_eq!(exp.with_metrics(), 15);
    assert_eq!(exp.axes, vec!["augment.ops".to_string()]);
    assert!(exp.partial_tag().is_none());
    // The list value survived CSV quoting verbatim.
    let ops: Vec<&str> = exp
        .cells
        .column("augment.ops")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .flatten()
        .collect();
    assert_eq!(ops[0], "[crop, color_jitter, grayscale, flip]");

    let agg = exp.aggregate(&[CONFIG]).unwrap();
    assert_eq!(agg.height(), 5);
    let groups = exp.groups(&[CONFIG]).unwrap();
    let base = groups.iter().find(|g| g.key[0] == "base").unwrap();
    assert_eq!(base.n, 3);
    // Seeds 64, 65, 66: mean 65, std 1, 95 % half-width t(0.975, 2)/√3 = 2.484137…
    let lin = base.get("linear_top1").unwrap();
    assert!(close(lin.mean, 65.0), "{lin:?}");
    assert!(close(lin.std.unwrap(), 1.0));
    assert_eq!(lin.n, 3);
    let ci = agg
        .column("linear_top1_ci95")
        .unwrap()
        .f64()
        .unwrap()
        .get(0)
        .unwrap();
    assert!((ci - 4.302_652_730 / 3f64.sqrt()).abs() < 1e-6, "{ci}");
    let bias = base.get("bias_l2").unwrap();
    assert!(close(bias.mean, 0.30) && (bias.std.unwrap() - 0.01).abs() < 1e-12);
    let knn = base.get("knn_top1").unwrap();
    assert!(close(knn.mean, 60.0));
}

#[test]
fn metrics_come_from_intact_cell_folders_never_from_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let mut cells = fig3_cells(&fig3_monotone()[..2]);
    // Cell 0: index says 999 but metrics.json says the real number → metrics.json wins.
    // Cell 1: no metrics.json (the index row says done, with numbers) → missing.
    cells[1].write_json = false;
    write_experiment(&results, "fig3", PROFILE, &["augment.ops"], &cells);
    let idx = results.join("fig3.cpu.csv");
    let text = std::fs::read_to_string(&idx)
        .unwrap()
        .replacen(",64,95.0,", ",999,95.0,", 1);
    std::fs::write(&idx, text).unwrap();
    let exp = Experiment::load(&results, "fig3", PROFILE).unwrap();
    let lin: Vec<Option<f64>> = exp
        .cells
        .column("linear_top1")
        .unwrap()
        .f64()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(lin[0], Some(64.0));
    assert_eq!(lin[1], None);
    assert_eq!(exp.missing.len(), 1);
    assert_eq!(exp.missing[0].cell_id, cells[1].id);
    assert!(exp.missing[0].reason.contains("pending"), "{:?}", exp.missing);
}

#[test]
fn fig3_correlations_and_fit_known_answers() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    write_fig3(&results, &fig3_monotone());
    let exp = Experiment::load(&results, "fig3", PROFILE).unwrap();
    let fig = Scatter::from_spec(&exp, &spec("fig3"), "fig3").unwrap();
    assert_eq!(fig.points.len(), 5);
    // accuracy = 80 − 50·bias exactly on the means.
    assert!((fig.spearman.estimate + 1.0).abs() < 1e-12);
    assert!((fig.pearson.estimate + 1.0).abs() < 1e-12);
    let (a, b) = fig.fit.unwrap();
    assert!((a - 80.0).abs() < 1e-9 && (b + 50.0).abs() < 1e-9, "{a} {b}");
    assert_eq!(fig.spearman.ci95, Some((-1.0, -1.0)));
    assert_eq!(claims::claim_a(Ok(&fig)).verdict, Verdict::Supported);
}

#[test]
fn pearson_of_a_hand_computed_data_set_through_fig3() {
    // Means (bias, acc): (1, 2), (2, 4), (3, 5), (4, 4), (5, 5): r = 6/√60, ρ = 7/√90.
    let pts: Vec<fig3::Point> = [(1.0, 2.0), (2.0, 4.0), (3.0, 5.0), (4.0, 4.0), (5.0, 5.0)]
        .iter()
        .enumerate()
        .map(|(i, &(x, y))| fig3::Point {
            label: format!("p{i}"),
            x: protoclr_report::stats::Summary {
                mean: x,
                std: None,
                n: 1,
            },
            y: protoclr_report::stats::Summary {
                mean: y,
                std: None,
                n: 1,
            },
        })
        .collect();
    let fig = Scatter::from_points("t".into(), pts, vec![], None, (5, 5));
    assert!((fig.pearson.estimate - 6.0 / 60f64.sqrt()).abs() < 1e-12);
    assert!((fig.spearman.estimate - 7.0 / 90f64.sqrt()).abs() < 1e-12);
    let (a, b) = fig.fit.unwrap();
    assert!((a - 2.2).abs() < 1e-12 && (b - 0.6).abs() < 1e-12);
}

#[test]
fn claim_a_verdicts() {
    type Points = Vec<(&'static str, &'static str, f64, f64)>;
    let cases: [(&str, Points, Verdict); 3] = [
        ("supporting", fig3_monotone(), Verdict::Supported),
        (
            "not supporting",
            fig3_monotone()
                .into_iter()
                .map(|(l, o, b, _)| (l, o, b, 40.0 + 50.0 * b))
                .collect(),
            Verdict::NotSupported,
        ),
        (
            "inconclusive",
            vec![
                ("base", "[a]", 0.1, 70.0),
                ("x1", "[b]", 0.2, 72.0),
                ("x2", "[c]", 0.3, 69.0),
                ("x3", "[d]", 0.4, 71.0),
                ("x4", "[e]", 0.5, 70.5),
            ],
            Verdict::Inconclusive,
        ),
    ];
    for (name, points, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path().join("results");
        write_fig3(&results, &points);
        let exp = Experiment::load(&results, "fig3", PROFILE).unwrap();
        let fig = Scatter::from_spec(&exp, &spec("fig3"), "fig3").unwrap();
        let c = claims::claim_a(Ok(&fig));
        assert_eq!(c.verdict, want, "{name}: {c:?}");
    }
    // Two configurations are too few.
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    write_fig3(&results, &fig3_monotone()[..2]);
    let fig = Scatter::from_spec(
        &Experiment::load(&results, "fig3", PROFILE).unwrap(),
        &spec("fig3"),
        "fig3",
    )
    .unwrap();
    assert_eq!(claims::claim_a(Ok(&fig)).verdict, Verdict::Inconclusive);
    assert_eq!(
        claims::claim_a(Err("missing index x")).verdict,
        Verdict::Inconclusive
    );
}

fn heatmap_of(grid: &[(f64, f64, f64, f64)]) -> Heatmap {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    write_grid(&results, "fig5", grid);
    let exp = Experiment::load(&results, "fig5", PROFILE).unwrap();
    Heatmap::from_spec(&exp, &spec("fig5")).unwrap()
}

#[test]
fn heatmap_grid_and_reference() {
    let map = heatmap_of(&grid3(|a, l| (50.0 + 10.0 * a + l, 1.0)));
    assert_eq!(map.alphas, vec![0.5, 1.0, 1.5]);
    assert_eq!(map.lambdas, vec![0.5, 1.0, 1.5]);
    assert_eq!(map.reference_position(), Some((1, 1)));
    assert!(close(map.reference().unwrap().mean, 60.0));
    // cells[λ index][α index]: α = 1.5, λ = 0.5 → 50 + 15 + 0.5.
    assert!(close(map.cells[0][2].unwrap().mean, 65.5));
    assert_eq!(map.others().len(), 8);
    assert!(map.partial.is_none());
}

#[test]
fn claim_b_verdicts() {
    // Supported: (1.5, ·) is 6 points better with std 1 and 3 seeds.
    let sup = heatmap_of(&grid3(|a, _| if a == 1.5 { (66.0, 1.0) } else { (57.0, 1.0) }));
    let c = claims::claim_b("b", "test", Ok(&sup));
    assert_eq!(c.verdict, Verdict::Supported, "{c:?}");
    let (comps, _) = claims::comparisons(&sup);
    assert_eq!(comps.len(), 8);
    // Bonferroni: level 1 − 0.05/8, wider than the plain 95 % interval.
    assert!((comps[0].adjusted.level - (1.0 - 0.05 / 8.0)).abs() < 1e-12);
    assert!(comps
        .iter()
        .all(|x| x.adjusted.hi - x.adjusted.lo > x.plain.hi - x.plain.lo));
    // Welch with equal n = 3 and std 1: df = 4, diff = +6, half-width t(0.975, 4)·√(2/3).
    let best = comps.iter().find(|x| x.alpha == 1.5 && x.lambda == 1.0).unwrap();
    assert!((best.plain.df - 4.0).abs() < 1e-9);
    assert!((best.plain.hi - 6.0 - 2.776_445_105 * (2.0f64 / 3.0).sqrt()).abs() < 1e-6);

    // Not supported: every cell's mean is below NT-Xent's.
    let not = heatmap_of(&grid3(|a, l| (55.0 + a + l, 1.0)));
    assert_eq!(claims::claim_b("b", "t", Ok(&not)).verdict, Verdict::NotSupported);

    // Inconclusive: one cell is 0.5 higher with std 1 — within the seed noise.
    let inc = heatmap_of(&grid3(|a, l| {
        if a == 1.5 && l == 1.5 {
            (60.5, 1.0)
        } else {
            (58.0, 1.0)
        }
    }));
    assert_eq!(claims::claim_b("b", "t", Ok(&inc)).verdict, Verdict::Inconclusive);

    // No data at all.
    assert_eq!(
        claims::claim_b("b", "t", Err("missing index")).verdict,
        Verdict::Inconclusive
    );
}

#[test]
fn table_rows_pick_the_best_balanced_setting() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    write_experiment(
        &results,
        "table_cifar10",
        PROFILE,
        &["loss.alpha", "loss.lambda", "loss.name"],
        &table_cells("table_cifar10"),
    );
    let exp = Experiment::load(&results, "table_cifar10", PROFILE).unwrap();
    let t = Table::from_spec(&exp, &spec("table_cifar10"), "table_cifar10").unwrap();
    let methods: Vec<&str> = t.rows.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(
        methods,
        [
            "NT-Xent",
            "balanced",
            "supervised prototype (oracle)",
            "supervised prototype (realistic)"
        ]
    );
    let bal = &t.rows[1];
    assert_eq!(bal.settings, 3);
    assert_eq!(bal.setting, "α = 1.5, λ = 1");
    let lin = bal.value(&t.metrics, "linear_top1").unwrap();
    assert!(close(lin.mean, 63.0) && close(lin.std.unwrap(), 0.5) && lin.n == 3);
    assert!(close(bal.value(&t.metrics, "knn_top1").unwrap().mean, 59.0));
    assert_eq!(t.rows[0].settings, 1);
    assert!(t.paper_column);
    let frame = t.frame().unwrap();
    let paper = frame.column("paper").unwrap().str().unwrap().clone();
    assert!(paper.iter().all(|p| p == Some(PAPER_NOT_RECOVERABLE)));

    let md = t.markdown();
    assert!(md.contains("| balanced | best of 3 on test: α = 1.5, λ = 1 | 63.00 ± 0.50 (n=3) | 59.00 ± 1.00 (n=3) | not recoverable |"), "{md}");
    // These cells have no validation metrics: the table says the selection is on test.
    assert!(
        md.contains("selection on test") && !md.contains("\"on validation\""),
        "{md}"
    );
    let tex = t.latex();
    assert!(tex.contains("\\toprule") && tex.contains("\\midrule") && tex.contains("\\bottomrule"));
    assert!(tex.contains("$63.00 \\pm 0.50$ (3)"), "{tex}");

    let out = dir.path().join("figures");
    let files = t.write(&out).unwrap();
    assert_eq!(files.len(), 3);
    let csv = std::fs::read_to_string(out.join("table_cifar10.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "method,setting,settings,selected_on,val_linear_top1_mean,linear_top1_mean,linear_top1_std,linear_top1_n,knn_top1_mean,knn_top1_std,knn_top1_n,paper"
    );
    assert!(
        csv.contains("balanced,\"α = 1.5, λ = 1\",3,test,,63.0,0.5,3,59.0,1.0,3,not recoverable"),
        "{csv}"
    );
    // The paper column never holds a number.
    for line in csv.lines().skip(1) {
        assert!(line.ends_with(",not recoverable"), "{line}");
    }
}

#[test]
fn figures_have_the_expected_size_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    write_full(&o.results);
    let start = std::time::Instant::now();
    let report = run(Target::All, &o, 2.5e-7).unwrap();
    let took = start.elapsed();
    assert!(took.as_secs() < 60, "report took {took:?}");
    assert!(
        report.notices.iter().all(|n| !n.contains("partial")),
        "{:?}",
        report.notices
    );

    assert_eq!(png_size(&o.out.join("fig3.png")), fig3::SCATTER_SIZE);
    for f in ["fig4", "fig5"] {
        assert_eq!(png_size(&o.out.join(format!("{f}.png"))), HEATMAP_SIZE);
        let svg = std::fs::read_to_string(o.out.join(format!("{f}.svg"))).unwrap();
        let (x_label, y_label) = (spec(f).x_label.unwrap(), spec(f).y_label.unwrap());
        assert!(svg.contains(&x_label) && svg.contains(&y_label));
        assert!(svg.contains("Difference from NT-Xent"));
        assert!(svg.contains(&format!("width=\"{}\"", HEATMAP_SIZE.0)));
        assert!(!svg.contains("partial"));
    }
    let svg = std::fs::read_to_string(o.out.join("fig3.svg")).unwrap();
    assert!(
        svg.contains(fig3::X_LABEL) && svg.contains(&spec("fig3").y_label.unwrap()),
        "axis labels in the SVG"
    );
    assert!(svg.contains("base − color_jitter"));
    assert!(svg.contains("Spearman ρ = −1.00"));
    for f in [
        "table_cifar10.md",
        "table_cifar10.tex",
        "table_cifar10.csv",
        "table_cifar100.md",
        "table_cifar100.tex",
        "table_cifar100.csv",
        "claims.md",
        "fig3.notes.md",
    ] {
        assert!(o.out.join(f).is_file(), "{f}");
    }
    let claims = std::fs::read_to_string(o.out.join("claims.md")).unwrap();
    assert!(claims.contains("## (a) Lower prototype representation bias"));
    assert_eq!(claims.matches("**Verdict: supported**").count(), 4, "{claims}");
    assert!(claims.contains("Rule:"));
    assert!(claims.contains("2.500e-7"));
}

#[test]
fn partial_data_is_drawn_marked_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    let mut cells = fig3_cells(&fig3_monotone());
    cells[4].status = "pending";
    cells[4].metrics = None;
    cells[7].status = "diverged"; // metrics.json status "diverged", eval null
    write_experiment(&o.results, "fig3", PROFILE, &["augment.ops"], &cells);
    let mut grid = alpha_lambda_cells("fig5", &grid3(|_, _| (58.0, 1.0)));
    let dropped: Vec<_> = grid.drain(0..3).collect(); // every seed of (0.5, 0.5)
    let mut all = dropped.clone();
    for c in &mut all {
        c.status = "failed";
        c.metrics = None;
    }
    all.extend(grid);
    write_experiment(&o.results, "fig5", PROFILE, &["loss.alpha", "loss.lambda"], &all);

    let r = run(target("fig3"), &o, 0.0).unwrap();
    assert!(
        r.notices.iter().any(|n| n.contains("partial: 13 of 15 cells")),
        "{:?}",
        r.notices
    );
    let svg = std::fs::read_to_string(o.out.join("fig3.svg")).unwrap();
    assert!(svg.contains("partial: 13 of 15 cells"));
    assert_eq!(png_size(&o.out.join("fig3.png")), fig3::SCATTER_SIZE);
    let notes = std::fs::read_to_string(o.out.join("fig3.notes.md")).unwrap();
    assert!(
        notes.contains(&cells[4].id[..12]) && notes.contains("pending"),
        "{notes}"
    );
    assert!(
        notes.contains(&cells[7].id[..12]) && notes.contains("diverged"),
        "{notes}"
    );

    run(target("fig5"), &o, 0.0).unwrap();
    let svg = std::fs::read_to_string(o.out.join("fig5.svg")).unwrap();
    assert!(svg.contains("partial: 24 of 27 cells"));
    assert!(svg.contains("no data"));
    let notes = std::fs::read_to_string(o.out.join("fig5.notes.md")).unwrap();
    assert!(
        notes.contains("(α = 0.5, λ = 0.5)") && notes.contains("failed"),
        "{notes}"
    );

    // Claims on partial data, with missing indexes named.
    run(Target::Claims, &o, 0.0).unwrap();
    let claims = std::fs::read_to_string(o.out.join("claims.md")).unwrap();
    assert!(claims.contains("partial data (partial: 13 of 15 cells)"));
    assert!(
        claims.contains("missing index") && claims.contains("fig4.cpu.csv"),
        "{claims}"
    );
}

#[test]
fn missing_index_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    for (t, file) in [
        (target("fig3"), "fig3.cpu.csv"),
        (target("fig4"), "fig4.cpu.csv"),
        (target("fig5"), "fig5.cpu.csv"),
        (Target::Tables, "table_cifar10.cpu.csv"),
        (Target::Tables, "table_cifar100.cpu.csv"),
    ] {
        let e = format!("{:#}", run(t, &o, 0.0).unwrap_err());
        assert!(e.contains(file) && e.contains("missing index"), "{e}");
    }
    // Tables write what exists, then fail naming what is missing.
    write_experiment(
        &o.results,
        "table_cifar10",
        PROFILE,
        &["loss.alpha", "loss.lambda", "loss.name"],
        &table_cells("table_cifar10"),
    );
    let e = format!("{:#}", run(Target::Tables, &o, 0.0).unwrap_err());
    assert!(
        e.contains("table_cifar100.cpu.csv") && !e.contains("table_cifar10.cpu.csv"),
        "{e}"
    );
    assert!(o.out.join("table_cifar10.md").is_file());
    // Claims never fail on missing data: they say so.
    run(Target::Claims, &o, 0.0).unwrap();
    // A grid without λ is a clear error.
    write_experiment(
        &o.results,
        "fig4",
        PROFILE,
        &["loss.alpha"],
        &[Cell::done(id("x"), "", 0, vec!["1".into()], (50.0, 45.0, 0.3))],
    );
    let e = format!("{:#}", run(target("fig4"), &o, 0.0).unwrap_err());
    assert!(e.contains("loss.lambda") && e.contains("fig4.cpu.csv"), "{e}");
}

#[test]
fn long_tail_table_when_present() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    write_full(&o.results);
    write_experiment(
        &o.results,
        "long_tail",
        PROFILE,
        &["loss.alpha", "loss.lambda", "loss.name"],
        &table_cells("long_tail")[..12],
    );
    run(Target::Tables, &o, 0.0).unwrap();
    let md = std::fs::read_to_string(o.out.join("table_long_tail.md")).unwrap();
    assert!(md.contains("| NT-Xent |") && md.contains("best of 3"), "{md}");
}

#[test]
fn nothing_done_yet_still_draws_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    let mut cells = fig3_cells(&fig3_monotone());
    for c in &mut cells {
        c.status = "pending";
        c.metrics = None;
    }
    write_experiment(&o.results, "fig3", PROFILE, &["augment.ops"], &cells);
    let mut grid = alpha_lambda_cells("fig5", &grid3(|_, _| (58.0, 1.0)));
    for c in &mut grid {
        c.status = "running";
        c.metrics = None;
    }
    write_experiment(&o.results, "fig5", PROFILE, &["loss.alpha", "loss.lambda"], &grid);
    run(target("fig3"), &o, 0.0).unwrap();
    run(target("fig5"), &o, 0.0).unwrap();
    assert_eq!(png_size(&o.out.join("fig3.png")), fig3::SCATTER_SIZE);
    assert_eq!(png_size(&o.out.join("fig5.png")), HEATMAP_SIZE);
    assert!(std::fs::read_to_string(o.out.join("fig3.svg"))
        .unwrap()
        .contains("partial: 0 of 15 cells"));
    assert!(std::fs::read_to_string(o.out.join("fig5.svg"))
        .unwrap()
        .contains("partial: 0 of 27 cells"));
    run(Target::Claims, &o, 1e-3).unwrap();
    let claims = std::fs::read_to_string(o.out.join("claims.md")).unwrap();
    assert_eq!(claims.matches("**Verdict: inconclusive**").count(), 3, "{claims}");
    assert_eq!(
        claims.matches("**Verdict: not supported**").count(),
        1,
        "{claims}"
    );
}
