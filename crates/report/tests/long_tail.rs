//! The long-tail table's many / medium / few-shot columns, on a results folder with planted
//! per-group accuracies and class counts (docs/formats.md, `linear_many` … `n_few`).

mod common;

use std::path::Path;

use common::*;
use protoclr_report::load::Experiment;
use protoclr_report::tables::Table;
use protoclr_report::{run, Options, Target};
use serde_json::{json, Value};

const PROFILE: &str = "cpu";
const AXES: [&str; 2] = ["loss.alpha", "loss.lambda"];

/// One planted setting: label, (α, λ), test linear top-1 centre, and per seed offset the six
/// group keys (`None`: the keys are absent, as in a metrics.json written before they existed).
struct Setting {
    label: &'static str,
    alpha: f64,
    lambda: f64,
    linear: f64,
    groups: fn(f64) -> Option<[Value; 6]>,
}

fn shots(many: Value, medium: Value, few: Value, n: [u32; 3]) -> Option<[Value; 6]> {
    Some([many, medium, few, json!(n[0]), json!(n[1]), json!(n[2])])
}

const KEYS: [&str; 6] = [
    "linear_many",
    "linear_medium",
    "linear_few",
    "n_many",
    "n_medium",
    "n_few",
];

fn settings() -> Vec<Setting> {
    vec![
        // ρ = 100 on 10 classes: 5 / 4 / 1; many 80 ± 1, medium 60 ± 2, few 40 ± 0.5.
        Setting {
            label: "NT-Xent (ρ = 100)",
            alpha: 1.0,
            lambda: 1.0,
            linear: 60.0,
            groups: |o| {
                shots(
                    json!(80.0 + o),
                    json!(60.0 + 2.0 * o),
                    json!(40.0 + 0.5 * o),
                    [5, 4, 1],
                )
            },
        },
        // Two settings of one method: the table shows α = 1.25 (test 58 > 56), so its groups
        // (85 / 65 / 45), not the other setting's (90 / 70 / 50).
        Setting {
            label: "balanced (ρ = 100)",
            alpha: 1.0,
            lambda: 0.75,
            linear: 56.0,
            groups: |o| shots(json!(90.0 + o), json!(70.0 + o), json!(50.0 + o), [5, 4, 1]),
        },
        Setting {
            label: "balanced (ρ = 100)",
            alpha: 1.25,
            lambda: 1.0,
            linear: 58.0,
            groups: |o| shots(json!(85.0 + o), json!(65.0 + 3.0 * o), json!(45.0), [5, 4, 1]),
        },
        // ρ = 10: every class many-shot; the empty groups are null with 0 classes.
        Setting {
            label: "NT-Xent (ρ = 10)",
            alpha: 1.0,
            lambda: 1.0,
            linear: 62.0,
            groups: |o| shots(json!(70.0 + o), Value::Null, Value::Null, [10, 0, 0]),
        },
        // A balanced training set: all six keys null.
        Setting {
            label: "NT-Xent (balanced)",
            alpha: 1.0,
            lambda: 1.0,
            linear: 64.0,
            groups: |_| Some(std::array::from_fn(|_| Value::Null)),
        },
        // Seed 2's metrics.json predates the keys: the groups have n = 2 (49 and 51).
        Setting {
            label: "NT-Xent (older cell)",
            alpha: 1.0,
            lambda: 1.0,
            linear: 50.0,
            groups: |o| {
                (o < 1.0).then(|| {
                    let m = 50.0 + if o < 0.0 { -1.0 } else { 1.0 };
                    [
                        json!(m),
                        json!(m - 20.0),
                        json!(m - 40.0),
                        json!(6),
                        json!(3),
                        json!(1),
                    ]
                })
            },
        },
    ]
}

/// Writes `long_tail.cpu.csv` with the planted settings over seeds 0, 1, 2 (offsets −1, 0, +1)
/// and a pending method; returns the cell ids by (setting index, seed).
fn write_long_tail(results: &Path) -> Vec<Vec<String>> {
    let mut cells = Vec::new();
    let mut ids = Vec::new();
    for (k, s) in settings().iter().enumerate() {
        let mut row = Vec::new();
        for (seed, off) in OFFSETS.iter().enumerate() {
            let id = id(&format!("long_tail {k} {seed}"));
            cells.push(Cell::done(
                id.clone(),
                s.label,
                seed as u64,
                vec![s.alpha.to_string(), s.lambda.to_string()],
                (s.linear + off, s.linear - 4.0 + off, 0.4),
            ));
            row.push(id);
        }
        ids.push(row);
    }
    let mut pending = Cell::done(
        id("long_tail pending"),
        "pending method",
        0,
        vec!["1".into(), "1".into()],
        (0.0, 0.0, 0.0),
    );
    pending.status = "pending";
    pending.metrics = None;
    cells.push(pending);
    write_experiment(results, "long_tail", PROFILE, &AXES, &cells);
    for (k, s) in settings().iter().enumerate() {
        for (seed, off) in OFFSETS.iter().enumerate() {
            if let Some(values) = (s.groups)(*off) {
                edit_metrics(results, &ids[k][seed], true, |v| {
                    let eval = v["eval"].as_object_mut().expect("eval object");
                    for (key, x) in KEYS.iter().zip(values) {
                        eval.insert((*key).to_string(), x);
                    }
                });
            }
        }
    }
    ids
}

#[test]
fn long_tail_table_shows_planted_group_accuracies_and_class_counts() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    write_long_tail(&results);
    let exp = Experiment::load(&results, "long_tail", PROFILE).unwrap();
    let t = Table::from_spec(&exp, &spec("long_tail"), "table_long_tail").unwrap();

    let md = t.markdown();
    let expect_md = [
        "| Method | Setting | Linear top-1 (%) | kNN top-1 (%) | Many-shot linear (%) | Medium-shot linear (%) | Few-shot linear (%) | Classes (many / medium / few) | Paper |",
        "|---|---|---|---|---|---|---|---|---|",
        "| NT-Xent (ρ = 100) | — | 60.00 ± 1.00 (n=3) | 56.00 ± 1.00 (n=3) | 80.00 ± 1.00 (n=3) | 60.00 ± 2.00 (n=3) | 40.00 ± 0.50 (n=3) | 5 / 4 / 1 | not recoverable |",
        "| balanced (ρ = 100) | best of 2 on test: α = 1.25, λ = 1 | 58.00 ± 1.00 (n=3) | 54.00 ± 1.00 (n=3) | 85.00 ± 1.00 (n=3) | 65.00 ± 3.00 (n=3) | 45.00 ± 0.00 (n=3) | 5 / 4 / 1 | not recoverable |",
        "| NT-Xent (ρ = 10) | — | 62.00 ± 1.00 (n=3) | 58.00 ± 1.00 (n=3) | 70.00 ± 1.00 (n=3) | — | — | 10 / 0 / 0 | not recoverable |",
        "| NT-Xent (balanced) | — | 64.00 ± 1.00 (n=3) | 60.00 ± 1.00 (n=3) | — | — | — | — | not recoverable |",
        "| NT-Xent (older cell) | — | 50.00 ± 1.00 (n=3) | 46.00 ± 1.00 (n=3) | 50.00 ± 1.41 (n=2) | 30.00 ± 1.41 (n=2) | 10.00 ± 1.41 (n=2) | 6 / 3 / 1 | not recoverable |",
        "| pending method | — | no data | no data | no data | no data | no data | no data | not recoverable |",
    ];
    let table_lines: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
    assert_eq!(table_lines, expect_md, "{md}");
    assert!(md.contains("Many / medium / few-shot: test linear top-1"), "{md}");

    let tex = t.latex();
    assert!(tex.contains("\\begin{tabular}{llccccccl}"), "{tex}");
    assert!(
        tex.contains(
            "NT-Xent ($\\rho$ = 10) & --- & $62.00 \\pm 1.00$ (3) & $58.00 \\pm 1.00$ (3) & \
             $70.00 \\pm 1.00$ (3) & --- & --- & 10 / 0 / 0 & not recoverable \\\\\n"
        ),
        "{tex}"
    );
    assert!(
        tex.contains("NT-Xent (balanced) & --- & $64.00 \\pm 1.00$ (3) & $60.00 \\pm 1.00$ (3) & --- & --- & --- & --- & not recoverable \\\\\n"),
        "{tex}"
    );
    assert!(!tex.contains('—'), "an unescaped dash in {tex}");

    let out = dir.path().join("figures");
    t.write(&out).unwrap();
    let csv = std::fs::read_to_string(out.join("table_long_tail.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines,
        [
            "method,setting,settings,selected_on,val_linear_top1_mean,linear_top1_mean,linear_top1_std,linear_top1_n,knn_top1_mean,knn_top1_std,knn_top1_n,linear_many_mean,linear_many_std,linear_many_n,linear_medium_mean,linear_medium_std,linear_medium_n,linear_few_mean,linear_few_std,linear_few_n,n_many,n_medium,n_few,paper",
            "NT-Xent (ρ = 100),\"\",1,\"\",,60.0,1.0,3,56.0,1.0,3,80.0,1.0,3,60.0,2.0,3,40.0,0.5,3,5,4,1,not recoverable",
            "balanced (ρ = 100),\"α = 1.25, λ = 1\",2,test,,58.0,1.0,3,54.0,1.0,3,85.0,1.0,3,65.0,3.0,3,45.0,0.0,3,5,4,1,not recoverable",
            "NT-Xent (ρ = 10),\"\",1,\"\",,62.0,1.0,3,58.0,1.0,3,70.0,1.0,3,,,0,,,0,10,0,0,not recoverable",
            "NT-Xent (balanced),\"\",1,\"\",,64.0,1.0,3,60.0,1.0,3,,,0,,,0,,,0,,,,not recoverable",
            "NT-Xent (older cell),\"\",1,\"\",,50.0,1.0,3,46.0,1.0,3,50.0,1.4142135623730951,2,30.0,1.4142135623730951,2,10.0,1.4142135623730951,2,6,3,1,not recoverable",
            "pending method,\"\",0,\"\",,,,0,,,0,,,0,,,0,,,0,,,,not recoverable",
        ],
        "{csv}"
    );

    // The same cells in a CIFAR-style table: no group columns.
    let plain = Table::from_spec(&exp, &spec("table_cifar10"), "table_long_tail").unwrap();
    assert!(!plain.markdown().contains("Many-shot") && !plain.latex().contains("Many-shot"));
    assert!(plain.frame().unwrap().column("linear_many_mean").is_err());
}

#[test]
fn report_tables_adds_group_columns_to_the_long_tail_table_only() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    write_long_tail(&results);
    for exp in ["table_cifar10", "table_cifar100"] {
        write_experiment(
            &results,
            exp,
            PROFILE,
            &["loss.alpha", "loss.lambda", "loss.name"],
            &table_cells(exp),
        );
    }
    let o = Options::new(&results, dir.path().join("figures"), PROFILE).with_experiments(experiments());
    run(Target::Tables, &o, 0.0).unwrap();
    let read = |f: &str| std::fs::read_to_string(dir.path().join("figures").join(f)).unwrap();
    assert!(read("table_long_tail.md").contains("| 5 / 4 / 1 |"));
    assert!(read("table_long_tail.csv").starts_with(
        "method,setting,settings,selected_on,val_linear_top1_mean,linear_top1_mean,linear_top1_std,linear_top1_n,knn_top1_mean,knn_top1_std,knn_top1_n,linear_many_mean,"
    ));
    for stem in ["table_cifar10", "table_cifar100"] {
        assert!(!read(&format!("{stem}.md")).contains("shot"), "{stem}");
        assert!(!read(&format!("{stem}.tex")).contains("shot"), "{stem}");
        assert!(read(&format!("{stem}.csv")).starts_with(
            "method,setting,settings,selected_on,val_linear_top1_mean,linear_top1_mean,linear_top1_std,linear_top1_n,knn_top1_mean,knn_top1_std,knn_top1_n,paper\n"
        ));
    }
}

#[test]
fn seeds_disagreeing_on_class_counts_are_an_error_naming_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let ids = write_long_tail(&results);
    // Seed 1 of "NT-Xent (ρ = 100)" trained on other class sizes: 6 many-shot classes.
    edit_metrics(&results, &ids[0][1], true, |v| v["eval"]["n_many"] = json!(6));
    let exp = Experiment::load(&results, "long_tail", PROFILE).unwrap();
    let e = format!(
        "{:#}",
        Table::from_spec(&exp, &spec("long_tail"), "table_long_tail").unwrap_err()
    );
    assert!(e.contains("long_tail.cpu.csv"), "{e}");
    assert!(
        e.contains("NT-Xent (ρ = 100)") && e.contains("`n_many` = 5") && e.contains("and 6"),
        "{e}"
    );
    // A table without the group columns does not look at the counts.
    Table::from_spec(&exp, &spec("table_cifar10"), "table_long_tail").unwrap();
}

#[test]
fn a_class_count_that_is_not_a_non_negative_integer_is_an_error_naming_the_file() {
    for bad in [json!(2.5), json!(-1)] {
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path().join("results");
        let ids = write_long_tail(&results);
        edit_metrics(&results, &ids[0][0], true, |v| v["eval"]["n_few"] = bad.clone());
        let e = format!(
            "{:#}",
            Experiment::load(&results, "long_tail", PROFILE).unwrap_err()
        );
        assert!(e.contains(&ids[0][0]) && e.contains("metrics.json"), "{e}");
        assert!(
            e.contains("`eval.n_few`") && e.contains("non-negative integer"),
            "{e}"
        );
    }
}
