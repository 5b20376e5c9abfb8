//! Kill and resume: a run killed with SIGKILL at random moments and restarted ends with
//! exactly the parameters of an uninterrupted run.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{bin, checkpoint_files, run_bin, tmp};

fn config(dir: &Path, name: &str, optimizer: &str) -> std::path::PathBuf {
    let text = format!(
        r#"
name = "{name}"
out_dir = "{}"
seed = 3
[synth]
layout = "cifar10"
train = 200
test = 100
[data]
format = "cifar10"
[patches]
count = 20000
norm = "ufldl"
[model]
hidden = [24]
{}
[train]
{}
max_iter = 60
epochs = 6
batch_size = 500
learning_rate = 0.01
chunk = 4000
checkpoint_every = 1
[features]
steps = [8]
modes = ["pool"]
[classify]
classifiers = ["lr"]
raw_baseline = false
"#,
        dir.display(),
        match optimizer {
            "omp1" => "learner = \"omp1\"\npasses = 60",
            _ => "",
        },
        match optimizer {
            "omp1" => "optimizer = \"adam\"".to_string(),
            "adam-constant" =>
                "optimizer = \"adam\"\nschedule = \"constant\"\nwarmup = 0.0".to_string(),
            o => format!("optimizer = \"{o}\""),
        }
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

fn losses(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("loss.csv"))
        .unwrap()
        .lines()
        .map(|l| l.split(',').take(4).collect::<Vec<_>>().join(","))
        .collect()
}

fn kill_and_resume(optimizer: &str) {
    let d = tmp();
    let whole = config(d.path(), "whole", optimizer);
    let (ok, _, err) = run_bin(&["-q", "run", whole.to_str().unwrap()], d.path());
    assert!(ok, "{err}");
    let cut = config(d.path(), "cut", optimizer);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let mut r = sae::rng::stream(seed, sae::rng::Stream::Shuffle, 0);
    let (mut kills, mut resumes) = (0, 0);
    loop {
        let t = Instant::now();
        let mut child = Command::new(bin())
            .args(["run", cut.to_str().unwrap()])
            .current_dir(d.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut wait = Duration::from_millis(sae::rng::uniform(&mut r, 300.0, 1500.0) as u64);
        let mut t = t;
        if kills == 0 {
            // The first kill lands during training whatever the machine's load: count
            // from the first checkpoint, not from the start of the process.
            let db = d.path().join("cut/checkpoint.sled");
            while checkpoint_files(&db) == 0 && t.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(2));
            }
            t = Instant::now();
            wait = Duration::from_millis(sae::rng::uniform(&mut r, 0.0, 300.0) as u64);
        }
        let mut finished = None;
        while t.elapsed() < wait {
            if let Some(s) = child.try_wait().unwrap() {
                finished = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        match finished {
            Some(s) => {
                let out = child.wait_with_output().unwrap();
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(s.success(), "resumed run failed (seed {seed}): {err}");
                break;
            }
            None if kills < 8 => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
                resumes += 1;
            }
            None => {
                let out = child.wait_with_output().unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                break;
            }
        }
    }
    eprintln!("{optimizer}: {kills} kills, {resumes} resumes (seed {seed})");
    let a = sae::learn::model::Model::load(&d.path().join("whole/model.sae")).unwrap();
    let b = sae::learn::model::Model::load(&d.path().join("cut/model.sae")).unwrap();
    assert_eq!(
        a.net.theta, b.net.theta,
        "parameters differ (seed {seed}, {kills} kills)"
    );
    assert_eq!(
        losses(&d.path().join("whole")),
        losses(&d.path().join("cut"))
    );
    assert!(
        kills > 0,
        "the run finished before the first kill; the test proved nothing"
    );
}

#[test]
fn lbfgs_resumes_exactly_after_sigkill() {
    kill_and_resume("lbfgs");
}

#[test]
fn adam_resumes_exactly_after_sigkill() {
    kill_and_resume("adam");
}

#[test]
fn omp1_resumes_exactly_after_sigkill() {
    kill_and_resume("omp1");
}

/// `model.passes` is OMP-1's limit: a run asked for more passes continues the
/// checkpoints of a shorter one and ends where an uninterrupted run does.
#[test]
fn omp1_continues_a_shorter_run() {
    let d = tmp();
    let whole = config(d.path(), "whole", "omp1");
    let (ok, _, err) = run_bin(&["-q", "run", whole.to_str().unwrap()], d.path());
    assert!(ok, "{err}");
    let longer = config(d.path(), "grown", "omp1");
    let text = std::fs::read_to_string(&longer).unwrap();
    std::fs::write(&longer, text.replace("passes = 60", "passes = 20")).unwrap();
    let (ok, _, err) = run_bin(&["run", longer.to_str().unwrap()], d.path());
    assert!(ok, "{err}");
    std::fs::write(&longer, text).unwrap();
    let (ok, _, err) = run_bin(&["run", longer.to_str().unwrap()], d.path());
    assert!(ok && err.contains("resuming after pass 20"), "{err}");
    let a = sae::learn::model::Model::load(&d.path().join("whole/model.sae")).unwrap();
    let b = sae::learn::model::Model::load(&d.path().join("grown/model.sae")).unwrap();
    assert_eq!(a.net.theta, b.net.theta);
    assert_eq!(a.header.iterations, 60);
    assert_eq!(
        losses(&d.path().join("whole")),
        losses(&d.path().join("grown"))
    );
}

#[test]
fn second_process_on_a_run_folder_is_refused() {
    let d = tmp();
    let cfg = config(d.path(), "busy", "lbfgs");
    let config = sae::run::config::Config::load(&cfg).unwrap();
    // This process holds the run's checkpoint database, as a running `sae run` would,
    // for as long as the second process needs.
    let db = d.path().join("busy/checkpoint.sled");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let held = sae::learn::checkpoint::Checkpoints::open(
        &db,
        &sae::run::layout::Hashes::of(&config).lineage,
        false,
    )
    .unwrap();
    let (ok, _, err) = run_bin(&["-q", "run", cfg.to_str().unwrap()], d.path());
    assert!(
        !ok && err.contains("in use by another sae process"),
        "{err}"
    );
    assert!(
        !d.path().join("busy/patches.arrow").exists(),
        "the refused run touched the folder"
    );
    drop(held);
    let (ok, _, err) = run_bin(&["-q", "run", cfg.to_str().unwrap()], d.path());
    assert!(ok, "once the lock is free the run goes ahead: {err}");
}

#[test]
fn checkpoint_of_another_config_is_refused() {
    let d = tmp();
    let cfg = config(d.path(), "x", "lbfgs");
    let (ok, _, err) = run_bin(&["-q", "run", cfg.to_str().unwrap()], d.path());
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("hidden = [24]", "hidden = [20]");
    std::fs::write(&cfg, text).unwrap();
    let (ok, _, err) = run_bin(&["-q", "run", cfg.to_str().unwrap()], d.path());
    assert!(
        !ok && err.contains("different config") && err.contains("--restart"),
        "{err}"
    );
    let (ok, _, err) = run_bin(&["-q", "run", "--restart", cfg.to_str().unwrap()], d.path());
    assert!(ok, "{err}");
}

fn sweep_file(dir: &Path, base: &Path) -> std::path::PathBuf {
    let p = dir.join("sweep.toml");
    std::fs::write(
        &p,
        format!(
            "name = \"grid\"\nbase = \"{}\"\n[grid]\n\"features.steps\" = [[8], [4]]\n\"model.rho\" = [0.01, 0.05]\n",
            base.file_name().unwrap().to_str().unwrap()
        ),
    )
    .unwrap();
    p
}

fn accuracies(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split(',').take(7).collect::<Vec<_>>().join(","))
        .collect()
}

/// `--jobs 2` runs groups of runs (those sharing a model) in two processes, which
/// share one synthetic dataset (written once, under a lock), and gives the table of a
/// sweep run in one.
#[test]
fn jobs_run_side_by_side_with_the_same_results() {
    let mut tables = Vec::new();
    for jobs in ["1", "2"] {
        let d = tmp();
        let base = config(d.path(), "base", "lbfgs");
        let text = std::fs::read_to_string(&base)
            .unwrap()
            .replace("max_iter = 60", "max_iter = 10");
        std::fs::write(&base, text).unwrap();
        let sweep = d.path().join("sweep.toml");
        std::fs::write(
            &sweep,
            "name = \"seeds\"\nbase = \"base.toml\"\n[grid]\n\"patches.count\" = [20000, 10000]\n\"features.steps\" = [[8], [4]]\n",
        )
        .unwrap();
        let (ok, _, err) = run_bin(
            &["sweep", "--jobs", jobs, sweep.to_str().unwrap()],
            d.path(),
        );
        assert!(ok, "{err}");
        if jobs == "2" {
            // Both workers ran, each its own model's runs.
            assert_eq!(err.matches("sweep: worker ").count(), 4, "{err}");
            assert!(err.contains("worker 0: run ") && err.contains("worker 1: run "));
            assert_eq!(err.matches("synth: ").count(), 1, "{err}");
            let (ok, out, _) = run_bin(&["status", "seeds"], d.path());
            assert!(
                ok && out.lines().last().unwrap().starts_with("4 finished"),
                "{out}"
            );
        }
        let rows = sae::evaluate::results::read(&d.path().join("seeds/results.parquet")).unwrap();
        tables.push(
            rows.iter()
                .map(|r| {
                    (
                        r.run.clone(),
                        r.features.clone(),
                        r.accuracy,
                        r.status.clone(),
                    )
                })
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(tables[0].len(), 4);
    assert_eq!(tables[0], tables[1]);
}

/// Runs that share a patch store but not a model go to both workers of `--jobs 2`: the
/// store is sampled once (the other worker waits for it and reuses it).
#[test]
fn jobs_share_one_patch_store_between_workers() {
    let d = tmp();
    let sweep = sgd_sweep(
        d.path(),
        1,
        "name = \"one\"\nbase = \"base.toml\"\n[grid]\n\"model.hidden\" = [[8], [12]]\n",
    );
    let (ok, _, err) = run_bin(&["sweep", "--jobs", "2", sweep.to_str().unwrap()], d.path());
    assert!(ok, "{err}");
    for w in ["worker 0: run ", "worker 1: run "] {
        assert_eq!(err.matches(w).count(), 1, "{err}");
    }
    assert_eq!(err.matches("patches: reusing").count(), 1, "{err}");
    let rows = sae::evaluate::results::read(&d.path().join("one/results.parquet")).unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| r.status == "finished"), "{rows:?}");
    // A second invocation finds both done, whichever worker ran them.
    let (ok, _, err) = run_bin(&["sweep", "--jobs", "2", sweep.to_str().unwrap()], d.path());
    assert!(ok, "{err}");
    assert_eq!(err.matches("already done").count(), 2, "{err}");
}

/// A worker takes every group it claims, also when the groups' runs alternate in the
/// list (the first grid axis varies fastest): a worker alone runs the whole sweep.
#[test]
fn a_worker_alone_runs_interleaved_groups() {
    let d = tmp();
    let sweep = sgd_sweep(
        d.path(),
        1,
        "name = \"mix\"\nbase = \"base.toml\"\n[grid]\n\"model.hidden\" = [[8], [12]]\n\"features.steps\" = [[8], [4]]\n",
    );
    let (ok, _, err) = run_bin(
        &[
            "sweep",
            "--jobs",
            "2",
            "--worker",
            "0",
            sweep.to_str().unwrap(),
        ],
        d.path(),
    );
    assert!(ok, "{err}");
    assert_eq!(err.matches("worker 0: run ").count(), 4, "{err}");
    for run in ["000-8_8", "001-12_8", "002-8_4", "003-12_4"] {
        assert!(
            d.path()
                .join("mix/runs")
                .join(run)
                .join("done.json")
                .exists(),
            "{run}: {err}"
        );
    }
}

/// A sweep file `text` in `dir` over `base.toml`: SGD for `epochs` epochs at a fixed
/// step size.
fn sgd_sweep(dir: &Path, epochs: usize, text: &str) -> std::path::PathBuf {
    let base = config(dir, "base", "sgd");
    let cfg = std::fs::read_to_string(&base).unwrap().replace(
        "epochs = 6",
        &format!("epochs = {epochs}\nlr_probe = false"),
    );
    std::fs::write(&base, cfg).unwrap();
    let sweep = dir.join("sweep.toml");
    std::fs::write(&sweep, text).unwrap();
    sweep
}

/// The issue's case: SGD at a step size that diverges next to one that works. The
/// failing run is recorded with its error and stage, the other runs, the sweep ends
/// with status 3, and running it again retries the failure and skips the finished run.
#[test]
fn a_failing_run_does_not_stop_the_sweep() {
    let d = tmp();
    let sweep = sgd_sweep(
        d.path(),
        2,
        "name = \"lr\"\nbase = \"base.toml\"\n[grid]\n\"train.learning_rate\" = [1e9, 1e-2]\n",
    );
    let table = |root: &Path| -> Vec<sae::evaluate::results::Record> {
        sae::evaluate::results::read(&root.join("results.parquet")).unwrap()
    };
    for attempt in 0..2 {
        let out = Command::new(bin())
            .args(["sweep", sweep.to_str().unwrap()])
            .current_dir(d.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{err}");
        assert!(err.contains("1 of 2 runs failed"), "{err}");
        if attempt == 1 {
            assert!(
                err.contains("already done"),
                "the finished run ran again: {err}"
            );
        }
        let rows = table(&d.path().join("lr"));
        let failed: Vec<_> = rows.iter().filter(|r| r.status == "failed").collect();
        assert_eq!(failed.len(), 1, "{rows:?}");
        let f = failed[0];
        assert_eq!(
            f.grid,
            vec![(
                "train.learning_rate".to_string(),
                "1000000000.0".to_string()
            )]
        );
        assert_eq!(f.stage, "train");
        assert!(f.error.contains("learning_rate"), "{}", f.error);
        assert!(f.accuracy.is_nan() && !f.started.is_empty() && !f.config_hash.is_empty());
        let done: Vec<_> = rows.iter().filter(|r| r.status == "finished").collect();
        assert!(!done.is_empty() && done.iter().all(|r| r.accuracy > 0.0 && r.error.is_empty()));
        assert!(done
            .iter()
            .all(|r| r.git_rev == done[0].git_rev && !r.finished.is_empty()));
        assert_ne!(f.config_hash, done[0].config_hash);
    }
    // Every run kept its latest progress for `sae status`: the last stage it ran.
    for (run, stage) in [("000-1000000000.0", "train"), ("001-0.01", "encode")] {
        let p = d.path().join("lr/runs").join(run).join("progress.json");
        let snap: sae::progress::Snapshot =
            serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert!(snap.stage.starts_with(stage), "{run}: {snap:?}");
    }
    // `sae status` lists each run with its status, accuracy and detail, then a summary.
    let status = || {
        let (ok, out, err) = run_bin(&["status", "lr"], d.path());
        assert!(ok, "{err}");
        out
    };
    let out = status();
    let line = |out: &str, run: &str| -> String {
        out.lines()
            .find(|l| l.starts_with(run))
            .unwrap_or_else(|| panic!("no line for {run}: {out}"))
            .to_string()
    };
    let failed = line(&out, "000-1000000000.0");
    assert!(
        failed.contains(" failed ") && failed.contains("in train: ") && !failed.contains('%'),
        "{out}"
    );
    let done = line(&out, "001-0.01");
    assert!(
        done.contains(" finished ") && done.contains(" %  "),
        "{out}"
    );
    let last = out.lines().last().unwrap();
    assert!(
        last.starts_with("1 failed, 1 finished; best ") && last.contains("(001-0.01, "),
        "{out}"
    );
    // A run whose process is alive shows as running, with the stage it last reported.
    let me = std::process::id();
    std::fs::remove_file(d.path().join("lr/runs/001-0.01/done.json")).unwrap();
    std::fs::write(
        d.path().join("lr/runs/001-0.01/running.json"),
        me.to_string(),
    )
    .unwrap();
    let out = status();
    let running = line(&out, "001-0.01");
    assert!(
        running.contains(" running ") && running.contains(&format!("pid {me}: encode")),
        "{out}"
    );
    assert!(
        out.lines()
            .last()
            .unwrap()
            .starts_with("1 failed, 1 running; best "),
        "{out}"
    );
}

/// A bug that panics inside a run ends that run only, also in a worker process: the
/// run is recorded as failed with the panic's message, the sweep writes its table and
/// ends with status 3.
#[test]
fn a_panicking_run_is_recorded_as_failed() {
    let d = tmp();
    let sweep = sgd_sweep(
        d.path(),
        1,
        "name = \"p\"\nbase = \"base.toml\"\n[grid]\nseed = [1, 2]\n",
    );
    let out = Command::new(bin())
        .args(["sweep", "--jobs", "2", sweep.to_str().unwrap()])
        .env("SAE_CRASH_AT", "panic:before-model")
        .current_dir(d.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let rows = sae::evaluate::results::read(&d.path().join("p/results.parquet")).unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for r in &rows {
        assert_eq!((r.status.as_str(), r.stage.as_str()), ("failed", "train"));
        assert!(
            r.error
                .contains("internal error: panic: SAE_CRASH_AT=panic:before-model"),
            "{}",
            r.error
        );
    }
}

#[test]
fn sweep_shares_work_and_survives_sigkill() {
    let d = tmp();
    let base = config(d.path(), "base", "lbfgs");
    let text = std::fs::read_to_string(&base)
        .unwrap()
        .replace("max_iter = 60", "max_iter = 15");
    std::fs::write(&base, text).unwrap();
    let sweep = sweep_file(d.path(), &base);
    let (ok, _, err) = run_bin(&["-q", "sweep", sweep.to_str().unwrap()], d.path());
    assert!(ok, "{err}");
    let root = d.path().join("grid");
    let table = accuracies(&root.join("results.csv"));
    assert_eq!(table.len(), 1 + 4, "{table:?}");
    // Two rho values: two models; one patch store for all four runs.
    let cache: Vec<String> = std::fs::read_dir(root.join("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        cache.iter().filter(|n| n.ends_with(".arrow")).count(),
        1,
        "{cache:?}"
    );
    assert_eq!(
        cache.iter().filter(|n| n.ends_with(".sae")).count(),
        2,
        "{cache:?}"
    );

    // The same sweep elsewhere, killed at random moments, ends with the same table.
    let d2 = tmp();
    let base2 = d2.path().join("base.toml");
    let text = std::fs::read_to_string(&base).unwrap().replace(
        &d.path().display().to_string(),
        &d2.path().display().to_string(),
    );
    std::fs::write(&base2, text).unwrap();
    let sweep2 = sweep_file(d2.path(), &base2);
    let mut r = sae::rng::stream(7, sae::rng::Stream::Shuffle, 1);
    let mut kills = 0;
    loop {
        let mut child = Command::new(bin())
            .args(["-q", "sweep", sweep2.to_str().unwrap()])
            .current_dir(d2.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut t = Instant::now();
        let mut wait = Duration::from_millis(sae::rng::uniform(&mut r, 400.0, 1500.0) as u64);
        if kills == 0 {
            // The first kill lands once training has checkpointed, however fast the
            // machine: count from there.
            let cache = d2.path().join("grid/cache");
            let started = |c: &Path| {
                std::fs::read_dir(c).is_ok_and(|entries| {
                    entries.flatten().any(|e| {
                        e.path().extension().is_some_and(|x| x == "sled")
                            && checkpoint_files(&e.path()) > 0
                    })
                })
            };
            while !started(&cache) && t.elapsed() < Duration::from_secs(60) {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            t = Instant::now();
            wait = Duration::from_millis(sae::rng::uniform(&mut r, 0.0, 300.0) as u64);
        }
        let mut status = None;
        while t.elapsed() < wait || kills >= 6 {
            if let Some(s) = child.try_wait().unwrap() {
                status = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        match status {
            Some(s) => {
                let out = child.wait_with_output().unwrap();
                assert!(s.success(), "{}", String::from_utf8_lossy(&out.stderr));
                break;
            }
            None => {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
            }
        }
    }
    eprintln!("sweep: {kills} kills");
    assert!(
        kills > 0,
        "the sweep finished before the first kill; the test proved nothing"
    );
    let table2 = accuracies(&d2.path().join("grid/results.csv"));
    assert_eq!(table, table2);
}

/// Unmounts a test's tmpfs however the test ends.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
#[ignore = "needs root to mount a small tmpfs; .ci/run runs it with --ignored"]
fn full_disk_stops_with_a_clear_error_and_keeps_the_last_checkpoint() {
    let d = tmp();
    let whole = config(d.path(), "whole", "lbfgs");
    let (ok, _, err) = run_bin(&["-q", "run", whole.to_str().unwrap()], d.path());
    assert!(ok, "{err}");
    // A small file system of its own, so that filling it harms nothing else.
    let disk = d.path().join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=40m", "tmpfs"])
        .arg(&disk)
        .output()
        .expect("run mount");
    assert!(
        mounted.status.success(),
        "cannot mount a tmpfs (run as root, or with CAP_SYS_ADMIN): {}",
        String::from_utf8_lossy(&mounted.stderr)
    );
    let _guard = Mount(disk.clone());
    let cfg = config(&disk, "cut", "lbfgs");
    let child = Command::new(bin())
        .args(["-q", "run", cfg.to_str().unwrap()])
        .current_dir(d.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the run has written a checkpoint, fill the disk.
    let db = disk.join("cut/checkpoint.sled");
    let t = Instant::now();
    while checkpoint_files(&db) == 0 && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let filler = disk.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 1 << 16];
        while f.write_all(&block).is_ok() {}
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the run finished although the disk was full"
    );
    assert!(
        err.contains("No space left on device") && err.contains(disk.to_str().unwrap()),
        "unclear error: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    std::fs::remove_file(&filler).unwrap();
    let (ok, _, err) = run_bin(&["run", cfg.to_str().unwrap()], d.path());
    assert!(ok, "resume after the full disk failed: {err}");
    assert!(err.contains("resum"), "did not resume: {err}");
    let a = sae::learn::model::Model::load(&d.path().join("whole/model.sae")).unwrap();
    let b = sae::learn::model::Model::load(&disk.join("cut/model.sae")).unwrap();
    assert_eq!(a.net.theta, b.net.theta);
}

#[test]
fn diverging_run_stops_with_its_reason_and_keeps_the_last_good_checkpoint() {
    let d = tmp();
    let cfg = config(d.path(), "boom", "sgd");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "learning_rate = 0.01",
        "learning_rate = 1e9\nlr_probe = false",
    );
    std::fs::write(&cfg, text).unwrap();
    let (ok, _, err) = run_bin(&["run", cfg.to_str().unwrap()], d.path());
    assert!(
        !ok && err.contains("diverged") && err.contains("learning_rate"),
        "{err}"
    );
    let db = d.path().join("boom/checkpoint.sled");
    let mut blobs: Vec<_> = std::fs::read_dir(&db)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("ckpt-")
        })
        .collect();
    blobs.sort();
    assert!(!blobs.is_empty(), "a checkpoint before the divergence");
    for b in &blobs {
        let c = sae::learn::checkpoint::decode(b, &std::fs::read(b).unwrap()).unwrap();
        let sae::learn::checkpoint::OptState::Minibatch(s) = c.opt else {
            panic!("mini-batch state expected");
        };
        assert!(s.theta.iter().all(|v| v.is_finite()), "{}", b.display());
        assert!(c.trace.iter().all(|t| t.loss.is_finite()));
    }
    // A rerun resumes from that checkpoint and stops at the same step, not earlier.
    let step = |e: &str| {
        e.split("diverged")
            .nth(1)?
            .split("at step ")
            .nth(1)
            .map(|s| s.split(';').next().unwrap().to_string())
    };
    let (ok, _, err2) = run_bin(&["run", cfg.to_str().unwrap()], d.path());
    assert!(!ok && err2.contains("resuming from checkpoint"), "{err2}");
    assert_eq!(step(&err), step(&err2), "{err}\n---\n{err2}");
}

/// Writes `cfg` with `from` replaced by `to`.
fn edit(cfg: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(cfg).unwrap();
    assert!(text.contains(from), "{from} not in the config");
    std::fs::write(cfg, text.replace(from, to)).unwrap();
}

fn model_of(dir: &Path) -> sae::learn::model::Model {
    sae::learn::model::Model::load(&dir.join("model.sae")).unwrap()
}

/// Iteration and epoch limits are part of a model's identity, and runs that differ
/// only there share one trajectory: raising the limit trains on from the last
/// checkpoint to exactly what an uninterrupted run of the new limit gives; lowering
/// it below the checkpoints trains again from the start.
fn limits_extend_and_shrink(optimizer: &str, key: &str, short: usize, long: usize) {
    let d = tmp();
    let set = |cfg: &Path, v: usize| {
        let text = std::fs::read_to_string(cfg).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap()
            .to_string();
        std::fs::write(cfg, text.replace(&line, &format!("{key} = {v}"))).unwrap();
    };
    let mut reference = Vec::new();
    for (name, v) in [("short", short), ("long", long)] {
        let cfg = config(d.path(), name, optimizer);
        set(&cfg, v);
        let (ok, _, err) = run_bin(&["-q", "run", cfg.to_str().unwrap()], d.path());
        assert!(ok, "{err}");
        reference.push(model_of(&d.path().join(name)));
    }
    assert_ne!(reference[0].net.theta, reference[1].net.theta);
    assert!(reference[1].header.iterations > reference[0].header.iterations);

    let cfg = config(d.path(), "grow", optimizer);
    let dir = d.path().join("grow");
    set(&cfg, short);
    let (ok, _, err) = run_bin(&["run", cfg.to_str().unwrap()], d.path());
    assert!(ok, "{err}");
    assert_eq!(model_of(&dir).net.theta, reference[0].net.theta);

    set(&cfg, long);
    let (ok, _, err) = run_bin(&["run", cfg.to_str().unwrap()], d.path());
    assert!(ok, "{err}");
    assert!(
        err.contains("resuming from checkpoint"),
        "did not extend: {err}"
    );
    assert!(!err.contains("train: reusing"), "{err}");
    assert_eq!(model_of(&dir).net.theta, reference[1].net.theta, "{err}");
    assert_eq!(losses(&dir), losses(&d.path().join("long")));

    set(&cfg, short);
    let (ok, _, err) = run_bin(&["run", cfg.to_str().unwrap()], d.path());
    assert!(ok, "{err}");
    assert!(err.contains(&format!("past train.{key}")), "{err}");
    assert_eq!(model_of(&dir).net.theta, reference[0].net.theta, "{err}");
    assert_eq!(losses(&dir), losses(&d.path().join("short")));
}

#[test]
fn raising_max_iter_trains_on_and_lowering_it_retrains() {
    limits_extend_and_shrink("lbfgs", "max_iter", 4, 9);
}

#[test]
fn raising_epochs_trains_on_and_lowering_them_retrains() {
    // A constant step size: with a schedule over the run, the number of epochs is
    // part of the trajectory (`run::layout`'s test).
    limits_extend_and_shrink("adam-constant", "epochs", 1, 2);
}

/// A sweep over the limit trains each value: one model per value, each with its own
/// iteration count in the table, the longer one continued from the shorter one.
#[test]
fn a_sweep_over_max_iter_trains_every_value() {
    let d = tmp();
    config(d.path(), "base", "lbfgs");
    let sweep = d.path().join("sweep.toml");
    std::fs::write(
        &sweep,
        "name = \"limits\"\nbase = \"base.toml\"\n[grid]\n\"train.max_iter\" = [3, 8]\n",
    )
    .unwrap();
    let (ok, _, err) = run_bin(&["sweep", sweep.to_str().unwrap()], d.path());
    assert!(ok, "{err}");
    assert!(
        err.contains("resuming from checkpoint at iteration 3"),
        "{err}"
    );
    let root = d.path().join("limits");
    let models = std::fs::read_dir(root.join("cache"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "sae")
        })
        .count();
    assert_eq!(models, 2);
    let rows = sae::evaluate::results::read(&root.join("results.parquet")).unwrap();
    let mut seen: Vec<(String, u64, String)> = rows
        .iter()
        .map(|r| (r.grid[0].1.clone(), r.iterations, r.stop.clone()))
        .collect();
    seen.dedup();
    assert_eq!(
        seen,
        vec![
            ("3".to_string(), 3, "MaxIter".to_string()),
            ("8".to_string(), 8, "MaxIter".to_string())
        ]
    );
    assert_ne!(rows[0].final_loss, rows[1].final_loss);
}

/// A kill between the checkpoint that holds a tolerance stop and the model file: the
/// rerun writes the model from that state instead of stepping on.
#[test]
fn a_kill_after_the_final_checkpoint_does_not_train_further() {
    let d = tmp();
    let mk = |name: &str| {
        let cfg = config(d.path(), name, "lbfgs");
        edit(&cfg, "max_iter = 60", "max_iter = 200\nftol = 1e-3");
        cfg
    };
    let whole = mk("whole");
    let (ok, _, err) = run_bin(&["-q", "run", whole.to_str().unwrap()], d.path());
    assert!(ok, "{err}");
    let a = model_of(&d.path().join("whole"));
    assert_eq!(
        a.header.stop, "FunctionTolerance",
        "the test needs a tolerance stop"
    );
    assert!(a.header.iterations < 200);

    let cut = mk("cut");
    let out = Command::new(bin())
        .args(["-q", "run", cut.to_str().unwrap()])
        .env("SAE_CRASH_AT", "before-model")
        .current_dir(d.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the crash point was not reached");
    assert!(!d.path().join("cut/model.sae").exists());
    let (ok, _, err) = run_bin(&["run", cut.to_str().unwrap()], d.path());
    assert!(ok, "{err}");
    assert!(err.contains("final state (FunctionTolerance)"), "{err}");
    let b = model_of(&d.path().join("cut"));
    assert_eq!(a.net.theta, b.net.theta);
    assert_eq!(a.header.iterations, b.header.iterations);
    assert_eq!(
        losses(&d.path().join("whole")),
        losses(&d.path().join("cut"))
    );
}

/// Column `name` of a run's table.
fn column(run: &Path, name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(run.join("results.csv")).unwrap();
    let mut lines = text.lines();
    let at = lines
        .next()
        .unwrap()
        .split(',')
        .position(|c| c == name)
        .unwrap_or_else(|| panic!("no column {name}"));
    lines
        .map(|l| l.split(',').nth(at).unwrap().to_string())
        .collect()
}

/// The scores of a run's table: test and validation accuracy, chosen L2, iterations.
fn accuracy_column(run: &Path) -> Vec<String> {
    ["accuracy", "validation", "l2", "classify_iterations"]
        .iter()
        .map(|c| column(run, c).join(" "))
        .collect()
}

/// The classifier's L2 path resumes after a kill between its stages, and a longer
/// grid continues a shorter one, reading back the stages they share: both end with
/// the uninterrupted run's accuracy.
#[test]
fn the_classifier_path_resumes_and_extends() {
    let d = tmp();
    let mk = |name: &str, l2: &str| {
        let cfg = config(d.path(), name, "lbfgs");
        edit(
            &cfg,
            "classifiers = [\"lr\"]",
            &format!("classifiers = [\"svm\"]\nl2 = {l2}\nmax_iter = 40\nwarm_iter = 20"),
        );
        cfg
    };
    let grid = "[1e-1, 1e-2, 1e-3]";
    let whole = mk("whole", grid);
    let (ok, _, err) = run_bin(&["run", whole.to_str().unwrap()], d.path());
    assert!(ok, "{err}");
    assert!(!err.contains("read back"), "{err}");
    let expected = accuracy_column(&d.path().join("whole"));
    // The table says what the path chose, and on what validation accuracy.
    let chosen: f64 = column(&d.path().join("whole"), "l2")[0].parse().unwrap();
    assert!([1e-1, 1e-2, 1e-3].contains(&chosen), "{expected:?}");
    let val: f64 = column(&d.path().join("whole"), "validation")[0]
        .parse()
        .unwrap();
    assert!((0.0..=1.0).contains(&val), "{expected:?}");
    // A choice at the grid's end is called out.
    assert_eq!(
        err.contains("won on validation: the best weight may lie beyond classify.l2"),
        chosen == 1e-1 || chosen == 1e-3,
        "{err}"
    );

    let cut = mk("cut", grid);
    let out = Command::new(bin())
        .args(["-q", "run", cut.to_str().unwrap()])
        .env("SAE_CRASH_AT", "after-classify-stage")
        .current_dir(d.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the crash point was not reached");
    let (ok, _, err) = run_bin(&["run", cut.to_str().unwrap()], d.path());
    assert!(ok, "{err}");
    assert_eq!(err.matches("read back from").count(), 1, "{err}");
    assert_eq!(accuracy_column(&d.path().join("cut")), expected);

    let grow = mk("grow", "[1e-1, 1e-2]");
    let (ok, _, err) = run_bin(&["-q", "run", grow.to_str().unwrap()], d.path());
    assert!(ok, "{err}");
    let short_choice = column(&d.path().join("grow"), "l2");
    edit(&grow, "l2 = [1e-1, 1e-2]", &format!("l2 = {grid}"));
    let (ok, _, err) = run_bin(&["run", grow.to_str().unwrap()], d.path());
    assert!(ok, "{err}");
    // Both candidates of the shorter grid, and its refit if the choice stands.
    let kept = 2 + usize::from(short_choice == column(&d.path().join("whole"), "l2"));
    assert_eq!(err.matches("read back from").count(), kept, "{err}");
    assert!(err.contains(&format!("({kept} stages read back)")), "{err}");
    assert_eq!(accuracy_column(&d.path().join("grow")), expected);
}
