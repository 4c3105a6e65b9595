//! The experiment files of the repository parse, validate and expand to the intended grids.

use protoclr_grid::expand::expand;
use protoclr_grid::spec::Experiment;
use protoclr_grid::value::get_dotted;
use std::path::PathBuf;

fn experiments() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../experiments")
}

#[test]
fn every_experiment_file_expands() {
    let expected = [
        ("fig3", 27),
        ("fig4", 50),
        ("fig5", 50),
        ("table_cifar10", 27),
        ("table_cifar100", 27),
        ("long_tail", 36),
        ("tiny", 3),
    ];
    for (name, n) in expected {
        let path = experiments().join(format!("{name}.yaml"));
        let exp = Experiment::load(&path).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(exp.name, name);
        assert!(
            exp.description.contains("reconstruction"),
            "{name}: the description says the balanced-loss layout is our reconstruction"
        );
        for profile in ["cpu", "paper"] {
            let cells = expand(&exp, profile).unwrap_or_else(|e| panic!("{e:#}"));
            assert_eq!(cells.len(), n, "{name} {profile}");
        }
    }
}

#[test]
fn cpu_profiles_share_one_sizing_file() {
    let cpu: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(experiments().join("profiles/cpu.yaml")).unwrap())
            .unwrap();
    for name in ["fig3", "fig4", "fig5", "table_cifar10", "long_tail"] {
        let exp = Experiment::load(&experiments().join(format!("{name}.yaml"))).unwrap();
        let cells = expand(&exp, "cpu").unwrap();
        for key in ["model.width", "train.epochs", "train.batch_size", "optim.lr"] {
            assert_eq!(
                get_dotted(&cells[0].partial, key),
                get_dotted(&cpu, key),
                "{name} {key}"
            );
        }
    }
    let fig3 = Experiment::load(&experiments().join("fig3.yaml")).unwrap();
    let cells = expand(&fig3, "cpu").unwrap();
    let labels: Vec<&str> = cells
        .iter()
        .step_by(3)
        .map(|c| c.label.as_deref().unwrap())
        .collect();
    assert_eq!(labels[0], "base");
    assert_eq!(labels[1], "base − crop");
    assert_eq!(labels[5], "base + blur");
}

#[test]
fn fig4_cpu_is_imagenette_and_long_tail_adds_imagenette_lt() {
    use serde_norway::Value;
    let s = |v: &str| Value::String(v.into());
    let fig4 = Experiment::load(&experiments().join("fig4.yaml")).unwrap();
    let cells = expand(&fig4, "cpu").unwrap();
    for c in &cells {
        let p = &c.partial;
        assert_eq!(get_dotted(p, "data.dataset"), Some(&s("imagefolder")));
        assert_eq!(get_dotted(p, "data.train_dir"), Some(&s("imagenette2-224/train")));
        assert_eq!(get_dotted(p, "data.val_dir"), Some(&s("imagenette2-224/val")));
        // cpu.yaml's per_class (1,000, more than any Imagenette class holds) is unset.
        assert_eq!(get_dotted(p, "data.per_class"), Some(&Value::Null));
        assert_eq!(get_dotted(p, "model.stem"), Some(&s("imagenet")));
        assert_eq!(get_dotted(p, "augment.size"), Some(&Value::from(64)));
    }
    // The paper profile stays the paper's ImageNet setting.
    let paper = expand(&fig4, "paper").unwrap();
    assert_eq!(
        get_dotted(&paper[0].partial, "data.train_dir"),
        Some(&s("imagenet/train"))
    );
    assert_eq!(
        get_dotted(&paper[0].partial, "augment.size"),
        Some(&Value::from(224))
    );
    assert_eq!(get_dotted(&paper[0].partial, "model.arch"), Some(&s("resnet50")));

    let lt = Experiment::load(&experiments().join("long_tail.yaml")).unwrap();
    let cells = expand(&lt, "cpu").unwrap();
    let (nette, cifar): (Vec<_>, Vec<_>) = cells
        .iter()
        .partition(|c| c.label.as_deref().unwrap().contains("Imagenette-LT"));
    assert_eq!((nette.len(), cifar.len()), (18, 18));
    for c in &nette {
        let p = &c.partial;
        let rho = if c.label.as_deref().unwrap().contains("ρ = 100") {
            100
        } else {
            10
        };
        assert_eq!(
            get_dotted(p, "data.train_list"),
            Some(&s(&format!("imagenette2-lt{rho}/train.txt")))
        );
        assert_eq!(get_dotted(p, "data.list_root"), Some(&s("imagenette2-224")));
        assert_eq!(get_dotted(p, "data.per_class"), Some(&Value::Null));
        assert_eq!(get_dotted(p, "data.imbalance_ratio"), Some(&Value::Null));
        assert_eq!(get_dotted(p, "model.stem"), Some(&s("imagenet")));
    }
    for c in &cifar {
        let p = &c.partial;
        assert_eq!(get_dotted(p, "data.dataset"), Some(&s("cifar10")));
        assert_eq!(get_dotted(p, "data.per_class"), Some(&Value::from(1000)));
        assert_eq!(get_dotted(p, "data.train_list"), Some(&Value::Null));
        assert_eq!(get_dotted(p, "model.stem"), Some(&s("cifar")));
    }
}

/// A backend that resolves a partial config to itself: cell ids then hash exactly what the
/// experiment file contributes (base, profile, varied keys, seed).
struct Identity;

impl protoclr_grid::Backend for Identity {
    fn resolve(&self, partial: serde_norway::Value, _origin: &str) -> anyhow::Result<serde_norway::Value> {
        Ok(partial)
    }
    fn fingerprint(&self, _resolved: &serde_norway::Value) -> anyhow::Result<String> {
        Ok("dataset".into())
    }
    fn numerics_version(&self) -> u32 {
        2
    }
    fn train_command(&self, _: &std::path::Path, _: &std::path::Path, _: usize) -> std::process::Command {
        std::process::Command::new("true")
    }
}

/// The text of an experiment file with its `report:` section replaced by `report`: the section
/// runs from its `report:` line to the next line that starts at column 0.
fn with_report(text: &str, report: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in text.split_inclusive('\n') {
        if line.starts_with("report:") {
            inside = true;
            out.push_str(report);
            continue;
        }
        if inside && (line.starts_with(' ') || line.trim().is_empty()) {
            continue;
        }
        inside = false;
        out.push_str(line);
    }
    out
}

#[test]
fn the_report_section_never_changes_a_cell_id() {
    use protoclr_grid::{Plan, Stage};
    let mut files: Vec<PathBuf> = std::fs::read_dir(experiments())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 7, "{files:?}");
    let ids = |path: &std::path::Path, text: String, profile: &str| -> Vec<String> {
        let exp = Experiment::parse(path, text).unwrap_or_else(|e| panic!("{e:#}"));
        let plan = Plan::build(&exp, profile, &Identity).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(plan.stage, Stage::Grid);
        plan.cells.into_iter().map(|c| c.id).collect()
    };
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        for profile in ["cpu", "paper"] {
            let original = ids(path, text.clone(), profile);
            assert!(!original.is_empty());
            // Another kind with other options, and the smallest section.
            for report in [
                "report: {kind: table, title: Other, rows: [seed], metrics: [knn_top1], optional: true}\n",
                "report:\n  kind: scatter\n  title: S\n  x: bias_rel\n  y: knn_top1\n  labels: none\n  fit: false\n",
            ] {
                let changed = with_report(&text, report);
                assert_ne!(changed, text);
                assert_eq!(ids(path, changed, profile), original, "{} {profile}", path.display());
            }
        }
    }
}
