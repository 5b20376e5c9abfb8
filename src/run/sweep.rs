//! Sweeps: a grid over any config keys, expanded into runs that share work.
//!
//! A sweep file names a base run config and a grid:
//!
//! ```toml
//! name = "steps"
//! base = "../cifar10-small.toml"      # relative to the sweep file
//! [grid]
//! "features.steps" = [[24], [16], [8]]
//! "model.hidden" = [[25], [75, 48, 75]]
//! ```
//!
//! An `[ablate]` table asks for one-factor-at-a-time changes instead of a product:
//! the base point, then one run per listed value with only that key changed (on top of
//! every grid combination, when there is a grid too):
//!
//! ```toml
//! [ablate]
//! "features.alpha" = [0.1, 0.5]
//! "patches.zca_eps" = [0.01, 1.0]
//! ```
//!
//! A key may be both a one-value grid axis and ablated: the axis sets the base point
//! (`"model.learner" = ["autoencoder"]` in the grid, `["random"]` ablated).
//!
//! Runs are numbered and run in the order the file lists keys and values (the first
//! grid axis varies fastest), so the runs a researcher wants first can be listed first.
//!
//! Every run lives under `<out_dir>/<name>/runs/<k>-<values>/`. All runs
//! share one cache (`<out_dir>/<name>/cache/`) whose entries are named by the hash of
//! what determines them, so one patch store serves every model sampled from it, one
//! trained model serves every step and feature mode, and feature files are computed
//! once. A run that finished has `done.json`; a restarted sweep skips it, and an
//! interrupted run resumes from its checkpoint. The rows of every finished run are
//! gathered into `<out_dir>/<name>/results.parquet` and `results.csv`, one column per
//! grid key ([`crate::evaluate::results`]); `sae report` draws them.
//!
//! One failing run does not end the sweep: it is recorded (`failed.json`: the error and
//! the stage it stopped in), the table gives it a row with status `failed`, and the
//! next run starts. Running the sweep again skips finished runs, retries failed ones and
//! resumes interrupted ones (a killed run leaves `running.json` naming a process that
//! is gone, or whose id a later process took, told apart by its start time: neither
//! finished nor failed).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dist::{Comm, Single};
use crate::error::{Error, Result};
use crate::evaluate::results::Record;
use crate::progress::say;
use crate::run::config::Config;
use crate::run::layout::{Hashes, RunLayout, DONE, RESULTS_PARQUET};

/// A sweep file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepFile {
    /// Sweep name (folder under the base config's `out_dir`).
    pub name: String,
    /// The base run config, relative to the sweep file.
    pub base: PathBuf,
    /// Dotted config key -> values to try, every combination.
    #[serde(default)]
    pub grid: toml::Table,
    /// Dotted config key -> values to try one at a time against the base point.
    #[serde(default)]
    pub ablate: toml::Table,
}

/// One expanded run: its config and the grid values that made it.
#[derive(Clone, Debug)]
pub struct SweepRun {
    /// The run's config (name, out_dir and cache_dir set).
    pub config: Config,
    /// (key, value) of each grid axis.
    pub values: Vec<(String, String)>,
}

/// Sets `key` (dotted) in `table` to `value`.
fn set(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<()> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts
        .pop()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::config(format!("grid.{key}"), "empty key"))?;
    let mut t = table;
    for p in parts {
        t = t
            .entry(p)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| Error::config(format!("grid.{key}"), format!("`{p}` is not a table")))?;
    }
    t.insert(last.to_string(), value);
    Ok(())
}

/// The value at dotted `key` of `table`, if set.
fn get<'a>(table: &'a toml::Table, key: &str) -> Option<&'a toml::Value> {
    let (first, rest) = key
        .split_once('.')
        .map_or((key, None), |(a, b)| (a, Some(b)));
    let v = table.get(first)?;
    match rest {
        None => Some(v),
        Some(r) => get(v.as_table()?, r),
    }
}

/// The keys of `table` (the sweep file's `[name]`) with their lists of values.
fn lists<'a>(name: &str, table: &'a toml::Table) -> Result<Vec<(&'a String, Vec<toml::Value>)>> {
    table
        .iter()
        .map(|(k, v)| match v {
            toml::Value::Array(a) if !a.is_empty() => Ok((k, a.clone())),
            _ => Err(Error::config(
                format!("{name}.{k}"),
                "needs a non-empty list of values",
            )),
        })
        .collect()
}

fn short(v: &toml::Value) -> String {
    let s = match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ','))
        .collect()
}

impl SweepFile {
    /// Reads a sweep file.
    pub fn load(path: &Path) -> Result<(SweepFile, toml::Table)> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        let mut sweep: SweepFile =
            toml::from_str(&text).map_err(|e| Error::bad(path, format!("invalid sweep: {e}")))?;
        let base_path = path.parent().unwrap_or(Path::new(".")).join(&sweep.base);
        let base_text = std::fs::read_to_string(&base_path).map_err(Error::io(&base_path))?;
        let mut base: toml::Table = toml::from_str(&base_text)
            .map_err(|e| Error::bad(&base_path, format!("invalid config: {e}")))?;
        if sweep.grid.is_empty() && sweep.ablate.is_empty() {
            return Err(Error::bad(path, "the grid and the ablation are both empty"));
        }
        for k in sweep.ablate.keys() {
            let Some(axis) = sweep.grid.remove(k) else {
                continue;
            };
            // A one-value axis is a setting of the base point, which the ablation then
            // changes; a longer one would make the base point ambiguous.
            match axis {
                toml::Value::Array(mut v) if v.len() == 1 => {
                    set(&mut base, k, v.remove(0)).map_err(|e| Error::bad(path, e.to_string()))?
                }
                _ => {
                    return Err(Error::bad(
                        path,
                        format!(
                            "`{k}` is both a grid axis and ablated; ablate it from one \
                             value, or list it in one of them"
                        ),
                    ))
                }
            }
        }
        Ok((sweep, base))
    }

    /// Every combination of the grid, each with the base point and every one-key change
    /// of the ablation, each checked as a run config.
    pub fn expand(&self, base: &toml::Table) -> Result<Vec<SweepRun>> {
        let axes = lists("grid", &self.grid)?;
        let changes: Vec<(&String, toml::Value)> = lists("ablate", &self.ablate)?
            .into_iter()
            .flat_map(|(k, vals)| vals.into_iter().map(move |v| (k, v)))
            .collect();
        // The ablated keys' columns hold the base config's value, or the change.
        let at_base: Vec<String> = self
            .ablate
            .keys()
            .map(|k| get(base, k).map_or_else(|| "default".into(), short))
            .collect();
        let total: usize = axes.iter().map(|a| a.1.len()).product();
        let out_dir = base
            .get("out_dir")
            .and_then(|v| v.as_str())
            .unwrap_or("runs");
        let root = Path::new(out_dir).join(&self.name);
        let mut runs = Vec::with_capacity(total * (1 + changes.len()));
        for (k, change) in (0..total)
            .flat_map(|g| {
                std::iter::once(None)
                    .chain(changes.iter().map(Some))
                    .map(move |c| (g, c))
            })
            .enumerate()
        {
            let (g, change) = change;
            let mut t = base.clone();
            let mut rest = g;
            let mut values = Vec::new();
            for (key, vals) in &axes {
                let v = vals[rest % vals.len()].clone();
                rest /= vals.len();
                values.push((key.to_string(), short(&v)));
                set(&mut t, key, v)?;
            }
            // Axes with one value say nothing about the run: leave them out of its name.
            let mut label: Vec<String> = values
                .iter()
                .zip(&axes)
                .filter(|(_, (_, vals))| vals.len() > 1)
                .map(|((_, v), _)| v.clone())
                .collect();
            for (key, v) in self.ablate.keys().zip(&at_base) {
                values.push((key.to_string(), v.clone()));
            }
            if let Some((key, v)) = change {
                let at = values
                    .iter()
                    .position(|(k, _)| k == *key)
                    .expect("ablated key");
                values[at].1 = short(v);
                label.push(format!(
                    "{}-{}",
                    key.rsplit('.').next().unwrap_or(key),
                    short(v)
                ));
                set(&mut t, key, v.clone())?;
            }
            let name = if label.is_empty() {
                format!("{k:03}")
            } else {
                format!("{k:03}-{}", label.join("_"))
            };
            t.insert("name".into(), toml::Value::String(name));
            t.insert(
                "out_dir".into(),
                toml::Value::String(root.join("runs").display().to_string()),
            );
            t.insert(
                "cache_dir".into(),
                toml::Value::String(root.join("cache").display().to_string()),
            );
            let config: Config = toml::Value::Table(t)
                .try_into()
                .map_err(|e| Error::config("grid", format!("run {k}: {e}")))?;
            config.check()?;
            runs.push(SweepRun { config, values });
        }
        Ok(runs)
    }
}

/// What `done.json` records about a finished run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    /// Run name.
    pub name: String,
    /// Grid values.
    pub values: Vec<(String, String)>,
    /// Final training loss (NaN for random patches, which have none: JSON writes it
    /// as null).
    #[serde(deserialize_with = "crate::learn::model::null_as_nan")]
    pub final_loss: f64,
    /// Seconds the run took (this session).
    pub seconds: f64,
    /// Peak resident memory of the process so far, in KiB.
    pub peak_rss_kb: u64,
    /// When it started and finished (UTC); empty in records from before they were kept.
    #[serde(default)]
    pub started: String,
    /// See [`RunRecord::started`].
    #[serde(default)]
    pub finished: String,
}

/// What `failed.json` records about a run that stopped with an error. The sweep goes
/// on with the next run, and retries this one when it runs again.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Failure {
    /// Run name.
    pub name: String,
    /// The error, as printed.
    pub error: String,
    /// The stage it stopped in.
    pub stage: String,
    /// When it started and stopped (UTC).
    pub started: String,
    /// See [`Failure::started`].
    pub finished: String,
    /// The build that ran it.
    pub git_rev: String,
}

/// File of a failed run, beside where `done.json` would be.
pub const FAILED: &str = "failed.json";
/// File of a run in progress: the process that runs it ([`Runner`]).
pub const RUNNING: &str = "running.json";
/// File of a run in progress: its latest progress ([`crate::progress::Snapshot`]).
pub const PROGRESS: &str = "progress.json";
/// File of a sweep folder: every run's name and grid values, for `sae status`.
pub const RUNS: &str = "runs.json";
/// Folder of a sweep where its local workers claim groups of runs.
const CLAIMS: &str = "claims";

/// Where a run of a sweep stands.
#[derive(Clone, Debug)]
pub enum Status {
    /// Finished (`done.json`).
    Finished(RunRecord),
    /// Stopped with an error (`failed.json`).
    Failed(Failure),
    /// Being run by a live process.
    Running(u32),
    /// Started by a process that is gone (killed): it resumes when the sweep runs again.
    Interrupted,
    /// Not started.
    Pending,
}

impl Status {
    /// The word the results table and `sae status` use.
    pub fn word(&self) -> &'static str {
        match self {
            Status::Finished(_) => crate::evaluate::results::FINISHED,
            Status::Failed(_) => "failed",
            Status::Running(_) => "running",
            Status::Interrupted => "interrupted",
            Status::Pending => "pending",
        }
    }

    /// The status of the run whose folder is `dir`.
    pub fn of(dir: &Path) -> Result<Status> {
        let read = |name: &str| -> Option<Vec<u8>> { std::fs::read(dir.join(name)).ok() };
        let unreadable = |name: &str, e: serde_json::Error| {
            Error::bad(dir.join(name), format!("unreadable: {e}"))
        };
        if let Some(b) = read(DONE) {
            return Ok(Status::Finished(
                serde_json::from_slice(&b).map_err(|e| unreadable(DONE, e))?,
            ));
        }
        if let Some(b) = read(RUNNING) {
            let r: Runner = serde_json::from_slice(&b).map_err(|e| unreadable(RUNNING, e))?;
            return Ok(if r.alive() {
                Status::Running(r.pid)
            } else {
                Status::Interrupted
            });
        }
        if let Some(b) = read(FAILED) {
            return Ok(Status::Failed(
                serde_json::from_slice(&b).map_err(|e| unreadable(FAILED, e))?,
            ));
        }
        Ok(Status::Pending)
    }
}

/// The process that runs a run, as `running.json` records it. Its start time tells a
/// live runner from a later process that got the same id after the runner was killed.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "RunnerFile")]
pub struct Runner {
    /// Process id.
    pub pid: u32,
    /// When the process started, in clock ticks since boot (`/proc/<pid>/stat`); `None`
    /// where the file did not say (written by an older build: the id alone decides).
    pub started: Option<u64>,
}

/// `running.json` as older builds wrote it (a bare process id) or as it is now.
#[derive(Deserialize)]
#[serde(untagged)]
enum RunnerFile {
    Pid(u32),
    Runner { pid: u32, started: Option<u64> },
}

impl From<RunnerFile> for Runner {
    fn from(f: RunnerFile) -> Runner {
        match f {
            RunnerFile::Pid(pid) => Runner { pid, started: None },
            RunnerFile::Runner { pid, started } => Runner { pid, started },
        }
    }
}

impl Runner {
    /// This process.
    pub fn me() -> Runner {
        let pid = std::process::id();
        Runner {
            pid,
            started: proc_stat(pid).map(|(_, t)| t),
        }
    }

    /// Whether the process still runs on this machine: it exists, is not a zombie, and
    /// (where recorded) started when the runner did.
    pub fn alive(&self) -> bool {
        match proc_stat(self.pid) {
            Some((state, started)) => state != 'Z' && self.started.is_none_or(|t| t == started),
            None => false,
        }
    }
}

/// State and start time (clock ticks since boot) of process `pid`, from
/// `/proc/<pid>/stat`; `None` when there is no such process.
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields after it are
    // counted from its last ')'. State is field 3, start time field 22.
    let mut rest = s.rsplit_once(')')?.1.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let started = rest.nth(18)?.parse().ok()?;
    Some((state, started))
}

/// What a sweep did: its folder and how many of its runs failed.
#[derive(Clone, Debug)]
pub struct SweepOutcome {
    /// The sweep's folder (table and runs).
    pub root: PathBuf,
    /// Runs in the sweep.
    pub runs: usize,
    /// Runs that stopped with an error (as the table records them).
    pub failed: usize,
}

/// Runs every run of the sweep that is not done yet, then writes the results table.
pub fn run_sweep(path: &Path) -> Result<SweepOutcome> {
    run_sweep_with(path, &Single, None)
}

/// [`run_sweep`] spread over the ranks of `comm`: runs that share a patch store (and so
/// possibly models and checkpoints) go to the same rank, groups are dealt out in turn,
/// and rank 0 writes the table once every rank is done.
/// `max_memory`, when given, replaces every run's budget.
///
/// A run that fails is recorded (`failed.json`: the error and the stage) and the sweep
/// goes on; finished runs are skipped and failed ones retried when the sweep runs again.
pub fn run_sweep_with(
    path: &Path,
    comm: &dyn Comm,
    max_memory: Option<u64>,
) -> Result<SweepOutcome> {
    let (root, runs) = prepare(path, comm.is_root(), max_memory)?;
    run_share(&runs, comm)?;
    comm.barrier();
    if comm.is_root() {
        finish(root, &runs)
    } else {
        Ok(SweepOutcome {
            root,
            runs: runs.len(),
            failed: 0,
        })
    }
}

/// The sweep file's runs (each with `max_memory`, when given, as its budget) and the
/// sweep's folder, created; `list` writes the run list `sae status` reads.
pub fn prepare(
    path: &Path,
    list: bool,
    max_memory: Option<u64>,
) -> Result<(PathBuf, Vec<SweepRun>)> {
    let (sweep, base) = SweepFile::load(path)?;
    let mut runs = sweep.expand(&base)?;
    if let Some(b) = max_memory {
        runs.iter_mut().for_each(|r| r.config.max_memory = b);
    }
    let root = runs[0]
        .config
        .out_dir
        .parent()
        .expect("runs live under the sweep folder")
        .to_path_buf();
    std::fs::create_dir_all(&root).map_err(Error::io(&root))?;
    if list {
        let names: Vec<(&String, &Vec<(String, String)>)> =
            runs.iter().map(|r| (&r.config.name, &r.values)).collect();
        let json = serde_json::to_vec_pretty(&names).expect("run list serialises");
        crate::fsio::write_atomic(&root.join(RUNS), &json)?;
    }
    Ok((root, runs))
}

/// Runs the runs of `runs` dealt to this rank of `comm` (MPI) that are not finished: runs
/// that share a patch store form a group, and groups are dealt out in turn, so two
/// ranks (possibly on different machines) never build the same store, model or
/// checkpoint.
pub fn run_share(runs: &[SweepRun], comm: &dyn Comm) -> Result<()> {
    let n = runs.len();
    let stores = groups(runs, |h| h.patches);
    for (k, r) in runs.iter().enumerate() {
        if stores[k] % comm.size() == comm.rank() {
            run_pending(r, k, n, "")?;
        }
    }
    Ok(())
}

/// Runs, as local worker `index` of `sae sweep --jobs N` on the sweep in folder `root`,
/// the runs that no other worker has claimed in this invocation of the sweep, taking
/// the next unclaimed group whenever one is done, so a worker that finishes early
/// takes more work. A group is the runs that share a checkpoint lineage (and so a
/// checkpoint database, model and feature files); groups that share a patch store run
/// side by side, the store built once under its lock.
pub fn run_claimed(root: &Path, runs: &[SweepRun], index: usize) -> Result<()> {
    let n = runs.len();
    let lineages = groups(runs, |h| h.lineage);
    let claims = root.join(CLAIMS);
    std::fs::create_dir_all(&claims).map_err(Error::io(&claims))?;
    let who = format!("worker {index}: ");
    // A group's runs need not be adjacent in the list (the first grid axis varies
    // fastest), so every group this worker claimed is remembered.
    let mut mine = std::collections::BTreeSet::new();
    for (k, r) in runs.iter().enumerate() {
        let g = lineages[k];
        if !mine.contains(&g) {
            let claim = claims.join(format!("{g:04}"));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&claim)
            {
                Ok(_) => {
                    mine.insert(g);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(&claim)(e)),
            }
        }
        run_pending(r, k, n, &who)?;
    }
    Ok(())
}

/// Clears the claims of an earlier invocation of the sweep in folder `root` before the
/// workers start: a group whose worker was killed is taken again.
pub fn reset_claims(root: &Path) -> Result<()> {
    let claims = root.join(CLAIMS);
    let _ = std::fs::remove_dir_all(&claims);
    std::fs::create_dir_all(&claims).map_err(Error::io(&claims))
}

/// For each run, the number of its group: runs with the same `key` of their hashes
/// share a group, numbered in the order the sweep lists them.
fn groups(runs: &[SweepRun], key: impl Fn(Hashes) -> String) -> Vec<usize> {
    let mut seen: Vec<String> = Vec::new();
    runs.iter()
        .map(|r| {
            let h = key(Hashes::of(&r.config));
            seen.iter().position(|s| *s == h).unwrap_or_else(|| {
                seen.push(h);
                seen.len() - 1
            })
        })
        .collect()
}

/// Runs run `k` of `n` unless it finished in an earlier invocation.
fn run_pending(r: &SweepRun, k: usize, n: usize, who: &str) -> Result<()> {
    let dir = r.config.run_dir();
    let name = &r.config.name;
    if let Status::Finished(_) = Status::of(&dir)? {
        say(format!("sweep: {who}run {}/{n} {name} already done", k + 1));
        return Ok(());
    }
    say(format!("sweep: {who}run {}/{n} {name}", k + 1));
    run_one(r, &dir)
}

/// Writes the sweep's table once its runs are done; counts the failed ones.
pub fn finish(root: PathBuf, runs: &[SweepRun]) -> Result<SweepOutcome> {
    let failed = write_table(&root, runs)?;
    Ok(SweepOutcome {
        root,
        runs: runs.len(),
        failed,
    })
}

/// Runs `r` in `dir`, recording how it ends: `done.json`, or `failed.json` with the
/// error and the stage (the sweep goes on). Only failing to record is an error.
fn run_one(r: &SweepRun, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let _ = std::fs::remove_file(dir.join(FAILED));
    let me = serde_json::to_vec(&Runner::me()).expect("runner serialises");
    crate::fsio::write_atomic(&dir.join(RUNNING), &me)?;
    let (t, started) = (std::time::Instant::now(), crate::run::stamp::now());
    // The run's latest progress, for `sae status`; kept afterwards, so an interrupted
    // run shows where it stopped.
    crate::progress::set_status_file(Some(dir.join(PROGRESS)));
    // A panic is a bug, but it ends this run only: the sweep records it and goes on.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        crate::run::pipeline::run(&r.config, false)
            .and_then(|_| crate::learn::model::Model::load(&RunLayout::of(&r.config).model))
    }))
    .unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".into());
        Err(Error::Internal(format!("panic: {msg}")))
    });
    crate::progress::set_status_file(None);
    match outcome {
        Ok(model) => {
            let rec = RunRecord {
                name: r.config.name.clone(),
                values: r.values.clone(),
                final_loss: model.header.loss,
                seconds: t.elapsed().as_secs_f64(),
                peak_rss_kb: crate::run::limits::peak_rss_kb(),
                started,
                finished: crate::run::stamp::now(),
            };
            let json = serde_json::to_vec_pretty(&rec).expect("record serialises");
            crate::fsio::write_atomic(&dir.join(DONE), &json)?;
        }
        Err(e) => {
            let stage = crate::run::limits::current_stage();
            say(format!(
                "sweep: run {} failed in {stage}: {e:#}",
                r.config.name
            ));
            let f = Failure {
                name: r.config.name.clone(),
                error: format!("{e:#}"),
                stage: stage.into(),
                started,
                finished: crate::run::stamp::now(),
                git_rev: crate::run::stamp::git_rev().into(),
            };
            let json = serde_json::to_vec_pretty(&f).expect("failure serialises");
            crate::fsio::write_atomic(&dir.join(FAILED), &json)?;
        }
    }
    let _ = std::fs::remove_file(dir.join(RUNNING));
    Ok(())
}

/// One run of a sweep as `sae status` shows it.
#[derive(Clone, Debug)]
pub struct RunView {
    /// Run name.
    pub name: String,
    /// Grid values.
    pub values: Vec<(String, String)>,
    /// Where it stands.
    pub status: Status,
    /// Latest progress of a running run.
    pub progress: Option<crate::progress::Snapshot>,
    /// Best result in its table so far ([`Record::rank`]).
    pub best: Option<Record>,
}

/// Every run of the sweep in folder `root` (as its last start listed them), with its
/// status, the progress of running ones and the best accuracy of each so far.
pub fn status(root: &Path) -> Result<Vec<RunView>> {
    let list = root.join(RUNS);
    let text = std::fs::read(&list).map_err(Error::io(&list))?;
    let runs: Vec<(String, Vec<(String, String)>)> =
        serde_json::from_slice(&text).map_err(|e| Error::bad(&list, format!("unreadable: {e}")))?;
    runs.into_iter()
        .map(|(name, values)| {
            let dir = root.join("runs").join(&name);
            let status = Status::of(&dir)?;
            let progress = match status {
                Status::Running(_) => std::fs::read(dir.join(PROGRESS))
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok()),
                _ => None,
            };
            let table = dir.join(RESULTS_PARQUET);
            let best = if table.exists() {
                let recs = crate::evaluate::results::read(&table)?;
                crate::evaluate::results::best_first(&recs)
                    .into_iter()
                    .next()
                    .cloned()
            } else {
                None
            };
            Ok(RunView {
                name,
                values,
                status,
                progress,
                best,
            })
        })
        .collect()
}

/// Gathers every run into `<root>/results.parquet` and `<root>/results.csv`, with its
/// grid values and status: a finished run's result rows, one row for any other run
/// (failed with its error, interrupted, running or pending). Returns the failed runs.
fn write_table(root: &Path, runs: &[SweepRun]) -> Result<usize> {
    let mut all = Vec::new();
    let mut failed = 0;
    for r in runs {
        let dir = r.config.run_dir();
        let rel = dir.strip_prefix(root).unwrap_or(&dir).to_path_buf();
        let status = Status::of(&dir)?;
        let blank = Record {
            run: r.config.name.clone(),
            grid: r.values.clone(),
            accuracy: f64::NAN,
            final_loss: f64::NAN,
            classify_seconds: f64::NAN,
            run_seconds: f64::NAN,
            status: status.word().into(),
            config_hash: crate::run::stamp::config_hash(&r.config),
            hidden: r
                .config
                .model
                .hidden
                .iter()
                .map(|h| h.to_string())
                .collect::<Vec<_>>()
                .join("-"),
            patches: r.config.patches.count as u64,
            ..Record::default()
        };
        match status {
            Status::Finished(rec) => {
                for mut row in crate::evaluate::results::read(&dir.join(RESULTS_PARQUET))? {
                    row.run = rec.name.clone();
                    row.grid = rec.values.clone();
                    row.loss_csv = rel.join(&row.loss_csv).display().to_string();
                    row.run_seconds = rec.seconds;
                    row.peak_rss_kb = rec.peak_rss_kb;
                    if !rec.finished.is_empty() {
                        row.started = rec.started.clone();
                        row.finished = rec.finished.clone();
                    }
                    all.push(row);
                }
            }
            Status::Failed(f) => {
                failed += 1;
                all.push(Record {
                    error: f.error,
                    stage: f.stage,
                    started: f.started,
                    finished: f.finished,
                    git_rev: f.git_rev,
                    ..blank
                });
            }
            _ => all.push(blank),
        }
    }
    crate::evaluate::results::write(root, &all)?;
    Ok(failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::config::Learner;

    fn sweep(text: &str) -> Vec<SweepRun> {
        let base: toml::Table = toml::from_str(
            "name = \"b\"\nout_dir = \"o\"\n[data]\nformat = \"cifar10\"\npath = \"d\"\n[features]\nalpha = 0.25\n",
        )
        .unwrap();
        let s: SweepFile = toml::from_str(text).unwrap();
        s.expand(&base).unwrap()
    }

    #[test]
    fn ablation_changes_one_key_at_a_time_per_grid_point() {
        let runs = sweep(
            "name = \"a\"\nbase = \"b.toml\"\n[grid]\n\"seed\" = [1, 2]\n\
             [ablate]\n\"features.alpha\" = [0.5]\n\"patches.count\" = [10, 20]\n",
        );
        assert_eq!(runs.len(), 2 * 4);
        let at = |k: usize| -> Vec<(String, String)> { runs[k].values.clone() };
        let v = |a: &str, b: &str, c: &str| {
            vec![
                ("seed".to_string(), a.to_string()),
                ("features.alpha".to_string(), b.to_string()),
                ("patches.count".to_string(), c.to_string()),
            ]
        };
        assert_eq!(at(0), v("1", "0.25", "default"));
        assert_eq!(at(1), v("1", "0.5", "default"));
        assert_eq!(at(3), v("1", "0.25", "20"));
        assert_eq!(at(4), v("2", "0.25", "default"));
        assert_eq!(runs[1].config.features.alpha, 0.5);
        assert_eq!(runs[3].config.patches.count, 20);
        assert_eq!(runs[3].config.features.alpha, 0.25);
        assert_eq!(runs[3].config.name, "003-1_count-20");
        assert_eq!(runs[4].config.seed, 2);
        let names: std::collections::HashSet<_> = runs.iter().map(|r| &r.config.name).collect();
        assert_eq!(names.len(), runs.len(), "run folders are distinct");
    }

    #[test]
    fn a_run_whose_process_is_gone_is_interrupted() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(Status::of(d.path()).unwrap(), Status::Pending));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        std::fs::write(d.path().join(RUNNING), gone.to_string()).unwrap();
        assert_eq!(Status::of(d.path()).unwrap().word(), "interrupted");
        // A bare id, as older builds wrote it, still reads.
        let me = std::process::id();
        std::fs::write(d.path().join(RUNNING), me.to_string()).unwrap();
        assert!(matches!(Status::of(d.path()).unwrap(), Status::Running(p) if p == me));
        let runner = serde_json::to_vec(&Runner::me()).unwrap();
        std::fs::write(d.path().join(RUNNING), &runner).unwrap();
        assert!(matches!(Status::of(d.path()).unwrap(), Status::Running(p) if p == me));
        // The same id with another start time is a later process, not the runner.
        let mut reused = Runner::me();
        reused.started = reused.started.map(|t| t + 1);
        assert!(reused.started.is_some(), "this process's start time reads");
        let reused = serde_json::to_vec(&reused).unwrap();
        std::fs::write(d.path().join(RUNNING), &reused).unwrap();
        assert_eq!(Status::of(d.path()).unwrap().word(), "interrupted");
        std::fs::write(d.path().join(DONE), "{").unwrap();
        let e = Status::of(d.path()).unwrap_err().to_string();
        assert!(e.contains("done.json"), "{e}");
    }

    #[test]
    fn a_run_without_a_loss_reads_back() {
        let rec = RunRecord {
            name: "r".into(),
            values: Vec::new(),
            final_loss: f64::NAN,
            seconds: 1.0,
            peak_rss_kb: 1,
            started: String::new(),
            finished: String::new(),
        };
        let back: RunRecord = serde_json::from_slice(&serde_json::to_vec(&rec).unwrap()).unwrap();
        assert!(back.final_loss.is_nan());
    }

    #[test]
    fn a_one_value_axis_sets_the_base_point_of_its_ablation() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("b.toml"),
            "name = \"b\"\n[data]\nformat = \"cifar10\"\npath = \"d\"\n",
        )
        .unwrap();
        let file = |grid: &str| {
            let p = d.path().join("s.toml");
            std::fs::write(
                &p,
                format!(
                    "name = \"a\"\nbase = \"b.toml\"\n[grid]\n\"model.learner\" = {grid}\n\
                     [ablate]\n\"model.learner\" = [\"random\"]\n"
                ),
            )
            .unwrap();
            SweepFile::load(&p)
        };
        let (s, base) = file("[\"omp1\"]").unwrap();
        let learners: Vec<Learner> = s
            .expand(&base)
            .unwrap()
            .iter()
            .map(|r| r.config.model.learner)
            .collect();
        assert_eq!(learners, [Learner::Omp1, Learner::Random]);
        let e = file("[\"omp1\", \"autoencoder\"]").unwrap_err().to_string();
        assert!(e.contains("both a grid axis and ablated"), "{e}");
    }

    #[test]
    fn ablation_alone_starts_from_the_base_point() {
        let runs =
            sweep("name = \"a\"\nbase = \"b.toml\"\n[ablate]\n\"features.alpha\" = [0.1, 0.5]\n");
        let alphas: Vec<f64> = runs.iter().map(|r| r.config.features.alpha).collect();
        assert_eq!(alphas, [0.25, 0.1, 0.5]);
        assert_eq!(runs[0].config.name, "000");
        assert_eq!(runs[2].config.name, "002-alpha-0.5");
    }
}
