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
        ("table_cifar10", 21),
        ("table_cifar100", 21),
        ("long_tail", 18),
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
