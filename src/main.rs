//! The `sae` command line: parses flags and calls the library, one short function per
//! subcommand. Flag defaults come from the config types' defaults and flag values pass
//! the same checks as a config file, so the command line and configs cannot drift.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args as ClapArgs, Parser, Subcommand};

use sae::data::ingest::synth::{write_dataset, Layout, SynthSpec};
use sae::data::ingest::{Dataset, Format, OpenOptions};
use sae::data::store::{Kind, Precision, Store};
use sae::dist::{Comm, Single};
use sae::encode::{Encoder, Mode};
use sae::learn::model::Model;
use sae::learn::sae::Decoder;
use sae::learn::training::{train_resumable, TrainJob};
use sae::run::config::{
    Config, FeatureConfig, ModelConfig, NormKind, Optimizer, PatchConfig, TrainConfig, DEFAULT_SEED,
};
use sae::run::limits::Stage;
use sae::run::pipeline::encode_shared;

#[derive(Parser)]
#[command(
    name = "sae",
    version,
    about = "Sparse-autoencoder image features, out of core"
)]
struct Args {
    /// Worker threads (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// No progress output.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Progress and messages as JSON lines on stderr.
    #[arg(long, global = true)]
    log_json: bool,
    /// Memory budget (bytes, or 512M, 2G): caches and tiles shrink to fit, and work
    /// that cannot fit stops before it starts (overrides `max_memory`).
    #[arg(long, global = true)]
    max_memory: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

/// The global flags, which sweep workers are started with too.
struct Flags {
    threads: Option<usize>,
    quiet: bool,
    log_json: bool,
    max_memory: Option<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every stage of a config file into its run folder.
    Run {
        /// The TOML config.
        config: PathBuf,
        /// Parent folder of the run folder (overrides `out_dir`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Discard the run folder's checkpoints and artefacts and begin afresh.
        #[arg(long)]
        restart: bool,
    },
    /// Run every combination of a sweep file's grid (skipping finished runs) and gather
    /// the results table.
    Sweep {
        /// The sweep file.
        sweep: PathBuf,
        /// Runs at once, as separate processes, the cores and the memory budget split
        /// between them (runs that share a model or checkpoints run in the same
        /// process, one after another; a shared patch store is built once).
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// Internal: this process is worker K of `--jobs` (started by the sweep).
        #[arg(long, hide = true)]
        worker: Option<usize>,
    },
    /// List a sweep's runs (finished, running with their progress, failed, interrupted,
    /// pending) and the best result so far (by validation accuracy where recorded).
    Status {
        /// Sweep folder (`<out_dir>/<name>`).
        dir: PathBuf,
    },
    /// Turn a result table (a run or sweep folder, or its results.parquet) into
    /// markdown tables, PNG/SVG plots and an HTML page under `<folder>/report/`.
    Report {
        /// Run or sweep folder, or a results.parquet.
        results: PathBuf,
    },
    /// Write a synthetic labelled dataset in the CIFAR-10 or STL-10 binary layout.
    Synth(SynthArgs),
    /// Sample patches from a dataset's unlabeled images into a normalised patch store.
    Sample(SampleArgs),
    /// Train an autoencoder on a patch store.
    Train(TrainArgs),
    /// Compare the analytic gradient with central differences on small networks (f64).
    Gradcheck,
    /// Describe a dataset: sizes, shapes, pixel order, label base, class counts.
    Info {
        /// Format of the dataset.
        #[arg(long, value_enum)]
        format: Format,
        /// Dataset folder.
        path: PathBuf,
    },
    /// Draw a model's first-layer filters (and a store's first patches) as PNG.
    Show {
        /// A model file (model.sae).
        model: PathBuf,
        /// Output PNG of the filters.
        #[arg(long, default_value = "filters.png")]
        out: PathBuf,
        /// A patch store to draw sample patches from.
        #[arg(long)]
        patches: Option<PathBuf>,
        /// Output PNG of the patches.
        #[arg(long, default_value = "patches.png")]
        patches_out: PathBuf,
    },
    /// Encode a dataset's train and test images with a trained model.
    Encode(EncodeArgs),
}

#[derive(ClapArgs)]
struct SynthArgs {
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Layout: cifar10 (32x32) or stl10 (96x96).
    #[arg(long, value_enum, default_value_t = Layout::Cifar10)]
    format: Layout,
    /// Training images.
    #[arg(long, default_value_t = 2000)]
    train: usize,
    /// Test images.
    #[arg(long, default_value_t = 1000)]
    test: usize,
    /// Unlabeled images (stl10 only).
    #[arg(long, default_value_t = 0)]
    unlabeled: usize,
    /// Seed.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
}

#[derive(ClapArgs)]
struct SampleArgs {
    /// Format of the dataset.
    #[arg(long, value_enum)]
    format: Format,
    /// Dataset folder.
    #[arg(long)]
    data: PathBuf,
    /// Number of patches.
    #[arg(long, default_value_t = PatchConfig::default().count)]
    count: usize,
    /// Patch side.
    #[arg(long, default_value_t = PatchConfig::default().size)]
    size: usize,
    /// Normalisation.
    #[arg(long, value_enum, default_value_t = PatchConfig::default().norm)]
    norm: NormKind,
    /// Rows per store batch.
    #[arg(long, default_value_t = TrainConfig::default().chunk)]
    chunk: usize,
    /// Seed.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
    /// Output store (.arrow).
    #[arg(long)]
    out: PathBuf,
}

#[derive(ClapArgs)]
struct TrainArgs {
    /// The patch store.
    store: PathBuf,
    /// Hidden sizes, e.g. 25 or 75,48,75 (default: `model.hidden`'s).
    #[arg(long, value_delimiter = ',')]
    hidden: Option<Vec<usize>>,
    /// Output activation.
    #[arg(long, value_enum, default_value_t = ModelConfig::default().decoder)]
    decoder: Decoder,
    /// Sparsity target ρ.
    #[arg(long, default_value_t = ModelConfig::default().rho)]
    rho: f64,
    /// Weight decay λ.
    #[arg(long, default_value_t = ModelConfig::default().lambda)]
    lambda: f64,
    /// Sparsity weight β.
    #[arg(long, default_value_t = ModelConfig::default().beta)]
    beta: f64,
    /// Optimiser.
    #[arg(long, value_enum, default_value_t = TrainConfig::default().optimizer)]
    optimizer: Optimizer,
    /// L-BFGS iterations.
    #[arg(long, default_value_t = TrainConfig::default().max_iter)]
    max_iter: usize,
    /// Mini-batch epochs.
    #[arg(long, default_value_t = TrainConfig::default().epochs)]
    epochs: usize,
    /// Mini-batch rows.
    #[arg(long, default_value_t = TrainConfig::default().batch_size)]
    batch_size: usize,
    /// Mini-batch peak step size (where the probe starts unless --no-lr-probe).
    #[arg(long, default_value_t = TrainConfig::default().learning_rate)]
    learning_rate: f64,
    /// Use --learning-rate as given instead of probing from it.
    #[arg(long)]
    no_lr_probe: bool,
    /// Mini-batch step-size schedule.
    #[arg(long, value_enum, default_value_t = TrainConfig::default().schedule)]
    schedule: sae::learn::minibatch::Schedule,
    /// Fraction of the mini-batch steps spent warming the step size up.
    #[arg(long, default_value_t = TrainConfig::default().warmup)]
    warmup: f64,
    /// Seed of the initial weights.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
    /// Output model file.
    #[arg(long, default_value = "model.sae")]
    out: PathBuf,
}

#[derive(ClapArgs)]
struct EncodeArgs {
    /// A model file (model.sae).
    model: PathBuf,
    /// Format of the dataset.
    #[arg(long, value_enum)]
    format: Format,
    /// Dataset folder.
    #[arg(long)]
    data: PathBuf,
    /// Grid step.
    #[arg(long, default_value_t = FeatureConfig::default().steps[0])]
    step: usize,
    /// Feature mode.
    #[arg(long, value_enum, default_value_t = FeatureConfig::default().modes[0])]
    mode: Mode,
    /// Also encode each image mirrored left to right (a second row with the same image
    /// number and label after it).
    #[arg(long)]
    flip: bool,
    /// How the feature files keep their values (f16: half the disk and the reads).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    precision: Precision,
    /// Output folder for `<split>.arrow`.
    #[arg(long)]
    out: PathBuf,
}

/// Exit status of a sweep that ran to its end with some runs failed (1 is an error that
/// stopped `sae` itself).
const SOME_RUNS_FAILED: u8 = 3;

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            if std::env::args().any(|a| a == "--log-json") {
                let v = serde_json::json!({"event": "error", "message": format!("{e:#}")});
                eprintln!("{v}");
            } else {
                eprintln!("error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    sae::progress::set_quiet(args.quiet);
    sae::progress::set_json(args.log_json);
    if let Some(t) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .context("cannot set the thread count")?;
    }
    // Under mpirun every process runs this; without the `mpi` feature it is alone.
    #[cfg(feature = "mpi")]
    let comm: Box<dyn Comm> = match sae::dist::Mpi::init() {
        Some(m) => Box::new(m),
        None => Box::new(Single),
    };
    #[cfg(not(feature = "mpi"))]
    let comm: Box<dyn Comm> = Box::new(Single);
    let comm = comm.as_ref();
    if !comm.is_root() {
        sae::progress::set_quiet(true);
    }
    let budget = match &args.max_memory {
        Some(b) => Some(sae::run::config::parse_bytes(b)?),
        None => None,
    };
    let flags = Flags {
        threads: args.threads,
        quiet: args.quiet,
        log_json: args.log_json,
        max_memory: args.max_memory.clone(),
    };
    match args.cmd {
        Cmd::Run {
            config,
            out,
            restart,
        } => cmd_run(&config, out, restart, budget, comm),
        Cmd::Sweep {
            sweep,
            jobs,
            worker,
        } => cmd_sweep(&sweep, jobs, worker, budget, comm, &flags),
        Cmd::Report { results } => cmd_report(&results),
        Cmd::Status { dir } => cmd_status(&dir),
        Cmd::Synth(a) => cmd_synth(a),
        Cmd::Sample(a) => cmd_sample(a, budget.unwrap_or(0)),
        Cmd::Train(a) => cmd_train(a, budget.unwrap_or(0), comm),
        Cmd::Gradcheck => cmd_gradcheck(),
        Cmd::Info { format, path } => cmd_info(format, &path),
        Cmd::Show {
            model,
            out,
            patches,
            patches_out,
        } => cmd_show(&model, &out, patches.as_deref(), &patches_out),
        Cmd::Encode(a) => cmd_encode(a, budget.unwrap_or(0), comm),
    }
}

fn cmd_run(
    config: &Path,
    out: Option<PathBuf>,
    restart: bool,
    max_memory: Option<u64>,
    comm: &dyn Comm,
) -> anyhow::Result<ExitCode> {
    let mut cfg = Config::load(config)?;
    if let Some(o) = out {
        cfg.out_dir = o;
    }
    if let Some(b) = max_memory {
        cfg.max_memory = b;
    }
    if cfg.threads > 0 {
        // Ignored when --threads already built the pool.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.threads)
            .build_global();
    }
    let (dir, results) = sae::run::pipeline::run_with(&cfg, restart, comm)?;
    if !comm.is_root() {
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<22} {:<8} {:>8} {:>10}",
        "features", "clf", "accuracy", "validation"
    );
    for r in &results {
        let v = r.validation.map_or(String::new(), |v| format!("{v:.4}"));
        println!(
            "{:<22} {:<8} {:>8.4} {v:>10}",
            r.features, r.classifier, r.accuracy
        );
    }
    println!(
        "results: {} (and .parquet)",
        dir.join(sae::evaluate::results::CSV).display()
    );
    Ok(ExitCode::SUCCESS)
}

fn cmd_sweep(
    sweep: &Path,
    jobs: usize,
    worker: Option<usize>,
    budget: Option<u64>,
    comm: &dyn Comm,
    flags: &Flags,
) -> anyhow::Result<ExitCode> {
    use sae::run::sweep;
    if jobs == 0 {
        anyhow::bail!("--jobs must be at least 1");
    }
    if let Some(index) = worker {
        // Workers share the terminal: bars drawn by several processes would overwrite
        // each other, so they print lines.
        sae::progress::set_plain(true);
        let (root, mut runs) = sweep::prepare(sweep, false, budget)?;
        // The workers share the memory budget, whether the flag or the config set it.
        for r in &mut runs {
            r.config.max_memory /= jobs as u64;
        }
        sweep::run_claimed(&root, &runs, index)?;
        return Ok(ExitCode::SUCCESS);
    }
    let done = if jobs > 1 {
        if comm.size() > 1 {
            anyhow::bail!("--jobs runs local processes; under MPI the ranks share the runs");
        }
        let (root, runs) = sweep::prepare(sweep, true, budget)?;
        sweep::reset_claims(&root)?;
        let stopped = run_workers(sweep, jobs, flags)?;
        // The table shows what the workers did before any of them stopped.
        let done = sweep::finish(root, &runs)?;
        if !stopped.is_empty() {
            anyhow::bail!(
                "sweep workers stopped with an error ({}); the table holds the runs done \
                 so far, and the others resume when the sweep runs again",
                stopped.join(", ")
            );
        }
        done
    } else {
        sweep::run_sweep_with(sweep, comm, budget)?
    };
    if comm.is_root() {
        println!(
            "results: {} (and .parquet)",
            done.root.join(sae::evaluate::results::CSV).display()
        );
        if done.failed > 0 {
            eprintln!(
                "sweep: {} of {} runs failed (their errors are in the table; running the \
                 sweep again retries them)",
                done.failed, done.runs
            );
            return Ok(ExitCode::from(SOME_RUNS_FAILED));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Starts `jobs` worker processes of this program on `sweep`, each with its share of
/// the cores (each divides the memory budget itself), and waits for all of them;
/// returns those that stopped with an error.
fn run_workers(sweep: &Path, jobs: usize, args: &Flags) -> anyhow::Result<Vec<String>> {
    let exe = std::env::current_exe().context("cannot find this program to start workers")?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args.threads.unwrap_or((cores / jobs).max(1));
    let mut children = Vec::new();
    for k in 0..jobs {
        let mut cmd = std::process::Command::new(&exe);
        cmd.arg("--threads").arg(threads.to_string());
        if args.quiet {
            cmd.arg("--quiet");
        }
        if args.log_json {
            cmd.arg("--log-json");
        }
        if let Some(b) = &args.max_memory {
            cmd.arg("--max-memory").arg(b);
        }
        cmd.arg("sweep")
            .arg(sweep)
            .arg("--jobs")
            .arg(jobs.to_string())
            .arg("--worker")
            .arg(k.to_string());
        children.push(cmd.spawn().context("cannot start a sweep worker")?);
    }
    let mut stopped = Vec::new();
    for (k, mut c) in children.into_iter().enumerate() {
        let status = c.wait().context("waiting for a sweep worker")?;
        if !status.success() {
            stopped.push(format!("worker {k}: {status}"));
        }
    }
    Ok(stopped)
}

fn cmd_status(dir: &Path) -> anyhow::Result<ExitCode> {
    use sae::run::sweep::Status;
    let runs = sae::run::sweep::status(dir)?;
    let width = runs.iter().map(|r| r.name.len()).max().unwrap_or(3).max(3);
    println!(
        "{:width$}  {:11}  {:>8}  {:>10}  detail",
        "run", "status", "test", "validation"
    );
    let pct = |v: Option<f64>| v.map_or(String::new(), |v| format!("{:.2} %", 100.0 * v));
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for r in &runs {
        let word = r.status.word();
        match counts.iter_mut().find(|(w, _)| *w == word) {
            Some((_, n)) => *n += 1,
            None => counts.push((word, 1)),
        }
        let test = pct(r.best.as_ref().map(|b| b.accuracy));
        let val = pct(r.best.as_ref().and_then(|b| b.validation));
        let detail = match (&r.status, &r.progress) {
            (Status::Running(pid), Some(p)) => format!(
                "pid {pid}: {} {}/{} {} (ETA {:.0} s)",
                p.stage, p.done, p.total, p.unit, p.eta_s
            ),
            (Status::Running(pid), None) => format!("pid {pid}"),
            (Status::Failed(f), _) => format!("in {}: {}", f.stage, f.error),
            (_, _) => r.best.as_ref().map_or(String::new(), |b| {
                format!("{} {}", b.features, b.classifier)
            }),
        };
        println!(
            "{:width$}  {word:11}  {test:>8}  {val:>10}  {detail}",
            r.name
        );
    }
    let summary: Vec<String> = counts.iter().map(|(w, n)| format!("{n} {w}")).collect();
    let best = runs
        .iter()
        .filter_map(|r| r.best.as_ref().map(|b| (b, &r.name)))
        .min_by(|a, b| a.0.rank(b.0));
    match best {
        Some((b, name)) => {
            let val = b.validation.map_or(String::new(), |v| {
                format!(", validation {:.2} %", 100.0 * v)
            });
            println!(
                "{}; best {:.2} % test{val} ({name}, {} {})",
                summary.join(", "),
                100.0 * b.accuracy,
                b.features,
                b.classifier
            )
        }
        None => println!("{}", summary.join(", ")),
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_report(results: &Path) -> anyhow::Result<ExitCode> {
    let r = sae::report::write_report(results)?;
    print!("{}", r.markdown);
    println!(
        "report: {} ({} plots)",
        r.dir.join("index.html").display(),
        r.plots.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn cmd_synth(a: SynthArgs) -> anyhow::Result<ExitCode> {
    sae::run::config::SynthConfig {
        layout: a.format,
        train: a.train,
        test: a.test,
        unlabeled: a.unlabeled,
    }
    .check()?;
    let spec = SynthSpec {
        layout: a.format,
        train: a.train,
        test: a.test,
        unlabeled: a.unlabeled,
        seed: a.seed,
    };
    write_dataset(&spec, &a.out)?;
    let name = clap::ValueEnum::to_possible_value(&a.format).map(|v| v.get_name().to_string());
    println!(
        "wrote {} ({} layout)",
        a.out.display(),
        name.unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

fn cmd_sample(a: SampleArgs, budget: u64) -> anyhow::Result<ExitCode> {
    let pc = PatchConfig {
        count: a.count,
        size: a.size,
        norm: a.norm,
        ..PatchConfig::default()
    };
    pc.check()?;
    TrainConfig {
        chunk: a.chunk,
        ..TrainConfig::default()
    }
    .check()?;
    let ds = Dataset::open(a.format, &a.data, &OpenOptions::default())?;
    let spec = sae::data::patches::PatchSpec {
        size: pc.size,
        count: pc.count,
        seed: a.seed,
    };
    let d = spec.dim(ds.unlabeled.shape().channels) as u64;
    let image_bytes = (ds.unlabeled.len() * ds.unlabeled.shape().pixels()) as u64;
    let plan = sae::run::limits::plan_sampling(d, image_bytes, a.chunk as u64, budget)?;
    let m = Stage::begin("sample", &plan, budget);
    let n = sae::data::patches::sample_patches(
        &ds.unlabeled,
        &spec,
        pc.norm_spec(),
        &a.out,
        a.chunk,
        "",
    )?;
    m.end();
    println!("wrote {} ({})", a.out.display(), n.describe());
    Ok(ExitCode::SUCCESS)
}

fn cmd_train(a: TrainArgs, budget: u64, comm: &dyn Comm) -> anyhow::Result<ExitCode> {
    let model = ModelConfig {
        hidden: a.hidden.unwrap_or_else(|| ModelConfig::default().hidden),
        decoder: a.decoder,
        rho: a.rho,
        lambda: a.lambda,
        beta: a.beta,
        ..ModelConfig::default()
    };
    model.check()?;
    let tc = TrainConfig {
        optimizer: a.optimizer,
        max_iter: a.max_iter,
        epochs: a.epochs,
        batch_size: a.batch_size,
        learning_rate: a.learning_rate,
        lr_probe: !a.no_lr_probe,
        schedule: a.schedule,
        warmup: a.warmup,
        ..TrainConfig::default()
    };
    tc.check()?;
    let store = Store::open(&a.store, Kind::Patches)?;
    let arch = sae::learn::sae::Architecture::new(store.dim(), &model.hidden, None, model.decoder)?;
    let sizes: Vec<u64> = arch.sizes.iter().map(|&v| v as u64).collect();
    let plan = sae::run::limits::plan_training(
        &sizes,
        store.batch_rows(0) as u64,
        tc.memory as u64,
        budget,
    )?;
    let job = TrainJob::new(arch, model.penalty(), tc.optimiser(), a.seed)
        .with_cache_bytes(plan.cache_bytes);
    let m = Stage::begin("train", &plan, budget);
    let loss_csv = a.out.with_extension("loss.csv");
    let t = train_resumable(&store, &job, &loss_csv, None, comm)?;
    m.end();
    if comm.is_root() {
        t.model.save(&a.out)?;
        println!(
            "wrote {} (loss {:.6}, {})",
            a.out.display(),
            t.model.header.loss,
            t.stop
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_show(
    model: &Path,
    out: &Path,
    patches: Option<&Path>,
    patches_out: &Path,
) -> anyhow::Result<ExitCode> {
    let m = Model::load(model)?;
    let store = patches.map(|p| Store::open(p, Kind::Patches)).transpose()?;
    sae::report::show::draw_model(&m, out, store.as_ref().map(|s| (s, patches_out)))?;
    println!(
        "wrote {} (first layer of a model by learner {})",
        out.display(),
        m.header.learner().name()
    );
    if store.is_some() {
        println!("wrote {}", patches_out.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_encode(a: EncodeArgs, budget: u64, comm: &dyn Comm) -> anyhow::Result<ExitCode> {
    FeatureConfig {
        steps: vec![a.step],
        modes: vec![a.mode],
        ..FeatureConfig::default()
    }
    .check()?;
    let m = Model::load(&a.model)?;
    let ds = Dataset::open(a.format, &a.data, &OpenOptions::default())?;
    std::fs::create_dir_all(&a.out).with_context(|| a.out.display().to_string())?;
    let enc = Encoder::new(&m.net, m.header.norm.clone(), m.header.patch);
    let d = (m.header.channels * m.header.patch * m.header.patch) as u64;
    let shape = ds.train.shape();
    let plan = sae::run::limits::plan_encoding(
        d,
        enc.widest_layer() as u64,
        shape,
        m.header.patch,
        a.step,
        enc.feature_dim(shape, a.step, a.mode) as u64,
        a.flip,
        budget,
    )?;
    let enc = enc
        .with_tile_rows(plan.tile_rows)
        .with_precision(a.precision);
    for (set, split) in [(&ds.train, "train"), (&ds.test, "test")] {
        let path = a.out.join(format!("{split}.arrow"));
        let label = format!("encode {split}");
        let stage = Stage::begin("encode", &plan, budget);
        let n = encode_shared(&enc, set, a.step, a.mode, a.flip, &path, &label, comm)?;
        stage.end();
        if comm.is_root() {
            println!("wrote {} ({n} images)", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_gradcheck() -> anyhow::Result<ExitCode> {
    let results = sae::learn::sae::gradcheck::standard()?;
    let mut worst: f64 = 0.0;
    for r in &results {
        println!("{:<48} relative error {:.3e}", r.name, r.relative_error);
        worst = worst.max(r.relative_error);
    }
    println!("max relative error: {worst:.3e}");
    Ok(if worst < 1e-7 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn cmd_info(format: Format, path: &Path) -> anyhow::Result<ExitCode> {
    let ds = Dataset::open(format, path, &OpenOptions::default())?;
    for n in &ds.notes {
        println!("note: {n}");
    }
    for (name, set) in [
        ("unlabeled", &ds.unlabeled),
        ("train", &ds.train),
        ("test", &ds.test),
    ] {
        let s = set.shape();
        print!(
            "{name:<10} {:>7} images  {}x{}x{}  order {}",
            set.len(),
            s.height,
            s.width,
            s.channels,
            set.order().name()
        );
        if let Some(l) = set.labels() {
            let mut counts = vec![0usize; ds.classes.len()];
            for &v in l {
                counts[v as usize] += 1;
            }
            print!("  per class {counts:?}");
        }
        println!();
    }
    println!("classes: {}", ds.classes.join(", "));
    Ok(ExitCode::SUCCESS)
}
