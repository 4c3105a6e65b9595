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
