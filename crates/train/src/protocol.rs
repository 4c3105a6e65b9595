//! The evaluation protocol of a run, shared by the CIFAR ([`crate::run`]) and image-folder
//! ([`crate::source`]) paths: which images each evaluation uses ([`EvalSets`]) and how one
//! encoder's features on them become an [`EvalResult`] ([`score`]). The two paths differ only in
//! how they compute features (in memory, or streamed from disk).
//!
//! - **validation**: the `eval.val_images` images of the official training split that the run
//!   held out of everything it trains on ([`crate::data::holdout_and_select`]), scored whole;
//! - **bank** (linear-probe training set and kNN memory): `eval.train_images` of the *other*
//!   training images (a seeded subset, seed ⊕ "tr"; all of them when unset), so the bank and the
//!   validation split are disjoint by construction; with a bank list of its own
//!   (`data.bank_list`, image folders), drawn the same way from those images less the validation
//!   split's ([`EvalSets::with_bank_pool`]);
//! - **test**: `eval.test_images` of the official test split (seed ⊕ "te"; all when unset);
//! - **bias**: `eval.bias_images` test images (seed ⊕ "bi"), K = `eval.bias_views` views each,
//!   for the prototype bias and the theorem bounds ([`crate::bias`]).
//!
//! The linear probe is trained once on the bank and scored on test and validation; kNN uses the
//! bank as memory for both.

use crate::bias;
use crate::config::Config;
use crate::data;
use crate::eval::{self, LinearProbe, ProbeConfig};
use crate::metrics::EvalResult;
use crate::progress::{emit, ProgressMode};
use anyhow::Result;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Seeded subset of `n` indices of size `k` (all when `k` is None or ≥ n), sorted.
pub fn seeded_subset(n: usize, k: Option<usize>, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    if let Some(k) = k.filter(|&k| k < n) {
        idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        idx.truncate(k);
        idx.sort_unstable();
    }
    idx
}

/// The images of each evaluation: indices into the official training split (`bank`, `val`) and
/// test split (`test`, `bias`), sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalSets {
    pub bank: Vec<usize>,
    pub val: Vec<usize>,
    pub test: Vec<usize>,
    /// Empty when the bias is disabled (`eval.bias_views` or `eval.bias_images` 0).
    pub bias: Vec<usize>,
}

impl EvalSets {
    /// The sets of a run with `n_train` official training images of which `heldout` (sorted) is
    /// the validation split, and `n_test` test images.
    pub fn new(cfg: &Config, n_train: usize, heldout: &[usize], n_test: usize) -> EvalSets {
        Self::with_bank_pool(cfg, &data::complement(n_train, heldout), heldout, n_test)
    }

    /// The sets of a run whose bank is drawn from `pool` (sorted indices of the images it may
    /// use: of the training split less `heldout`, or of a bank list of its own less the images
    /// of `heldout`), `heldout` the validation split, and `n_test` test images.
    pub fn with_bank_pool(cfg: &Config, pool: &[usize], heldout: &[usize], n_test: usize) -> EvalSets {
        let e = &cfg.eval;
        let bank = seeded_subset(pool.len(), e.train_images, cfg.seed ^ 0x7472) // "tr"
            .into_iter()
            .map(|p| pool[p])
            .collect();
        let test = seeded_subset(n_test, e.test_images, cfg.seed ^ 0x7465); // "te"
        let bias = if e.bias_views > 0 && e.bias_images > 0 {
            seeded_subset(n_test, Some(e.bias_images), cfg.seed ^ 0x6269) // "bi"
        } else {
            vec![]
        };
        EvalSets {
            bank,
            val: heldout.to_vec(),
            test,
            bias,
        }
    }
}

/// Features (`[n·rows, d]`, row-major) and the labels of their n images.
#[derive(Debug, Clone, Default)]
pub struct Features {
    pub x: Vec<f32>,
    pub labels: Vec<u16>,
}

/// One encoder's features on the [`EvalSets`]: eval-transform features of the bank, test and
/// validation images, and `eval.bias_views` augmented views of each bias image.
#[derive(Debug, Clone, Default)]
pub struct EvalFeatures {
    pub bank: Features,
    pub test: Features,
    /// None without a validation split.
    pub val: Option<Features>,
    /// None when the bias is disabled.
    pub views: Option<Features>,
    /// Images per class in the run's self-supervised training subset, for the long-tail groups
    /// ([`eval::group_accuracy`]; empty or balanced: no groups).
    pub train_counts: Vec<usize>,
}

/// The linear probe, kNN, bias and bound results of one encoder's features (`d` dimensions,
/// `classes` classes) under `cfg`'s evaluation settings.
pub fn score(
    f: &EvalFeatures,
    cfg: &Config,
    d: usize,
    classes: usize,
    progress: ProgressMode,
) -> Result<EvalResult> {
    let e = &cfg.eval;
    emit(progress, serde_json::json!({"event": "eval", "what": "linear"}));
    let probe = ProbeConfig {
        epochs: e.linear_epochs,
        lr: e.linear_lr,
        batch: e.linear_batch,
        weight_decay: e.linear_weight_decay,
        seed: cfg.seed,
    };
    let lp = LinearProbe::train(&f.bank.x, &f.bank.labels, d, classes, &probe)?;
    let lin = lp.accuracy(&f.test.x, &f.test.labels)?;
    let groups = eval::group_accuracy(&lp.predict(&f.test.x)?, &f.test.labels, &f.train_counts);
    let val = f.val.as_ref().filter(|v| !v.labels.is_empty());
    let val_lin = val.map(|v| lp.accuracy(&v.x, &v.labels)).transpose()?;
    emit(progress, serde_json::json!({"event": "eval", "what": "knn"}));
    let knn = |q: &Features| {
        eval::knn(
            &f.bank.x,
            &f.bank.labels,
            &q.x,
            &q.labels,
            d,
            classes,
            e.knn_k,
            e.knn_temperature,
        )
    };
    let knn_test = knn(&f.test)?;
    let val_knn = val.map(knn).transpose()?;
    let (bias, bounds) = match &f.views {
        Some(v) => {
            emit(progress, serde_json::json!({"event": "eval", "what": "bias"}));
            let b = bias::bias_from_features(&v.x, &v.labels, e.bias_views, d, classes)?;
            let t = bias::bounds_from_features(&v.x, &v.labels, e.bias_views, d, classes, cfg.loss.tau)?;
            (Some(b), Some(t))
        }
        None => (None, None),
    };
    Ok(EvalResult {
        linear_top1: lin.top1,
        linear_top5: lin.top5,
        knn_top1: knn_test.top1,
        knn_top5: knn_test.top5,
        bias_l2: bias.map(|b| b.l2),
        bias_l2_ci95: bias.map(|b| b.l2_ci95),
        bias_cos: bias.map(|b| b.cos),
        bias_cos_ci95: bias.map(|b| b.cos_ci95),
        n_train: f.bank.labels.len(),
        n_test: f.test.labels.len(),
        val_linear_top1: val_lin.map(|a| a.top1),
        val_linear_top5: val_lin.map(|a| a.top5),
        val_knn_top1: val_knn.map(|a| a.top1),
        val_knn_top5: val_knn.map(|a| a.top5),
        n_val: val.map(|v| v.labels.len()),
        bias_rel: bias.map(|b| b.rel),
        bias_rel_ci95: bias.map(|b| b.rel_ci95),
        bound_attract_holds: bounds.map(|t| t.attract_holds),
        bound_attract_slack: bounds.map(|t| t.attract_slack),
        bound_repel_holds: bounds.and_then(|t| t.repel_holds),
        bound_repel_slack: bounds.and_then(|t| t.repel_slack),
        bound_n: bounds.map(|t| t.n),
        linear_many: groups.and_then(|g| g.many),
        linear_medium: groups.and_then(|g| g.medium),
        linear_few: groups.and_then(|g| g.few),
        n_many: groups.map(|g| g.n_many),
        n_medium: groups.map(|g| g.n_medium),
        n_few: groups.map(|g| g.n_few),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DataConfig;

    fn balanced(classes: usize, per: usize) -> Vec<u16> {
        (0..classes * per).map(|i| (i % classes) as u16).collect()
    }

    fn disjoint(a: &[usize], b: &[usize]) -> bool {
        let b: std::collections::HashSet<_> = b.iter().collect();
        a.iter().all(|i| !b.contains(i))
    }

    #[test]
    fn validation_bank_and_training_subset_are_disjoint() {
        // CIFAR-sized: 50,000 training images of 10 classes, the default 5,000 held out.
        let labels = balanced(10, 5000);
        let n = labels.len();
        let val = data::default_val_images(n);
        assert_eq!(val, 5000);
        for (seed, per_class, bank) in [
            (0u64, Some(1000), Some(10_000)),
            (7, None, None),
            (3, Some(10), Some(100)),
        ] {
            let mut cfg = Config {
                seed,
                ..Config::default()
            };
            cfg.eval.train_images = bank;
            let data_cfg = DataConfig {
                per_class,
                ..DataConfig::default()
            };
            let (heldout, train) = data::holdout_and_select(&labels, 10, &data_cfg, val, seed).unwrap();
            let sets = EvalSets::new(&cfg, n, &heldout, 10_000);
            assert_eq!(sets.val, heldout);
            assert_eq!(sets.val.len(), 5000);
            assert_eq!(sets.bank.len(), bank.unwrap_or(n - 5000));
            assert!(
                disjoint(&sets.bank, &sets.val),
                "bank and validation overlap (seed {seed})"
            );
            assert!(
                disjoint(&train, &sets.val),
                "training subset and validation overlap (seed {seed})"
            );
            assert!(sets.bank.windows(2).all(|w| w[0] < w[1]) && sets.bank.iter().all(|&i| i < n));
            // Stratified: 500 validation images of every class.
            let mut per = [0usize; 10];
            sets.val.iter().for_each(|&i| per[labels[i] as usize] += 1);
            assert_eq!(per, [500; 10]);
            assert_eq!(sets.bias.len(), 1000);
            assert_eq!(sets.test.len(), 10_000);
        }
    }

    #[test]
    fn eval_results_written_before_the_new_keys_still_read() {
        let old = r#"{"linear_top1": 61.3, "linear_top5": 95.0, "knn_top1": 55.0, "knn_top5": 93.0,
            "bias_l2": 0.42, "bias_l2_ci95": [0.41, 0.43], "bias_cos": 0.09, "bias_cos_ci95": [0.08, 0.1],
            "n_train": 50000, "n_test": 10000}"#;
        let e: EvalResult = serde_json::from_str(old).unwrap();
        assert_eq!(
            (e.n_val, e.val_linear_top1, e.bias_rel, e.bound_n),
            (None, None, None, None)
        );
        // Written back, every new key is there as null.
        let text = serde_json::to_string(&e).unwrap();
        for k in [
            "val_linear_top1",
            "val_knn_top5",
            "n_val",
            "bias_rel_ci95",
            "bound_repel_slack",
        ] {
            assert!(text.contains(&format!("\"{k}\":null")), "{k}: {text}");
        }
    }

    #[test]
    fn without_validation_the_sets_are_the_old_ones() {
        // eval.val_images = 0: bank, test and bias exactly as before the validation split existed.
        let cfg = Config {
            seed: 5,
            ..Config::default()
        };
        let mut cfg = cfg;
        cfg.eval.train_images = Some(300);
        cfg.eval.test_images = Some(200);
        cfg.eval.bias_images = 50;
        let sets = EvalSets::new(&cfg, 1000, &[], 400);
        assert_eq!(sets.bank, seeded_subset(1000, Some(300), 5 ^ 0x7472));
        assert_eq!(sets.test, seeded_subset(400, Some(200), 5 ^ 0x7465));
        assert_eq!(sets.bias, seeded_subset(400, Some(50), 5 ^ 0x6269));
        assert!(sets.val.is_empty());
        cfg.eval.bias_views = 0;
        assert!(EvalSets::new(&cfg, 1000, &[], 400).bias.is_empty());
    }
}
