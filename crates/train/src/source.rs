//! The training data of a run, as [`crate::run::train`] consumes it: the CIFAR sets held in
//! memory, or an image-folder dataset streamed from disk ([`crate::input`]).
//!
//! Both give the same per-epoch contract: the sample order of epoch e is `0..n` shuffled by
//! `ChaCha8Rng::seed_from_u64(view_seed(seed, e, u64::MAX, 0))`, step s takes images
//! `order[s·B .. (s+1)·B]`, and view v of image i is augmented with the seed
//! `view_seed(seed, e, i, v)`; a batch is the B first views followed by the B second views.
//! The CIFAR path is the in-memory code the run always had (bit-identical results).
//!
//! Folder datasets are listed and checked once at the start ([`crate::data::folder::scan`]
//! without decoding; bad entries stop the run before training unless `data.skip_bad`), the
//! validation split (`eval.val_images`) is held out and the training subset (`per_class`,
//! `fraction`, `imbalance_ratio`) chosen among the other images from the labels
//! ([`crate::data::holdout_and_select`], as for CIFAR), and the evaluation streams the images
//! too: features of the eval-time centre crop (`data.eval_crop`) for the linear probe and kNN,
//! K augmented views for the prototype bias — the sets and scoring of [`crate::protocol`].
//! Folder datasets are normalised with the ImageNet mean and standard deviation.

use crate::augment::{self, Pipeline};
use crate::bias;
use crate::config::{Config, DataConfig, DatasetName};
use crate::data::folder::{self, FolderLayout, ImageList};
use crate::data::{self, Dataset, Split};
use crate::eval::{self, ImageSet};
use crate::input::{ImageStore, InputStream, Mode, StreamOptions};
use crate::metrics::EvalResult;
use crate::model::{ResNet, SimClrModel};
use crate::progress::{emit, ProgressMode};
use crate::protocol::{self, EvalFeatures, EvalSets, Features};
use anyhow::{anyhow, Result};
use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::sync::Arc;

/// Images per feature-extraction batch of folder datasets.
const FEATURE_BATCH: usize = 256;

/// Where a run's images come from.
#[allow(clippy::large_enum_variant)] // one value per run
pub enum TrainSource {
    /// CIFAR: the official split, the selected training subset (as bytes) and the validation
    /// split held out of it (sorted indices into `split.train`).
    Memory {
        split: Split,
        train: Dataset,
        heldout: Vec<usize>,
    },
    /// An image-folder dataset, decoded on the fly.
    Folder(FolderSource),
}

/// An image-folder dataset ready to stream.
pub struct FolderSource {
    /// The whole training list (validation split, linear probe and kNN bank).
    pub full_train: Arc<ImageList>,
    /// The validation split: sorted indices into `full_train` held out of the run's training.
    pub heldout: Vec<usize>,
    /// The training images of the run (after `per_class`, `fraction`, `imbalance_ratio`, among
    /// the images not held out).
    pub train: Arc<ImageList>,
    /// The validation list (the test set).
    pub val: Arc<ImageList>,
    /// The probe bank's own list (`data.bank_list`), and the indices into it that the bank may
    /// use: every entry whose path is not one of the held-out validation images.
    pub bank: Option<(Arc<ImageList>, Vec<usize>)>,
    /// Bad entries skipped at the start (`data.skip_bad`).
    pub skipped: usize,
    pub fingerprint: String,
    pub stream: StreamOptions,
    pub eval_crop: f64,
    /// `data.resize_short` and `data.cache_images`, shared by every stream of the run.
    pub store: Arc<ImageStore>,
}

impl FolderSource {
    /// Lists and checks the dataset of `data` under `data_root`, holds out the validation split
    /// (`val_images`, the `eval.val_images` setting) and selects the training subset.
    pub fn open(
        data: &DataConfig,
        val_images: Option<usize>,
        seed: u64,
        data_root: &Path,
    ) -> Result<FolderSource> {
        let scan = folder::scan(&FolderLayout::from_config(data, data_root)?, false)?;
        let skip_bad = data.skip_bad.unwrap_or(false);
        scan.check(skip_bad)?;
        if !scan.bad.is_empty() {
            eprintln!(
                "warning: skipped {} bad entries of the image-folder dataset (data.skip_bad); first: {}",
                scan.bad.len(),
                scan.bad[0]
            );
        }
        let full_train = Arc::new(scan.train);
        let val = val_images.unwrap_or_else(|| data::default_val_images(full_train.len()));
        let (heldout, keep) =
            data::holdout_and_select(&full_train.labels(), full_train.num_classes(), data, val, seed)?;
        let train = if keep.len() == full_train.len() {
            full_train.clone()
        } else {
            Arc::new(full_train.subset(&keep))
        };
        let bank = match scan.bank {
            None => None,
            Some(list) => {
                let held: std::collections::HashSet<_> = heldout
                    .iter()
                    .map(|&i| full_train.root.join(&full_train.entries[i].0))
                    .collect();
                let pool: Vec<usize> = (0..list.len())
                    .filter(|&i| !held.contains(&list.root.join(&list.entries[i].0)))
                    .collect();
                if pool.is_empty() {
                    return Err(anyhow!(
                        "every image of the probe bank list (`data.bank_list`) is in the run's validation split"
                    ));
                }
                Some((Arc::new(list), pool))
            }
        };
        Ok(FolderSource {
            full_train,
            heldout,
            train,
            val: Arc::new(scan.val),
            bank,
            skipped: scan.bad.len(),
            fingerprint: scan.fingerprint,
            stream: StreamOptions {
                threads: data.decode_threads.unwrap_or_else(rayon::current_num_threads),
                prefetch: data.prefetch.unwrap_or(DataConfig::DEFAULT_PREFETCH),
                skip_bad,
                seed,
            },
            eval_crop: data.eval_crop.unwrap_or(DataConfig::DEFAULT_EVAL_CROP),
            store: Arc::new(ImageStore::new(
                data.resize_short,
                data.cache_images.unwrap_or(false),
            )),
        })
    }

    /// Encoder features (`[n, d]`) and labels of the images `order` of `list` under `mode`.
    fn features(
        &self,
        encoder: &ResNet,
        list: &Arc<ImageList>,
        order: Vec<usize>,
        batch: usize,
        mode: Mode,
        pipeline: &Pipeline,
    ) -> Result<(Vec<f32>, Vec<u16>)> {
        let size = pipeline.size();
        let mut feats = Vec::with_capacity(order.len() * mode.views() * encoder.feat_dim);
        let mut labels = Vec::with_capacity(order.len());
        let stream = InputStream::with_store(
            list.clone(),
            order,
            batch,
            mode,
            Arc::new(pipeline.clone()),
            self.stream,
            self.store.clone(),
        );
        for b in stream {
            let b = b?;
            let x = Tensor::from_vec(b.pixels, (b.rows, 3, size, size), &encoder.device)?;
            feats.extend(encoder.forward(&x, false)?.flatten_all()?.to_vec1::<f32>()?);
            labels.extend(b.labels);
        }
        Ok((feats, labels))
    }

    /// The [`EvalSets`] of the training and validation (test) lists — eval-time centre crops
    /// for the bank, validation and test images, K augmented views of the bias images —
    /// scored by [`protocol::score`], as the CIFAR evaluation.
    pub fn evaluate(
        &self,
        model: &SimClrModel,
        cfg: &Config,
        pipeline: &Pipeline,
        mean: [f32; 3],
        std: [f32; 3],
        progress: ProgressMode,
    ) -> Result<EvalResult> {
        let e = &cfg.eval;
        let eval_mode = Mode::Eval {
            crop: self.eval_crop,
            mean,
            std,
        };
        let (bank_list, sets) = match &self.bank {
            None => (
                &self.full_train,
                EvalSets::new(cfg, self.full_train.len(), &self.heldout, self.val.len()),
            ),
            Some((list, pool)) => (
                list,
                EvalSets::with_bank_pool(cfg, pool, &self.heldout, self.val.len()),
            ),
        };
        emit(progress, serde_json::json!({"event": "eval", "what": "features"}));
        let feats = |list: &Arc<ImageList>, idx: &[usize]| -> Result<Features> {
            let (x, labels) = self.features(
                &model.encoder,
                list,
                idx.to_vec(),
                FEATURE_BATCH,
                eval_mode,
                pipeline,
            )?;
            Ok(Features { x, labels })
        };
        let views = |idx: &[usize]| -> Result<Features> {
            let mode = Mode::Views { views: e.bias_views };
            let per_batch = (512 / e.bias_views).max(1);
            let (x, labels) =
                self.features(&model.encoder, &self.val, idx.to_vec(), per_batch, mode, pipeline)?;
            Ok(Features { x, labels })
        };
        let f = EvalFeatures {
            bank: feats(bank_list, &sets.bank)?,
            test: feats(&self.val, &sets.test)?,
            val: (!sets.val.is_empty())
                .then(|| feats(&self.full_train, &sets.val))
                .transpose()?,
            views: (!sets.bias.is_empty()).then(|| views(&sets.bias)).transpose()?,
            train_counts: self.train.class_counts(),
        };
        protocol::score(
            &f,
            cfg,
            model.encoder.feat_dim,
            self.full_train.num_classes(),
            progress,
        )
    }
}

/// Evaluates `model`'s encoder on the in-memory CIFAR splits: the [`EvalSets`] of the official
/// training split `train` (of which `heldout` is the validation split) and `test`, scored by
/// [`protocol::score`].
#[allow(clippy::too_many_arguments)]
fn evaluate_memory(
    model: &SimClrModel,
    cfg: &Config,
    train: &Dataset,
    heldout: &[usize],
    train_counts: &[usize],
    test: &Dataset,
    pipeline: &Pipeline,
    mean: [f32; 3],
    std: [f32; 3],
    progress: ProgressMode,
) -> Result<EvalResult> {
    let e = &cfg.eval;
    let size = cfg.augment.size;
    let sets = EvalSets::new(cfg, train.n, heldout, test.n);
    emit(progress, serde_json::json!({"event": "eval", "what": "features"}));
    let feats = |ds: &Dataset, idx: &[usize]| -> Result<Features> {
        let sub = ds.subset(idx);
        let x = eval::extract_features(&model.encoder, &images(&sub), size, mean, std, 512)?;
        Ok(Features {
            x,
            labels: sub.labels,
        })
    };
    let views = |idx: &[usize]| -> Result<Features> {
        let sub = test.subset(idx);
        let x = bias::view_features(
            &model.encoder,
            &images(&sub),
            pipeline,
            size,
            e.bias_views,
            cfg.seed,
        )?;
        Ok(Features {
            x,
            labels: sub.labels,
        })
    };
    let f = EvalFeatures {
        bank: feats(train, &sets.bank)?,
        test: feats(test, &sets.test)?,
        val: (!sets.val.is_empty())
            .then(|| feats(train, &sets.val))
            .transpose()?,
        views: (!sets.bias.is_empty()).then(|| views(&sets.bias)).transpose()?,
        train_counts: train_counts.to_vec(),
    };
    protocol::score(&f, cfg, model.encoder.feat_dim, train.num_classes, progress)
}

fn images(ds: &Dataset) -> ImageSet<'_> {
    ImageSet {
        pixels: &ds.images,
        n: ds.n,
        h: ds.height,
        w: ds.width,
    }
}

/// The batches of one epoch (see the module doc for the order and seeds).
pub enum EpochBatches<'a> {
    Memory {
        train: &'a Dataset,
        pipeline: &'a Pipeline,
        order: Vec<usize>,
        seed: u64,
        epoch: usize,
        batch: usize,
        step: usize,
    },
    Folder(InputStream),
}

impl EpochBatches<'_> {
    /// The next step's 2·B augmented views (`[2B, 3, size, size]` values, first views then
    /// second views) and the labels of its B images.
    pub fn next_batch(&mut self) -> Result<(Vec<f32>, Vec<u16>)> {
        match self {
            EpochBatches::Memory {
                train,
                pipeline,
                order,
                seed,
                epoch,
                batch,
                step,
            } => {
                let (b, per) = (*batch, pipeline.out_len());
                let idx = order
                    .get(*step * b..(*step + 1) * b)
                    .ok_or_else(|| anyhow!("epoch {} has no step {}", *epoch + 1, *step + 1))?;
                *step += 1;
                let srcs: Vec<&[u8]> = idx.iter().map(|&i| train.image(i)).collect();
                let mut buf = vec![0f32; 2 * b * per];
                for v in 0..2 {
                    let seeds: Vec<u64> = idx
                        .iter()
                        .map(|&i| augment::view_seed(*seed, *epoch as u64, i as u64, v as u64))
                        .collect();
                    let (h, w) = (train.height, train.width);
                    pipeline.augment_batch(&srcs, h, w, &seeds, &mut buf[v * b * per..(v + 1) * b * per]);
                }
                Ok((buf, idx.iter().map(|&i| train.labels[i]).collect()))
            }
            EpochBatches::Folder(stream) => {
                let b = stream
                    .next()
                    .ok_or_else(|| anyhow!("the input stream has no more batches"))??;
                Ok((b.pixels, b.labels))
            }
        }
    }
}

impl TrainSource {
    /// Loads (CIFAR) or lists and checks (folders) the data of `cfg` under `data_root`.
    pub fn open(cfg: &Config, data_root: &Path) -> Result<TrainSource> {
        if cfg.data.is_folder() {
            return Ok(TrainSource::Folder(FolderSource::open(
                &cfg.data,
                cfg.eval.val_images,
                cfg.seed,
                data_root,
            )?));
        }
        let split = data::load(cfg.data.dataset.as_str(), data_root, cfg.data.allow_unverified)?;
        let t = &split.train;
        let val = cfg
            .eval
            .val_images
            .unwrap_or_else(|| data::default_val_images(t.n));
        let (heldout, keep) = data::holdout_and_select(&t.labels, t.num_classes, &cfg.data, val, cfg.seed)?;
        let train = if keep.len() == t.n {
            t.clone()
        } else {
            t.subset(&keep)
        };
        Ok(TrainSource::Memory {
            split,
            train,
            heldout,
        })
    }

    /// Training images of the run.
    pub fn n_train(&self) -> usize {
        match self {
            TrainSource::Memory { train, .. } => train.n,
            TrainSource::Folder(f) => f.train.len(),
        }
    }

    pub fn num_classes(&self) -> usize {
        match self {
            TrainSource::Memory { split, .. } => split.train.num_classes,
            TrainSource::Folder(f) => f.full_train.num_classes(),
        }
    }

    /// Normalisation: CIFAR's official statistics (else those of the training split); the
    /// ImageNet ones for folders.
    pub fn mean_std(&self, dataset: &DatasetName) -> ([f32; 3], [f32; 3]) {
        match self {
            TrainSource::Memory { split, .. } => data::official_mean_std(dataset.as_str())
                .unwrap_or_else(|| data::channel_mean_std(&split.train)),
            TrainSource::Folder(_) => (data::IMAGENET_MEAN, data::IMAGENET_STD),
        }
    }

    pub fn fingerprint(&self) -> &str {
        match self {
            TrainSource::Memory { split, .. } => &split.fingerprint,
            TrainSource::Folder(f) => &f.fingerprint,
        }
    }

    /// CIFAR: the files are the official ones; folders: no entry had to be skipped.
    pub fn verified(&self) -> bool {
        match self {
            TrainSource::Memory { split, .. } => split.verified,
            TrainSource::Folder(f) => f.skipped == 0,
        }
    }

    /// The batches of epoch `epoch` (0-based): `steps` batches of `cfg.train.batch_size` images.
    pub fn epoch<'a>(
        &'a self,
        cfg: &Config,
        pipeline: &'a Pipeline,
        epoch: usize,
        steps: usize,
    ) -> EpochBatches<'a> {
        let b = cfg.train.batch_size;
        let mut order: Vec<usize> = (0..self.n_train()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(augment::view_seed(
            cfg.seed,
            epoch as u64,
            u64::MAX,
            0,
        )));
        match self {
            TrainSource::Memory { train, .. } => EpochBatches::Memory {
                train,
                pipeline,
                order,
                seed: cfg.seed,
                epoch,
                batch: b,
                step: 0,
            },
            TrainSource::Folder(f) => {
                order.truncate(steps * b);
                let mode = Mode::Train { epoch: epoch as u64 };
                let pipeline = Arc::new(pipeline.clone());
                EpochBatches::Folder(InputStream::with_store(
                    f.train.clone(),
                    order,
                    b,
                    mode,
                    pipeline,
                    f.stream,
                    f.store.clone(),
                ))
            }
        }
    }

    /// Evaluates `model` (`evaluate_memory` for CIFAR, [`FolderSource::evaluate`] for folders).
    pub fn evaluate(
        &self,
        model: &SimClrModel,
        cfg: &Config,
        pipeline: &Pipeline,
        mean: [f32; 3],
        std: [f32; 3],
        progress: ProgressMode,
    ) -> Result<EvalResult> {
        match self {
            TrainSource::Memory {
                split,
                heldout,
                train,
            } => evaluate_memory(
                model,
                cfg,
                &split.train,
                heldout,
                &train.class_counts(),
                &split.test,
                pipeline,
                mean,
                std,
                progress,
            ),
            TrainSource::Folder(f) => f.evaluate(model, cfg, pipeline, mean, std, progress),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Arch, EvalConfig, ModelConfig, Stem, TrainLoopConfig};
    use crate::data::folder::test_support::write_tree;
    use crate::run::{train, Outcome, RunOptions};

    /// A tiny folder dataset: 3 classes of 64×64 (and odd-sized) JPEGs, validation as a list.
    fn dataset(root: &Path) {
        write_tree(
            &root.join("imagenet/train"),
            &[("n01", 6, 64, 64), ("n02", 6, 64, 64), ("n03", 6, 71, 53)],
        );
        write_tree(&root.join("imagenet/valimgs"), &[("x", 6, 64, 64)]);
        let lines: String = (0..6)
            .map(|k| format!("valimgs/x/img{k}.JPEG {}\n", k % 3))
            .collect();
        std::fs::write(root.join("imagenet/val.txt"), lines).unwrap();
    }

    /// Options of a quiet CPU run under `root` (the data root), writing to `root/out`.
    fn run_options(root: &Path, out: &str) -> RunOptions {
        RunOptions {
            out_dir: root.join(out),
            checkpoint_dir: None,
            data_root: root.to_path_buf(),
            progress: ProgressMode::None,
            device: candle_core::Device::Cpu,
            reference_cache: None,
        }
    }

    fn config() -> Config {
        let mut cfg = Config {
            seed: 3,
            model: ModelConfig {
                arch: Arch::Resnet18,
                width: 4,
                stem: Stem::Imagenet,
                proj_hidden: 16,
                proj_dim: 8,
                ..ModelConfig::default()
            },
            train: TrainLoopConfig {
                epochs: 2,
                batch_size: 4,
                steps_per_epoch: Some(2),
                ..TrainLoopConfig::default()
            },
            eval: EvalConfig {
                linear_epochs: 2,
                linear_batch: 8,
                knn_k: 3,
                bias_views: 2,
                bias_images: 4,
                ..EvalConfig::default()
            },
            ..Config::default()
        };
        cfg.data.dataset = DatasetName::Imagefolder;
        cfg.data.train_dir = Some("imagenet/train".into());
        cfg.data.val_list = Some("imagenet/val.txt".into());
        cfg.data.list_root = Some("imagenet".into());
        cfg.data.decode_threads = Some(2);
        cfg.data.fill_folder_defaults();
        cfg.augment.size = 32;
        cfg
    }

    #[test]
    fn a_few_training_steps_on_a_folder_dataset() {
        let t = tempfile::tempdir().unwrap();
        dataset(t.path());
        let cfg = config();
        cfg.validate().unwrap();
        let opts = |out: &str| run_options(t.path(), out);
        let m = match train(&cfg, &opts("a")).unwrap() {
            Outcome::Completed(m) => m,
            Outcome::Diverged(m) => panic!("diverged: {:?}", m.diverged),
        };
        assert_eq!(m.epochs.len(), 2);
        assert!(m.epochs.iter().all(|e| e.loss.is_finite()));
        assert_eq!(m.dataset, "imagefolder");
        assert!(m.dataset_verified);
        assert_eq!(
            m.dataset_fingerprint,
            data::dataset_fingerprint(&cfg.data, t.path()).unwrap()
        );
        let ev = m.eval.as_ref().unwrap();
        // The default validation split, round(18/10) = 2 images, is out of the bank.
        assert_eq!((ev.n_train, ev.n_test, ev.n_val), (16, 6, Some(2)));
        assert!(ev.bias_l2.is_some_and(f64::is_finite));
        for v in [
            ev.val_linear_top1,
            ev.val_linear_top5,
            ev.val_knn_top1,
            ev.val_knn_top5,
        ] {
            assert!(v.is_some_and(|a| (0.0..=100.0).contains(&a)), "{v:?}");
        }
        assert!(ev.bias_rel.is_some_and(f64::is_finite));
        assert_eq!(ev.bound_n, Some(4));
        assert!(ev.bound_attract_holds.is_some_and(|h| (0.0..=1.0).contains(&h)));
        assert_eq!(ev.bound_repel_holds, Some(1.0));
        // The validation split leaves 6, 5 and 5 training images a class: not balanced, so the
        // long-tail groups are computed, and every class is many-shot (within 100/1280 of n_max).
        assert_eq!((ev.n_many, ev.n_medium, ev.n_few), (Some(3), Some(0), Some(0)));
        // Same config and seed, other decode thread count, decodes cached → the same run.
        let mut cfg3 = cfg.clone();
        cfg3.data.decode_threads = Some(3);
        cfg3.data.cache_images = Some(true);
        let m3 = train(&cfg3, &opts("b")).unwrap();
        let losses = |m: &crate::run::Metrics| m.epochs.iter().map(|e| e.loss).collect::<Vec<_>>();
        assert_eq!(losses(&m), losses(m3.metrics()));
        assert_eq!(
            m.eval.as_ref().unwrap().linear_top1,
            m3.metrics().eval.as_ref().unwrap().linear_top1
        );
    }

    #[test]
    fn long_tailed_folder_runs_report_class_groups() {
        let t = tempfile::tempdir().unwrap();
        dataset(t.path());
        let mut cfg = config();
        // ρ = 100 on 6 images per class keeps 6, 0 and 0: one many-shot class, two few-shot.
        cfg.data.imbalance_ratio = Some(100.0);
        cfg.data.resize_short = Some(40);
        // No validation split: the 6 kept images are all this class has.
        cfg.eval.val_images = Some(0);
        cfg.train.steps_per_epoch = Some(1);
        let opts = run_options(t.path(), "lt");
        let m = train(&cfg, &opts).unwrap();
        let ev = m.metrics().eval.clone().unwrap();
        assert_eq!(m.metrics().train_images, 6);
        assert_eq!((ev.n_many, ev.n_medium, ev.n_few), (Some(1), Some(0), Some(2)));
        assert_eq!(ev.linear_medium, None);
        // The validation list is balanced (2 images a class): the overall top-1 is the
        // class-weighted mean of the group accuracies.
        let (many, few) = (ev.linear_many.unwrap(), ev.linear_few.unwrap());
        assert!((ev.linear_top1 - (many + 2.0 * few) / 3.0).abs() < 1e-9, "{ev:?}");
        // The keys are in metrics.json.
        let text = std::fs::read_to_string(t.path().join("lt/metrics.json")).unwrap();
        assert!(
            text.contains("\"n_few\": 2") && text.contains("\"linear_medium\": null"),
            "{text}"
        );
    }

    #[test]
    fn a_bank_list_feeds_the_probe_and_never_holds_validation_images() {
        // A long-tailed training list (6, 2 and 1 images) and a balanced bank list of all 18.
        let t = tempfile::tempdir().unwrap();
        dataset(t.path());
        // `write_tree` numbers on across the classes: n01 holds img0–5, n02 img6–11, n03 img12–17.
        let line = |c: &str, k: usize, y: usize| format!("train/{c}/img{}.JPEG {y}\n", 6 * y + k);
        let train_txt: String = (0..6)
            .map(|k| line("n01", k, 0))
            .chain((0..2).map(|k| line("n02", k, 1)))
            .chain([line("n03", 0, 2)])
            .collect();
        let bank_txt: String = ["n01", "n02", "n03"]
            .iter()
            .enumerate()
            .flat_map(|(y, c)| (0..6).map(move |k| line(c, k, y)))
            .collect();
        std::fs::write(t.path().join("imagenet/train.txt"), train_txt).unwrap();
        std::fs::write(t.path().join("imagenet/bank.txt"), bank_txt).unwrap();
        let mut cfg = config();
        cfg.data.train_dir = None;
        cfg.data.train_list = Some("imagenet/train.txt".into());
        cfg.eval.val_images = Some(3);
        cfg.train.steps_per_epoch = Some(1);
        let plain = FolderSource::open(&cfg.data, cfg.eval.val_images, cfg.seed, t.path()).unwrap();
        assert!(plain.bank.is_none());
        cfg.data.bank_list = Some("imagenet/bank.txt".into());
        let f = FolderSource::open(&cfg.data, cfg.eval.val_images, cfg.seed, t.path()).unwrap();
        assert_ne!(f.fingerprint, plain.fingerprint);
        let (bank, pool) = f.bank.as_ref().unwrap();
        let held: Vec<_> = f
            .heldout
            .iter()
            .map(|&i| f.full_train.entries[i].0.clone())
            .collect();
        assert_eq!(held.len(), 3);
        assert_eq!(pool.len(), 18 - 3);
        for &i in pool {
            assert!(!held.contains(&bank.entries[i].0), "{:?}", bank.entries[i]);
        }
        // The run's probe is fitted on the 15 bank images, not on the 6 training-list images
        // left beside the validation split.
        let run = |name: &str, cfg: &Config| {
            train(cfg, &run_options(t.path(), name))
                .unwrap()
                .metrics()
                .eval
                .clone()
                .unwrap()
        };
        assert_eq!(run("bank", &cfg).n_train, 15);
        cfg.data.bank_list = None;
        assert_eq!(run("plain", &cfg).n_train, 6);
    }

    #[test]
    fn folder_batches_equal_in_memory_batches_of_the_same_pixels() {
        // The same 32×32 images once as JPEG files and once decoded into a CIFAR-style Dataset:
        // both sources give the same order, seeds and layout, hence identical batches.
        let t = tempfile::tempdir().unwrap();
        write_tree(&t.path().join("train"), &[("a", 5, 32, 32), ("b", 5, 32, 32)]);
        std::fs::write(t.path().join("val.txt"), "train/a/img0.JPEG 0\n").unwrap();
        let mut cfg = config();
        cfg.data.train_dir = Some("train".into());
        cfg.data.val_list = Some("val.txt".into());
        cfg.data.list_root = None;
        cfg.data.decode_threads = Some(3);
        let folder = TrainSource::open(&cfg, t.path()).unwrap();
        let TrainSource::Folder(f) = &folder else {
            panic!("a folder source")
        };
        let mut images = Vec::new();
        for i in 0..f.train.len() {
            images.extend(f.train.load(i).unwrap().chw);
        }
        let ds = Dataset {
            images,
            labels: f.train.labels(),
            n: f.train.len(),
            height: 32,
            width: 32,
            num_classes: 2,
            class_names: f.train.class_names.clone(),
        };
        let split = Split {
            train: ds.clone(),
            test: ds.clone(),
            fingerprint: String::new(),
            verified: true,
        };
        let memory = TrainSource::Memory {
            split,
            train: ds,
            heldout: vec![],
        };
        let pipeline = Pipeline::new(&cfg.augment, data::IMAGENET_MEAN, data::IMAGENET_STD).unwrap();
        for epoch in [0, 1] {
            let mut a = memory.epoch(&cfg, &pipeline, epoch, 2);
            let mut b = folder.epoch(&cfg, &pipeline, epoch, 2);
            for _ in 0..2 {
                assert_eq!(a.next_batch().unwrap(), b.next_batch().unwrap());
            }
            assert!(b.next_batch().is_err());
        }
    }

    #[test]
    fn bad_entries_stop_the_run_before_training_unless_skipped() {
        let t = tempfile::tempdir().unwrap();
        dataset(t.path());
        let mut lines = std::fs::read_to_string(t.path().join("imagenet/val.txt")).unwrap();
        lines.push_str("valimgs/x/gone.JPEG 1\nvalimgs/x/img0.JPEG 9\n");
        std::fs::write(t.path().join("imagenet/val.txt"), lines).unwrap();
        let cfg = config();
        let opts = run_options(t.path(), "run");
        let e = format!("{:#}", train(&cfg, &opts).unwrap_err());
        assert!(
            e.contains("val.txt:7") && e.contains("gone.JPEG") && e.contains("val.txt:8"),
            "{e}"
        );
        assert!(!t.path().join("run/checkpoints").exists());
        // Skipped and counted: the source opens with the good entries.
        let mut cfg = cfg;
        cfg.data.skip_bad = Some(true);
        let TrainSource::Folder(f) = TrainSource::open(&cfg, t.path()).unwrap() else {
            panic!("a folder source");
        };
        assert_eq!(
            (f.skipped, f.val.len(), f.heldout.len(), f.train.len()),
            (2, 6, 2, 16)
        );
        // A subset by class works on folder datasets too.
        cfg.data.per_class = Some(2);
        let src = TrainSource::open(&cfg, t.path()).unwrap();
        assert_eq!(src.n_train(), 6);
        assert!(!src.verified());
    }
}
