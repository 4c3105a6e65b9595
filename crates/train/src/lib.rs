//! # protoclr-train
//!
//! Everything one training run needs, on candle's CPU backend (or CUDA, [`device`]): the CIFAR readers and subsets
//! ([`data`]), the augmentation pipeline ([`augment`]), ResNet encoders and the projection head
//! ([`model`]) on our custom convolution and batch-norm kernels ([`ops`]), the balanced
//! contrastive and supervised prototype objectives ([`loss`]), optimisers ([`optim`]),
//! evaluation ([`eval`]), the prototype representation bias ([`bias`]), and the run itself with
//! checkpoints and `metrics.json` ([`run`]). [`bench`](mod@bench) measures training and inference speed.
//! Image-folder datasets (ImageNet, ImageNet-LT) are listed by [`data::folder`] and streamed by
//! the JPEG input pipeline ([`input`]); [`source`] gives the run either kind of training data.
//!
//! The balanced contrastive loss and the bias metric are our reconstruction of the paper's
//! definitions (B. Lee, TMLR 2025, arXiv 2510.10572); see `docs/paper.md` in the repository.

pub mod augment;
pub mod bench;
pub mod bias;
pub mod config;
pub mod data;
pub mod device;
pub mod eval;
pub mod fastpath;
pub mod fsutil;
pub mod input;
pub mod loss;
pub mod memory;
pub mod model;
pub mod ops;
pub mod optim;
pub mod run;
pub mod runtime;
pub mod source;
pub mod yamlscan;
