//! # protoclr-train
//!
//! Everything one training run needs, on candle's CPU backend (or CUDA, [`device`]): the CIFAR readers and subsets
//! ([`data`]), the augmentation pipeline ([`augment`]), ResNet encoders and the projection head
//! ([`model`]) on our custom convolution and batch-norm kernels ([`ops`]), the training step
//! ([`step`], with the graph-free encoder pass of [`fastpath`]), the balanced
//! contrastive and supervised prototype objectives ([`loss`]), optimisers ([`optim`]),
//! evaluation ([`eval`]; the sets and scoring shared by every dataset in [`protocol`]), the
//! prototype representation bias and the theorem bounds ([`bias`]), and the run itself ([`run`]:
//! the training loop) with its checkpoints ([`checkpoint`]), its `metrics.json` types
//! ([`metrics`]), its progress output ([`progress`]) and the random-init reference evaluations
//! it can share with other runs ([`reference`]). [`bench`](mod@bench) measures training
//! and inference speed. The config ([`config`]) names every choice as an enum spelt as in the YAML.
//! Image-folder datasets (ImageNet, ImageNet-LT) are listed by [`data::folder`] and streamed by
//! the JPEG input pipeline ([`input`]); [`source`] gives the run either kind of training data
//! and evaluates on it.
//!
//! # Module layers
//! The modules import each other without a cycle (`tests/module_graph.rs` checks it): the
//! kernels ([`ops`]) and the config at the bottom; the model, then the graph-free pass
//! ([`fastpath`]) and the step ([`step`]) over it, the optimiser, losses and evaluation beside
//! them; the data sources and the evaluation protocol above those; the run loop ([`run`]) on top.
//!
//! The balanced contrastive loss and the bias metric are our reconstruction of the paper's
//! definitions (B. Lee, TMLR 2025, arXiv 2510.10572); see `docs/paper.md` in the repository.
//!
//! # Numerics version
//! [`NUMERICS_VERSION`] names what a run computes, bit for bit. It enters every grid cell's id
//! (through the grid's `Backend::numerics_version`) and every `metrics.json`, so a cached cell
//! is found only by the numerics that trained it. The golden test
//! (`crates/train/tests/golden_numerics.rs`, data in `tests/golden/numerics.json`) fails when
//! the numbers of a pinned tiny run change while the version does not.

/// The version of the training numerics: what a run computes from its config, bit for bit.
///
/// It names the arithmetic of the kernels (convolution, batch norm, the custom CPU ops and the
/// order in which they sum, including their thread partitioning), the augmentation arithmetic
/// and the order of its random draws, the parameter initialisation, the RNG streams (sample
/// order, view seeds, prototypes), the losses, the optimiser and the learning-rate schedule,
/// and the evaluation that turns an encoder into metrics (probe, kNN, bias).
///
/// **Bump it** (by one) with any change that alters a number a run computes from the same
/// config and seed, even by one ulp: a new summation order, a fused multiply-add, a different
/// draw order, another initialiser. Cells trained by the old numerics then get other ids and
/// are retrained by the next grid run; they stay on disk under their old ids. The golden test
/// (`cargo test -p protoclr-train --test golden_numerics`) fails when the numbers of its pinned
/// run change while this constant does not; regenerate its file with `PROTOCLR_BLESS=1` after
/// the bump. The golden run pins the training (per-step losses, final weights); a change to
/// the evaluation's arithmetic bumps the version too but is not caught by it (a change to what
/// the evaluation measures, e.g. another probe split, bumps the grid's `CELL_FORMAT_VERSION`).
///
/// **Do not bump it** for changes that leave every computed number as it was: refactors,
/// speed-ups that keep the summation order, reports, I/O, checkpoint or `metrics.json` layout,
/// progress output, error messages. (A change to what a config key *means* bumps the grid's
/// `CELL_FORMAT_VERSION` instead.)
///
/// Within one version the numbers also depend on the CPU path: the direct convolution kernels
/// run only on CPUs with AVX-512F (elsewhere im2col + gemm sums in another order), and the
/// `gemm` crate picks its micro-kernels by CPU feature. The golden file records the path its
/// numbers were made on.
///
/// History: 1 = "unversioned", the cells of commits before this constant existed (their
/// `metrics.json` has no `numerics_version`; they were trained by several numerics), which are
/// no longer found under the new ids; 2 = the numerics of the commit that introduced it.
pub const NUMERICS_VERSION: u32 = 2;

pub mod augment;
pub mod bench;
pub mod bias;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod device;
pub mod diag;
pub mod eval;
pub mod fastpath;
pub mod input;
pub mod loss;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod optim;
pub mod progress;
pub mod protocol;
pub mod reference;
pub mod run;
pub mod runtime;
pub mod signals;
pub mod source;
pub mod step;
pub use protoclr_formats::yamlscan;
