//! A researcher's own experiment file gets its figure and notes from its `report:` section, with
//! no Rust change: a heatmap over `loss.tau` × `train.batch_size` (keys no built-in figure uses)
//! and a curve, each from a tiny grid of cells written in the results layout of
//! docs/formats.md with planted numbers.

mod common;

use std::path::Path;

use common::*;
use protoclr_grid::expand::expand;
use protoclr_grid::spec::Experiment as Spec;
use protoclr_grid::value::flow;
use protoclr_report::curve::CURVE_SIZE;
use protoclr_report::heatmap::HEATMAP_SIZE;
use protoclr_report::{run, Options, Target};

const GRID: &str = "\
name: NAME
description: my ablation of the temperature and the batch size
base: {loss: {name: ntxent}}
profiles:
  cpu: {}
  paper: {}
grid:
  loss.tau: [0.1, 0.5]
  train.batch_size: [128, 256, 512]
seeds: [0, 1]
";

const HEATMAP: &str = "\
report:
  kind: heatmap
  title: kNN accuracy over τ × batch size
  x: loss.tau
  y: train.batch_size
  value: knn_top1
  x_label: temperature τ (loss.tau)
  y_label: batch size (train.batch_size)
  symbols: {loss.tau: τ, train.batch_size: B}
  unit: '%'
  reference: {loss.tau: 0.5, train.batch_size: 256}
  reference_name: SimCLR default
";

const CURVE: &str = "\
report:
  kind: curve
  title: Linear accuracy against batch size
  x: train.batch_size
  value: linear_top1
  series: loss.tau
";

/// Planted linear / kNN accuracy of a cell: seed 0 is 0.5 below the mean, seed 1 above.
fn planted(tau: f64, batch: f64, seed: u64) -> (f64, f64) {
    let off = if seed == 0 { -0.5 } else { 0.5 };
    (
        40.0 + 20.0 * tau + batch / 64.0 + off,
        30.0 + 10.0 * tau + batch / 128.0 + off,
    )
}

/// Writes `dir/<name>.yaml`, plans it with the grid and writes its cells (all done but
/// `missing`, a `(tau, batch, seed)` left pending) into `results`. Returns the file.
fn write(
    dir: &Path,
    results: &Path,
    name: &str,
    report: &str,
    missing: (f64, f64, u64),
) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, format!("{}{report}", GRID.replace("NAME", name))).unwrap();
    // The grid accepts the file (its report keys are varied keys) and expands it.
    let spec = Spec::load(&path).unwrap_or_else(|e| panic!("{e:#}"));
    let cells: Vec<Cell> = expand(&spec, "cpu")
        .unwrap()
        .into_iter()
        .map(|c| {
            let axes: Vec<String> = c.assignments.iter().map(|(_, v)| flow(v)).collect();
            let (tau, batch): (f64, f64) = (axes[0].parse().unwrap(), axes[1].parse().unwrap());
            let seed = c.seed.unwrap();
            let (lin, knn) = planted(tau, batch, seed);
            let mut cell = Cell::done(
                id(&format!("{name}{axes:?}{seed}")),
                "",
                seed,
                axes,
                (lin, knn, 0.3),
            );
            if (tau, batch, seed) == missing {
                cell.status = "pending";
                cell.metrics = None;
            }
            cell
        })
        .collect();
    assert_eq!(cells.len(), 12);
    let columns: Vec<&str> = spec.columns.iter().map(String::as_str).collect();
    write_experiment(results, name, "cpu", &columns, &cells);
    path
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn a_new_heatmap_and_curve_are_drawn_from_their_report_sections() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, results, out) = (tmp.path(), tmp.path().join("results"), tmp.path().join("figures"));
    let heat = write(dir, &results, "my_ablation", HEATMAP, (0.1, 128.0, 1));
    let curve = write(dir, &results, "my_curve", CURVE, (0.5, 512.0, 0));
    let opts = Options::new(&results, &out, "cpu").with_experiments(dir);

    let r = run(Target::File(heat), &opts, 0.0).unwrap();
    let names: Vec<String> = r
        .written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["my_ablation.png", "my_ablation.svg", "my_ablation.notes.md"]
    );
    assert_eq!(png_size(&out.join("my_ablation.png")), HEATMAP_SIZE);
    let svg = read(&out.join("my_ablation.svg"));
    for want in [
        "kNN accuracy over τ × batch size (my_ablation, profile cpu) — partial: 11 of 12 cells",
        "temperature τ (loss.tau)",
        "batch size (train.batch_size)",
        "Difference from SimCLR default (τ = 0.5, B = 256), points",
        "Black outline: SimCLR default cell (τ, B) = (0.5, 256).",
        "512",
        // (τ, B) = (0.5, 512): 30 + 5 + 4 = 39.0, and 39.0 − (30 + 5 + 2) = +2.0 points.
        "39.0",
        "+2.0",
    ] {
        assert!(svg.contains(want), "{want:?} not in the SVG");
    }
    let notes = read(&out.join("my_ablation.notes.md"));
    // The best cell other than the reference, on the value itself (no val_knn_top1 in the
    // cells), with its difference from the reference: planted 39.00 vs 37.00.
    assert!(
        notes.contains(
            "Selected (τ, B) ≠ (0.5, 256), on test among 5 cells: τ = 0.5, B = 512 — knn_top1 39.00 \
             (n=2), +2.00 points vs SimCLR default's 37.00"
        ),
        "{notes}"
    );
    assert!(
        notes.contains("loss.tau=0.1, train.batch_size=128 seed 1: pending"),
        "{notes}"
    );

    run(Target::File(curve), &opts, 0.0).unwrap();
    assert_eq!(png_size(&out.join("my_curve.png")), CURVE_SIZE);
    let svg = read(&out.join("my_curve.svg"));
    for want in [
        "Linear accuracy against batch size (my_curve, profile cpu)",
        "loss.tau = 0.1",
        "loss.tau = 0.5",
    ] {
        assert!(svg.contains(want), "{want:?} not in the SVG");
    }
    let notes = read(&out.join("my_curve.notes.md"));
    // τ = 0.1: 40 + 2 + B/64 → 44, 46, 50; τ = 0.5 at B = 512 has one seed (+0.5): 58.5.
    assert!(
        notes.contains(
            "- loss.tau = 0.1: 128 → 44.00 ± 6.35 (n=2); 256 → 46.00 ± 6.35 (n=2); 512 → 50.00 ± 6.35 (n=2)"
        ),
        "{notes}"
    );
    assert!(notes.contains("512 → 58.50 (n=1)"), "{notes}");

    // `report all` over a folder of one's own experiments draws both (and claims.md, whose
    // claims (a) and (b) have no experiment here).
    let all = tmp.path().join("all");
    let o = Options::new(&results, &all, "cpu").with_experiments(dir);
    run(Target::All, &o, 0.0).unwrap();
    for f in [
        "my_ablation.png",
        "my_curve.svg",
        "my_curve.notes.md",
        "claims.md",
    ] {
        assert!(all.join(f).is_file(), "{f}");
    }
    assert_eq!(
        read(&all.join("my_ablation.svg")),
        read(&out.join("my_ablation.svg"))
    );
}

#[test]
fn a_bad_report_section_is_refused_naming_the_file_and_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let bad = CURVE.replace("series: loss.tau", "series: loss.temperature");
    let path = tmp.path().join("bad.yaml");
    std::fs::write(&path, format!("{}{bad}", GRID.replace("NAME", "bad"))).unwrap();
    // The grid: file, line and column of the key, and what the varied keys are.
    let e = format!("{:#}", Spec::load(&path).unwrap_err());
    assert!(
        e.contains("bad.yaml:16:3: report.series: unknown column `loss.temperature` (varied keys: loss.tau, train.batch_size"),
        "{e}"
    );
    // The report, on a file the grid was not asked about: the index has no such column.
    write(tmp.path(), &results, "bad_data", CURVE, (9.0, 9.0, 9));
    let text =
        read(&tmp.path().join("bad_data.yaml")).replace("series: loss.tau", "series: loss.temperature");
    std::fs::write(tmp.path().join("bad_data.yaml"), text).unwrap();
    let opts = Options::new(&results, tmp.path().join("out"), "cpu").with_experiments(tmp.path());
    let e = format!(
        "{:#}",
        run(Target::Experiment("bad_data".into()), &opts, 0.0).unwrap_err()
    );
    assert!(
        e.contains("bad_data.cpu.csv has no `loss.temperature` column"),
        "{e}"
    );
    // An option of another kind.
    let text = format!("{}{CURVE}  reference_name: x\n", GRID.replace("NAME", "k"));
    std::fs::write(&path, text).unwrap();
    let e = format!("{:#}", run(Target::File(path.clone()), &opts, 0.0).unwrap_err());
    assert!(
        e.contains("bad.yaml: report.reference_name: not an option of kind `curve`"),
        "{e}"
    );
}

#[test]
fn a_heatmap_over_a_key_that_is_not_a_number_keeps_the_file_order() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, results) = (tmp.path(), tmp.path().join("results"));
    let text = "name: presets\ndescription: d\nprofiles: {cpu: {}, paper: {}}\n\
                grid: {augment.preset: [simclr, none], loss.tau: [0.1, 0.5]}\nseeds: [0]\n\
                report: {kind: heatmap, title: Presets, x: augment.preset, y: loss.tau, value: linear_top1}\n";
    let path = dir.join("presets.yaml");
    std::fs::write(&path, text).unwrap();
    let spec = Spec::load(&path).unwrap_or_else(|e| panic!("{e:#}"));
    let cells: Vec<Cell> = expand(&spec, "cpu")
        .unwrap()
        .into_iter()
        .map(|c| {
            let axes: Vec<String> = c.assignments.iter().map(|(_, v)| flow(v)).collect();
            let lin = if axes[0] == "simclr" { 60.0 } else { 20.0 } + axes[1].parse::<f64>().unwrap();
            Cell::done(id(&format!("{axes:?}")), "", 0, axes, (lin, 10.0, 0.3))
        })
        .collect();
    write_experiment(
        &results,
        "presets",
        "cpu",
        &["augment.preset", "loss.tau"],
        &cells,
    );
    let out = dir.join("figures");
    let opts = Options::new(&results, &out, "cpu").with_experiments(dir);
    run(Target::File(path.clone()), &opts, 0.0).unwrap();
    let svg = read(&out.join("presets.svg"));
    let (s, n) = (svg.find("\nsimclr\n").unwrap(), svg.find("\nnone\n").unwrap());
    assert!(s < n, "x ticks in the file's order");
    for want in ["60.1", "20.5", "Mean linear_top1 over seeds"] {
        assert!(svg.contains(want), "{want:?} not in the SVG");
    }
    assert!(
        !svg.contains("Difference from"),
        "no reference, no difference panel"
    );
    // The ratio analysis needs numbers on both axes.
    std::fs::write(
        &path,
        text.replace("value: linear_top1}", "value: linear_top1, ratio: true}"),
    )
    .unwrap();
    let e = format!("{:#}", run(Target::File(path), &opts, 0.0).unwrap_err());
    assert!(
        e.contains("report.ratio needs numeric `augment.preset` and `loss.tau` values"),
        "{e}"
    );
}
