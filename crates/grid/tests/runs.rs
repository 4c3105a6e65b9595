//! The runner for real: child processes, cache, locks, failures, stop and resume, `kill -9`.

mod common;

use common::{write_exp, Fake};
use protoclr_grid::cache::{CellState, Pending};
use protoclr_grid::runner::{run, run_cell, RunOptions};
use protoclr_grid::spec::Experiment;
use protoclr_grid::{Plan, Results};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn opts(workers: usize) -> RunOptions {
    let mut o = RunOptions::new(workers, 1);
    o.progress = false;
    o
}

fn plan(path: &Path, fake: &Fake) -> Plan {
    Plan::build(&Experiment::load(path).unwrap(), "cpu", fake).unwrap()
}

#[test]
fn cache_hits_and_one_entry_for_a_cell_of_two_experiments() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path());
    let results = Results::new(dir.path().join("results"));
    let a = write_exp(dir.path(), "a", "grid:\n  x: [1, 2, 3]\n");
    // The same cell x = 2 spelled differently, keys in another order.
    let b = write_exp(dir.path(), "b", "base: {epochs: 2.0, x: 2.0}\nseeds: [0, 1]\n");
    let pa = plan(&a, &fake);
    let pb = plan(&b, &fake);
    assert_eq!(pa.cells.len(), 3);
    assert_eq!(pb.cells.len(), 2);
    assert_eq!(pa.cells[1].id, pb.cells[0].id, "x=2 seed 0 is one cell");

    let s = run(&pa, &results, &fake, &opts(2)).unwrap();
    assert_eq!((s.cells, s.cached, s.done, s.failed), (3, 0, 3, 0));
    for c in &pa.cells {
        assert!(matches!(results.state(&c.id), CellState::Done(_)));
        assert_eq!(fake.completions(&c.id), 1);
    }
    // Rerun: every cell is a cache hit, nothing is started.
    let starts = fake.log_lines().iter().filter(|l| l.starts_with("start")).count();
    let s = run(&pa, &results, &fake, &opts(2)).unwrap();
    assert_eq!((s.cached, s.done), (3, 0));
    assert_eq!(
        fake.log_lines().iter().filter(|l| l.starts_with("start")).count(),
        starts
    );
    // The other experiment runs only its new cell.
    let s = run(&pb, &results, &fake, &opts(1)).unwrap();
    assert_eq!((s.cached, s.done), (1, 1));
    assert_eq!(fake.completions(&pb.cells[0].id), 1);

    // The index follows docs/formats.md.
    let csv = std::fs::read_to_string(dir.path().join("results/a.cpu.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "cell_id,status,label,seed,x,linear_top1,linear_top5,knn_top1,knn_top5,bias_l2,bias_l2_lo,bias_l2_hi,bias_cos,wall_time_s"
    );
    assert_eq!(lines.len(), 4);
    assert_eq!(
        lines[2],
        format!("{},done,,0,2,2,90,40.5,88,0.4,0.35,0.45,0.1,2.5", pa.cells[1].id)
    );
    // Files of a done cell.
    let cell = results.cell_dir(&pa.cells[0].id);
    for f in ["config.yaml", "metrics.json", "train.log", "status.json"] {
        assert!(cell.join(f).exists(), "{f}");
    }
    assert!(results.checkpoint_dir(&pa.cells[0].id).join("epoch").exists());
    let log = std::fs::read_to_string(cell.join("train.log")).unwrap();
    assert!(
        log.contains("fake train: resuming after epoch 0") && log.contains("\"event\":\"epoch\""),
        "{log}"
    );
}

#[test]
fn temporary_files_of_killed_writers_are_swept_when_a_runner_starts() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path());
    let results = Results::new(dir.path().join("results"));
    let e = write_exp(dir.path(), "a", "grid:\n  x: [1, 2]\n");
    let pa = plan(&e, &fake);
    run(&pa, &results, &fake, &opts(1)).unwrap();
    // A writer killed mid-write leaves `.NAME.tmp-PID-N`; a live writer's file is in progress.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let live = std::process::id();
    let cell = results.cell_dir(&pa.cells[0].id);
    let stale = [
        results.root.join(format!(".a.cpu.csv.tmp-{dead}-0")),
        cell.join(format!(".status.json.tmp-{dead}-1")),
    ];
    let kept = results.root.join(format!(".a.cpu.csv.tmp-{live}-9"));
    for p in stale.iter().chain([&kept]) {
        std::fs::write(p, b"partial").unwrap();
    }
    let s = run(&pa, &results, &fake, &opts(1)).unwrap();
    assert_eq!(s.cached, 2);
    for p in &stale {
        assert!(!p.exists(), "{} left behind", p.display());
    }
    assert!(kept.exists());
    // The grid's own temporary files follow the same naming (none are left by a finished run).
    let names: Vec<String> = std::fs::read_dir(&results.root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert_eq!(names, [format!(".a.cpu.csv.tmp-{live}-9")]);
}

#[test]
fn cells_of_other_numerics_are_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let mut fake = Fake::new(dir.path());
    let results = Results::new(dir.path().join("results"));
    let e = write_exp(dir.path(), "a", "grid:\n  x: [1, 2]\n");
    let old = plan(&e, &fake);
    let s = run(&old, &results, &fake, &opts(1)).unwrap();
    assert_eq!((s.cells, s.done), (2, 2));
    // The training code changes its numerics: the same experiment, new ids, nothing cached.
    fake.numerics = 8;
    let new = plan(&e, &fake);
    for (a, b) in old.cells.iter().zip(&new.cells) {
        assert_ne!(a.id, b.id, "{}", a.describe());
        assert!(matches!(results.state(&b.id), CellState::Pending(Pending::New)));
    }
    let s = run(&new, &results, &fake, &opts(1)).unwrap();
    assert_eq!(
        (s.cached, s.done),
        (0, 2),
        "cells of numerics 7 reused under numerics 8"
    );
    // The old cells stay on disk under their old ids.
    for c in &old.cells {
        assert!(matches!(results.state(&c.id), CellState::Done(_)));
    }
}

#[test]
fn failures_are_isolated_recorded_and_retried_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path());
    let results = Results::new(dir.path().join("results"));
    let e = write_exp(
        dir.path(),
        "f",
        "zip:\n  - label: [ok, bad, nan]\n    fail: [false, true, false]\n    diverge: [false, false, true]\nseeds: [0, 1]\n",
    );
    let p = plan(&e, &fake);
    let s = run(&p, &results, &fake, &opts(2)).unwrap();
    assert_eq!((s.done, s.failed, s.diverged), (2, 2, 2));
    assert_eq!(s.failures.len(), 2);
    let bad = &p.cells[2];
    assert_eq!(bad.spec.label.as_deref(), Some("bad"));
    match results.state(&bad.id) {
        CellState::Failed(st) => {
            assert_eq!(st.exit_code, Some(1));
            assert!(st.error.as_deref().unwrap().contains("boom"), "{st:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!results.cell_dir(&bad.id).join("metrics.json").exists());
    match results.state(&p.cells[4].id) {
        CellState::Diverged(st) => assert!(st.metrics_sha256.is_some()),
        other => panic!("{other:?}"),
    }
    let csv = std::fs::read_to_string(results.index_path("f", "cpu")).unwrap();
    let statuses: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["done", "done", "failed", "failed", "diverged", "diverged"]
    );
    // Without --retry-failed nothing runs again, but the failed cells are still counted (the
    // CLI exits non-zero on them); with it, failed and diverged cells run again.
    let s = run(&p, &results, &fake, &opts(2)).unwrap();
    assert_eq!((s.cached, s.done + s.diverged), (6, 0));
    assert_eq!((s.failed, s.failed_earlier, s.failures.len()), (2, 2, 2), "{s:?}");
    let mut o = opts(2);
    o.retry_failed = true;
    let s = run(&p, &results, &fake, &o).unwrap();
    assert_eq!((s.cached, s.failed, s.diverged), (2, 2, 2));
}

#[test]
fn corrupt_or_partial_entries_are_detected_and_redone() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path());
    let results = Results::new(dir.path().join("results"));
    let e = write_exp(dir.path(), "c", "grid:\n  x: [1, 2, 3]\n");
    let p = plan(&e, &fake);
    run(&p, &results, &fake, &opts(1)).unwrap();
    let (c0, c1, c2) = (&p.cells[0].id, &p.cells[1].id, &p.cells[2].id);
    // A corrupt metrics.json (changed after the status was written).
    let m = results.cell_dir(c0).join("metrics.json");
    let text = std::fs::read_to_string(&m).unwrap();
    std::fs::write(&m, text.replace("\"linear_top1\": 1", "\"linear_top1\": 99")).unwrap();
    assert!(matches!(
        results.state(c0),
        CellState::Pending(Pending::Corrupt(_))
    ));
    // A truncated status.json.
    std::fs::write(results.cell_dir(c1).join("status.json"), "{\"status\": \"do").unwrap();
    assert!(matches!(
        results.state(c1),
        CellState::Pending(Pending::Corrupt(_))
    ));
    // A finished metrics.json whose status file was never written (crash between the writes).
    std::fs::remove_file(results.cell_dir(c2).join("status.json")).unwrap();
    assert_eq!(results.state(c2), CellState::Pending(Pending::Interrupted));

    let s = run(&p, &results, &fake, &opts(1)).unwrap();
    assert_eq!(s.done, 3);
    for c in &p.cells {
        assert!(matches!(results.state(&c.id), CellState::Done(_)));
    }
    assert_eq!(fake.completions(c0), 2, "corrupt metrics: trained again");
    assert_eq!(fake.completions(c1), 2, "unreadable status: trained again");
    assert_eq!(fake.completions(c2), 1, "finished metrics adopted, not retrained");
    let fixed = std::fs::read_to_string(&m).unwrap();
    assert!(fixed.contains("\"linear_top1\": 1,"), "{fixed}");
}

#[test]
fn two_runners_on_one_results_folder_never_run_the_same_cell() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path());
    let results = Results::new(dir.path().join("results"));
    let e = write_exp(
        dir.path(),
        "two",
        "base: {sleep: 0.05}\ngrid:\n  x: [1, 2, 3, 4, 5, 6]\n",
    );
    let p = plan(&e, &fake);
    let (s1, s2) = std::thread::scope(|sc| {
        let h1 = sc.spawn(|| run(&p, &results, &fake, &opts(2)).unwrap());
        let h2 = sc.spawn(|| run(&p, &results, &fake, &opts(2)).unwrap());
        (h1.join().unwrap(), h2.join().unwrap())
    });
    assert_eq!(s1.done + s2.done, 6, "{s1:?} {s2:?}");
    for c in &p.cells {
        assert_eq!(fake.completions(&c.id), 1);
        assert_eq!(
            fake.log_lines()
                .iter()
                .filter(|l| l.starts_with(&format!("start {}", c.id)))
                .count(),
            1
        );
    }
}

#[test]
fn stop_request_interrupts_and_rerun_resumes_mid_cell() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path());
    let results = Results::new(dir.path().join("results"));
    let e = write_exp(
        dir.path(),
        "s",
        "base: {sleep: 0.2, epochs: 4}\ngrid:\n  x: [1, 2]\n",
    );
    let p = plan(&e, &fake);
    let o = opts(2);
    let stop = o.stop.clone();
    let ckpt = results.checkpoint_dir(&p.cells[0].id).join("epoch");
    let s = std::thread::scope(|sc| {
        sc.spawn(|| {
            let t = Instant::now();
            while !ckpt.exists() && t.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(20));
            }
            stop.store(true, Ordering::SeqCst);
        });
        run(&p, &results, &fake, &o).unwrap()
    });
    assert!(s.stopped);
    assert_eq!(s.interrupted, 2, "{s:?}");
    for c in &p.cells {
        assert_eq!(results.state(&c.id), CellState::Pending(Pending::Interrupted));
        assert!(!results.lock_path(&c.id).exists());
    }
    let s = run(&p, &results, &fake, &opts(2)).unwrap();
    assert_eq!(s.done, 2);
    let id = &p.cells[0].id;
    let lines = fake.log_lines();
    // The second start of the cell resumed after the checkpointed epoch, and no epoch ran twice
    // except, at most, the one in progress at the stop.
    let starts: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with(&format!("start {id}")))
        .collect();
    assert_eq!(starts.len(), 2);
    assert_ne!(starts[1].as_str(), format!("start {id} 0"), "{lines:?}");
    let epochs = lines
        .iter()
        .filter(|l| l.starts_with(&format!("epoch {id}")))
        .count();
    assert!(epochs <= 5, "{lines:?}");
    assert_eq!(fake.completions(id), 1);
}

#[test]
fn run_cell_waits_for_nothing_and_reports_state() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path());
    let results = Results::new(dir.path().join("results"));
    let e = write_exp(dir.path(), "one", "grid:\n  x: [7, 8]\n");
    let p = plan(&e, &fake);
    let st = run_cell(&p, &p.cells[1], &results, &fake, &opts(1)).unwrap();
    assert!(matches!(st, CellState::Done(_)));
    assert!(matches!(
        results.state(&p.cells[0].id),
        CellState::Pending(Pending::New)
    ));
    // Again: already done, not retrained.
    run_cell(&p, &p.cells[1], &results, &fake, &opts(1)).unwrap();
    assert_eq!(fake.completions(&p.cells[1].id), 1);
}

#[test]
fn resolve_errors_point_at_the_varied_key() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path());
    let e = write_exp(dir.path(), "bad", "grid:\n  x: [1]\n  y: [2]\n");
    let err = format!(
        "{:#}",
        Plan::build(&Experiment::load(&e).unwrap(), "cpu", &fake).unwrap_err()
    );
    assert!(err.starts_with(&format!("{}:9:3: ", e.display())), "{err}");
    assert!(err.contains("`y`"), "{err}");
}

/// Entry point of the runner process that `kill9_of_the_runner_mid_cell_loses_nothing` starts
/// (this test binary again, with `GRID_TEST_RUNNER` set); does nothing in a normal test run.
#[test]
#[ignore = "child-process entry point of the kill -9 test"]
fn runner_process() {
    let Ok(dir) = std::env::var("GRID_TEST_RUNNER") else {
        return;
    };
    let dir = Path::new(&dir);
    let fake = Fake::new(dir);
    let p = plan(&dir.join("k.yaml"), &fake);
    let o = opts(2);
    if std::env::var("GRID_TEST_SIGNALS").is_ok() {
        protoclr_grid::install_stop_handler(o.stop.clone()).unwrap();
    }
    let s = run(&p, &Results::new(dir.join("results")), &fake, &o).unwrap();
    std::fs::write(
        dir.join("summary.txt"),
        format!("stopped={} interrupted={}", s.stopped, s.interrupted),
    )
    .unwrap();
}

/// Starts the runner process on `dir/k.yaml` and waits until a cell is done and another is
/// mid-way (a checkpoint but no metrics); returns the process and the mid-way cell.
#[allow(clippy::zombie_processes)] // the caller waits for the returned child
fn start_runner_mid_cell(
    dir: &Path,
    p: &Plan,
    results: &Results,
    fake: &Fake,
    signals: bool,
) -> (std::process::Child, String) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "runner_process",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("GRID_TEST_RUNNER", dir)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if signals {
        cmd.env("GRID_TEST_SIGNALS", "1");
    }
    let mut runner = cmd.spawn().unwrap();
    let t = Instant::now();
    loop {
        if t.elapsed() > Duration::from_secs(60) {
            runner.kill().unwrap();
            runner.wait().unwrap();
            panic!("runner made no progress: {:?}", fake.log_lines());
        }
        let done = p
            .cells
            .iter()
            .any(|c| matches!(results.recorded_state(&c.id), CellState::Done(_)));
        // Mid-way with at least half of its 12 epochs (≥ 1.8 s) to go, so that a loaded machine
        // cannot finish it between this check and the signal.
        let mid = p.cells.iter().find(|c| {
            let epoch = std::fs::read_to_string(results.checkpoint_dir(&c.id).join("epoch"))
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok());
            epoch.is_some_and(|e| e <= 6) && !results.cell_dir(&c.id).join("metrics.json").exists()
        });
        if let (true, Some(c)) = (done, mid) {
            return (runner, c.id.clone());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn kill9_of_the_runner_mid_cell_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path());
    let results = Results::new(dir.path().join("results"));
    let e = write_exp(
        dir.path(),
        "k",
        "base: {sleep: 0.15, epochs: 12}\ngrid:\n  x: [1, 2, 3, 4, 5]\n",
    );
    let p = plan(&e, &fake);

    let (mut runner, mid_cell) = start_runner_mid_cell(dir.path(), &p, &results, &fake, false);
    runner.kill().unwrap(); // SIGKILL
    runner.wait().unwrap();

    // Its training children die with it (no trainer keeps writing into the cache).
    let lock = protoclr_grid::lock::peek(&results.lock_path(&mid_cell))
        .expect("the dead runner's lock is left")
        .0;
    let child = lock.child_pid.expect("the lock names the training child");
    let t = Instant::now();
    while protoclr_grid::lock::pid_alive(child, lock.child_start) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "training child {child} survived the runner"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(results.state(&mid_cell), CellState::Pending(Pending::Interrupted));

    // Rerun: the stale locks are taken over, every cell ends done, each completed exactly once,
    // and the interrupted cell resumed from its checkpoint.
    let s = run(&p, &results, &fake, &opts(2)).unwrap();
    assert_eq!(s.failed, 0);
    for c in &p.cells {
        assert!(matches!(results.state(&c.id), CellState::Done(_)), "{}", c.id);
        // Never trained to completion twice. A parallel trainer that the kill caught between
        // writing its metrics.json and logging "complete" has those finished metrics adopted
        // (not retrained), so it may show no "complete" line; the interrupted one must finish.
        let n = fake.completions(&c.id);
        assert!(
            n == 1 || (n == 0 && c.id != mid_cell),
            "{}: {n} completions: {:?}",
            c.id,
            fake.log_lines()
        );
        assert!(!results.lock_path(&c.id).exists());
    }
    let lines = fake.log_lines();
    let starts: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with(&format!("start {mid_cell}")))
        .collect();
    assert_eq!(starts.len(), 2, "{lines:?}");
    assert_ne!(
        starts[1].as_str(),
        format!("start {mid_cell} 0"),
        "resumed from its checkpoint: {lines:?}"
    );
}

#[test]
fn ctrl_c_stops_the_runner_cleanly_and_a_rerun_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path());
    let results = Results::new(dir.path().join("results"));
    let e = write_exp(
        dir.path(),
        "k",
        "base: {sleep: 0.15, epochs: 12}\ngrid:\n  x: [1, 2, 3, 4, 5]\n",
    );
    let p = plan(&e, &fake);
    let (mut runner, mid_cell) = start_runner_mid_cell(dir.path(), &p, &results, &fake, true);
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(runner.id() as libc::pid_t, libc::SIGINT) };
    let status = runner.wait().unwrap();
    assert!(
        status.success(),
        "the runner returns normally after a stop: {status:?}"
    );
    let summary = std::fs::read_to_string(dir.path().join("summary.txt")).unwrap();
    assert!(summary.starts_with("stopped=true interrupted="), "{summary}");
    assert_ne!(summary, "stopped=true interrupted=0");
    // No lock is left, no child survives, the interrupted cells are resumable.
    for c in &p.cells {
        assert!(!results.lock_path(&c.id).exists());
        assert!(
            matches!(results.state(&c.id), CellState::Done(_) | CellState::Pending(_)),
            "{}",
            c.id
        );
    }
    assert_eq!(results.state(&mid_cell), CellState::Pending(Pending::Interrupted));
    let s = run(&p, &results, &fake, &opts(2)).unwrap();
    assert_eq!(s.failed, 0);
    for c in &p.cells {
        assert!(matches!(results.state(&c.id), CellState::Done(_)));
        // As in the kill -9 test: finished metrics written just before the stop are adopted.
        let n = fake.completions(&c.id);
        assert!(
            n == 1 || (n == 0 && c.id != mid_cell),
            "{}: {n} completions: {:?}",
            c.id,
            fake.log_lines()
        );
    }
    let lines = fake.log_lines();
    let starts: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with(&format!("start {mid_cell}")))
        .collect();
    assert_eq!(starts.len(), 2, "{lines:?}");
    assert_ne!(
        starts[1].as_str(),
        format!("start {mid_cell} 0"),
        "resumed from its checkpoint: {lines:?}"
    );
}

#[test]
fn slurm_job_freezes_the_pending_cells_and_tasks_run_them() {
    use protoclr_grid::slurm::{list_entry, write_job, SlurmOptions};
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path());
    let results = Results::new(dir.path().join("results"));
    let e = write_exp(dir.path(), "sl", "grid:\n  x: [1, 2, 3]\n");
    let p = plan(&e, &fake);
    run_cell(&p, &p.cells[0], &results, &fake, &opts(1)).unwrap();
    let o = SlurmOptions {
        protoclr: "/opt/protoclr bin/protoclr".into(),
        file: e.clone(),
        profile: "cpu".into(),
        results: results.root.clone(),
        data_root: Some("/data".into()),
        partition: Some("gpu".into()),
        gpus: 1,
        cpus: 8,
        time: "02:00:00".into(),
        mem: "32G".into(),
        max_parallel: Some(2),
        retry_failed: false,
        extra: vec!["--account=abc".into()],
        device: Some("cuda:0".into()),
    };
    let job = write_job(&p, &results, &o).unwrap().unwrap();
    assert_eq!(job.tasks, 2, "the done cell is not in the array");
    let script = std::fs::read_to_string(&job.script).unwrap();
    for line in [
        "#SBATCH --array=0-1%2",
        "#SBATCH --partition=gpu",
        "#SBATCH --gres=gpu:1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --time=02:00:00",
        "#SBATCH --mem=32G",
        "#SBATCH --account=abc",
    ] {
        assert!(script.lines().any(|l| l == line), "{line} in\n{script}");
    }
    assert!(
        script.contains("exec '/opt/protoclr bin/protoclr' grid run-cell "),
        "{script}"
    );
    assert!(
        script.contains(
            "--index \"$SLURM_ARRAY_TASK_ID\" --cell-threads \"${SLURM_CPUS_PER_TASK:-8}\" --data-root /data --device cuda:0"
        ),
        "{script}"
    );
    assert_eq!(list_entry(&job.list, 0).unwrap(), p.cells[1].id);
    assert_eq!(list_entry(&job.list, 1).unwrap(), p.cells[2].id);
    assert!(list_entry(&job.list, 2).is_err());
    // The frozen list keeps its indices when the results change; each task runs its cell.
    run_cell(&p, &p.cells[2], &results, &fake, &opts(1)).unwrap();
    for i in 0..2 {
        let id = list_entry(&job.list, i).unwrap();
        let cell = p.cells.iter().find(|c| c.id == id).unwrap();
        assert!(matches!(
            run_cell(&p, cell, &results, &fake, &opts(1)).unwrap(),
            CellState::Done(_)
        ));
    }
    assert!(p.cells.iter().all(|c| fake.completions(&c.id) == 1));
    // Nothing pending: no job.
    assert!(write_job(&p, &results, &o).unwrap().is_none());
}

/// The arguments sbatch reads from a script's `#SBATCH` lines, tokenized as sbatch does
/// (`_opt_batch_script` / `_get_argument` in Slurm's `src/sbatch/opt.c`): the first line is
/// skipped, blank and comment lines are skipped, the first other line ends the options; in an
/// `#SBATCH` line arguments are split at white space, `"…"` and `'…'` group, `\` escapes the next
/// character, and an unquoted `#` starts a comment. Returns the arguments and the number of
/// `#SBATCH` lines sbatch read.
fn sbatch_args(script: &str) -> (Vec<String>, usize) {
    let mut args = Vec::new();
    let mut read = 0;
    for line in script.lines().skip(1) {
        let Some(rest) = line.strip_prefix("#SBATCH") else {
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            break;
        };
        read += 1;
        let mut chars = rest.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            let (mut arg, mut quote, mut any) = (String::new(), None::<char>, false);
            while let Some(&c) = chars.peek() {
                if quote.is_none() && c.is_whitespace() {
                    break;
                }
                chars.next();
                match (c, quote) {
                    ('\\', _) => arg.extend(chars.next()),
                    (q, Some(open)) if q == open => quote = None,
                    ('"' | '\'', None) => quote = Some(c),
                    ('#', None) => {
                        chars.by_ref().for_each(drop);
                        break;
                    }
                    _ => arg.push(c),
                }
                any = true;
            }
            assert!(quote.is_none(), "unmatched quote in {line:?}");
            if !any {
                break;
            }
            if !arg.is_empty() {
                args.push(arg);
            }
        }
    }
    (args, read)
}

#[test]
fn slurm_script_quotes_every_value_for_its_reader_and_refuses_control_characters() {
    use protoclr_grid::slurm::{write_job, SlurmOptions};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("my dir");
    std::fs::create_dir_all(&dir).unwrap();
    let fake = Fake::new(&dir);
    let results = Results::new(dir.join("my results"));
    std::fs::create_dir_all(&results.root).unwrap();
    let results = Results::new(results.root.canonicalize().unwrap());
    let e = write_exp(&dir, "sl", "grid:\n  x: [1, 2]\n");
    let p = plan(&e, &fake);
    // A stand-in protoclr binary that prints its arguments, one a line.
    let echo = dir.join("print args.sh");
    std::fs::write(&echo, "#!/bin/bash\nprintf '%s\\n' \"$@\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&echo, std::fs::Permissions::from_mode(0o755)).unwrap();
    let comment = r#"--comment=two words # not a comment, "quoted" \ back"#;
    let o = SlurmOptions {
        protoclr: echo.clone(),
        file: e.clone(),
        profile: "cpu".into(),
        results: results.root.clone(),
        data_root: Some(dir.join("data root")),
        partition: Some("gpu".into()),
        gpus: 0,
        cpus: 2,
        time: "01:00:00".into(),
        mem: "1G".into(),
        max_parallel: None,
        retry_failed: false,
        extra: vec!["--account=abc".into(), comment.into()],
        device: Some("cuda:0".into()),
    };
    let job = write_job(&p, &results, &o).unwrap().unwrap();
    let script = std::fs::read_to_string(&job.script).unwrap();
    let (args, read) = sbatch_args(&script);
    assert_eq!(
        read,
        script.lines().filter(|l| l.starts_with("#SBATCH")).count(),
        "{script}"
    );
    let out = format!("--output={}/logs/%A_%a.out", job.dir.display());
    assert!(out.contains("my results"));
    for want in [
        "--job-name=protoclr-sl-cpu",
        "--array=0-1",
        "--partition=gpu",
        "--time=01:00:00",
        "--mem=1G",
        out.as_str(),
        "--account=abc",
        comment,
    ] {
        assert!(
            args.iter().any(|a| a == want),
            "{want:?} not in {args:?}\n{script}"
        );
    }
    // The shell line, run by bash, passes each value as one word.
    let run = Command::new("bash")
        .arg(&job.script)
        .env("SLURM_ARRAY_TASK_ID", "1")
        .env("SLURM_CPUS_PER_TASK", "3")
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let words: Vec<String> = String::from_utf8(run.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let s = |p: &Path| p.display().to_string();
    assert_eq!(
        words,
        [
            "grid",
            "run-cell",
            &s(&e),
            "--profile",
            "cpu",
            "--results",
            &s(&results.root),
            "--list",
            &s(&job.list),
            "--index",
            "1",
            "--cell-threads",
            "3",
            "--data-root",
            &s(&dir.join("data root")),
            "--device",
            "cuda:0"
        ]
    );

    // Injection attempts: refused naming the option, and no job folder is written.
    std::fs::remove_dir_all(results.root.join("slurm")).unwrap();
    let attempts: Vec<(SlurmOptions, &str)> = vec![
        (
            SlurmOptions {
                partition: Some("debug\necho INJECTED".into()),
                ..o.clone()
            },
            "--partition",
        ),
        (
            SlurmOptions {
                extra: vec!["--account=x\ntouch /tmp/protoclr-injected".into()],
                ..o.clone()
            },
            "--sbatch-arg",
        ),
        (
            SlurmOptions {
                mem: "1G\r".into(),
                ..o.clone()
            },
            "--mem",
        ),
        (
            SlurmOptions {
                data_root: Some(dir.join("a\nb")),
                ..o.clone()
            },
            "--data-root",
        ),
    ];
    for (bad, what) in attempts {
        let err = format!("{:#}", write_job(&p, &results, &bad).unwrap_err());
        assert!(
            err.starts_with(what) && err.contains("control character"),
            "{err}"
        );
        assert!(!results.root.join("slurm").exists());
    }
}
