//! The `sae` command line: parses flags and calls one library function per subcommand.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use sae::config::Config;
use sae::dist::{Comm, Single};
use sae::features::{Encoder, Mode};
use sae::ingest::synth::{write_dataset, Layout, SynthSpec};
use sae::ingest::{Dataset, Format, OpenOptions};
use sae::model::Model;
use sae::pipeline::encode_shared;
use sae::store::{Kind, Store};

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
    /// Memory budget (bytes, or 512M, 2G): caches and tiles shrink to fit, and a run
    /// that cannot fit stops before it starts (overrides `max_memory`).
    #[arg(long, global = true)]
    max_memory: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
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
    },
    /// Turn a result table (a run or sweep folder, or its results.parquet) into
    /// markdown tables, PNG/SVG plots and an HTML page under `<folder>/report/`.
    Report {
        /// Run or sweep folder, or a results.parquet.
        results: PathBuf,
    },
    /// Write a synthetic labelled dataset in the CIFAR-10 or STL-10 binary layout.
    Synth {
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// cifar10 (32x32) or stl10 (96x96).
        #[arg(long, default_value = "cifar10")]
        format: String,
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
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Sample patches from a dataset's unlabeled images into a normalised patch store.
    Sample {
        /// Format of the dataset.
        #[arg(long)]
        format: String,
        /// Dataset folder.
        #[arg(long)]
        data: PathBuf,
        /// Number of patches.
        #[arg(long, default_value_t = 100_000)]
        count: usize,
        /// Patch side.
        #[arg(long, default_value_t = 8)]
        size: usize,
        /// ufldl or zca.
        #[arg(long, default_value = "ufldl")]
        norm: String,
        /// Rows per store batch.
        #[arg(long, default_value_t = 65_536)]
        chunk: usize,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output store (.arrow).
        #[arg(long)]
        out: PathBuf,
    },
    /// Train an autoencoder on a patch store.
    Train {
        /// The patch store.
        store: PathBuf,
        /// Hidden sizes, e.g. 25 or 75,48,75.
        #[arg(long, default_value = "25")]
        hidden: String,
        /// sigmoid or linear.
        #[arg(long, default_value = "sigmoid")]
        decoder: String,
        /// Sparsity target.
        #[arg(long, default_value_t = 0.01)]
        rho: f64,
        /// Weight decay.
        #[arg(long, default_value_t = 1e-5)]
        lambda: f64,
        /// Sparsity weight.
        #[arg(long, default_value_t = 3.0)]
        beta: f64,
        /// lbfgs, sgd or adam.
        #[arg(long, default_value = "lbfgs")]
        optimizer: String,
        /// L-BFGS iterations.
        #[arg(long, default_value_t = 400)]
        max_iter: usize,
        /// Mini-batch epochs.
        #[arg(long, default_value_t = 1)]
        epochs: usize,
        /// Mini-batch rows.
        #[arg(long, default_value_t = 1024)]
        batch_size: usize,
        /// Mini-batch step size.
        #[arg(long, default_value_t = 1e-3)]
        learning_rate: f64,
        /// Seed of the initial weights.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output model file.
        #[arg(long, default_value = "model.sae")]
        out: PathBuf,
    },
    /// Compare the analytic gradient with central differences on small networks (f64).
    Gradcheck,
    /// Describe a dataset: sizes, shapes, pixel order, class counts.
    Info {
        /// Format: cifar10, stl10, pickle, folder.
        #[arg(long)]
        format: String,
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
    Encode {
        /// A model file (model.sae).
        model: PathBuf,
        /// Format of the dataset.
        #[arg(long)]
        format: String,
        /// Dataset folder.
        #[arg(long)]
        data: PathBuf,
        /// Grid step.
        #[arg(long, default_value_t = 8)]
        step: usize,
        /// concat or pool.
        #[arg(long, default_value = "pool")]
        mode: String,
        /// Output folder for `<split>.arrow`.
        #[arg(long)]
        out: PathBuf,
    },
}

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
        Some(b) => Some(sae::limits::parse_bytes(b)?),
        None => None,
    };
    // Subcommands without a config of their own: the flag or no budget.
    let flag_budget = budget.unwrap_or(0);
    match args.cmd {
        Cmd::Run {
            config,
            out,
            restart,
        } => cmd_run(config, out, restart, budget, comm),
        Cmd::Synth {
            out,
            format,
            train,
            test,
            unlabeled,
            seed,
        } => {
            let layout = match format.as_str() {
                "cifar10" => Layout::Cifar10,
                "stl10" => Layout::Stl10,
                f => anyhow::bail!("--format {f:?}: expected cifar10 or stl10"),
            };
            let spec = SynthSpec {
                layout,
                train,
                test,
                unlabeled,
                seed,
            };
            write_dataset(&spec, &out)?;
            println!("wrote {} ({format} layout)", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Gradcheck => cmd_gradcheck(),
        Cmd::Sweep { sweep } => {
            let root = sae::sweep::run_sweep_with(&sweep, comm, budget)?;
            if !comm.is_root() {
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "results: {} (and .parquet)",
                root.join("results.csv").display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Report { results } => {
            let r = sae::report::write_report(&results)?;
            print!("{}", r.markdown);
            println!(
                "report: {} ({} plots)",
                r.dir.join("index.html").display(),
                r.plots.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Sample {
            format,
            data,
            count,
            size,
            norm,
            chunk,
            seed,
            out,
        } => {
            let ds = Dataset::open(format.parse::<Format>()?, &data, &OpenOptions::default())?;
            let pc: sae::config::PatchConfig = toml::from_str(&format!("norm = \"{norm}\""))
                .map_err(|_| anyhow::anyhow!("--norm {norm:?}: expected ufldl or zca"))?;
            let spec = sae::patches::PatchSpec { size, count, seed };
            let d = spec.dim(ds.unlabeled.shape().channels) as u64;
            let image_bytes = (ds.unlabeled.len() * ds.unlabeled.shape().pixels()) as u64;
            let plan = sae::limits::plan_sampling(d, image_bytes, chunk as u64, flag_budget)?;
            let m = sae::limits::Stage::begin("sample", &plan, flag_budget);
            let n = sae::pipeline::sample_patches(
                &ds.unlabeled,
                &spec,
                pc.norm_spec(),
                &out,
                chunk,
                &[],
            )?;
            m.end();
            println!("wrote {} ({})", out.display(), n.describe());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Train {
            store,
            hidden,
            decoder,
            rho,
            lambda,
            beta,
            optimizer,
            max_iter,
            epochs,
            batch_size,
            learning_rate,
            seed,
            out,
        } => {
            let store = Store::open(&store, Kind::Patches)?;
            let hidden: Vec<usize> = hidden
                .split(',')
                .map(|h| h.trim().parse())
                .collect::<Result<_, _>>()
                .context("--hidden: expected sizes like 25 or 75,48,75")?;
            let model: sae::config::ModelConfig = toml::from_str(&format!(
                "hidden = {hidden:?}\ndecoder = \"{decoder}\"\nrho = {rho:?}\nlambda = {lambda:?}\nbeta = {beta:?}"
            ))
            .context("model flags")?;
            let tc: sae::config::TrainConfig = toml::from_str(&format!(
                "optimizer = \"{optimizer}\"\nmax_iter = {max_iter}\nepochs = {epochs}\n\
                 batch_size = {batch_size}\nlearning_rate = {learning_rate:?}"
            ))
            .context("--optimizer: expected lbfgs, sgd or adam")?;
            model.check()?;
            tc.check()?;
            let arch =
                sae::sae::Architecture::new(store.dim(), &model.hidden, None, model.decoder)?;
            let sizes: Vec<u64> = arch.sizes.iter().map(|&v| v as u64).collect();
            let plan = sae::limits::plan_training(
                &sizes,
                store.batch_rows(0) as u64,
                tc.memory as u64,
                flag_budget,
            )?;
            plan.apply();
            let m = sae::limits::Stage::begin("train", &plan, flag_budget);
            let loss_csv = out.with_extension("loss.csv");
            let t = sae::pipeline::train_resumable(
                &store,
                arch,
                model.penalty(),
                &tc,
                seed,
                &loss_csv,
                None,
                comm,
            )?;
            m.end();
            if !comm.is_root() {
                return Ok(ExitCode::SUCCESS);
            }
            t.model.save(&out)?;
            println!(
                "wrote {} (loss {:.6}, {})",
                out.display(),
                t.model.header.loss,
                t.stop
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Info { format, path } => cmd_info(&format, &path),
        Cmd::Show {
            model,
            out,
            patches,
            patches_out,
        } => {
            let m = Model::load(&model)?;
            sae::show::grid_png(m.net.weight(0), m.header.patch, m.header.channels, &out)?;
            println!("wrote {}", out.display());
            if let Some(p) = patches {
                let store = Store::open(&p, Kind::Patches)?;
                let b = store.batch(0)?;
                let v = b.values();
                let n = v.nrows().min(100);
                sae::show::grid_png(
                    v.slice(ndarray::s![..n, ..]),
                    m.header.patch,
                    m.header.channels,
                    &patches_out,
                )?;
                println!("wrote {}", patches_out.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Encode {
            model,
            format,
            data,
            step,
            mode,
            out,
        } => {
            let m = Model::load(&model)?;
            let mode = match mode.as_str() {
                "pool" => Mode::Pool,
                "concat" => Mode::Concat,
                other => anyhow::bail!("--mode {other:?}: expected pool or concat"),
            };
            let ds = Dataset::open(format.parse::<Format>()?, &data, &OpenOptions::default())?;
            std::fs::create_dir_all(&out).with_context(|| out.display().to_string())?;
            let enc = Encoder::new(&m.net, m.header.norm.clone(), m.header.patch);
            let d = (m.header.channels * m.header.patch * m.header.patch) as u64;
            let plan = sae::limits::plan_encoding(
                d,
                enc.code_width() as u64,
                ds.train.shape(),
                m.header.patch,
                step,
                enc.feature_dim(ds.train.shape(), step, mode) as u64,
                flag_budget,
            )?;
            plan.apply();
            for (set, split) in [(&ds.train, "train"), (&ds.test, "test")] {
                let path = out.join(format!("{split}.arrow"));
                let label = format!("encode {split}");
                let stage = sae::limits::Stage::begin("encode", &plan, flag_budget);
                let n = encode_shared(&enc, set, step, mode, &path, &label, comm)?;
                stage.end();
                if comm.is_root() {
                    println!("wrote {} ({n} images)", path.display());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn cmd_run(
    config: PathBuf,
    out: Option<PathBuf>,
    restart: bool,
    max_memory: Option<u64>,
    comm: &dyn Comm,
) -> anyhow::Result<ExitCode> {
    let mut cfg = Config::load(&config)?;
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
    let (dir, results) = sae::pipeline::run_with(&cfg, restart, comm)?;
    if !comm.is_root() {
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<22} {:<8} {:>8}", "features", "clf", "accuracy");
    for r in &results {
        println!("{:<22} {:<8} {:>8.4}", r.features, r.classifier, r.accuracy);
    }
    println!(
        "results: {} (and .parquet)",
        dir.join("results.csv").display()
    );
    Ok(ExitCode::SUCCESS)
}

fn cmd_gradcheck() -> anyhow::Result<ExitCode> {
    let results = sae::sae::gradcheck::standard()?;
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

fn cmd_info(format: &str, path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let ds = Dataset::open(format.parse::<Format>()?, path, &OpenOptions::default())?;
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
