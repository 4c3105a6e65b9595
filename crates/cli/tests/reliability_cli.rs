//! Crash safety of `protoclr train` on the real CIFAR-10 files (docs/formats.md, "Checkpoints"):
//! a kill at every step of writing a checkpoint, hand-corrupted checkpoints, SIGTERM/SIGINT, a
//! closed stdout, and the weight-growth divergence rule. Every rerun must give the metrics of an
//! uninterrupted run.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

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

/// A run of about a second: 100 images, width-4 ResNet-18, 2 steps an epoch, small eval.
const TINY: &[&str] = &[
    "model.width=4",
    "model.proj_hidden=32",
    "model.proj_dim=16",
    "data.per_class=10",
    "train.epochs=2",
    "train.batch_size=50",
    "eval.train_images=200",
    "eval.test_images=100",
    "eval.linear_epochs=2",
    "eval.knn_k=10",
    "eval.bias_images=20",
    "eval.bias_views=2",
];

fn train_cmd(out: &Path, extra: &[&str]) -> Command {
    train_with_progress(out, extra, "none")
}

fn train_with_progress(out: &Path, extra: &[&str], progress: &str) -> Command {
    let mut c = Command::new(bin());
    c.args(["--threads", "1", "train", "--progress", progress, "--out"])
        .arg(out)
        .arg("--data-root")
        .arg(data_root())
        .env_remove("PROTOCLR_FAILPOINT");
    for s in TINY.iter().chain(extra) {
        c.args(["--set", s]);
    }
    c
}

fn run(mut c: Command) -> Output {
    c.stdout(Stdio::null()).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
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

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The run's checkpoint files, oldest first.
fn checkpoints(out: &Path) -> Vec<PathBuf> {
    names(&out.join("checkpoints"))
        .into_iter()
        .filter(|n| n.starts_with("ckpt-") && n.ends_with(".safetensors"))
        .map(|n| out.join("checkpoints").join(n))
        .collect()
}

fn baseline(tmp: &Path) -> Value {
    let a = tmp.join("baseline");
    let o = run(train_cmd(&a, &[]));
    assert!(o.status.success(), "{}", stderr(&o));
    comparable(&a)
}

fn assert_no_temps(out: &Path) {
    for dir in [out.to_path_buf(), out.join("checkpoints")] {
        let temps: Vec<String> = names(&dir).into_iter().filter(|n| n.contains(".tmp-")).collect();
        assert!(
            temps.is_empty(),
            "temporary files left in {}: {temps:?}",
            dir.display()
        );
    }
}

#[test]
fn a_kill_at_every_step_of_writing_a_checkpoint_then_a_rerun_gives_the_same_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let want = baseline(tmp.path());
    // Two epochs: 4 points per checkpoint (half-written temporary, before the rename, after
    // it, after the folder fsync), then the deletion of the epoch-1 checkpoint once metrics.json
    // is written: 9 points. Point 10 is never reached.
    for n in 1..=10 {
        let out = tmp.path().join(format!("kill{n}"));
        let mut c = train_cmd(&out, &[]);
        c.env("PROTOCLR_FAILPOINT", format!("ckpt:{n}"));
        let o = run(c);
        if n == 10 {
            assert!(o.status.success(), "point 10 exists: {}", stderr(&o));
            assert_eq!(comparable(&out), want);
            continue;
        }
        assert_eq!(
            o.status.signal(),
            Some(9),
            "point {n} not reached: {}",
            stderr(&o)
        );
        assert_eq!(n == 9, out.join("metrics.json").exists(), "point {n}");
        let o = run(train_cmd(&out, &[]));
        assert!(o.status.success(), "rerun after point {n}: {}", stderr(&o));
        assert_eq!(comparable(&out), want, "rerun after a kill at point {n}");
        assert_no_temps(&out);
        assert_eq!(
            checkpoints(&out).len(),
            1,
            "point {n}: only the final checkpoint is kept"
        );
    }
}

/// A run killed after its epoch-2 checkpoint was published (epochs 1 and 2 on disk, no
/// metrics.json), with three extra epochs planned so that it has to resume.
fn killed_after_epoch_2(out: &Path) {
    let mut c = train_cmd(out, &["train.epochs=3"]);
    c.env("PROTOCLR_FAILPOINT", "ckpt:8");
    let o = run(c);
    assert_eq!(o.status.signal(), Some(9), "{}", stderr(&o));
    assert_eq!(checkpoints(out).len(), 2);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn a_corrupt_checkpoint_is_reported_and_an_older_one_used() {
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full");
    let o = run(train_cmd(&full, &["train.epochs=3"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let want = comparable(&full);
    let killed = tmp.path().join("killed");
    killed_after_epoch_2(&killed);

    type Damage = fn(&mut Vec<u8>);
    let damages: [(&str, Damage); 4] = [
        ("truncated", |b| b.truncate(b.len() / 2)),
        ("garbage header", |b| b[8..40].copy_from_slice(&[b'#'; 32])),
        ("flipped tensor byte", |b| {
            let last = b.len() - 1;
            b[last] ^= 0x40;
        }),
        ("empty", |b| b.clear()),
    ];
    for (what, damage) in damages {
        let out = tmp.path().join(what.replace(' ', "_"));
        copy_dir(&killed, &out);
        let newest = checkpoints(&out).pop().unwrap();
        assert!(newest.to_string_lossy().ends_with("-e00002.safetensors"));
        let mut bytes = std::fs::read(&newest).unwrap();
        damage(&mut bytes);
        std::fs::write(&newest, bytes).unwrap();
        let o = run(train_cmd(&out, &["train.epochs=3"]));
        let err = stderr(&o);
        assert!(o.status.success(), "{what}: {err}");
        assert!(err.contains("e00002.safetensors is unusable"), "{what}: {err}");
        assert!(
            err.contains("resuming from") && err.contains("e00001.safetensors (epoch 1)"),
            "{what}: {err}"
        );
        assert_eq!(comparable(&out), want, "{what}: resumed from epoch 1");
    }
}

#[test]
fn corrupt_checkpoint_files_fall_back_to_epoch_0_not_an_error() {
    // Any layout: damage every file of the checkpoint folder of a finished run, remove its
    // metrics.json, rerun.
    let tmp = tempfile::tempdir().unwrap();
    let want = baseline(tmp.path());
    for how in ["truncate", "garbage"] {
        let out = tmp.path().join(how);
        let o = run(train_cmd(&out, &[]));
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::remove_file(out.join("metrics.json")).unwrap();
        for name in names(&out.join("checkpoints")) {
            let p = out.join("checkpoints").join(&name);
            let mut bytes = std::fs::read(&p).unwrap();
            if how == "truncate" {
                bytes.truncate(bytes.len() / 3);
            } else {
                bytes.splice(
                    0..bytes.len().min(64),
                    b"{ not json at all \x00\xff".iter().copied(),
                );
            }
            std::fs::write(&p, bytes).unwrap();
        }
        let o = run(train_cmd(&out, &[]));
        let err = stderr(&o);
        assert!(o.status.success(), "{how}: {err}");
        assert!(
            err.contains("unusable") && err.contains("starting from epoch 0"),
            "{how}: {err}"
        );
        assert_eq!(comparable(&out), want, "{how}");
    }
}

/// Starts a 6-epoch run with JSON progress, waits for its first epoch line, sends `signal`.
fn signal_after_first_epoch(out: &Path, signal: &str) -> Output {
    let mut c = train_with_progress(out, &["train.epochs=6"], "jsonl");
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = lines
            .next()
            .expect("the run ended before its first epoch")
            .unwrap();
        if line.contains("\"event\":\"epoch\"") {
            break;
        }
    }
    let st = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    std::thread::spawn(move || lines.count()); // keep draining stdout
    child.wait_with_output().unwrap()
}

#[test]
fn sigterm_and_sigint_stop_cleanly_and_the_rerun_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full");
    let o = run(train_cmd(&full, &["train.epochs=6"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let want = comparable(&full);
    for (signal, code, name) in [("-TERM", 143, "SIGTERM"), ("-INT", 130, "SIGINT")] {
        let out = tmp.path().join(name);
        let o = signal_after_first_epoch(&out, signal);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(code), "{name}: {err}");
        assert!(
            err.contains(&format!("stopped by {name}")) && err.contains("rerun"),
            "{err}"
        );
        assert!(!out.join("metrics.json").exists());
        assert_no_temps(&out);
        let done = checkpoints(&out);
        assert!(!done.is_empty() && done.len() <= 2, "{done:?}");
        let o = run(train_cmd(&out, &["train.epochs=6"]));
        assert!(o.status.success(), "{name} rerun: {}", stderr(&o));
        assert_eq!(comparable(&out), want, "{name}: resumed run differs");
    }
}

#[test]
fn a_closed_stdout_stops_progress_lines_not_training() {
    let tmp = tempfile::tempdir().unwrap();
    let want = baseline(tmp.path());
    let out = tmp.path().join("head");
    let mut c = train_with_progress(&out, &[], "jsonl");
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        // `| head -1`: read one line, then close the pipe.
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(first.contains("\"event\""), "{first}");
    }
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(comparable(&out), want);
}

#[test]
fn grid_status_into_a_closed_pipe_ends_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/tiny.yaml");
    let mut child = Command::new(bin())
        .args(["grid", "status"])
        .arg(exp)
        .args(["--profile", "cpu", "--results"])
        .arg(tmp.path().join("results"))
        .arg("--data-root")
        .arg(data_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader is gone before the first line
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(o.status.code(), Some(101), "{err}");
    assert!(
        o.status.success() || o.status.signal() == Some(13),
        "{:?}: {err}",
        o.status
    );
}

#[test]
fn a_huge_learning_rate_is_flagged_as_diverged() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("lr1e6");
    // SGD with lr 1e6 and weight decay 5e-4 multiplies the weights by |1 − lr·wd| ≈ 500 a step;
    // batch norm hides it from the loss (which stays finite and even falls).
    let o = run(train_cmd(&out, &["optim.lr=1e6"]));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let m: Value = serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(m["status"], "diverged");
    assert!(m["eval"].is_null());
    assert_eq!(m["diverged"]["epoch"], 1);
    let what = m["diverged"]["what"].as_str().unwrap();
    assert!(what.contains("train.max_weight_growth"), "{what}");
    assert!(m["epochs"][0]["loss"].as_f64().unwrap().is_finite());
    // The rule is a config key: turned off, the same run completes.
    let off = tmp.path().join("off");
    let o = run(train_cmd(&off, &["optim.lr=1e6", "train.max_weight_growth=.inf"]));
    assert!(o.status.success(), "{}", stderr(&o));
    // A sane learning rate stays far below the limit.
    let o = run(train_cmd(&tmp.path().join("sane"), &["optim.lr=0.1"]));
    assert!(o.status.success(), "{}", stderr(&o));
}

/// A copy of the protoclr binary under `dir` (a hard link where the file system allows), for a
/// test that replaces it while it runs.
fn own_binary(dir: &Path) -> PathBuf {
    let exe = dir.join("protoclr");
    if std::fs::hard_link(bin(), &exe).is_err() {
        std::fs::copy(bin(), &exe).unwrap();
    }
    exe
}

/// What `mv new-build protoclr` does to a running binary: another file renamed over its path.
fn replace_with_junk(exe: &Path) {
    let junk = exe.with_extension("new");
    std::fs::write(&junk, b"#!/bin/sh\nexit 3\n").unwrap();
    std::fs::rename(&junk, exe).unwrap();
}

#[test]
fn a_run_whose_binary_is_replaced_while_it_trains_still_finishes() {
    // The run hashes its own executable for the reference cache key only at evaluation,
    // seconds after it started; by then the file it was started from is another one.
    let tmp = tempfile::tempdir().unwrap();
    let exe = own_binary(tmp.path());
    let cache = tmp.path().join("references");
    let mut c = train_cmd(&tmp.path().join("out"), &["eval.random_init_reference=true"]);
    c.arg("--reference-cache").arg(&cache);
    let mut cmd = Command::new(&exe);
    cmd.args(c.get_args()).env_remove("PROTOCLR_FAILPOINT");
    let child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    replace_with_junk(&exe);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // The key names the binary that ran, not the file now at its path.
    let entry = std::fs::read_dir(&cache).unwrap().next().unwrap().unwrap().path();
    let v: Value = serde_json::from_str(&std::fs::read_to_string(entry).unwrap()).unwrap();
    assert_eq!(
        v["inputs"]["executable_sha256"].as_str(),
        protoclr_formats::sha256_file(&bin()).as_deref()
    );
}

#[test]
fn a_grid_whose_binary_is_replaced_while_it_runs_starts_its_cells_from_the_running_one() {
    // One worker, three cells of a second or so: at least the later cells start after the
    // replacement, and each must run the grid's own binary, not the file now at its path.
    let tmp = tempfile::tempdir().unwrap();
    let exe = own_binary(tmp.path());
    let results = tmp.path().join("results");
    let child = Command::new(&exe)
        .args(["grid", "run"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/tiny.yaml"))
        .args([
            "--profile",
            "cpu",
            "--workers",
            "1",
            "--cell-threads",
            "1",
            "--no-progress",
        ])
        .arg("--results")
        .arg(&results)
        .arg("--data-root")
        .arg(data_root())
        .env_remove("PROTOCLR_FAILPOINT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    replace_with_junk(&exe);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let done: Vec<String> = std::fs::read_dir(results.join("cells"))
        .unwrap()
        .map(|e| {
            let text = std::fs::read_to_string(e.unwrap().path().join("status.json")).unwrap();
            let v: Value = serde_json::from_str(&text).unwrap();
            v["status"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(done, ["done", "done", "done"]);
}
