//! The streaming input pipeline of image-folder datasets: JPEG decoding and augmentation on a
//! pool of worker threads, batches delivered in a fixed order through a bounded queue.
//!
//! # Threads and queue
//! [`InputStream::new`] starts `threads` std threads (not the rayon pool, which the trainer
//! uses) and one assembler thread. Workers take the images of the stream's order one at a
//! time, read and decode the file ([`crate::data::folder::read_image`]), convert it to CHW
//! `u8` and run the transform of the [`Mode`] into `f32` rows; the assembler copies the rows
//! into their batch and sends complete batches, in order, through a channel bounded at
//! `prefetch` batches. Workers never run more than `prefetch + 1` batches ahead of the
//! consumer, so memory stays at about `prefetch + 2` batches.
//!
//! # Determinism
//! Which thread handles an image never matters: every view's augmentation is seeded from
//! [`augment::view_seed`] with the image's identity (see [`Mode`]), each image lands at a fixed
//! row of its batch, and batches are sent in order. Same list, order, mode and seed → the same
//! batches, bit for bit, for any thread count.
//!
//! # Bad images
//! An image that cannot be read or decoded stops the stream with an error naming the file,
//! unless `skip_bad`: then it is replaced by the next decodable entry of the list (entry
//! `i + 1`, `i + 2`, … — deterministic, as decodability does not change), a warning is printed on
//! stderr and [`InputStream::replaced`] counts it; the view seeds stay those of the original
//! entry, the label is the replacement's.
//!
//! # Image store: pre-resizing and caching
//! Every image goes through an [`ImageStore`] between decoding and the transform. With
//! `data.resize_short: S` the decoded image is first resized so that its shorter side is S
//! (aspect kept, antialiased bilinear as [`augment::resized_crop`], rounded back to `u8`):
//! the crops of training and evaluation are then taken from that image, not from the full-size
//! decode — a different input distribution (a random crop of a pre-shrunk image is softer than
//! one resized from the original pixels), hence a config key that enters the cell id. With
//! `data.cache_images: true` the (resized) decode of each file is kept in memory the first
//! time it is read and reused by every later epoch and by the evaluation: the batches are bit
//! for bit those without the cache, only faster. Off by default: ImageNet's 1.28 M decodes do
//! not fit in memory (Imagenette's 13,394 at 224² take 2.0 GB, pre-resized to 112 px 0.5 GB).
//! On Imagenette's 224² JPEGs with two 64 px views (`bench input --size 64`, one decoding
//! thread, a shared and loaded 2-core machine, ranges of 2–5 runs): 470–630 images/s decoding
//! every time, 650–980 with the full-size decodes cached, 980–2,900 (median ≈ 1,260) resized to
//! 112 px and cached. Decoding is the smaller part; crops resized from the 224 px image are the
//! larger one, which the pre-resize removes.
//!
//! # Throughput
//! [`bench`](fn@bench) measures decoded and augmented images per second (`protoclr bench input`).
//! Decoding calls zune-jpeg directly ([`crate::data::folder::decode_jpeg`]). The `image`
//! crate's JPEG support is a wrapper of the same decoder: on one core, to planar RGB, both decode
//! ≈650 ImageNet-sized photos/s (500×375, quality 90; 123 vs 120 MP/s), a 512² baseline photo
//! at 486 vs 492/s and a progressive one at 171 vs 167/s — parity within noise — and grayscale
//! files at 1,694 vs 1,598/s once decoded as one channel. On the same images the whole pipeline
//! (decode + two SimCLR views at 224) runs at ≈170 images/s per thread: augmentation, not
//! decoding, is about three quarters of the cost.

use crate::augment::{self, normalize, resized_crop, resized_crop_hw, Image, Pipeline};
use crate::data::folder::{read_image, DecodedImage, ImageList};
use anyhow::{anyhow, bail, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

/// Entries tried after a bad one when `skip_bad` replaces it.
pub const MAX_REPLACEMENT_TRIES: usize = 16;

/// What each image of a stream becomes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// SimCLR training: two views by the pipeline, view v of list entry i seeded with
    /// `view_seed(seed, epoch, i, v)` (as the in-memory CIFAR path). Batch rows are view-major:
    /// view v of the j-th image of a batch of n images is row `v·n + j`.
    Train { epoch: u64 },
    /// Evaluation: one view, the centred square of side `crop`·min(h, w) resized to the
    /// pipeline's size ([`eval_crop`]), normalised with `mean` and `std`. Row j = image j.
    Eval {
        crop: f64,
        mean: [f32; 3],
        std: [f32; 3],
    },
    /// `views` augmented views per image, image-major (row `j·views + v`), view v of the image
    /// at position p of the stream's order seeded with `view_seed(seed, u64::MAX, p, v)`: the
    /// protocol of [`crate::bias::view_features`].
    Views { views: usize },
}

impl Mode {
    /// Rows (views) per image.
    pub fn views(&self) -> usize {
        match self {
            Mode::Train { .. } => 2,
            Mode::Eval { .. } => 1,
            Mode::Views { views } => *views,
        }
    }
}

/// Settings of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    /// Decoding threads (≥ 1).
    pub threads: usize,
    /// Complete batches queued ahead of the consumer (≥ 1).
    pub prefetch: usize,
    /// Replace undecodable images instead of stopping (see the module doc).
    pub skip_bad: bool,
    /// Base seed of the view seeds.
    pub seed: u64,
}

/// One batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `rows × 3 × size × size` normalised values, rows as the [`Mode`] says.
    pub pixels: Vec<f32>,
    /// Label of each image (not view), in batch order.
    pub labels: Vec<u16>,
    /// List entry of each image actually used (a replaced image shows its replacement).
    pub entries: Vec<usize>,
    /// `images × views`.
    pub rows: usize,
}

/// The evaluation transform: the centred square of side round(`crop`·min(h, w)) (at least 1)
/// resized to `size` (bilinear, antialiased when shrinking), normalised into `out`
/// (3×size×size). `crop = 0.875` at size 224 is torchvision's `Resize(256)` +
/// `CenterCrop(224)` up to rounding; `crop = 1` is [`augment::eval_transform`].
#[allow(clippy::too_many_arguments)]
pub fn eval_crop(
    src: &[u8],
    h: usize,
    w: usize,
    size: usize,
    crop: f64,
    mean: [f32; 3],
    std: [f32; 3],
    out: &mut [f32],
) {
    if crop >= 1.0 {
        return augment::eval_transform(src, h, w, size, mean, std, out);
    }
    let short = h.min(w);
    let side = ((short as f64 * crop).round() as usize).clamp(1, short);
    let img = resized_crop(
        &Image::from_u8(src, h, w),
        (h - side) / 2,
        (w - side) / 2,
        side,
        side,
        size,
    );
    normalize(&img, mean, std, out);
}

/// Decoded images on their way to the transforms: optionally resized to a shorter side and
/// cached in memory (see the module doc). Shared by the streams of a run.
#[derive(Debug, Default)]
pub struct ImageStore {
    resize_short: Option<usize>,
    cache: Option<Mutex<HashMap<PathBuf, Arc<DecodedImage>>>>,
}

impl ImageStore {
    /// A store resizing to `resize_short` (None: full size) and caching when `cache`.
    pub fn new(resize_short: Option<usize>, cache: bool) -> ImageStore {
        ImageStore {
            resize_short,
            cache: cache.then(Default::default),
        }
    }

    /// Image `i` of `list`: from the cache, or read, decoded and resized (then cached).
    pub fn load(&self, list: &ImageList, i: usize) -> Result<Arc<DecodedImage>> {
        let path = list.path(i);
        if let Some(hit) = self
            .cache
            .as_ref()
            .and_then(|c| c.lock().unwrap().get(&path).cloned())
        {
            return Ok(hit);
        }
        let img = read_image(&path)?;
        let img = Arc::new(match self.resize_short {
            Some(s) => resize_short_side(&img, s),
            None => img,
        });
        if let Some(c) = &self.cache {
            c.lock().unwrap().insert(path, img.clone());
        }
        Ok(img)
    }

    /// Images held in the cache.
    pub fn cached(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.lock().unwrap().len())
    }
}

/// `img` resized so that its shorter side is `short` and the longer one keeps the aspect ratio
/// (rounded, at least 1), antialiased bilinear, rounded to `u8`. Unchanged when the shorter side
/// already is `short`.
pub fn resize_short_side(img: &DecodedImage, short: usize) -> DecodedImage {
    let (h, w) = (img.height, img.width);
    if h.min(w) == short {
        return img.clone();
    }
    let scale = short as f64 / h.min(w) as f64;
    let side = |n: usize| {
        if n == h.min(w) {
            short
        } else {
            ((n as f64 * scale).round() as usize).max(1)
        }
    };
    let (oh, ow) = (side(h), side(w));
    let out = resized_crop_hw(&Image::from_u8(&img.chw, h, w), 0, 0, h, w, oh, ow);
    DecodedImage {
        chw: out
            .data
            .iter()
            .map(|&v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
            .collect(),
        height: oh,
        width: ow,
    }
}

/// A worker's result for one position of the order.
struct Item {
    rows: Vec<f32>,
    label: u16,
    entry: usize,
}

struct Shared {
    list: Arc<ImageList>,
    order: Vec<usize>,
    batch: usize,
    mode: Mode,
    pipeline: Arc<Pipeline>,
    opts: StreamOptions,
    store: Arc<ImageStore>,
    /// Next position of `order` to hand out.
    next: AtomicUsize,
    /// Batches taken by the consumer.
    consumed: Mutex<usize>,
    wake: Condvar,
    stop: AtomicBool,
    replaced: AtomicUsize,
}

impl Shared {
    fn row_len(&self) -> usize {
        self.pipeline.out_len()
    }

    /// Decodes entry `entry`, or with `skip_bad` the next decodable one.
    fn load(&self, entry: usize) -> Result<(Arc<DecodedImage>, usize)> {
        let err = match self.store.load(&self.list, entry) {
            Ok(img) => return Ok((img, entry)),
            Err(e) => e,
        };
        if !self.opts.skip_bad {
            bail!("input pipeline: {err:#} (pass --skip-bad or set `data.skip_bad: true` to replace undecodable images)");
        }
        let n = self.list.len();
        for d in 1..=MAX_REPLACEMENT_TRIES.min(n.saturating_sub(1)) {
            let alt = (entry + d) % n;
            if let Ok(img) = self.store.load(&self.list, alt) {
                self.replaced.fetch_add(1, Ordering::Relaxed);
                eprintln!(
                    "warning: skipping bad image ({err:#}); using {} instead",
                    self.list.path(alt).display()
                );
                return Ok((img, alt));
            }
        }
        bail!("input pipeline: {err:#}, and none of the next {MAX_REPLACEMENT_TRIES} entries decodes either")
    }

    fn process(&self, pos: usize) -> Result<Item> {
        let entry = self.order[pos];
        let (img, used) = self.load(entry)?;
        let (h, w, per) = (img.height, img.width, self.row_len());
        let mut rows = vec![0f32; self.mode.views() * per];
        match self.mode {
            Mode::Train { epoch } => {
                for (v, out) in rows.chunks_mut(per).enumerate() {
                    let seed = augment::view_seed(self.opts.seed, epoch, entry as u64, v as u64);
                    self.pipeline
                        .apply(&img.chw, h, w, &mut ChaCha8Rng::seed_from_u64(seed), out);
                }
            }
            Mode::Eval { crop, mean, std } => {
                eval_crop(&img.chw, h, w, self.pipeline.size(), crop, mean, std, &mut rows);
            }
            Mode::Views { .. } => {
                for (v, out) in rows.chunks_mut(per).enumerate() {
                    let seed = augment::view_seed(self.opts.seed, u64::MAX, pos as u64, v as u64);
                    self.pipeline
                        .apply(&img.chw, h, w, &mut ChaCha8Rng::seed_from_u64(seed), out);
                }
            }
        }
        Ok(Item {
            rows,
            label: self.list.label(used),
            entry: used,
        })
    }

    fn worker(&self, tx: Sender<(usize, Result<Item>)>) {
        let total = self.order.len();
        let ahead = self.opts.prefetch + 1;
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            let pos = self.next.fetch_add(1, Ordering::SeqCst);
            if pos >= total {
                return;
            }
            let k = pos / self.batch;
            {
                let mut consumed = self.consumed.lock().unwrap();
                while k >= *consumed + ahead && !self.stop.load(Ordering::SeqCst) {
                    consumed = self.wake.wait(consumed).unwrap();
                }
            }
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            let item = self.process(pos);
            if tx.send((pos, item)).is_err() {
                return;
            }
        }
    }

    /// Images in batch `k`.
    fn batch_images(&self, k: usize) -> usize {
        self.batch.min(self.order.len() - k * self.batch)
    }

    fn assembler(&self, rx: Receiver<(usize, Result<Item>)>, tx: SyncSender<Result<Batch>>) {
        struct Slot {
            batch: Batch,
            filled: usize,
            /// First failure by position within the batch.
            err: Option<(usize, anyhow::Error)>,
        }
        let per = self.row_len();
        let views = self.mode.views();
        let mut pending: BTreeMap<usize, Slot> = BTreeMap::new();
        let mut next_send = 0;
        for (pos, item) in rx {
            let (k, j) = (pos / self.batch, pos % self.batch);
            let n = self.batch_images(k);
            let slot = pending.entry(k).or_insert_with(|| Slot {
                batch: Batch {
                    pixels: vec![0f32; n * views * per],
                    labels: vec![0; n],
                    entries: vec![0; n],
                    rows: n * views,
                },
                filled: 0,
                err: None,
            });
            match item {
                Ok(item) => {
                    for (v, row) in item.rows.chunks(per).enumerate() {
                        let r = match self.mode {
                            Mode::Train { .. } => v * n + j,
                            Mode::Eval { .. } | Mode::Views { .. } => j * views + v,
                        };
                        slot.batch.pixels[r * per..(r + 1) * per].copy_from_slice(row);
                    }
                    slot.batch.labels[j] = item.label;
                    slot.batch.entries[j] = item.entry;
                }
                Err(e) => {
                    if slot.err.as_ref().is_none_or(|(at, _)| j < *at) {
                        slot.err = Some((j, e));
                    }
                }
            }
            slot.filled += 1;
            while pending
                .get(&next_send)
                .is_some_and(|s| s.filled == self.batch_images(next_send))
            {
                let slot = pending.remove(&next_send).expect("present");
                next_send += 1;
                let failed = slot.err.is_some();
                let msg = match slot.err {
                    Some((_, e)) => Err(e),
                    None => Ok(slot.batch),
                };
                if tx.send(msg).is_err() || failed {
                    self.stop.store(true, Ordering::SeqCst);
                    return;
                }
            }
        }
    }
}

/// A running stream of batches over `order` (see the module doc). Iterate it for the batches;
/// dropping it stops and joins its threads.
pub struct InputStream {
    shared: Arc<Shared>,
    rx: Option<Receiver<Result<Batch>>>,
    threads: Vec<JoinHandle<()>>,
    delivered: usize,
    batches: usize,
    failed: bool,
}

impl InputStream {
    /// Starts the threads for the images `order` (indices into `list`, repeats allowed) in
    /// batches of `batch` images (the last one smaller when `batch` does not divide the count).
    /// Panics if `batch` is 0 or an index is out of range. Images are decoded at full size and
    /// not cached ([`InputStream::with_store`] for both).
    pub fn new(
        list: Arc<ImageList>,
        order: Vec<usize>,
        batch: usize,
        mode: Mode,
        pipeline: Arc<Pipeline>,
        opts: StreamOptions,
    ) -> InputStream {
        Self::with_store(list, order, batch, mode, pipeline, opts, Default::default())
    }

    /// [`InputStream::new`], the images taken through `store`.
    pub fn with_store(
        list: Arc<ImageList>,
        order: Vec<usize>,
        batch: usize,
        mode: Mode,
        pipeline: Arc<Pipeline>,
        opts: StreamOptions,
        store: Arc<ImageStore>,
    ) -> InputStream {
        assert!(batch > 0, "batch size must be ≥ 1");
        assert!(order.iter().all(|&i| i < list.len()), "order index out of range");
        let batches = order.len().div_ceil(batch);
        let workers = opts.threads.max(1).min(order.len().max(1));
        let opts = StreamOptions {
            prefetch: opts.prefetch.max(1),
            ..opts
        };
        let shared = Arc::new(Shared {
            list,
            order,
            batch,
            mode,
            pipeline,
            opts,
            store,
            next: AtomicUsize::new(0),
            consumed: Mutex::new(0),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            replaced: AtomicUsize::new(0),
        });
        let (item_tx, item_rx) = channel();
        let (batch_tx, batch_rx) = sync_channel(opts.prefetch);
        let mut threads = Vec::with_capacity(workers + 1);
        for t in 0..workers {
            let (s, tx) = (shared.clone(), item_tx.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("protoclr-decode-{t}"))
                    .spawn(move || s.worker(tx))
                    .expect("cannot spawn a decoding thread"),
            );
        }
        drop(item_tx);
        let s = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("protoclr-batches".into())
                .spawn(move || s.assembler(item_rx, batch_tx))
                .expect("cannot spawn the batch assembler"),
        );
        InputStream {
            shared,
            rx: Some(batch_rx),
            threads,
            delivered: 0,
            batches,
            failed: false,
        }
    }

    /// Number of batches the stream delivers.
    pub fn batches(&self) -> usize {
        self.batches
    }

    /// Images replaced so far because they could not be decoded (`skip_bad`).
    pub fn replaced(&self) -> usize {
        self.shared.replaced.load(Ordering::Relaxed)
    }
}

impl Iterator for InputStream {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.failed || self.delivered == self.batches {
            return None;
        }
        let got = self.rx.as_ref().and_then(|rx| rx.recv().ok());
        {
            let mut consumed = self.shared.consumed.lock().unwrap();
            *consumed += 1;
        }
        self.shared.wake.notify_all();
        self.delivered += 1;
        match got {
            Some(Ok(b)) => Some(Ok(b)),
            Some(Err(e)) => {
                self.failed = true;
                Some(Err(e))
            }
            None => {
                self.failed = true;
                Some(Err(anyhow!(
                    "input pipeline stopped after {} of {} batches (a decoding thread failed)",
                    self.delivered - 1,
                    self.batches
                )))
            }
        }
    }
}

impl Drop for InputStream {
    fn drop(&mut self) {
        {
            let _guard = self.shared.consumed.lock().unwrap();
            self.shared.stop.store(true, Ordering::SeqCst);
        }
        self.shared.wake.notify_all();
        self.rx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Result of [`bench`](fn@bench).
#[derive(Debug, Clone, serde::Serialize)]
pub struct InputBench {
    /// Images decoded and turned into two augmented views, per second (after one warm-up batch).
    pub images_per_sec: f64,
    pub images: usize,
    pub batches: usize,
    pub batch: usize,
    pub size: usize,
    pub threads: usize,
    pub seconds: f64,
    /// `data.resize_short` of the measurement.
    pub resize_short: Option<usize>,
    /// `data.cache_images` of the measurement (the warm-up pass fills the cache).
    pub cache_images: bool,
}

/// Streams `batches` training batches (two SimCLR views per image, default augmentation at
/// `size`) of `batch` images from `list`, cycling through it in list order, on `threads`
/// decoding threads (default: rayon's thread count), and reports the rate after a first warm-up
/// batch. Images go through an [`ImageStore`] of `resize_short` and `cache`; with the cache, a
/// first untimed pass over the images of the timed batches fills it, so the rate is that of
/// the epochs after the first.
pub fn bench(
    list: Arc<ImageList>,
    size: usize,
    batch: usize,
    batches: usize,
    threads: Option<usize>,
    resize_short: Option<usize>,
    cache: bool,
) -> Result<InputBench> {
    let threads = threads.unwrap_or_else(rayon::current_num_threads).max(1);
    if list.is_empty() || batch == 0 || batches == 0 {
        bail!("bench input needs images, a batch size ≥ 1 and at least one batch");
    }
    let cfg = crate::config::AugmentConfig {
        size,
        ..Default::default()
    };
    let pipeline = Arc::new(Pipeline::new(
        &cfg,
        crate::data::IMAGENET_MEAN,
        crate::data::IMAGENET_STD,
    )?);
    let n = list.len();
    let order: Vec<usize> = (0..(batches + 1) * batch).map(|p| p % n).collect();
    let opts = StreamOptions {
        threads,
        prefetch: 2,
        skip_bad: false,
        seed: 0,
    };
    let store = Arc::new(ImageStore::new(resize_short, cache));
    if cache {
        let warm = InputStream::with_store(
            list.clone(),
            order.clone(),
            batch,
            Mode::Train { epoch: 1 },
            pipeline.clone(),
            opts,
            store.clone(),
        );
        for b in warm {
            b?;
        }
    }
    let mut stream = InputStream::with_store(
        list,
        order,
        batch,
        Mode::Train { epoch: 0 },
        pipeline,
        opts,
        store,
    );
    stream.next().expect("one batch")?;
    let t = Instant::now();
    for b in stream.by_ref() {
        std::hint::black_box(b?);
    }
    let seconds = t.elapsed().as_secs_f64();
    Ok(InputBench {
        images_per_sec: (batches * batch) as f64 / seconds,
        images: batches * batch,
        batches,
        batch,
        size,
        threads,
        seconds,
        resize_short,
        cache_images: cache,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AugmentConfig;
    use crate::data::folder::test_support::write_tree;
    use crate::data::folder::{scan, FolderLayout, PartSource};

    fn tree(dir: &std::path::Path) -> Arc<ImageList> {
        write_tree(
            &dir.join("train"),
            &[("a", 4, 64, 64), ("b", 3, 41, 57), ("c", 3, 64, 30)],
        );
        let layout = FolderLayout {
            train: PartSource::Folder(dir.join("train")),
            val: PartSource::Folder(dir.join("train")),
            bank: None,
            class_map: None,
        };
        Arc::new(scan(&layout, false).unwrap().train)
    }

    fn pipeline(size: usize) -> Arc<Pipeline> {
        let cfg = AugmentConfig {
            size,
            ..Default::default()
        };
        Arc::new(Pipeline::new(&cfg, crate::data::IMAGENET_MEAN, crate::data::IMAGENET_STD).unwrap())
    }

    fn collect(
        list: &Arc<ImageList>,
        order: &[usize],
        batch: usize,
        mode: Mode,
        threads: usize,
    ) -> Vec<Batch> {
        let opts = StreamOptions {
            threads,
            prefetch: 1,
            skip_bad: false,
            seed: 7,
        };
        InputStream::new(list.clone(), order.to_vec(), batch, mode, pipeline(32), opts)
            .map(|b| b.unwrap())
            .collect()
    }

    #[test]
    fn batches_are_identical_whatever_the_thread_count() {
        let t = tempfile::tempdir().unwrap();
        let list = tree(t.path());
        let order = vec![9, 3, 0, 7, 1, 8, 2, 5, 4, 6, 3];
        for mode in [
            Mode::Train { epoch: 2 },
            Mode::Eval {
                crop: 0.875,
                mean: [0.5; 3],
                std: [0.25; 3],
            },
            Mode::Views { views: 3 },
        ] {
            let one = collect(&list, &order, 4, mode, 1);
            let three = collect(&list, &order, 4, mode, 3);
            assert_eq!(one, three, "{mode:?}");
            assert_eq!(one.len(), 3);
            assert_eq!(one[2].labels.len(), 3);
            assert_eq!(one[0].entries, vec![9, 3, 0, 7]);
            assert_eq!(one[0].labels, vec![2, 0, 0, 2]);
            assert_eq!(one[0].rows, 4 * mode.views());
            assert_eq!(one[0].pixels.len(), one[0].rows * 3 * 32 * 32);
        }
        // Training rows are view-major and match the pipeline applied with view_seed directly.
        let b = &collect(&list, &order, 4, Mode::Train { epoch: 2 }, 2)[0];
        let img = list.load(3).unwrap();
        let mut want = vec![0f32; 3 * 32 * 32];
        let seed = augment::view_seed(7, 2, 3, 1);
        pipeline(32).apply(
            &img.chw,
            img.height,
            img.width,
            &mut ChaCha8Rng::seed_from_u64(seed),
            &mut want,
        );
        let per = 3 * 32 * 32;
        assert_eq!(&b.pixels[(4 + 1) * per..(4 + 2) * per], &want[..]);
        // Another seed or epoch gives other views.
        assert_ne!(
            collect(&list, &order, 4, Mode::Train { epoch: 3 }, 2)[0].pixels,
            b.pixels
        );
    }

    #[test]
    fn cached_and_resized_images() {
        let t = tempfile::tempdir().unwrap();
        let list = tree(t.path());
        // Shorter side to 20 (sizes h×w): 64×64 → 20×20, 57×41 → 28×20 (27.8), 30×64 → 20×43
        // (42.7).
        let store = ImageStore::new(Some(20), false);
        let dims = |i: usize| {
            let img = store.load(&list, i).unwrap();
            (img.height, img.width, img.chw.len())
        };
        assert_eq!(dims(0), (20, 20, 3 * 400));
        assert_eq!(dims(4), (28, 20, 3 * 560));
        assert_eq!(dims(7), (20, 43, 3 * 860));
        // The resize is the antialiased bilinear of the augmentation, rounded to bytes.
        let full = list.load(4).unwrap();
        assert_eq!((full.height, full.width), (57, 41));
        let want = resized_crop_hw(&Image::from_u8(&full.chw, 57, 41), 0, 0, 57, 41, 28, 20);
        let got = store.load(&list, 4).unwrap();
        for (g, w) in got.chw.iter().zip(&want.data) {
            assert!((f32::from(*g) - w * 255.0).abs() <= 0.5 + 1e-3, "{g} vs {w}");
        }
        // An image whose shorter side already is the target is left as decoded.
        assert_eq!(
            *ImageStore::new(Some(64), false).load(&list, 0).unwrap(),
            list.load(0).unwrap()
        );
        assert_eq!(store.cached(), 0);

        // The cache gives the same batches as decoding every time, and holds each file once.
        let order = vec![9, 3, 0, 7, 1, 8, 2, 5, 4, 6, 3];
        let opts = StreamOptions {
            threads: 3,
            prefetch: 1,
            skip_bad: false,
            seed: 7,
        };
        for resize in [None, Some(40)] {
            let cached = Arc::new(ImageStore::new(resize, true));
            let run = |store: Arc<ImageStore>, mode: Mode| -> Vec<Batch> {
                InputStream::with_store(list.clone(), order.clone(), 4, mode, pipeline(32), opts, store)
                    .map(|b| b.unwrap())
                    .collect()
            };
            let plain = Arc::new(ImageStore::new(resize, false));
            let eval = Mode::Eval {
                crop: 0.875,
                mean: [0.5; 3],
                std: [0.25; 3],
            };
            for mode in [Mode::Train { epoch: 0 }, Mode::Train { epoch: 1 }, eval] {
                assert_eq!(
                    run(cached.clone(), mode),
                    run(plain.clone(), mode),
                    "{resize:?} {mode:?}"
                );
            }
            assert_eq!(cached.cached(), 10);
            assert_eq!(plain.cached(), 0);
        }
        // Resizing first changes the views (a different input distribution).
        let a: Vec<Batch> = InputStream::with_store(
            list.clone(),
            order.clone(),
            4,
            Mode::Train { epoch: 0 },
            pipeline(32),
            opts,
            Arc::new(ImageStore::new(Some(40), false)),
        )
        .map(|b| b.unwrap())
        .collect();
        assert_ne!(a, collect(&list, &order, 4, Mode::Train { epoch: 0 }, 3));
    }

    #[test]
    fn eval_crop_takes_the_centre() {
        // A 4×8 image whose centre 2×2 (crop 0.5 of the short side 4) is constant 200.
        let (h, w) = (4, 8);
        let mut src = vec![0u8; 3 * h * w];
        for c in 0..3 {
            for y in 1..3 {
                for x in 3..5 {
                    src[c * h * w + y * w + x] = 200;
                }
            }
        }
        let mut out = vec![0f32; 3 * 2 * 2];
        eval_crop(&src, h, w, 2, 0.5, [0.0; 3], [1.0; 3], &mut out);
        assert!(out.iter().all(|&v| (v - 200.0 / 255.0).abs() < 1e-6), "{out:?}");
        let mut a = vec![0f32; 3 * 3 * 3];
        let mut b = a.clone();
        eval_crop(&src, h, w, 3, 1.0, [0.1; 3], [0.2; 3], &mut a);
        augment::eval_transform(&src, h, w, 3, [0.1; 3], [0.2; 3], &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn bad_images_stop_or_are_replaced() {
        let t = tempfile::tempdir().unwrap();
        let list = tree(t.path());
        // Corrupt entry 5 after the listing (as a lazily found bad file).
        std::fs::write(list.path(5), b"\xff\xd8 not really").unwrap();
        let order: Vec<usize> = (0..10).collect();
        let opts = StreamOptions {
            threads: 2,
            prefetch: 1,
            skip_bad: false,
            seed: 1,
        };
        let mut s = InputStream::new(
            list.clone(),
            order.clone(),
            4,
            Mode::Train { epoch: 0 },
            pipeline(16),
            opts,
        );
        assert!(s.next().unwrap().is_ok());
        let e = format!("{:#}", s.next().unwrap().unwrap_err());
        assert!(
            e.contains(&list.path(5).display().to_string()) && e.contains("skip_bad"),
            "{e}"
        );
        assert!(s.next().is_none());
        let opts = StreamOptions {
            skip_bad: true,
            ..opts
        };
        let mut s = InputStream::new(
            list.clone(),
            order,
            4,
            Mode::Train { epoch: 0 },
            pipeline(16),
            opts,
        );
        let batches: Vec<Batch> = s.by_ref().map(|b| b.unwrap()).collect();
        assert_eq!(batches.len(), 3);
        assert_eq!(batches[1].entries, vec![4, 6, 6, 7]);
        assert_eq!(batches[1].labels[1], list.label(6));
        assert_eq!(s.replaced(), 1);
    }

    #[test]
    fn dropping_a_stream_early_stops_its_threads() {
        let t = tempfile::tempdir().unwrap();
        let list = tree(t.path());
        let order: Vec<usize> = (0..200).map(|p| p % 10).collect();
        let opts = StreamOptions {
            threads: 3,
            prefetch: 2,
            skip_bad: false,
            seed: 0,
        };
        let mut s = InputStream::new(
            list.clone(),
            order,
            2,
            Mode::Views { views: 2 },
            pipeline(8),
            opts,
        );
        assert_eq!(s.batches(), 100);
        s.next().unwrap().unwrap();
        drop(s); // joins: the test would hang if a thread kept waiting
        let r = bench(list.clone(), 16, 4, 2, Some(2), None, false).unwrap();
        assert_eq!(r.images, 8);
        assert!(r.images_per_sec > 0.0);
        let r = bench(list, 16, 4, 2, Some(2), Some(20), true).unwrap();
        assert_eq!((r.images, r.resize_short, r.cache_images), (8, Some(20), true));
    }
}
