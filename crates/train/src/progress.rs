//! Progress output of a run, as its own sink: an indicatif bar on stderr, one JSON object a
//! line on stdout for the grid runner (the events `step`, `epoch`, `eval`, `done`; their keys
//! are read by `crates/grid`), or nothing. The training loop ([`crate::run::train`]) and the
//! evaluation ([`crate::protocol`], [`crate::source`]) report through it and never print.

use crate::metrics::EpochRecord;
use crate::signals;
use indicatif::{ProgressBar, ProgressStyle};
use std::time::Instant;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// indicatif bar on stderr (epoch, loss, img/s, ETA).
    Bar,
    /// One JSON object a line on stdout (for the grid runner).
    Jsonl,
    None,
}

/// Prints a progress line in `Jsonl` mode; a closed stdout stops the lines, not the run
/// ([`signals::stdout_line`]).
pub fn emit(mode: ProgressMode, v: serde_json::Value) {
    if mode == ProgressMode::Jsonl {
        signals::stdout_line(&v.to_string());
    }
}

/// The progress of one training run: `epochs` epochs of `steps` steps of `batch` images.
pub struct Progress {
    mode: ProgressMode,
    bar: Option<ProgressBar>,
    epochs: usize,
    steps: usize,
    batch: usize,
}

impl Progress {
    /// Starts the bar (in `Bar` mode) at the first step of `start_epoch` (a resumed run).
    pub fn start(
        mode: ProgressMode,
        epochs: usize,
        steps: usize,
        batch: usize,
        start_epoch: usize,
    ) -> Progress {
        let bar = (mode == ProgressMode::Bar).then(|| {
            let pb = ProgressBar::new((steps * epochs) as u64);
            pb.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {pos}/{len} steps · {msg} · ETA {eta}",
                )
                .unwrap()
                .progress_chars("=> "),
            );
            pb.set_position((start_epoch * steps) as u64);
            pb.reset_eta();
            pb
        });
        Progress {
            mode,
            bar,
            epochs,
            steps,
            batch,
        }
    }

    /// How progress is shown.
    pub fn mode(&self) -> ProgressMode {
        self.mode
    }

    /// A JSON event line (`Jsonl` mode only).
    pub fn event(&self, v: serde_json::Value) {
        emit(self.mode, v);
    }

    /// Step `step` (0-based) of epoch `epoch` (0-based) is done with loss `loss`; the epoch
    /// started at `epoch_start`.
    pub fn step(&self, epoch: usize, step: usize, loss: f64, epoch_start: Instant) {
        if let Some(pb) = &self.bar {
            pb.inc(1);
            let ips = 2.0 * self.batch as f64 * (step + 1) as f64 / epoch_start.elapsed().as_secs_f64();
            pb.set_message(format!(
                "epoch {}/{} · loss {loss:.4} · {ips:.0} img/s",
                epoch + 1,
                self.epochs
            ));
        }
        self.event(
            serde_json::json!({"event": "step", "epoch": epoch + 1, "epochs": self.epochs,
                                      "step": step + 1, "steps": self.steps, "loss": loss}),
        );
    }

    /// An epoch is done: its record and the parameters' norm relative to their initial one.
    pub fn epoch(&self, rec: &EpochRecord, weight_growth: f64) {
        self.event(
            serde_json::json!({"event": "epoch", "epoch": rec.epoch, "epochs": self.epochs,
                                      "loss": rec.loss, "images_per_sec": rec.images_per_sec,
                                      "weight_growth": weight_growth,
                                      "mean_direction": rec.mean_direction,
                                      "proto_train_acc": rec.proto_train_acc}),
        );
    }

    /// The run stops early (interrupted): the bar stays as it is.
    pub fn abandon(&self) {
        if let Some(pb) = &self.bar {
            pb.abandon();
        }
    }

    /// Training is over: the bar is cleared.
    pub fn finish(&self) {
        if let Some(pb) = &self.bar {
            pb.finish_and_clear();
        }
    }
}
