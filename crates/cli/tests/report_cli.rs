//! `protoclr report` and `protoclr grid` on names and numerics: a profile name that would leave
//! the results folder is refused; mixed numerics need `--allow-mixed-numerics`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use protoclr_formats::{sha256_file, StatusFile};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_protoclr"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn protoclr(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn profile_names_that_leave_the_results_folder_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let deep = tmp.path().join("res_p/a/b");
    let deep_s = deep.to_str().unwrap();
    let out_s = tmp.path().join("out");
    for args in [
        vec![
            "report",
            "fig3",
            "--profile",
            "/../../../escaped2",
            "--results",
            deep_s,
            "--out",
            out_s.to_str().unwrap(),
        ],
        vec![
            "grid",
            "status",
            "experiments/tiny.yaml",
            "--profile",
            "../escaped2",
            "--results",
            deep_s,
        ],
    ] {
        let o = protoclr(&args);
        assert!(!o.status.success(), "{args:?}");
        assert!(
            stderr(&o).contains("profile must be a plain file-name stem"),
            "{}",
            stderr(&o)
        );
    }
    // The same name inside an experiment file: refused at its line.
    let exp = tmp.path().join("e.yaml");
    fs::write(
        &exp,
        "name: e\ndescription: d\nprofiles:\n  cpu: {}\n  paper: {}\n  /../../../escaped2: {}\nseeds: [0]\n\
         report: {kind: table, title: T, rows: [label], metrics: [linear_top1]}\n",
    )
    .unwrap();
    let o = protoclr(&["grid", "status", exp.to_str().unwrap(), "--results", deep_s]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("e.yaml:6:3: a profile name must be a plain file-name stem"),
        "{}",
        stderr(&o)
    );
    let escaped: Vec<_> = walk(tmp.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("escaped2"))
        .collect();
    assert!(escaped.is_empty(), "{escaped:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn mixed_numerics_need_the_flag_and_are_labelled() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    copy_dir(&repo().join("results"), &results);
    // One fig3 cell made unversioned (its metrics.json without `numerics_version`, as written
    // before the field existed; sealed as the grid would, so it stays intact) among the
    // committed version-2 cells.
    let index = fs::read_to_string(results.join("fig3.cpu.csv")).unwrap();
    let id = index
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    let cell = results.join("cells").join(&id);
    let mut m: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(cell.join("metrics.json")).unwrap()).unwrap();
    m.as_object_mut().unwrap().remove("numerics_version");
    fs::write(cell.join("metrics.json"), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let mut st: StatusFile = serde_json::from_slice(&fs::read(cell.join("status.json")).unwrap()).unwrap();
    st.metrics_sha256 = sha256_file(&cell.join("metrics.json"));
    fs::write(cell.join("status.json"), serde_json::to_vec_pretty(&st).unwrap()).unwrap();

    let out = tmp.path().join("figures");
    let args = [
        "report",
        "fig3",
        "--results",
        results.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let o = protoclr(&args);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("v2 (26 cells)")
            && err.contains("unversioned (1 cells)")
            && err.contains("--allow-mixed-numerics"),
        "{err}"
    );
    assert!(!out.join("fig3.svg").exists());
    let mut with_flag = args.to_vec();
    with_flag.push("--allow-mixed-numerics");
    let o = protoclr(&with_flag);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(fs::read_to_string(out.join("fig3.svg"))
        .unwrap()
        .contains("mixed numerics"));
    assert!(fs::read_to_string(out.join("fig3.notes.md"))
        .unwrap()
        .contains("**mixed numerics**"));
}

/// `fig5.yaml` with its `report:` section replaced by `report`.
fn fig5_with_report(report: &str) -> String {
    let text = fs::read_to_string(repo().join("experiments/fig5.yaml")).unwrap();
    let start = text.find("\nreport:\n").unwrap() + 1;
    let end = start + text[start..].find("\n# ").unwrap() + 1;
    format!("{}{report}{}", &text[..start], &text[end..])
}

#[test]
fn an_experiment_file_of_ones_own_is_drawn_as_its_report_section_says() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("experiments/profiles"), &tmp.path().join("profiles"));
    // The committed fig5 cells, seen as a curve: accuracy over λ, one line per α.
    let file = tmp.path().join("fig5.yaml");
    fs::write(
        &file,
        fig5_with_report(
            "report:\n  kind: curve\n  title: Linear accuracy over λ\n  x: loss.lambda\n  \
             value: linear_top1\n  series: loss.alpha\n",
        ),
    )
    .unwrap();
    let out = tmp.path().join("figures");
    let o = protoclr(&[
        "report",
        file.to_str().unwrap(),
        "--results",
        "results",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["fig5.png", "fig5.svg"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let notes = fs::read_to_string(out.join("fig5.notes.md")).unwrap();
    // As many cells as the committed index has done (it grows as the grid runs).
    let index = fs::read_to_string(repo().join("results/fig5.cpu.csv")).unwrap();
    let done = index
        .lines()
        .skip(1)
        .filter(|l| l.split(',').nth(1) == Some("done"))
        .count();
    assert!(done >= 12, "the committed fig5 index has {done} done cells");
    assert!(
        notes.contains(&format!(
            "`results/fig5.cpu.csv`: {done} of 50 cells with metrics"
        )),
        "{notes}"
    );
    // α = 0.5 was trained at every λ on both seeds (the committed index): five points.
    let line = notes
        .lines()
        .find(|l| l.starts_with("- loss.alpha = 0.5: "))
        .unwrap_or_else(|| panic!("{notes}"));
    assert_eq!(line.matches("(n=2)").count(), 5, "{line}");

    // A bad section: refused at its line, naming the key, before anything is drawn.
    fs::write(
        &file,
        fig5_with_report("report:\n  kind: curve\n  title: T\n  x: loss.lambda\n  value: linear_top1\n  series: loss.beta\n"),
    )
    .unwrap();
    let out2 = tmp.path().join("bad");
    let o = protoclr(&["report", file.to_str().unwrap(), "--out", out2.to_str().unwrap()]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("fig5.yaml:") && e.contains("report.series: unknown column `loss.beta`"),
        "{e}"
    );
    assert!(!out2.exists());
}
