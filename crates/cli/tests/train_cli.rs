//! End-to-end tests of `protoclr train` on the real CIFAR-10 files: determinism, kill -9 and
//! resume, and bad input.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_protoclr"))
}

/// The data root: `PROTOCLR_DATA`, else the shared folder beside the repository.
fn data_root() -> PathBuf {
    if let Ok(p) = std::env::var("PROTOCLR_DATA") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets");
    assert!(
        p.join("cifar-10-batches-bin").is_dir(),
        "CIFAR-10 not found: set PROTOCLR_DATA to the folder holding cifar-10-batches-bin/"
    );
    p
}

/// A tiny but real run: 400 images, width-4 ResNet-18, 4 epochs of 4 steps.
const TINY: &[&str] = &[
    "model.width=4",
    "model.proj_hidden=32",
    "model.proj_dim=16",
    "data.per_class=40",
    "train.epochs=4",
    "train.batch_size=100",
    "optim.lr=0.1",
    "eval.train_images=500",
    "eval.test_images=300",
    "eval.linear_epochs=3",
    "eval.knn_k=20",
    "eval.bias_images=40",
    "eval.bias_views=2",
];

fn train_cmd(out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args(["--threads", "2", "train", "--progress", "none", "--out"])
        .arg(out)
        .arg("--data-root")
        .arg(data_root());
    for s in TINY.iter().chain(extra) {
        c.args(["--set", s]);
    }
    c
}

/// metrics.json without the fields that measure time or the machine.
fn comparable(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("metrics.json")).unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    let obj = v.as_object_mut().unwrap();
    for k in ["wall_time_s", "train_images_per_sec"] {
        obj.remove(k);
    }
    for e in obj["epochs"].as_array_mut().unwrap() {
        let e = e.as_object_mut().unwrap();
        e.remove("wall_s");
        e.remove("images_per_sec");
    }
    v
}

#[test]
fn same_seed_same_metrics_and_kill_resume_matches() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let k = tmp.path().join("killed");
    let st = train_cmd(&a, &[]).status().unwrap();
    assert!(st.success());
    let st = train_cmd(&b, &[]).status().unwrap();
    assert!(st.success());
    let ma = comparable(&a);
    assert_eq!(ma, comparable(&b), "two runs of one config and seed differ");
    assert_eq!(ma["status"], "completed");
    assert_eq!(ma["epochs"].as_array().unwrap().len(), 4);

    // Start a third run, kill -9 it once the first epoch's checkpoint is on disk.
    let mut child = train_cmd(&k, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // One file per epoch checkpoint (docs/formats.md): wait for the first one.
    let ckpts = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir.join("checkpoints"))
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().to_string()))
                    .filter(|n| n.starts_with("ckpt-") && n.ends_with(".safetensors"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let t0 = Instant::now();
    while ckpts(&k).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no checkpoint after 120 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "the run finished before it could be killed");
    assert!(!k.join("metrics.json").exists());
    assert!(!ckpts(&k).iter().any(|n| n.ends_with("-e00004.safetensors")));
    // Resume on the same folder: same metrics as the uninterrupted run.
    let st = train_cmd(&k, &[]).status().unwrap();
    assert!(st.success());
    assert_eq!(
        comparable(&k),
        ma,
        "resumed run differs from the uninterrupted one"
    );
}

fn stderr_of(mut c: Command) -> (bool, String) {
    let out = c.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn bad_input_is_one_clear_error_and_keeps_existing_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("metrics.json"), b"{\"keep\": true}").unwrap();

    let (ok, err) = stderr_of(train_cmd(&out, &["loss.tau=0"]));
    assert!(!ok && err.contains("loss.tau"), "{err}");
    let (ok, err) = stderr_of(train_cmd(&out, &["loss.alpha=-1"]));
    assert!(!ok && err.contains("loss.alpha"), "{err}");
    let (ok, err) = stderr_of(train_cmd(&out, &["augment.add=[sharpen]"]));
    assert!(!ok && err.contains("sharpen"), "{err}");
    let (ok, err) = stderr_of(train_cmd(&out, &["optim.momentun=0.9"]));
    assert!(!ok && err.contains("momentun"), "{err}");

    // A config file with an unknown key: the error names the file and the line.
    let cfg = tmp.path().join("bad.yaml");
    std::fs::write(&cfg, "seed: 1\nloss:\n  name: balanced\n  temperature: 0.5\n").unwrap();
    let mut c = Command::new(bin());
    c.args(["train", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(&out)
        .arg("--data-root")
        .arg(data_root());
    let (ok, err) = stderr_of(c);
    assert!(
        !ok && err.contains("bad.yaml") && err.contains("temperature") && err.contains("line 4"),
        "{err}"
    );

    // A missing dataset: the error names the file.
    let empty = tmp.path().join("no-data");
    std::fs::create_dir_all(&empty).unwrap();
    let mut c = Command::new(bin());
    c.args(["train", "--progress", "none", "--out"])
        .arg(&out)
        .arg("--data-root")
        .arg(&empty);
    let (ok, err) = stderr_of(c);
    assert!(!ok && err.contains("cifar-10-batches-bin"), "{err}");

    assert_eq!(
        std::fs::read(out.join("metrics.json")).unwrap(),
        b"{\"keep\": true}"
    );
}

#[test]
fn diverging_run_ends_with_status_diverged() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("div");
    // A learning rate of 1e30 blows the weights up to infinities within a step or two.
    let st = train_cmd(&out, &["optim.lr=1e30", "train.epochs=2"])
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(3));
    let m: Value = serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(m["status"], "diverged");
    assert!(m["eval"].is_null());
    assert!(
        m["diverged"]["what"].as_str().unwrap().contains("non-finite")
            || m["diverged"]["what"].as_str().unwrap().contains("loss")
    );
}

#[test]
fn long_tailed_cifar_run_reports_class_groups() {
    // per_class 40 then ρ = 100: 40, 23, 14, 8, 5, 3, 1, 1, 0, 0 images (95). With thresholds
    // 40·100/1280 = 3.1 and 40·20/1280 = 0.6: five many-shot, three medium, two few-shot classes.
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("lt");
    let extra = [
        "data.imbalance_ratio=100",
        "train.epochs=1",
        "train.batch_size=50",
        "eval.bias_views=0",
        "eval.random_init_reference=true",
    ];
    let (ok, err) = stderr_of(train_cmd(&out, &extra));
    assert!(ok, "{err}");
    let m = comparable(&out);
    assert_eq!(m["train_images"], 95);
    let ev = &m["eval"];
    assert_eq!(
        (&ev["n_many"], &ev["n_medium"], &ev["n_few"]),
        (&Value::from(5), &Value::from(3), &Value::from(2))
    );
    for k in ["linear_many", "linear_medium", "linear_few"] {
        let v = ev[k].as_f64().unwrap_or_else(|| panic!("{k}: {ev}"));
        assert!((0.0..=100.0).contains(&v), "{k} = {v}");
    }
    // The random-init reference is grouped by the same training counts.
    assert_eq!(m["reference"]["n_many"], 5);
}

#[test]
fn the_random_init_reference_is_computed_once_per_setting_and_shared() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("references");
    let with_cache = |out: &str, extra: &[&str]| {
        let mut c = train_cmd(
            &tmp.path().join(out),
            &[&["eval.random_init_reference=true"], extra].concat(),
        );
        c.arg("--reference-cache").arg(&cache);
        assert!(c.status().unwrap().success(), "{out}");
        comparable(&tmp.path().join(out))
    };
    let first = with_cache("first", &["loss.alpha=0.5"]);
    let entries: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    // Computed without the cache, the reference is the same bit for bit: the cache only
    // saves the time.
    let st = train_cmd(
        &tmp.path().join("plain"),
        &["eval.random_init_reference=true", "loss.alpha=0.5"],
    )
    .status()
    .unwrap();
    assert!(st.success());
    assert_eq!(
        comparable(&tmp.path().join("plain"))["reference"],
        first["reference"]
    );
    // A run that differs only in what it trains with reads the stored entry (planted value) ...
    let text = std::fs::read_to_string(&entries[0]).unwrap();
    let real = first["reference"]["linear_top1"].as_f64().unwrap();
    let planted = text.replacen(
        &format!("\"linear_top1\": {}", serde_json::to_string(&real).unwrap()),
        "\"linear_top1\": 12.25",
        1,
    );
    assert_ne!(planted, text);
    std::fs::write(&entries[0], planted).unwrap();
    let other_loss = with_cache("other_loss", &["loss.alpha=1.5", "loss.lambda=0.75"]);
    assert_eq!(other_loss["reference"]["linear_top1"], 12.25);
    assert_ne!(
        other_loss["eval"], first["eval"],
        "a different loss trains a different encoder"
    );
    // ... and one with another seed computes and stores its own.
    let other_seed = with_cache("other_seed", &["loss.alpha=0.5", "seed=7"]);
    assert_ne!(other_seed["reference"], first["reference"]);
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 2);
}
