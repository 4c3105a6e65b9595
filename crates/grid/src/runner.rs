//! Running cells: local workers, one training child process per cell, progress, stop and resume.

use crate::cache::{finished_metrics, CellState, Outcome, Pending, Results, StatusFile};
use crate::lock::{Acquired, CellLock, HEARTBEAT};
use crate::plan::{Cell, Plan};
use crate::Backend;
use anyhow::{Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use protoclr_formats::fsutil::{atomic_write, hostname, now_unix};
use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How a grid run behaves.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Cells trained at the same time.
    pub workers: usize,
    /// Compute threads of each training process.
    pub threads: usize,
    /// Run failed and diverged cells again.
    pub retry_failed: bool,
    /// Draw progress bars (else: plain lines on stderr).
    pub progress: bool,
    /// Set (by a signal handler) to stop: children get SIGTERM, then SIGKILL after `grace`.
    pub stop: Arc<AtomicBool>,
    pub grace: Duration,
}

impl RunOptions {
    pub fn new(workers: usize, threads: usize) -> RunOptions {
        RunOptions {
            workers: workers.max(1),
            threads: threads.max(1),
            retry_failed: false,
            progress: true,
            stop: Arc::new(AtomicBool::new(false)),
            grace: Duration::from_secs(10),
        }
    }
}

/// What a run did.
#[derive(Debug, Default, Clone)]
pub struct RunSummary {
    /// Distinct cells of the plan.
    pub cells: usize,
    /// Already finished before the run (done, diverged, or failed without `--retry-failed`).
    pub cached: usize,
    pub done: usize,
    pub diverged: usize,
    /// Cells recorded as failed when the run ends: those that failed in this run, those found
    /// failed and not retried (`failed_earlier`), and those another runner recorded as failed.
    /// Non-zero makes `grid run` exit non-zero.
    pub failed: usize,
    /// Of `failed`: found failed in the results and left alone (no `--retry-failed`).
    pub failed_earlier: usize,
    /// Stopped by a stop request (resumable).
    pub interrupted: usize,
    /// Cells finished by another runner while this one waited.
    pub elsewhere: usize,
    /// Descriptions of the failed cells (all of `failed`).
    pub failures: Vec<String>,
    /// The index CSV.
    pub index: PathBuf,
    pub stopped: bool,
}

/// The result of one attempt at a cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// Trained in this attempt.
    Ran(Outcome),
    /// A finished `metrics.json` without status file was found and recorded.
    Adopted(Outcome),
    /// Nothing to do (finished already, e.g. by another runner).
    Skipped(CellState),
    /// Another live process holds the cell's lock.
    Busy,
    /// Stopped by a stop request; the checkpoints are kept.
    Interrupted,
}

/// Where a cell's progress events go.
#[derive(Clone)]
pub enum Sink {
    Bar(ProgressBar),
    /// Plain lines on stderr, with this prefix.
    Lines(String),
}

impl Sink {
    fn event(&self, v: &serde_json::Value) {
        let get = |k: &str| v.get(k).and_then(|x| x.as_f64());
        let event = v.get("event").and_then(|e| e.as_str()).unwrap_or("");
        match self {
            Sink::Bar(bar) => match event {
                "step" => {
                    if let (Some(e), Some(ee), Some(s), Some(ss)) =
                        (get("epoch"), get("epochs"), get("step"), get("steps"))
                    {
                        bar.set_length((ee * ss) as u64);
                        bar.set_position(((e - 1.0).max(0.0) * ss + s) as u64);
                        bar.set_message(format!(
                            "epoch {e}/{ee} loss {:.4}",
                            get("loss").unwrap_or(f64::NAN)
                        ));
                    }
                }
                "epoch" => bar.set_message(format!(
                    "epoch {}/{} loss {:.4} {:.0} img/s",
                    get("epoch").unwrap_or(0.0),
                    get("epochs").unwrap_or(0.0),
                    get("loss").unwrap_or(f64::NAN),
                    get("images_per_sec").unwrap_or(0.0)
                )),
                "eval" => bar.set_message(format!(
                    "eval {}",
                    v.get("what").and_then(|w| w.as_str()).unwrap_or("")
                )),
                _ => {}
            },
            Sink::Lines(prefix) => match event {
                "epoch" => eprintln!(
                    "{prefix} epoch {}/{} loss {:.4} {:.0} img/s",
                    get("epoch").unwrap_or(0.0),
                    get("epochs").unwrap_or(0.0),
                    get("loss").unwrap_or(f64::NAN),
                    get("images_per_sec").unwrap_or(0.0)
                ),
                "eval" => eprintln!(
                    "{prefix} eval {}",
                    v.get("what").and_then(|w| w.as_str()).unwrap_or("")
                ),
                _ => {}
            },
        }
    }
}

fn tail(path: &std::path::Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Exit status of a training process stopped cleanly by SIGINT (128 + 2).
pub const INTERRUPTED_SIGINT: i32 = 130;
/// Exit status of a training process stopped cleanly by SIGTERM (128 + 15).
pub const INTERRUPTED_SIGTERM: i32 = 143;

fn signal_group(pid: u32, sig: libc::c_int) {
    // SAFETY: plain signal delivery to the child's process group (the child leads it).
    unsafe {
        libc::kill(-(pid as libc::pid_t), sig);
    }
}

/// One attempt at a cell: lock, check, prepare, train, record. `say` prints a line.
pub fn attempt(
    cell: &Cell,
    results: &Results,
    backend: &dyn Backend,
    opts: &RunOptions,
    sink: &Sink,
    say: &dyn Fn(String),
) -> Result<Attempt> {
    let lock_path = results.lock_path(&cell.id);
    let mut lock = match CellLock::try_acquire(&lock_path)? {
        Acquired::Yes(lock, prev) => {
            if let Some(p) = prev {
                say(format!(
                    "{}: took over the lock of a dead runner (pid {} on {})",
                    cell.short(),
                    p.pid,
                    p.host
                ));
            }
            lock
        }
        Acquired::Busy(_) => return Ok(Attempt::Busy),
    };
    let dir = results.cell_dir(&cell.id);
    let ckpt = results.checkpoint_dir(&cell.id);
    let state = results.recorded_state(&cell.id);
    let clear = |names: &[&str]| {
        for n in names {
            let _ = fs::remove_file(dir.join(n));
        }
    };
    match &state {
        CellState::Done(_) => return Ok(Attempt::Skipped(state)),
        CellState::Failed(_) | CellState::Diverged(_) if !opts.retry_failed => {
            return Ok(Attempt::Skipped(state))
        }
        CellState::Failed(_) | CellState::Diverged(_) => clear(&["status.json", "metrics.json"]),
        CellState::Pending(Pending::Corrupt(why)) => {
            say(format!("{}: redoing a corrupt entry ({why})", cell.short()));
            clear(&["status.json", "metrics.json"]);
        }
        CellState::Pending(Pending::Interrupted) => {
            if let Some(outcome) = finished_metrics(&dir.join("metrics.json")) {
                results.write_status(&cell.id, blank_status(outcome, None, None, None, None))?;
                return Ok(Attempt::Adopted(outcome));
            }
        }
        CellState::Pending(Pending::New) | CellState::Running(_) => {}
    }

    fs::create_dir_all(&ckpt).with_context(|| format!("cannot create {}", ckpt.display()))?;
    let config = backend.config_text(&cell.resolved)?;
    atomic_write(&dir.join("config.yaml"), config.as_bytes())?;
    let log_path = dir.join("train.log");
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;

    let mut cmd = backend.train_command(&dir, &ckpt, opts.threads);
    writeln!(
        log,
        "=== protoclr grid: start {} on {} (runner pid {}): {:?}",
        now_unix(),
        hostname(),
        std::process::id(),
        cmd
    )?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log.try_clone()?)
        .process_group(0);
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Die with the runner thread that started us (kill -9 of the runner included).
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    let started = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("cannot start {cmd:?}"))?;
    let pid = child.id();
    if let Err(e) = lock.set_child(Some(pid)) {
        signal_group(pid, libc::SIGKILL);
        let _ = child.wait();
        return Err(e);
    }

    let stdout = child.stdout.take().expect("stdout is piped");
    let reader = {
        let sink = sink.clone();
        let mut log = log.try_clone()?;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<serde_json::Value>(&line) {
                    Ok(v) => {
                        sink.event(&v);
                        if v.get("event").and_then(|e| e.as_str()) != Some("step") {
                            let _ = writeln!(log, "{line}");
                        }
                    }
                    Err(_) => {
                        let _ = writeln!(log, "{line}");
                    }
                }
            }
        })
    };

    let mut last_beat = Instant::now();
    let mut term_sent: Option<Instant> = None;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if opts.stop.load(Ordering::SeqCst) {
            match term_sent {
                None => {
                    signal_group(pid, libc::SIGTERM);
                    term_sent = Some(Instant::now());
                }
                Some(t) if t.elapsed() > opts.grace => signal_group(pid, libc::SIGKILL),
                Some(_) => {}
            }
        }
        if last_beat.elapsed() > HEARTBEAT {
            lock.heartbeat();
            last_beat = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if term_sent.is_some() {
        // Leftovers of the group (grandchildren) go too.
        signal_group(pid, libc::SIGKILL);
    }
    let _ = reader.join();
    let wall = started.elapsed().as_secs_f64();
    let code = status.code();
    let signal = status.signal();

    let metrics_outcome = finished_metrics(&dir.join("metrics.json"));
    let outcome = match (code, metrics_outcome) {
        (Some(0) | Some(3), Some(o)) => Some(o),
        _ if opts.stop.load(Ordering::SeqCst) => None,
        // `protoclr train` stopped by SIGINT/SIGTERM (128 + signal) after checkpointing, e.g.
        // a signal sent to the child alone: resumable, not a failure.
        (Some(INTERRUPTED_SIGINT | INTERRUPTED_SIGTERM), None) => None,
        _ => Some(Outcome::Failed),
    };
    let Some(outcome) = outcome else {
        writeln!(log, "=== protoclr grid: interrupted after {wall:.1} s (exit {code:?}, signal {signal:?}); checkpoints kept")?;
        return Ok(Attempt::Interrupted);
    };
    let error = (outcome == Outcome::Failed).then(|| {
        let why = match (code, signal) {
            (Some(c @ (0 | 3)), _) => format!("exit code {c} but no finished metrics.json"),
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => "unknown exit".into(),
        };
        format!("{why}\n{}", tail(&log_path, 20))
    });
    writeln!(
        log,
        "=== protoclr grid: {} after {wall:.1} s (exit {code:?}, signal {signal:?})",
        outcome.as_str()
    )?;
    if outcome == Outcome::Failed {
        let _ = fs::remove_file(dir.join("metrics.json"));
    }
    results.write_status(&cell.id, blank_status(outcome, code, signal, error, Some(wall)))?;
    drop(lock);
    Ok(Attempt::Ran(outcome))
}

fn blank_status(
    status: Outcome,
    exit_code: Option<i32>,
    signal: Option<i32>,
    error: Option<String>,
    wall: Option<f64>,
) -> StatusFile {
    StatusFile {
        status,
        metrics_sha256: None,
        config_sha256: None,
        cell_format_version: crate::CELL_FORMAT_VERSION,
        exit_code,
        signal,
        error,
        runner_wall_s: wall,
        finished_unix: 0,
        host: String::new(),
    }
}

struct Sched {
    queue: VecDeque<usize>,
    /// Cells whose lock another live process holds: retried when the queue is empty.
    deferred: Vec<usize>,
}

/// Runs the pending cells of a plan on `opts.workers` local workers; returns when every cell is
/// finished (by this or another runner) or a stop was requested.
pub fn run(plan: &Plan, results: &Results, backend: &dyn Backend, opts: &RunOptions) -> Result<RunSummary> {
    let cells = plan.unique();
    // Leftovers of writers killed mid-write (index files, status files; docs/formats.md).
    protoclr_formats::temps::remove_stale_temps(&results.root);
    for c in &cells {
        protoclr_formats::temps::remove_stale_temps(&results.cell_dir(&c.id));
    }
    let mut summary = RunSummary {
        cells: cells.len(),
        ..Default::default()
    };
    let mut queue = VecDeque::new();
    for (i, c) in cells.iter().enumerate() {
        match results.state(&c.id) {
            CellState::Done(_) => summary.cached += 1,
            CellState::Failed(_) if !opts.retry_failed => {
                summary.cached += 1;
                summary.failed += 1;
                summary.failed_earlier += 1;
                summary
                    .failures
                    .push(format!("{} ({}; failed earlier)", c.id, c.describe()));
            }
            CellState::Diverged(_) if !opts.retry_failed => summary.cached += 1,
            _ => queue.push_back(i),
        }
    }
    summary.index = results.write_index(plan)?;
    if queue.is_empty() {
        return Ok(summary);
    }

    let multi = MultiProgress::with_draw_target(if opts.progress {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let say = |line: String| {
        if multi.is_hidden() {
            eprintln!("{line}");
        } else {
            let _ = multi.println(line);
        }
    };
    let overall = multi.add(ProgressBar::new(queue.len() as u64));
    overall.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} cells, {elapsed} elapsed, ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    overall.set_prefix(format!("{}.{}", plan.experiment.name, plan.profile));
    say(format!(
        "{}.{}: {} cells, {} finished already, {} to run on {} worker(s) × {} thread(s)",
        plan.experiment.name,
        plan.profile,
        cells.len(),
        summary.cached,
        queue.len(),
        opts.workers,
        opts.threads
    ));

    let sched = Mutex::new(Sched {
        queue,
        deferred: Vec::new(),
    });
    let shared = Mutex::new(summary);
    let index_lock = Mutex::new(());
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);

    std::thread::scope(|scope| {
        for w in 0..opts.workers {
            let bar = multi.add(ProgressBar::new(1));
            bar.set_style(
                ProgressStyle::with_template("{prefix:>4} {wide_msg} [{bar:25}] {pos}/{len}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(format!("w{}", w + 1));
            let (sched, shared, index_lock, first_error, overall, cells, say) =
                (&sched, &shared, &index_lock, &first_error, &overall, &cells, &say);
            scope.spawn(move || {
                let mut waited_note = false;
                loop {
                    if opts.stop.load(Ordering::SeqCst) || first_error.lock().unwrap().is_some() {
                        break;
                    }
                    let next = {
                        let mut s = sched.lock().unwrap();
                        match s.queue.pop_front() {
                            Some(i) => Some(i),
                            None if s.deferred.is_empty() => None,
                            None => {
                                let n = s.deferred.len();
                                drop(s);
                                if !waited_note {
                                    say(format!(
                                        "waiting for {n} cell(s) that another runner is training …"
                                    ));
                                    waited_note = true;
                                }
                                std::thread::sleep(Duration::from_secs(2));
                                let mut s = sched.lock().unwrap();
                                let d = std::mem::take(&mut s.deferred);
                                s.queue.extend(d);
                                continue;
                            }
                        }
                    };
                    let Some(i) = next else { break };
                    let cell = cells[i];
                    bar.reset();
                    bar.set_length(1);
                    bar.set_message(cell.describe());
                    let sink = Sink::Bar(bar.clone());
                    let result = attempt(cell, results, backend, opts, &sink, say);
                    let mut sum = shared.lock().unwrap();
                    match result {
                        Err(e) => {
                            *first_error.lock().unwrap() = Some(e.context(format!("cell {}", cell.id)));
                            break;
                        }
                        Ok(Attempt::Busy) => {
                            sched.lock().unwrap().deferred.push(i);
                            continue;
                        }
                        Ok(Attempt::Interrupted) => {
                            sum.interrupted += 1;
                            say(format!(
                                "interrupted {} ({}); rerun to resume",
                                cell.short(),
                                cell.describe()
                            ));
                        }
                        Ok(Attempt::Skipped(state)) => {
                            sum.elsewhere += 1;
                            if let CellState::Failed(_) = state {
                                sum.failed += 1;
                                sum.failures.push(format!(
                                    "{} ({}; failed in another runner)",
                                    cell.id,
                                    cell.describe()
                                ));
                            }
                            overall.inc(1);
                        }
                        Ok(Attempt::Ran(o) | Attempt::Adopted(o)) => {
                            overall.inc(1);
                            match o {
                                Outcome::Done => sum.done += 1,
                                Outcome::Diverged => sum.diverged += 1,
                                Outcome::Failed => {
                                    sum.failed += 1;
                                    sum.failures.push(format!("{} ({})", cell.id, cell.describe()));
                                }
                            }
                            say(format!("{} {} ({})", o.as_str(), cell.short(), cell.describe()));
                        }
                    }
                    drop(sum);
                    let _g = index_lock.lock().unwrap();
                    if let Err(e) = results.write_index(plan) {
                        say(format!("warning: cannot write the index: {e:#}"));
                    }
                }
                bar.finish_and_clear();
            });
        }
    });
    overall.finish_and_clear();
    if let Some(e) = first_error.into_inner().unwrap() {
        return Err(e);
    }
    let mut summary = shared.into_inner().unwrap();
    summary.stopped = opts.stop.load(Ordering::SeqCst);
    summary.index = results.write_index(plan)?;
    Ok(summary)
}

/// Runs one cell to completion (a Slurm array task): waits while another process holds its lock,
/// then trains it unless it is finished. Returns its final state.
pub fn run_cell(
    plan: &Plan,
    cell: &Cell,
    results: &Results,
    backend: &dyn Backend,
    opts: &RunOptions,
) -> Result<CellState> {
    let prefix = format!("[{}]", cell.short());
    let sink = Sink::Lines(prefix.clone());
    let say = |line: String| eprintln!("{line}");
    eprintln!(
        "{prefix} {} ({}.{} cell {})",
        cell.describe(),
        plan.experiment.name,
        plan.profile,
        cell.index
    );
    let mut noted = false;
    loop {
        match attempt(cell, results, backend, opts, &sink, &say)? {
            Attempt::Busy => {
                if opts.stop.load(Ordering::SeqCst) {
                    break;
                }
                if !noted {
                    eprintln!("{prefix} another runner holds this cell; waiting for it");
                    noted = true;
                }
                std::thread::sleep(Duration::from_secs(5));
            }
            Attempt::Interrupted => {
                eprintln!("{prefix} interrupted; checkpoints kept, rerun to resume");
                break;
            }
            a => {
                eprintln!("{prefix} {a:?}");
                break;
            }
        }
    }
    let _ = results.write_index(plan);
    Ok(results.recorded_state(&cell.id))
}
