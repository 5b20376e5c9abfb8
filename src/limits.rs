//! Memory budget (`--max-memory`, or `max_memory` in a config): what each stage's
//! buffers take, checked before any work starts. The activation cache and encoding
//! tiles shrink to fit; what cannot shrink without changing the run (the patch store's
//! chunk, the feature matrix a classifier holds) is an error naming the key to change
//! and, for the chunk, a value that fits.
//!
//! Estimates count the large buffers of each stage (rows in flight, per-thread blocks,
//! gradient partials, optimiser history, feature matrices) plus a fixed allowance for
//! the program itself; they are upper bounds, not measurements.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::classify::Classifier;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::features::{Mode, TILE_ROWS};
use crate::ingest::Shape;
use crate::patches::{grid, SAMPLE_CHUNK};
use crate::sae::objective::{BLOCK, CACHE_BYTES};

/// The program, libraries, mapped pages in flight and small buffers.
pub const BASE: u64 = 96 << 20;

static CACHE: AtomicUsize = AtomicUsize::new(CACHE_BYTES);
static TILE: AtomicUsize = AtomicUsize::new(TILE_ROWS);

/// Largest first-layer activation cache the objective may keep, in bytes.
pub fn cache_bytes() -> usize {
    CACHE.load(Ordering::Relaxed)
}

/// Patch rows per encoding tile.
pub fn tile_rows() -> usize {
    TILE.load(Ordering::Relaxed)
}

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
    /// Makes the plan's cache and tile sizes the ones this process uses.
    pub fn apply(&self) {
        CACHE.store(self.cache_bytes, Ordering::Relaxed);
        TILE.store(self.tile_rows, Ordering::Relaxed);
    }

    /// The largest stage estimate.
    pub fn peak(&self) -> u64 {
        self.stages.iter().map(|s| s.1).max().unwrap_or(0)
    }
}

fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64)
}

/// Estimates, for images of `shape` with `train` and `test` labelled images, and fits
/// `budget` bytes (0: no limit) by shrinking what can shrink.
pub fn plan(cfg: &Config, shape: Shape, train: usize, test: usize, budget: u64) -> Result<Plan> {
    let threads = rayon::current_num_threads().max(1) as u64;
    let p = cfg.patches.size;
    let d = (shape.channels * p * p) as u64;
    let mut sizes = vec![d];
    sizes.extend(cfg.model.hidden.iter().map(|&h| h as u64));
    sizes.push(d);
    let n_params: u64 = sizes.windows(2).map(|w| w[0] * w[1] + w[1]).sum();
    let hidden = &cfg.model.hidden;
    let sparse = cfg
        .model
        .sparse_layer
        .unwrap_or(hidden.len().div_ceil(2))
        .clamp(1, hidden.len().max(1));
    let code =
        hidden.get(sparse - 1).copied().unwrap_or(1) as u64 * cfg.features.code().width() as u64;
    let sampling = (SAMPLE_CHUNK as u64) * d * 4 * 3 + d * d * 8 * 3;
    let training = |chunk: u64, cache: u64| {
        2 * chunk * d * 4
            + threads * (BLOCK as u64) * sizes.iter().sum::<u64>() * 4 * 3
            + chunk.div_ceil(BLOCK as u64) * n_params * 8
            + cache
            + (2 * cfg.train.memory as u64 + 6) * n_params * 8
    };
    let encoding = |tile: u64| 2 * threads * tile * (d + code) * 4 * 2;
    let mut widest = 0u64;
    for &step in &cfg.features.steps {
        let pos = (grid(shape.height, p, step).len() * grid(shape.width, p, step).len()) as u64;
        for &m in &cfg.features.modes {
            widest = widest.max(match m {
                Mode::Concat => pos * code,
                Mode::Pool => 4 * code,
            });
        }
    }
    if cfg.classify.raw_baseline {
        widest = widest.max(shape.pixels() as u64);
    }
    // smartcore's models take a copy of the training matrix.
    let copies = if cfg
        .classify
        .classifiers
        .iter()
        .any(|c| matches!(c, Classifier::Rf | Classifier::Lr))
    {
        2
    } else {
        1
    };
    let classify = (train as u64 * copies + test as u64) * widest * 4;
    let chunk = cfg.train.chunk as u64;
    let mut cache = CACHE_BYTES as u64;
    let mut tile = TILE_ROWS as u64;
    let room = budget.saturating_sub(BASE);
    if budget > 0 {
        if budget <= BASE {
            return Err(Error::config(
                "max_memory",
                format!(
                    "{} is below what the program itself needs ({})",
                    mib(budget),
                    mib(BASE)
                ),
            ));
        }
        if sampling > room {
            return Err(Error::config(
                "max_memory",
                format!("sampling {d}-value patches needs {}", mib(sampling + BASE)),
            ));
        }
        while training(chunk, cache) > room && cache > 0 {
            cache = if cache > (1 << 20) { cache / 2 } else { 0 };
        }
        if training(chunk, cache) > room {
            // The chunk is the patch store's batch size, part of what identifies the
            // store: say what fits rather than silently making another store.
            let mut fits = chunk;
            while fits > BLOCK as u64 && training(fits, 0) > room {
                fits = (fits / 2).max(BLOCK as u64);
            }
            let hint = if training(fits, 0) <= room {
                format!("; train.chunk = {fits} fits")
            } else {
                String::new()
            };
            return Err(Error::config(
                "train.chunk",
                format!(
                    "training with chunks of {chunk} rows needs {}, more than max_memory {}{hint}",
                    mib(training(chunk, 0) + BASE),
                    mib(budget)
                ),
            ));
        }
        let min_tile = (grid(shape.height, p, 1).len() * grid(shape.width, p, 1).len()) as u64;
        while encoding(tile) > room && tile > min_tile {
            tile = (tile / 2).max(min_tile);
        }
        if encoding(tile) > room {
            return Err(Error::config(
                "max_memory",
                format!("encoding needs at least {}", mib(encoding(tile) + BASE)),
            ));
        }
        if classify > room {
            return Err(Error::config(
                "max_memory",
                format!(
                    "classifying {} images of {widest} features holds {} in memory; \
                     use features.modes = [\"pool\"], fewer images or a larger budget",
                    train + test,
                    mib(classify + BASE)
                ),
            ));
        }
    }
    Ok(Plan {
        cache_bytes: cache as usize,
        tile_rows: tile as usize,
        stages: vec![
            ("sample", BASE + sampling),
            ("train", BASE + training(chunk, cache)),
            ("encode", BASE + encoding(tile)),
            ("classify", BASE + classify),
        ],
    })
}

/// Parses a byte count: `123`, `512M`, `2G`, `1.5GiB` (binary units).
pub fn parse_bytes(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => {
            return Err(Error::config(
                "max_memory",
                format!("unknown unit in {s:?}"),
            ))
        }
    };
    let v: f64 = num
        .parse()
        .map_err(|_| Error::config("max_memory", format!("{s:?} is not a byte count")))?;
    Ok((v * scale as f64) as u64)
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

    #[test]
    fn no_budget_keeps_the_defaults() {
        let p = plan(&cfg(""), Shape::rgb(32), 1000, 1000, 0).unwrap();
        assert_eq!((p.cache_bytes, p.tile_rows), (CACHE_BYTES, TILE_ROWS));
    }

    #[test]
    fn a_tight_budget_shrinks_caches_and_stays_within_it() {
        let c = cfg("[model]\nhidden = [400]\n[train]\nchunk = 8192\n[features]\nsteps = [1]\n");
        let loose = plan(&c, Shape::rgb(32), 1000, 1000, 0).unwrap();
        let budget = 200 << 20;
        assert!(
            loose.peak() > budget,
            "the test needs a plan that must shrink"
        );
        let p = plan(&c, Shape::rgb(32), 1000, 1000, budget).unwrap();
        assert!(p.cache_bytes < loose.cache_bytes);
        assert!(p.peak() <= budget, "{:?}", p.stages);
    }

    #[test]
    fn a_chunk_too_large_for_the_budget_gets_a_value_that_fits() {
        let c = cfg("[model]\nhidden = [1600]\n");
        let e = plan(&c, Shape::rgb(32), 100, 100, 400 << 20)
            .unwrap_err()
            .to_string();
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
        assert!(plan(&c2, Shape::rgb(32), 100, 100, 400 << 20).is_ok());
    }

    #[test]
    fn what_cannot_fit_names_the_stage() {
        let c = cfg("[features]\nsteps = [1]\nmodes = [\"concat\"]\n");
        let e = plan(&c, Shape::rgb(32), 50_000, 10_000, 1 << 30)
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_memory") && e.contains("classifying"), "{e}");
        let e = plan(&cfg(""), Shape::rgb(32), 10, 10, 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(e.contains("below what the program itself needs"), "{e}");
    }

    #[test]
    fn byte_counts_parse() {
        assert_eq!(parse_bytes("512M").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("2G").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("1000").unwrap(), 1000);
        assert!(parse_bytes("12 parsecs").is_err());
    }
}
