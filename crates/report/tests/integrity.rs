//! The report reads exactly the cells the grid would call done and intact, rejects impossible
//! values, counts each cell once, and states (and guards) the numerics versions of its cells.
//! The corruption tests run on a copy of the repository's committed `results/`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use protoclr_report::load::Experiment;
use protoclr_report::scatter::Scatter;
use protoclr_report::{run, Options, Target};

/// The committed results folder of this repository.
fn committed_results() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../results")
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// A copy of the committed results in a temporary folder.
fn results_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    copy_dir(&committed_results(), &results);
    (dir, results)
}

/// The cell ids of an index, in row order.
fn index_ids(index: &Path) -> Vec<String> {
    fs::read_to_string(index)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect()
}

/// Replaces the number after `"key": ` in a cell's metrics.json text (the rest byte-identical),
/// as a hand edit would.
fn edit_number(results: &Path, id: &str, key: &str, value: &str) {
    let path = results.join("cells").join(id).join("metrics.json");
    let text = fs::read_to_string(&path).unwrap();
    let pat = format!("\"{key}\": ");
    let start = text.find(&pat).unwrap() + pat.len();
    let end = start + text[start..].find([',', '\n']).unwrap();
    let edited = format!("{}{value}{}", &text[..start], &text[end..]);
    assert_ne!(edited, text);
    fs::write(&path, edited).unwrap();
}

#[test]
fn committed_results_are_complete_and_of_one_numerics_version() {
    let exp = Experiment::load(&committed_results(), "fig3", "cpu").unwrap();
    assert_eq!((exp.with_metrics(), exp.total()), (27, 27));
    // Every committed fig3 cell was retrained under numerics version 2: one group, drawable.
    assert!(!exp.provenance.is_mixed());
    assert_eq!(exp.provenance.versions_text(), "v2 (27 cells)");
    exp.check_numerics(false).unwrap();
    let notes = exp.coverage_markdown();
    assert!(notes.contains("numerics v2: 27 cells; commits `"), "{notes}");
}

#[test]
fn a_cell_the_grid_calls_corrupt_is_not_used() {
    let (_tmp, results) = results_copy();
    let id = index_ids(&results.join("fig3.cpu.csv"))[0].clone();
    edit_number(&results, &id, "linear_top1", "99.9");
    let exp = Experiment::load(&results, "fig3", "cpu").unwrap();
    assert_eq!((exp.with_metrics(), exp.total()), (26, 27));
    assert_eq!(exp.missing.len(), 1);
    assert_eq!(exp.missing[0].cell_id, id);
    assert!(
        exp.missing[0]
            .reason
            .contains("corrupt: metrics.json does not match its checksum"),
        "{:?}",
        exp.missing[0]
    );

    // The figure is the one drawn without that cell at all.
    let fig = Scatter::from_spec(&exp, &spec("fig3"), "fig3").unwrap();
    let (_tmp2, without) = results_copy();
    fs::remove_dir_all(without.join("cells").join(&id)).unwrap();
    let reference = Scatter::from_spec(
        &Experiment::load(&without, "fig3", "cpu").unwrap(),
        &spec("fig3"),
        "fig3",
    )
    .unwrap();
    assert_eq!(fig.points, reference.points);
    assert_eq!(fig.spearman, reference.spearman);

    // claims.md and the figure notes count 26 of 27 and name the corrupt cell.
    let out = _tmp.path().join("figures");
    let opts = Options::new(&results, &out, "cpu").with_experiments(experiments());
    run(Target::Claims, &opts, 0.0).unwrap();
    let claims = fs::read_to_string(out.join("claims.md")).unwrap();
    assert!(claims.contains("26 of 27 cells"), "{claims}");
    assert!(
        claims.contains(&id[..12]) && claims.contains("corrupt"),
        "{claims}"
    );
    run(target("fig3"), &opts, 0.0).unwrap();
    let notes = fs::read_to_string(out.join("fig3.notes.md")).unwrap();
    assert!(
        notes.contains("26 of 27 cells") && notes.contains(&id[..12]),
        "{notes}"
    );
}

#[test]
fn a_config_that_no_longer_matches_its_checksum_is_not_used() {
    let (_tmp, results) = results_copy();
    let id = index_ids(&results.join("fig3.cpu.csv"))[5].clone();
    let cfg = results.join("cells").join(&id).join("config.yaml");
    let text = fs::read_to_string(&cfg).unwrap();
    fs::write(&cfg, format!("{text}# edited\n")).unwrap();
    let exp = Experiment::load(&results, "fig3", "cpu").unwrap();
    assert_eq!((exp.with_metrics(), exp.total()), (26, 27));
    assert!(exp.missing[0].reason.contains("config.yaml"), "{:?}", exp.missing);
}

#[test]
fn impossible_values_are_errors_naming_the_file() {
    for (key, value, why) in [
        ("linear_top1", "1e308", "outside [0, 100]"),
        ("knn_top5", "100.5", "outside [0, 100]"),
        ("linear_top5", "-0.1", "outside [0, 100]"),
        ("bias_l2", "-0.2", "negative"),
    ] {
        let (_tmp, results) = results_copy();
        let id = index_ids(&results.join("fig3.cpu.csv"))[3].clone();
        edit_number(&results, &id, key, value);
        // Resealed: the checksums match, so only the value check can catch it.
        edit_metrics(&results, &id, true, |_| {});
        let err = format!("{:#}", Experiment::load(&results, "fig3", "cpu").unwrap_err());
        let file = results.join("cells").join(&id).join("metrics.json");
        assert!(err.contains(&file.display().to_string()), "{err}");
        assert!(err.contains(key) && err.contains(why), "{err}");
        if value == "1e308" {
            assert!(err.contains("1e308"), "no 300-digit number: {err}");
        }
    }
}

#[test]
fn a_repeated_index_row_counts_once_and_a_conflicting_one_is_an_error() {
    let (_tmp, results) = results_copy();
    let index = results.join("fig3.cpu.csv");
    let text = fs::read_to_string(&index).unwrap();
    let second = text.lines().nth(1).unwrap().to_string();
    fs::write(&index, format!("{text}{second}\n")).unwrap();
    let exp = Experiment::load(&results, "fig3", "cpu").unwrap();
    assert_eq!((exp.with_metrics(), exp.total()), (27, 27));

    // Same cell id, another seed: which one is meant cannot be told.
    let conflicting = second.replacen(",base,0,", ",base,7,", 1);
    assert_ne!(conflicting, second);
    fs::write(&index, format!("{text}{conflicting}\n")).unwrap();
    let err = format!("{:#}", Experiment::load(&results, "fig3", "cpu").unwrap_err());
    assert!(
        err.contains(&index.display().to_string()) && err.contains("line 29") && err.contains("line 2 "),
        "{err}"
    );
    assert!(err.contains("`seed`"), "{err}");
}

#[test]
fn names_that_leave_the_results_folder_are_refused() {
    let err = format!(
        "{:#}",
        Experiment::load(&committed_results(), "fig3", "/../../../escaped2").unwrap_err()
    );
    assert!(err.contains("profile must be a plain file-name stem"), "{err}");
    let (_tmp, results) = results_copy();
    let index = results.join("fig3.cpu.csv");
    let text = fs::read_to_string(&index).unwrap();
    fs::write(&index, format!("{text}../../etc,done,base,9,[],[],,,,,,,,,\n")).unwrap();
    let err = format!("{:#}", Experiment::load(&results, "fig3", "cpu").unwrap_err());
    assert!(err.contains("line 29") && err.contains("cell_id"), "{err}");
}

fn opts(root: &Path) -> Options {
    Options::new(root.join("results"), root.join("figures"), "cpu").with_experiments(experiments())
}

/// Synthetic Fig. 3 cells; the first `n_v2` get `numerics_version: 2` and commit `c0ffee…`.
fn fig3_with_versions(root: &Path, n_v2: usize) -> Vec<Cell> {
    let cells = fig3_cells(&fig3_monotone());
    let results = root.join("results");
    write_experiment(&results, "fig3", "cpu", &["augment.ops"], &cells);
    for c in &cells[..n_v2] {
        edit_metrics(&results, &c.id, true, |m| {
            m["numerics_version"] = serde_json::json!(2);
            m["git_commit"] = serde_json::json!("c0ffee0123456789abcdef0123456789abcdef01");
        });
    }
    cells
}

#[test]
fn one_numerics_version_is_stated_in_notes_and_claims() {
    let dir = tempfile::tempdir().unwrap();
    let cells = fig3_with_versions(dir.path(), 15);
    assert_eq!(cells.len(), 15);
    let o = opts(dir.path());
    run(target("fig3"), &o, 0.0).unwrap();
    let notes = fs::read_to_string(o.out.join("fig3.notes.md")).unwrap();
    assert!(
        notes.contains("numerics v2: 15 cells; commits `c0ffee012345` (15)"),
        "{notes}"
    );
    assert!(!notes.contains("mixed"), "{notes}");
    run(Target::Claims, &o, 0.0).unwrap();
    let claims = fs::read_to_string(o.out.join("claims.md")).unwrap();
    assert!(claims.contains("numerics v2: 15 cells"), "{claims}");
}

#[test]
fn mixed_numerics_are_refused_unless_allowed_and_then_labelled() {
    let dir = tempfile::tempdir().unwrap();
    fig3_with_versions(dir.path(), 3);
    let mut o = opts(dir.path());
    for target in [target("fig3"), Target::Claims] {
        let err = format!("{:#}", run(target, &o, 0.0).unwrap_err());
        assert!(
            err.contains("different numerics versions")
                && err.contains("v2 (3 cells), unversioned (12 cells)")
                && err.contains("--allow-mixed-numerics")
                && err.contains("fig3.cpu.csv"),
            "{err}"
        );
    }
    assert!(!o.out.join("fig3.svg").exists());

    o.allow_mixed_numerics = true;
    run(target("fig3"), &o, 0.0).unwrap();
    let svg = fs::read_to_string(o.out.join("fig3.svg")).unwrap();
    assert!(
        svg.contains("mixed numerics: v2 (3 cells), unversioned (12 cells)"),
        "title"
    );
    let notes = fs::read_to_string(o.out.join("fig3.notes.md")).unwrap();
    assert!(notes.contains("**mixed numerics**"), "{notes}");
    assert!(
        notes.contains("numerics v2: 3 cells; commits `c0ffee012345` (3)"),
        "{notes}"
    );
    assert!(
        notes.contains("numerics unversioned: 12 cells; commits `0000000` (12)"),
        "{notes}"
    );
    run(Target::Claims, &o, 0.0).unwrap();
    let claims = fs::read_to_string(o.out.join("claims.md")).unwrap();
    assert!(claims.contains("**mixed numerics**"), "{claims}");
}

#[test]
fn mixed_numerics_guard_tables_and_heatmaps_too() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let grid = alpha_lambda_cells("fig5", &grid3(|_, _| (58.0, 1.0)));
    write_experiment(&results, "fig5", "cpu", &["loss.alpha", "loss.lambda"], &grid);
    edit_metrics(&results, &grid[4].id, true, |m| {
        m["numerics_version"] = serde_json::json!(3)
    });
    let cells = table_cells("table_cifar10");
    write_experiment(
        &results,
        "table_cifar10",
        "cpu",
        &["loss.alpha", "loss.lambda", "loss.name"],
        &cells,
    );
    edit_metrics(&results, &cells[0].id, true, |m| {
        m["numerics_version"] = serde_json::json!(3)
    });
    let mut o = opts(dir.path());
    let err = format!("{:#}", run(target("fig5"), &o, 0.0).unwrap_err());
    assert!(err.contains("v3 (1 cells), unversioned (26 cells)"), "{err}");
    let err = format!("{:#}", run(Target::Tables, &o, 0.0).unwrap_err());
    assert!(
        err.contains("`table_cifar10` (profile cpu) were trained by different numerics versions"),
        "{err}"
    );
    o.allow_mixed_numerics = true;
    run(target("fig5"), &o, 0.0).unwrap();
    assert!(fs::read_to_string(o.out.join("fig5.svg"))
        .unwrap()
        .contains("mixed numerics"));
}

#[test]
fn a_numerics_version_that_is_not_a_number_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let cells = fig3_with_versions(dir.path(), 0);
    let results = dir.path().join("results");
    edit_metrics(&results, &cells[2].id, true, |m| {
        m["numerics_version"] = serde_json::json!("two")
    });
    let err = format!("{:#}", Experiment::load(&results, "fig3", "cpu").unwrap_err());
    assert!(
        err.contains("numerics_version") && err.contains(&cells[2].id),
        "{err}"
    );
}
