//! Memory budget (`--max-memory`, or `max_memory` in a config): what each stage's
//! buffers take, checked before any work starts. The activation cache and encoding
//! tiles shrink to fit; what cannot shrink without changing the run (the patch store's
//! chunk, the feature matrix a classifier holds) is an error naming the key to change
//! and, for the chunk, a value that fits.
//!
//! Estimates count the large buffers of each stage (rows in flight, per-thread blocks,
//! gradient partials, optimiser history, feature matrices) plus a fixed allowance for
//! the program itself; they are upper bounds, not measurements.

use crate::data::ingest::Shape;
use crate::data::patches::{grid, SAMPLE_CHUNK};
use crate::encode::{feature_batch_rows, Mode, TILE_ROWS};
use crate::error::{Error, Result};
use crate::evaluate::classify::Classifier;
use crate::learn::sae::objective::{BLOCK, CACHE_BYTES};
use crate::run::config::Config;

/// The program, libraries, mapped pages in flight and small buffers.
pub const BASE: u64 = 96 << 20;

/// What a run will use, after fitting the budget.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Activation cache limit.
    pub cache_bytes: usize,
    /// Rows per encoding tile.
    pub tile_rows: usize,
    /// Estimated peak per stage, bytes.
    pub stages: Vec<(&'static str, u64)>,
}

impl Plan {
    /// The largest stage estimate.
    pub fn peak(&self) -> u64 {
        self.stages.iter().map(|s| s.1).max().unwrap_or(0)
    }
}

fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64)
}

/// Peak of one training run: rows in flight (the batch in use and the one prefetched),
/// per-thread blocks, gradient partials, the activation cache and the L-BFGS history.
pub fn training_bytes(sizes: &[u64], chunk: u64, cache: u64, memory: u64) -> u64 {
    let threads = rayon::current_num_threads().max(1) as u64;
    let d = sizes.first().copied().unwrap_or(0);
    let n_params: u64 = sizes.windows(2).map(|w| w[0] * w[1] + w[1]).sum();
    2 * chunk * d * 4
        + threads * (BLOCK as u64) * sizes.iter().sum::<u64>() * 4 * 3
        + chunk.div_ceil(BLOCK as u64) * n_params * 8
        + cache
        + (2 * memory + 6) * n_params * 8
}

/// What the kernel maps in around one page fault on a file (fault-around, 64 KiB):
/// random reads of small images make whole neighbourhoods of a memory-mapped dataset
/// resident until they are released.
pub const FAULT_AROUND: u64 = 64 << 10;

/// Peak of sampling and fitting the normalisation of `d`-value patches from mapped
/// images of `image_bytes` in all, into a store of `chunk`-row batches: the chunk's
/// buffers, the covariance sums, the mapped pages one chunk's random reads make
/// resident (released after each chunk), and the store writer's batch with its
/// encoded copy.
pub fn sampling_bytes(d: u64, image_bytes: u64, chunk: u64) -> u64 {
    let mapped = image_bytes.min(SAMPLE_CHUNK as u64 * FAULT_AROUND);
    (SAMPLE_CHUNK as u64) * d * 4 * 3 + d * d * 8 * 3 + mapped + chunk * (d + 3) * 4 * 2
}

/// What encoding images of `shape` at `steps` with patches of side `patch` through
/// layers at most `act` wide involves.
#[derive(Clone, Copy, Debug)]
struct Encoding {
    d: u64,
    act: u64,
    /// Bytes per image.
    image: u64,
    /// Fewest patch positions per image over the steps (most images per tile).
    positions: u64,
    /// Positions at step 1 (the smallest tile that holds one image).
    most: u64,
    /// Most patch positions per image over the steps (a tile holds at least one image).
    largest: u64,
    /// Widest feature row written.
    width: u64,
    /// Rows per image: 2 when each image is also encoded mirrored.
    views: u64,
}

impl Encoding {
    fn new(
        d: u64,
        act: u64,
        shape: Shape,
        patch: usize,
        steps: &[usize],
        width: u64,
        flip: bool,
    ) -> Encoding {
        let pos =
            |s| (grid(shape.height, patch, s).len() * grid(shape.width, patch, s).len()) as u64;
        Encoding {
            d,
            act,
            image: shape.pixels() as u64,
            positions: steps.iter().map(|&s| pos(s)).min().unwrap_or(1).max(1),
            most: pos(1),
            largest: steps.iter().map(|&s| pos(s)).max().unwrap_or(1),
            width,
            views: if flip { 2 } else { 1 },
        }
    }

    /// Peak with tiles of `tile` patch rows (or one image's, if more): each thread's
    /// tile in progress (its patches, a whitened copy or two layers' activations, and
    /// the image it is cutting as bytes and f32 planes), a group of two tiles per
    /// thread finished or in flight (the feature rows of every view, and the mapped
    /// image pages they read, fault-around included), and the feature store's batch
    /// ([`feature_batch_rows`]) with its encoded copy.
    fn bytes(&self, tile: u64) -> u64 {
        let threads = rayon::current_num_threads().max(1) as u64;
        let rows = tile.max(self.largest);
        let images = (tile / self.positions).max(1);
        threads * (rows * (2 * self.d + 2 * self.act) * 4 + self.image * 5)
            + 2 * threads * images * (self.views * self.width * 4 + self.image + FAULT_AROUND)
            + feature_batch_rows(self.width as usize) as u64 * self.width * 4 * 2
    }
}

/// Peak of classifying `train` and `test` rows of `width` features into `classes`:
/// smartcore's models (`rf`, `lr`) take the standardised matrices and a dense copy of
/// each, and each of its trees, fitted one per thread, sorts every feature column into
/// an index of `usize` (train × width × 8 bytes); the linear classifiers read the rows
/// from the feature files as they go ([`crate::evaluate::linear::fit_bytes`]).
pub fn classify_bytes(
    which: &[Classifier],
    train: u64,
    test: u64,
    width: u64,
    classes: u64,
) -> u64 {
    let smartcore = which
        .iter()
        .any(|c| matches!(c, Classifier::Rf | Classifier::Lr));
    let linear = which
        .iter()
        .any(|c| matches!(c, Classifier::Softmax | Classifier::Svm));
    let threads = rayon::current_num_threads().max(1) as u64;
    let matrices = if smartcore {
        (train + test) * width * 4 * 2
    } else {
        0
    };
    let fit = if linear {
        crate::evaluate::linear::fit_bytes(train, width, classes)
    } else {
        0
    };
    let forest = if which.contains(&Classifier::Rf) {
        threads * train * width * 8
    } else {
        0
    };
    matrices.max(fit) + forest
}

/// The largest activation cache (halving from [`CACHE_BYTES`]) with which training
/// fits `budget` (0: no limit), or an error naming `train.chunk` and a value that fits.
fn fit_training(sizes: &[u64], chunk: u64, memory: u64, budget: u64) -> Result<u64> {
    let mut cache = CACHE_BYTES as u64;
    if budget == 0 {
        return Ok(cache);
    }
    let room = budget.saturating_sub(BASE);
    while training_bytes(sizes, chunk, cache, memory) > room && cache > 0 {
        cache = if cache > (1 << 20) { cache / 2 } else { 0 };
    }
    if training_bytes(sizes, chunk, cache, memory) > room {
        // The chunk is the patch store's batch size, part of what identifies the
        // store: say what fits rather than silently making another store.
        let mut fits = chunk;
        while fits > BLOCK as u64 && training_bytes(sizes, fits, 0, memory) > room {
            fits = (fits / 2).max(BLOCK as u64);
        }
        let hint = if training_bytes(sizes, fits, 0, memory) <= room {
            format!("; train.chunk = {fits} fits")
        } else {
            String::new()
        };
        return Err(Error::config(
            "train.chunk",
            format!(
                "training with chunks of {chunk} rows needs {}, more than max_memory {}{hint}",
                mib(training_bytes(sizes, chunk, 0, memory) + BASE),
                mib(budget)
            ),
        ));
    }
    Ok(cache)
}

fn check_base(budget: u64) -> Result<()> {
    if budget > 0 && budget <= BASE {
        return Err(Error::config(
            "max_memory",
            format!(
                "{} is below what the program itself needs ({})",
                mib(budget),
                mib(BASE)
            ),
        ));
    }
    Ok(())
}

/// Plan of a training run alone (`sae train`): the layer sizes (inputs first), the
/// store's batch rows and the L-BFGS memory.
pub fn plan_training(sizes: &[u64], chunk: u64, memory: u64, budget: u64) -> Result<Plan> {
    check_base(budget)?;
    let cache = fit_training(sizes, chunk, memory, budget)?;
    Ok(Plan {
        cache_bytes: cache as usize,
        tile_rows: TILE_ROWS,
        stages: vec![("train", BASE + training_bytes(sizes, chunk, cache, memory))],
    })
}

/// Plan of sampling `d`-value patches alone (`sae sample`) from images of
/// `image_bytes` in all into a store of `chunk`-row batches.
pub fn plan_sampling(d: u64, image_bytes: u64, chunk: u64, budget: u64) -> Result<Plan> {
    check_base(budget)?;
    let need = BASE + sampling_bytes(d, image_bytes, chunk);
    if budget > 0 && need > budget {
        return Err(Error::config(
            "max_memory",
            format!(
                "sampling {d}-value patches needs {} (with the image pages one chunk maps)",
                mib(need)
            ),
        ));
    }
    Ok(Plan {
        cache_bytes: CACHE_BYTES,
        tile_rows: TILE_ROWS,
        stages: vec![("sample", need)],
    })
}

/// Plan of encoding alone (`sae encode`): patches of `d` values through layers at
/// most `act` wide up to the code layer, images of `shape` with patches of side
/// `patch` at `step`, rows of `width` features, each image also mirrored with `flip`.
#[allow(clippy::too_many_arguments)]
pub fn plan_encoding(
    d: u64,
    act: u64,
    shape: Shape,
    patch: usize,
    step: usize,
    width: u64,
    flip: bool,
    budget: u64,
) -> Result<Plan> {
    check_base(budget)?;
    let e = Encoding::new(d, act, shape, patch, &[step], width, flip);
    let tile = fit_encoding(&e, budget)?;
    Ok(Plan {
        cache_bytes: CACHE_BYTES,
        tile_rows: tile as usize,
        stages: vec![("encode", BASE + e.bytes(tile))],
    })
}

fn fit_encoding(e: &Encoding, budget: u64) -> Result<u64> {
    let mut tile = TILE_ROWS as u64;
    if budget == 0 {
        return Ok(tile);
    }
    let room = budget.saturating_sub(BASE);
    while e.bytes(tile) > room && tile > e.most {
        tile = (tile / 2).max(e.most);
    }
    if e.bytes(tile) > room {
        return Err(Error::config(
            "max_memory",
            format!("encoding needs at least {}", mib(e.bytes(tile) + BASE)),
        ));
    }
    Ok(tile)
}

/// The sizes of a run's data that its plan depends on.
#[derive(Clone, Copy, Debug)]
pub struct DataSize {
    /// Image shape.
    pub shape: Shape,
    /// Images patches are sampled from.
    pub unlabeled: usize,
    /// Labelled training images.
    pub train: usize,
    /// Labelled test (or held-out) images.
    pub test: usize,
    /// Classes.
    pub classes: usize,
}

/// Estimates every stage of `cfg` for data of `size`, and fits `budget` bytes (0: no
/// limit) by shrinking what can shrink.
pub fn plan(cfg: &Config, size: DataSize, budget: u64) -> Result<Plan> {
    let DataSize {
        shape,
        unlabeled,
        train,
        test,
        classes,
    } = size;
    let image_bytes = (unlabeled * shape.pixels()) as u64;
    check_base(budget)?;
    let p = cfg.patches.size;
    let d = (shape.channels * p * p) as u64;
    let mut sizes = vec![d];
    sizes.extend(cfg.model.hidden.iter().map(|&h| h as u64));
    sizes.push(d);
    let hidden = &cfg.model.hidden;
    let sparse = cfg
        .model
        .sparse_layer
        .unwrap_or(hidden.len().div_ceil(2))
        .clamp(1, hidden.len().max(1));
    let code =
        hidden.get(sparse - 1).copied().unwrap_or(1) as u64 * cfg.features.code().width() as u64;
    let memory = cfg.train.memory as u64;
    let chunk = cfg.train.chunk as u64;
    let room = budget.saturating_sub(BASE);
    let sample = plan_sampling(d, image_bytes, chunk, budget)?.peak();
    let cache = fit_training(&sizes, chunk, memory, budget)?;
    let mut widest = 0u64;
    for &step in &cfg.features.steps {
        let pos = (grid(shape.height, p, step).len() * grid(shape.width, p, step).len()) as u64;
        for &m in &cfg.features.modes {
            widest = widest.max(match m {
                Mode::Concat => pos * code,
                Mode::Pool => (cfg.features.pool_grid * cfg.features.pool_grid) as u64 * code,
            });
        }
    }
    let act = hidden.iter().take(sparse).copied().max().unwrap_or(1) as u64;
    let enc = Encoding::new(
        d,
        act,
        shape,
        p,
        &cfg.features.steps,
        widest,
        cfg.features.flip,
    );
    let tile = fit_encoding(&enc, budget)?;
    // Mirrored images are rows of their own.
    let views = if cfg.features.flip { 2 } else { 1 };
    let mut classify = classify_bytes(
        &cfg.classify.classifiers,
        (views * train) as u64,
        (views * test) as u64,
        widest,
        classes as u64,
    );
    if cfg.classify.raw_baseline {
        let which = cfg
            .classify
            .raw_classifiers
            .as_ref()
            .unwrap_or(&cfg.classify.classifiers);
        classify = classify.max(classify_bytes(
            which,
            train as u64,
            test as u64,
            shape.pixels() as u64,
            classes as u64,
        ));
    }
    if budget > 0 && classify > room {
        return Err(Error::config(
            "max_memory",
            format!(
                "classifying {} images of {widest} features holds {} in memory; \
                 use features.modes = [\"pool\"], fewer images, a larger budget, or \
                 only the classifiers that read features from disk (svm, softmax)",
                train + test,
                mib(classify + BASE)
            ),
        ));
    }
    Ok(Plan {
        cache_bytes: cache as usize,
        tile_rows: tile as usize,
        stages: vec![
            ("sample", sample),
            ("train", BASE + training_bytes(&sizes, chunk, cache, memory)),
            ("encode", BASE + enc.bytes(tile)),
            ("classify", BASE + classify),
        ],
    })
}

/// Peaks seen so far, KiB. A new stage or run bumps the generation, so a reading the
/// sampler took before it cannot count after it.
struct Seen {
    generation: u64,
    stage_kb: u64,
    run_kb: u64,
}

static SEEN: std::sync::Mutex<Seen> = std::sync::Mutex::new(Seen {
    generation: 0,
    stage_kb: 0,
    run_kb: 0,
});
static SAMPLER: std::sync::Once = std::sync::Once::new();

/// How often the sampler reads the resident set.
const SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

fn status_kb(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn rss_kb() -> u64 {
    status_kb("VmRSS:")
}

fn hwm_kb() -> u64 {
    status_kb("VmHWM:")
}

fn seen() -> std::sync::MutexGuard<'static, Seen> {
    SEEN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the thread that samples the resident set for stages that stay below the
/// process's earlier peak. The kernel's own peak (VmHWM) is never reset, so what a
/// measure from outside sees (`/usr/bin/time`, `getrusage`) is the whole run's.
fn start_sampler() {
    SAMPLER.call_once(|| {
        let _ = std::thread::Builder::new()
            .name("rss-sampler".into())
            .spawn(|| loop {
                let generation = seen().generation;
                let kb = rss_kb();
                let mut s = seen();
                if s.generation == generation {
                    s.stage_kb = s.stage_kb.max(kb);
                    s.run_kb = s.run_kb.max(kb);
                }
                drop(s);
                std::thread::sleep(SAMPLE_EVERY);
            });
    });
}

/// Gives freed heap back and returns what is resident now, KiB.
fn settle() -> u64 {
    crate::mmap::release_free_heap();
    rss_kb()
}

/// Starts the peak of [`peak_rss_kb`] afresh (at the start of a run).
pub fn reset_peak() {
    start_sampler();
    let now = settle();
    let mut s = seen();
    s.generation += 1;
    s.stage_kb = now;
    s.run_kb = now;
}

/// Peak resident set of this process over every measured stage and the sampler's
/// readings since the start or the last [`reset_peak`], KiB.
pub fn peak_rss_kb() -> u64 {
    let now = rss_kb();
    seen().run_kb.max(now)
}

/// The stage the process is in, for naming where a run failed.
static CURRENT: std::sync::Mutex<&'static str> = std::sync::Mutex::new("setup");

/// Records that the process enters stage `name` ([`Stage::begin`] does for its own).
pub fn enter(name: &'static str) {
    *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = name;
}

/// The stage last entered: `setup` before the first measured stage of a run.
pub fn current_stage() -> &'static str {
    *CURRENT.lock().unwrap_or_else(|e| e.into_inner())
}

/// A stage whose peak resident memory is measured and compared with its estimate.
pub struct Stage {
    name: &'static str,
    estimate: u64,
    budget: u64,
    start_kb: u64,
    start_hwm_kb: u64,
}

impl Stage {
    /// Starts measuring the stage's own peak: freed heap is given back first, so what
    /// earlier stages left behind is not counted twice.
    pub fn begin(name: &'static str, plan: &Plan, budget: u64) -> Stage {
        enter(name);
        start_sampler();
        let start_kb = settle();
        let start_hwm_kb = hwm_kb();
        {
            let mut s = seen();
            s.generation += 1;
            s.stage_kb = start_kb;
            s.run_kb = s.run_kb.max(start_kb);
        }
        let estimate = plan.stages.iter().find(|s| s.0 == name).map_or(0, |s| s.1);
        Stage {
            name,
            estimate,
            budget,
            start_kb,
            start_hwm_kb,
        }
    }

    /// Reads the stage's peak and reports it next to the estimate and the budget;
    /// returns the peak in bytes. Going over the budget is said, not hidden.
    pub fn end(self) -> u64 {
        let hwm = hwm_kb();
        let kb = {
            let mut s = seen();
            // A stage that raised the process's peak has that peak, exactly; one that
            // stayed below it has the largest reading of the sampler (or now).
            let kb = if hwm > self.start_hwm_kb {
                hwm
            } else {
                s.stage_kb.max(rss_kb())
            };
            s.run_kb = s.run_kb.max(kb);
            kb
        };
        let peak = kb * 1024;
        let budget = if self.budget > 0 {
            format!(", budget {}", mib(self.budget))
        } else {
            String::new()
        };
        crate::progress::say(format!(
            "memory: {} peak {} (estimated {}{budget}; {} resident at its start)",
            self.name,
            mib(peak),
            mib(self.estimate),
            mib(self.start_kb * 1024)
        ));
        if self.budget > 0 && peak > self.budget {
            crate::progress::say(format!(
                "memory: warning: {} used {}, over the max_memory budget of {}",
                self.name,
                mib(peak),
                mib(self.budget)
            ));
        }
        peak
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Config {
        let text = format!(
            "name = \"x\"\n[synth]\nlayout = \"cifar10\"\ntrain = 10\ntest = 10\n\
             [data]\nformat = \"cifar10\"\n{extra}"
        );
        toml::from_str(&text).unwrap()
    }

    fn size(train: usize, test: usize) -> DataSize {
        DataSize {
            shape: Shape::rgb(32),
            unlabeled: train,
            train,
            test,
            classes: 10,
        }
    }

    #[test]
    fn no_budget_keeps_the_defaults() {
        let p = plan(&cfg(""), size(1000, 1000), 0).unwrap();
        assert_eq!((p.cache_bytes, p.tile_rows), (CACHE_BYTES, TILE_ROWS));
    }

    #[test]
    fn a_tight_budget_shrinks_caches_and_stays_within_it() {
        let c = cfg("[model]\nhidden = [400]\n[train]\nchunk = 8192\n[features]\nsteps = [1]\n");
        let loose = plan(&c, size(1000, 1000), 0).unwrap();
        let budget = 200 << 20;
        assert!(
            loose.peak() > budget,
            "the test needs a plan that must shrink"
        );
        let p = plan(&c, size(1000, 1000), budget).unwrap();
        assert!(p.cache_bytes < loose.cache_bytes);
        assert!(p.peak() <= budget, "{:?}", p.stages);
    }

    #[test]
    fn a_chunk_too_large_for_the_budget_gets_a_value_that_fits() {
        let c = cfg("[model]\nhidden = [1600]\n");
        let e = plan(&c, size(100, 100), 400 << 20).unwrap_err().to_string();
        assert!(e.contains("train.chunk") && e.contains("fits"), "{e}");
        let fits: usize = e
            .rsplit("train.chunk = ")
            .next()
            .and_then(|t| t.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .expect("a suggested value");
        let c2 = cfg(&format!(
            "[model]\nhidden = [1600]\n[train]\nchunk = {fits}\n"
        ));
        assert!(plan(&c2, size(100, 100), 400 << 20).is_ok());
    }

    #[test]
    fn what_cannot_fit_names_the_stage() {
        let c = cfg("[features]\nsteps = [1]\nmodes = [\"concat\"]\n");
        let e = plan(&c, size(50_000, 10_000), 1 << 30)
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_memory") && e.contains("classifying"), "{e}");
        let e = plan(&cfg(""), size(10, 10), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(e.contains("below what the program itself needs"), "{e}");
    }
}
