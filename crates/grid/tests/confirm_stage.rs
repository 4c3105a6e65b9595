//! The confirmation stage for real: the grid runs, the selection is written, the confirmation
//! cells run as ordinary cached cells, and the repository's fig4/fig5 declare the stage.

mod common;

use common::{write_exp, Fake};
use protoclr_grid::cache::CellState;
use protoclr_grid::confirm::{self, Made, StageState};
use protoclr_grid::runner::{run, RunOptions};
use protoclr_grid::spec::Experiment;
use protoclr_grid::{Arm, Plan, Results, Stage};
use std::path::PathBuf;

fn opts() -> RunOptions {
    let mut o = RunOptions::new(2, 1);
    o.progress = false;
    o
}

#[test]
fn grid_then_selection_then_confirmation_cells_cached() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path());
    let results = Results::new(dir.path().join("results"));
    let e = write_exp(
        dir.path(),
        "c",
        "grid:\n  x: [1, 3, 2]\nseeds: [0, 1]\nconfirm:\n  select: {metric: val_linear_top1}\n  reference: {x: 1}\n  seeds: [7, 8, 9]\n",
    );
    let plan = Plan::build(&Experiment::load(&e).unwrap(), "cpu", &fake).unwrap();
    assert_eq!(plan.cells.len(), 6);
    // Before the grid has run there are no confirmation cells.
    assert!(matches!(
        confirm::stage(&plan, &results, &fake, true).unwrap(),
        Some(StageState::Waiting { unfinished: 6, .. })
    ));
    let s = run(&plan, &results, &fake, &opts()).unwrap();
    assert_eq!(s.done, 6);
    let Some(StageState::Ready {
        plan: stage,
        selection,
        made,
    }) = confirm::stage(&plan, &results, &fake, true).unwrap()
    else {
        panic!("the grid is finished: the stage is ready")
    };
    assert_eq!(made, Made::New);
    assert_eq!(selection.candidate.describe, "x=3");
    assert_eq!(selection.candidate.mean, Some(3.0));
    assert_eq!(stage.stage, Stage::Confirm);
    assert_eq!(stage.cells.len(), 6);
    let s = run(&stage, &results, &fake, &opts()).unwrap();
    assert_eq!((s.cells, s.done, s.failed), (6, 6, 0));
    for c in &stage.cells {
        assert!(matches!(results.state(&c.id), CellState::Done(_)));
    }
    // The confirmation index (docs/formats.md): an `arm` column, seed-major pairs.
    let csv = std::fs::read_to_string(dir.path().join("results/c.cpu.confirm.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "cell_id,status,arm,label,seed,x,linear_top1,linear_top5,knn_top1,knn_top5,bias_l2,bias_l2_lo,bias_l2_hi,bias_cos,wall_time_s"
    );
    assert_eq!(lines.len(), 7);
    assert!(
        lines[1].starts_with(&format!("{},done,candidate,,7,3,3,", stage.cells[0].id)),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with(&format!("{},done,reference,,7,1,1,", stage.cells[1].id)),
        "{}",
        lines[2]
    );
    // The grid's own index is unchanged in format.
    let grid_csv = std::fs::read_to_string(dir.path().join("results/c.cpu.csv")).unwrap();
    assert!(grid_csv.starts_with("cell_id,status,label,seed,x,"));
    // The selection file holds the values it was based on.
    let sel: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("results/c.cpu.selection.json")).unwrap())
            .unwrap();
    assert_eq!(sel["candidate"]["values"]["x"], 3);
    assert_eq!(sel["ranking"].as_array().unwrap().len(), 2);
    assert_eq!(sel["grid_cells"].as_array().unwrap().len(), 6);

    // A rerun: selection reused, every cell cached, nothing started.
    let starts = fake.log_lines().iter().filter(|l| l.starts_with("start")).count();
    let Some(StageState::Ready {
        plan: again, made, ..
    }) = confirm::stage(&plan, &results, &fake, true).unwrap()
    else {
        panic!("ready")
    };
    assert_eq!(made, Made::Reused);
    let s = run(&again, &results, &fake, &opts()).unwrap();
    assert_eq!((s.cached, s.done), (6, 0));
    assert_eq!(
        fake.log_lines().iter().filter(|l| l.starts_with("start")).count(),
        starts
    );
    assert!(again.cells.iter().all(|c| c.arm.is_some()));
    assert_eq!(again.cells[0].arm, Some(Arm::Candidate));
}

fn experiments() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../experiments")
}

#[test]
fn fig4_and_fig5_declare_a_confirmation_on_8_fresh_seeds_against_ntxent() {
    for name in ["fig4", "fig5"] {
        let exp = Experiment::load(&experiments().join(format!("{name}.yaml"))).unwrap();
        let c = exp
            .confirm
            .as_ref()
            .unwrap_or_else(|| panic!("{name} has a confirm section"));
        assert_eq!(c.metric, "val_linear_top1", "{name}: selected on validation");
        assert!(c.maximize);
        assert_eq!(c.seeds.len(), 8, "{name}");
        let grid = exp.seeds.as_ref().unwrap();
        assert!(c.seeds.iter().all(|s| !grid.contains(s)), "{name}: fresh seeds");
        let keys: Vec<(&str, String)> = c
            .reference
            .iter()
            .map(|(k, v)| (k.as_str(), protoclr_grid::value::flow(v)))
            .collect();
        assert_eq!(
            keys,
            vec![("loss.alpha", "1".into()), ("loss.lambda", "1".into())],
            "{name}"
        );
    }
}
