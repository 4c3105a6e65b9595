//! End-to-end tests of the image-folder commands: `data verify --config` decodes every JPEG and
//! lists the bad entries with file and line; `train` stops before training on them unless
//! `--skip-bad`; `--device` is checked before anything runs.

use image::codecs::jpeg::JpegEncoder;
use image::ExtendedColorType;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_protoclr"))
}

fn jpeg(side: u32, seed: u32) -> Vec<u8> {
    let px: Vec<u8> = (0..side * side * 3)
        .map(|i| ((i * 7 + seed * 31) % 251) as u8)
        .collect();
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, 90)
        .encode(&px, side, side, ExtendedColorType::Rgb8)
        .unwrap();
    out
}

/// `root/imagenet/train/{a,b,c}/*.JPEG` (6 a class) and a validation list of 6 good lines.
fn write_dataset(root: &Path) -> PathBuf {
    let base = root.join("imagenet");
    let mut seed = 0;
    for class in ["a", "b", "c"] {
        std::fs::create_dir_all(base.join("train").join(class)).unwrap();
        for k in 0..6 {
            std::fs::write(base.join(format!("train/{class}/{k}.JPEG")), jpeg(48, seed)).unwrap();
            seed += 1;
        }
    }
    let val: String = (0..6)
        .map(|k| format!("train/{}/{k}.JPEG {}\n", ["a", "b", "c"][k % 3], k % 3))
        .collect();
    std::fs::write(base.join("val.txt"), val).unwrap();
    let cfg = root.join("folder.yaml");
    std::fs::write(
        &cfg,
        "seed: 1
data:
  dataset: imagefolder
  train_dir: imagenet/train
  val_list: imagenet/val.txt
  list_root: imagenet
  decode_threads: 1
model:
  arch: resnet18
  width: 4
  stem: imagenet
  proj_hidden: 16
  proj_dim: 8
train:
  epochs: 1
  batch_size: 4
  steps_per_epoch: 2
augment:
  size: 32
eval:
  linear_epochs: 1
  linear_batch: 8
  knn_k: 3
  bias_views: 2
  bias_images: 4
",
    )
    .unwrap();
    cfg
}

fn run(args: &[&str], cfg: &Path, root: &Path) -> Output {
    Command::new(bin())
        .args(["--threads", "2"])
        .args(args)
        .arg("--config")
        .arg(cfg)
        .arg("--data-root")
        .arg(root)
        .env_remove("PROTOCLR_DEVICE")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn verify_lists_bad_entries_and_train_stops_unless_skip_bad() {
    let t = tempfile::tempdir().unwrap();
    let cfg = write_dataset(t.path());

    let ok = run(&["data", "verify"], &cfg, t.path());
    assert!(ok.status.success(), "{}", text(&ok));
    let out = text(&ok);
    assert!(
        out.contains("3 classes · train 18 images · val 6 images · 0 bad entries · every image decoded"),
        "{out}"
    );

    // Three bad entries: a file that does not decode (found only by decoding), a missing file and
    // a label out of range (lines 7 and 8 of the list).
    let base = t.path().join("imagenet");
    std::fs::write(base.join("train/b/broken.JPEG"), b"\x89PNG\r\n\x1a\n not a jpeg").unwrap();
    let mut val = std::fs::read_to_string(base.join("val.txt")).unwrap();
    val.push_str("train/a/gone.JPEG 0\ntrain/a/0.JPEG 7\n");
    std::fs::write(base.join("val.txt"), val).unwrap();

    let bad = run(&["data", "verify"], &cfg, t.path());
    let out = text(&bad);
    assert!(!bad.status.success(), "{out}");
    let bad_lines: Vec<&str> = out.lines().filter(|l| l.starts_with("bad: ")).collect();
    assert_eq!(bad_lines.len(), 3, "{out}");
    assert!(
        out.contains("broken.JPEG") && out.contains("val.txt:7") && out.contains("gone.JPEG"),
        "{out}"
    );
    assert!(out.contains("val.txt:8"), "{out}");
    assert!(out.contains("3 bad entries"), "{out}");

    // Training lists the dataset without decoding: the missing file and the label stop it
    // before the first step, naming the list and lines; the run folder stays empty, so that the
    // same --out can be rerun with --skip-bad.
    let run_dir = t.path().join("run");
    let o = run(
        &["train", "--progress", "none", "--out", run_dir.to_str().unwrap()],
        &cfg,
        t.path(),
    );
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("val.txt:7") && out.contains("val.txt:8") && out.contains("--skip-bad"),
        "{out}"
    );
    assert!(!run_dir.join("config.yaml").exists() && !run_dir.join("checkpoints").exists());

    // --skip-bad: left out (and the undecodable training image replaced when drawn), counted.
    let o = run(
        &[
            "train",
            "--progress",
            "none",
            "--skip-bad",
            "--out",
            run_dir.to_str().unwrap(),
        ],
        &cfg,
        t.path(),
    );
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("skipped 2 bad entries"), "{out}");
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(m["status"], "completed");
    assert_eq!(m["device"], "cpu");
    assert_eq!(m["eval"]["n_test"], 6);
}

#[test]
fn device_is_checked_before_anything_runs() {
    let t = tempfile::tempdir().unwrap();
    let cfg = write_dataset(t.path());
    let run_dir = t.path().join("run");
    for (spec, want) in [
        ("gpu0", "expected `cpu`, `cuda` or `cuda:N`"),
        #[cfg(not(feature = "cuda"))]
        ("cuda:0", "--features cuda"),
    ] {
        let o = run(
            &[
                "--device",
                spec,
                "train",
                "--progress",
                "none",
                "--out",
                run_dir.to_str().unwrap(),
            ],
            &cfg,
            t.path(),
        );
        let out = text(&o);
        assert!(!o.status.success() && out.contains(want), "{spec}: {out}");
        assert!(
            !run_dir.join("config.yaml").exists(),
            "{spec}: the run folder was written"
        );
    }
}

#[test]
fn make_lt_writes_lists_once_reads_back_and_refuses_other_contents() {
    let t = tempfile::tempdir().unwrap();
    let from = t.path().join("nette");
    let mut seed = 100;
    for (part, sizes) in [("train", [6, 6, 6]), ("val", [2, 3, 2])] {
        for (class, n) in ["a", "b", "c"].iter().zip(sizes) {
            std::fs::create_dir_all(from.join(part).join(class)).unwrap();
            for k in 0..n {
                std::fs::write(from.join(format!("{part}/{class}/{k}.JPEG")), jpeg(16, seed)).unwrap();
                seed += 1;
            }
        }
    }
    let make = |rho: &str| {
        Command::new(bin())
            .args(["data", "make-lt", "--from"])
            .arg(&from)
            .args(["--imbalance", rho, "--out"])
            .arg(t.path().join("nette-lt4"))
            .output()
            .unwrap()
    };
    let text = |o: &Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    // ρ = 4 from n_max = 6: 6, floor(6 / 2) = 3, floor(6 / 4) = 1; 2 validation images a class.
    let o = make("4");
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("wrote") && text(&o).contains("[6, 3, 1] = 10 images, val 2 per class"),
        "{}",
        text(&o)
    );
    let train = std::fs::read_to_string(t.path().join("nette-lt4/train.txt")).unwrap();
    assert_eq!(train.lines().count(), 10);
    assert!(train.lines().all(|l| l.starts_with("train/")), "{train}");
    let o = make("4");
    assert!(
        o.status.success() && text(&o).contains("already up to date"),
        "{}",
        text(&o)
    );
    let o = make("2");
    assert!(!o.status.success());
    assert!(
        text(&o).contains("already exists with other contents"),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read_to_string(t.path().join("nette-lt4/train.txt")).unwrap(),
        train
    );
    // The lists read back through train_list / val_list / class_map, every image decoding.
    let cfg = t.path().join("lt.yaml");
    std::fs::write(
        &cfg,
        "data:\n  dataset: imagefolder\n  train_list: nette-lt4/train.txt\n  val_list: nette-lt4/val.txt\n  \
         class_map: nette-lt4/classes.txt\n  list_root: nette\n",
    )
    .unwrap();
    let o = Command::new(bin())
        .args(["data", "verify", "--config"])
        .arg(&cfg)
        .arg("--data-root")
        .arg(t.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("3 classes · train 10 images · val 6 images · 0 bad entries"),
        "{}",
        text(&o)
    );
}
