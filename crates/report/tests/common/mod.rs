//! Writes results folders with known numbers, in the layout of docs/formats.md.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::Path;

use protoclr_formats::{sha256_file, Outcome, StatusFile};
use serde_json::json;

/// One cell of an index.
#[derive(Debug, Clone)]
pub struct Cell {
    pub id: String,
    pub status: &'static str,
    pub label: String,
    pub seed: u64,
    /// Axis values, as written in the index.
    pub axes: Vec<String>,
    /// (linear_top1, knn_top1, bias_l2); `None` for cells not done.
    pub metrics: Option<(f64, f64, f64)>,
    /// Write `cells/<id>/metrics.json` (else only the index has the numbers).
    pub write_json: bool,
}

impl Cell {
    pub fn done(id: String, label: &str, seed: u64, axes: Vec<String>, m: (f64, f64, f64)) -> Self {
        Self {
            id,
            status: "done",
            label: label.into(),
            seed,
            axes,
            metrics: Some(m),
            write_json: true,
        }
    }
}

fn csv_field(s: &str) -> String {
    if s.contains(',') || s.contains('"') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Writes `results/<experiment>.<profile>.csv` and the cells' metrics.json files.
pub fn write_experiment(results: &Path, experiment: &str, profile: &str, axes: &[&str], cells: &[Cell]) {
    std::fs::create_dir_all(results.join("cells")).unwrap();
    let mut csv = String::from("cell_id,status,label,seed");
    for a in axes {
        csv.push(',');
        csv.push_str(a);
    }
    csv.push_str(
        ",linear_top1,linear_top5,knn_top1,knn_top5,bias_l2,bias_l2_lo,bias_l2_hi,bias_cos,wall_time_s\n",
    );
    for c in cells {
        write!(csv, "{},{},{},{}", c.id, c.status, csv_field(&c.label), c.seed).unwrap();
        for v in &c.axes {
            write!(csv, ",{}", csv_field(v)).unwrap();
        }
        match c.metrics {
            Some((lin, knn, bias)) if c.status == "done" => writeln!(
                csv,
                ",{lin},95.0,{knn},90.0,{bias},{},{},0.1,12.5",
                bias - 0.01,
                bias + 0.01
            )
            .unwrap(),
            _ => csv.push_str(",,,,,,,,,\n"),
        }
        let dir = results.join("cells").join(&c.id);
        if c.metrics.is_none() {
            // A cell without results: whatever an earlier call wrote for it is gone, as the
            // grid would find it (a done and intact folder is done, whatever the index says).
            let _ = std::fs::remove_dir_all(&dir);
        }
        std::fs::create_dir_all(&dir).unwrap();
        if let (Some((lin, knn, bias)), true) = (c.metrics, c.write_json) {
            let m = json!({
                "schema": 1,
                "status": if c.status == "diverged" { "diverged" } else { "completed" },
                "epochs_planned": 2,
                "epochs": [{"epoch": 1, "loss": 5.1, "lr": 0.06, "images_per_sec": 210.0, "wall_s": 3.2}],
                "eval": if c.status == "diverged" { serde_json::Value::Null } else { json!({
                    "linear_top1": lin, "linear_top5": 95.0,
                    "knn_top1": knn, "knn_top5": 90.0,
                    "bias_l2": bias, "bias_l2_ci95": [bias - 0.01, bias + 0.01],
                    "bias_cos": 0.1, "bias_cos_ci95": [0.09, 0.11],
                    "n_train": 500, "n_test": 100
                })},
                "reference": null,
                "diverged": if c.status == "diverged" { json!({"epoch": 1, "step": 3, "what": "loss is NaN"}) } else { serde_json::Value::Null },
                "wall_time_s": 12.5,
                "train_images_per_sec": 40.0,
                "threads": 2,
                "git_commit": "0000000",
                "dataset": "cifar10",
                "dataset_fingerprint": "ab",
                "dataset_verified": true,
                "protoclr_version": "0.1.0"
            });
            std::fs::write(
                dir.join("metrics.json"),
                serde_json::to_string_pretty(&m).unwrap(),
            )
            .unwrap();
            let outcome = if c.status == "diverged" {
                Outcome::Diverged
            } else {
                Outcome::Done
            };
            seal(&dir, outcome);
        } else if c.status == "failed" {
            seal(&dir, Outcome::Failed);
        }
    }
    std::fs::write(results.join(format!("{experiment}.{profile}.csv")), csv).unwrap();
}

/// Records a cell folder's outcome as the grid does: writes `config.yaml` if absent, then
/// `status.json` with the checksums of the files as they are now.
pub fn seal(dir: &Path, outcome: Outcome) {
    if !dir.join("config.yaml").exists() {
        std::fs::write(dir.join("config.yaml"), "seed: 0\n").unwrap();
    }
    let status = StatusFile {
        status: outcome,
        metrics_sha256: match outcome {
            Outcome::Failed => None,
            _ => sha256_file(&dir.join("metrics.json")),
        },
        config_sha256: sha256_file(&dir.join("config.yaml")),
        cell_format_version: 1,
        exit_code: Some(if outcome == Outcome::Failed { 1 } else { 0 }),
        signal: None,
        error: None,
        runner_wall_s: Some(1.0),
        finished_unix: 0,
        host: "test".into(),
    };
    std::fs::write(
        dir.join("status.json"),
        serde_json::to_vec_pretty(&status).unwrap(),
    )
    .unwrap();
}

/// Edits `results/cells/<id>/metrics.json` with `f`; with `reseal` the status file is rewritten
/// to match (the cell stays intact), else the edit is a corruption the checksum catches.
pub fn edit_metrics(results: &Path, id: &str, reseal: bool, f: impl FnOnce(&mut serde_json::Value)) {
    let dir = results.join("cells").join(id);
    let path = dir.join("metrics.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    if reseal {
        let st: StatusFile =
            serde_json::from_slice(&std::fs::read(dir.join("status.json")).unwrap()).unwrap();
        seal(&dir, st.status);
    }
}

/// A fake 64-hex-digit cell id from a name.
pub fn id(name: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}").repeat(4)
}

/// Seed offsets −1, 0, +1: mean exactly the centre, sample std exactly 1·`spread`.
pub const OFFSETS: [f64; 3] = [-1.0, 0.0, 1.0];

/// Fig. 3 cells: per configuration (label, augment.ops value, mean bias, mean accuracy), three
/// seeds with accuracy mean ± 1 and bias mean ± 0.01.
pub fn fig3_cells(points: &[(&str, &str, f64, f64)]) -> Vec<Cell> {
    let mut cells = Vec::new();
    for (label, ops, bias, acc) in points {
        for (seed, off) in OFFSETS.iter().enumerate() {
            cells.push(Cell::done(
                id(&format!("fig3 {label} {seed}")),
                label,
                seed as u64,
                vec![ops.to_string()],
                (acc + off, acc - 5.0 + off, bias + 0.01 * off),
            ));
        }
    }
    cells
}

/// α × λ cells: per (α, λ, mean accuracy, spread), three seeds mean ± spread.
pub fn alpha_lambda_cells(exp: &str, grid: &[(f64, f64, f64, f64)]) -> Vec<Cell> {
    let mut cells = Vec::new();
    for (a, l, acc, spread) in grid {
        for (seed, off) in OFFSETS.iter().enumerate() {
            cells.push(Cell::done(
                id(&format!("{exp} {a} {l} {seed}")),
                "",
                seed as u64,
                vec![a.to_string(), l.to_string()],
                (acc + spread * off, acc - 3.0 + spread * off, 0.4),
            ));
        }
    }
    cells
}

/// 3 × 3 grid α, λ ∈ {0.5, 1, 1.5}, NT-Xent (1, 1) at 60 ± 1, others from `f(α, λ)`.
pub fn grid3(f: impl Fn(f64, f64) -> (f64, f64)) -> Vec<(f64, f64, f64, f64)> {
    let mut g = Vec::new();
    for l in [0.5, 1.0, 1.5] {
        for a in [0.5, 1.0, 1.5] {
            let (acc, spread) = if a == 1.0 && l == 1.0 {
                (60.0, 1.0)
            } else {
                f(a, l)
            };
            g.push((a, l, acc, spread));
        }
    }
    g
}

/// The standard Fig. 3 configurations: accuracy = 80 − 50 · bias exactly (ρ = r = −1).
pub fn fig3_monotone() -> Vec<(&'static str, &'static str, f64, f64)> {
    [
        ("base", "[crop, color_jitter, grayscale, flip]", 0.30),
        ("base − crop", "[color_jitter, grayscale, flip]", 0.50),
        ("base − color_jitter", "[crop, grayscale, flip]", 0.40),
        ("base + blur", "[crop, color_jitter, grayscale, flip, blur]", 0.35),
        (
            "base + rotation",
            "[crop, color_jitter, grayscale, flip, rotation]",
            0.45,
        ),
    ]
    .into_iter()
    .map(|(l, o, b)| (l, o, b, 80.0 - 50.0 * b))
    .collect()
}

/// Table cells: NT-Xent, balanced at three (α, λ), supervised oracle and realistic.
pub fn table_cells(exp: &str) -> Vec<Cell> {
    let rows: [(&str, f64, f64, &str, f64); 6] = [
        ("NT-Xent", 1.0, 1.0, "ntxent", 60.0),
        ("balanced", 0.5, 1.0, "balanced", 58.0),
        ("balanced", 1.5, 1.0, "balanced", 63.0),
        ("balanced", 1.0, 1.5, "balanced", 61.0),
        (
            "supervised prototype (oracle)",
            1.0,
            1.0,
            "supervised_prototype",
            70.0,
        ),
        (
            "supervised prototype (realistic)",
            1.0,
            1.0,
            "supervised_prototype",
            66.0,
        ),
    ];
    let mut cells = Vec::new();
    for (label, a, l, name, acc) in rows {
        for (seed, off) in OFFSETS.iter().enumerate() {
            cells.push(Cell::done(
                id(&format!("{exp} {label} {a} {l} {seed}")),
                label,
                seed as u64,
                vec![a.to_string(), l.to_string(), name.to_string()],
                (acc + 0.5 * off, acc - 4.0 + off, 0.4),
            ));
        }
    }
    cells
}

/// Width and height from a PNG's IHDR chunk.
pub fn png_size(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", path.display());
    assert_eq!(&b[12..16], b"IHDR");
    let w = u32::from_be_bytes(b[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(b[20..24].try_into().unwrap());
    (w, h)
}

/// Writes a confirmation stage as `protoclr grid run` does (docs/formats.md): the selection file
/// (made from the cells of the grid index already written), `<experiment>.<profile>.confirm.csv`
/// and the cells' metrics.json, candidate (α = 1.5, λ = 1) and reference (1, 1) with the given
/// test linear top-1 per fresh seed 100, 101, … (None: the cell is pending).
pub fn write_confirmation(
    results: &Path,
    experiment: &str,
    profile: &str,
    candidate: &[Option<f64>],
    reference: &[Option<f64>],
) {
    let index = std::fs::read_to_string(results.join(format!("{experiment}.{profile}.csv"))).unwrap();
    let mut grid_cells: Vec<String> = index
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect();
    grid_cells.sort();
    grid_cells.dedup();
    let choice = |d: &str, a: f64, l: f64, mean: f64| {
        json!({"describe": d, "label": null, "values": {"loss.alpha": a, "loss.lambda": l},
               "mean": mean, "cells": []})
    };
    let cand = choice("loss.alpha=1.5 loss.lambda=1", 1.5, 1.0, 66.5);
    let sel = json!({
        "format": 1, "experiment": experiment, "profile": profile,
        "rule": "{}", "metric": "val_linear_top1", "maximize": true,
        "grid_seeds": [0, 1, 2], "grid_cells": grid_cells,
        "candidate": cand.clone(),
        "reference": choice("loss.alpha=1 loss.lambda=1", 1.0, 1.0, 60.5),
        "ranking": [cand.clone(), cand.clone(), cand],
        "ineligible": []
    });
    std::fs::write(
        results.join(format!("{experiment}.{profile}.selection.json")),
        serde_json::to_string_pretty(&sel).unwrap(),
    )
    .unwrap();
    let mut cells = Vec::new();
    for (i, (c, r)) in candidate.iter().zip(reference).enumerate() {
        let seed = 100 + i as u64;
        for (arm, v, a) in [("candidate", c, 1.5), ("reference", r, 1.0)] {
            let mut cell = Cell::done(
                id(&format!("{experiment} confirm {arm} {seed}")),
                arm,
                seed,
                vec![a.to_string(), "1".into()],
                (v.unwrap_or(0.0), 50.0, 0.4),
            );
            if v.is_none() {
                cell.status = "pending";
                cell.metrics = None;
            }
            cells.push(cell);
        }
    }
    // The confirmation index: the grid index's layout with an `arm` column after `status`
    // (written here into the label position by `write_experiment`, then renamed).
    let tmp = format!("{experiment}__confirm");
    write_experiment(results, &tmp, profile, &["loss.alpha", "loss.lambda"], &cells);
    let path = results.join(format!("{tmp}.{profile}.csv"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let mut f: Vec<&str> = line.split(',').collect();
        if i == 0 {
            f[2] = "arm";
        }
        f.insert(3, if i == 0 { "label" } else { "" });
        out.push_str(&f.join(","));
        out.push('\n');
    }
    std::fs::remove_file(&path).unwrap();
    std::fs::write(results.join(format!("{experiment}.{profile}.confirm.csv")), out).unwrap();
}

/// The repository's experiment files.
#[allow(dead_code)]
pub fn experiments() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments")
}

/// The repository's experiment file `<name>.yaml` (its `report:` section).
#[allow(dead_code)]
pub fn repo_file(name: &str) -> protoclr_report::ExperimentFile {
    protoclr_report::ExperimentFile::load(&experiments().join(format!("{name}.yaml"))).unwrap()
}

/// The `report:` section of the repository's experiment file `<name>.yaml`.
#[allow(dead_code)]
pub fn spec(name: &str) -> protoclr_formats::report::ReportSpec {
    repo_file(name).spec
}

/// What `protoclr report <name>` builds.
#[allow(dead_code)]
pub fn target(name: &str) -> protoclr_report::Target {
    protoclr_report::Target::Experiment(name.into())
}
