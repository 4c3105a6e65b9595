//! Every experiment file plans to the cell ids of its committed index (`results/<name>.cpu.csv`),
//! through the real backend (config resolution and the dataset fingerprint of protoclr-train):
//! what the experiment files say outside the grid's sections (the `report:` section above all)
//! does not move a cell.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The data root: `PROTOCLR_DATA`, else the shared folder beside the repository.
fn data_root() -> PathBuf {
    if let Ok(p) = std::env::var("PROTOCLR_DATA") {
        return PathBuf::from(p);
    }
    let p = repo().join("../shared/datasets");
    assert!(
        p.join("cifar-10-batches-bin").is_dir(),
        "CIFAR-10 not found: set PROTOCLR_DATA to the folder holding cifar-10-batches-bin/"
    );
    p
}

/// The 12-hex-digit ids `protoclr grid plan` lists, in plan order; `Err(path)` when the plan
/// fails only because a dataset folder or file its cells fingerprint (an image folder, an
/// ImageNet-LT class map or list) is not under the data root (CI has
/// CIFAR-10 alone; the Imagenette and CIFAR-100 experiments then cannot be planned). Any other
/// failure panics.
fn planned(file: &Path) -> Result<Vec<String>, PathBuf> {
    let empty = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_protoclr"))
        .args(["grid", "plan"])
        .arg(file)
        .args(["--profile", "cpu", "--data-root"])
        .arg(data_root())
        .arg("--results")
        .arg(empty.path())
        .current_dir(repo())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() {
        // "dataset fingerprint: cannot read folder PATH: …", "… cannot read class map PATH: …":
        // the path is the first word of the rest that starts with '/'.
        const MISSING: &str = "dataset fingerprint: cannot read ";
        let folder = err
            .find(MISSING)
            .and_then(|at| err[at + MISSING.len()..].split(": ").next())
            .and_then(|what| what.find('/').map(|slash| PathBuf::from(&what[slash..])));
        match folder {
            Some(f) if !f.exists() => return Err(f),
            _ => panic!("{err}"),
        }
    }
    Ok(String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|t| t.len() == 12 && t.chars().all(|c| c.is_ascii_hexdigit()))
        .map(str::to_string)
        .collect())
}

#[test]
fn every_experiment_plans_to_its_committed_index() {
    let mut compared = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("experiments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let name = file.file_stem().unwrap().to_str().unwrap().to_string();
        let index = repo().join(format!("results/{name}.cpu.csv"));
        let Ok(text) = std::fs::read_to_string(&index) else {
            continue;
        };
        let ids: Vec<&str> = text
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap())
            .collect();
        // Cells trained before the numerics version entered the ids (no `numerics_version` in
        // their metrics.json) were planned by an older id rule: such an index cannot be compared.
        let versioned = ids.iter().any(|id| {
            std::fs::read_to_string(repo().join(format!("results/cells/{id}/metrics.json")))
                .ok()
                .and_then(|m| serde_json::from_str::<serde_json::Value>(&m).ok())
                .is_some_and(|m| m.get("numerics_version").is_some_and(|v| !v.is_null()))
        });
        if !versioned {
            eprintln!("{name}: index of unversioned cells (older id rule), not compared");
            continue;
        }
        let short: Vec<String> = ids.iter().map(|id| id[..12].to_string()).collect();
        let planned = match planned(&file) {
            Ok(p) => p,
            Err(folder) => {
                eprintln!(
                    "{name}: its data ({}) is not here, not compared",
                    folder.display()
                );
                continue;
            }
        };
        assert_eq!(
            planned,
            short,
            "{name}: planned ids differ from {}",
            index.display()
        );
        compared.push(name);
    }
    for must in ["fig3", "fig5", "table_cifar10"] {
        assert!(compared.iter().any(|c| c == must), "compared: {compared:?}");
    }
}
