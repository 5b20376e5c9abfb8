//! MPI: two ranks on localhost against one, for training, encoding and resume. Built
//! only with `--features mpi`; needs `mpirun` (Open MPI).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{bin, checkpoint_files, tmp};

fn mpirun(np: usize, args: &[&str], cwd: &Path) -> Command {
    let mut c = Command::new("mpirun");
    c.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "-np",
        &np.to_string(),
    ])
    .arg(bin())
    .args(args)
    .current_dir(cwd)
    // Containers often forbid the cross-memory-attach single-copy path.
    .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
    .env("OMPI_MCA_rmaps_base_oversubscribe", "1");
    c
}

fn ok(mut c: Command) -> String {
    let out = c.output().expect("run mpirun");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    err
}

fn config(dir: &Path, name: &str, optimizer: &str) -> PathBuf {
    let text = format!(
        r#"
name = "{name}"
out_dir = "{}"
seed = 5
[synth]
layout = "cifar10"
train = 300
test = 100
[data]
format = "cifar10"
[patches]
count = 20000
norm = "zca"
[model]
hidden = [32]
decoder = "linear"
rho = 0.035
lambda = 3e-3
[train]
optimizer = "{optimizer}"
max_iter = 40
epochs = 2
batch_size = 1000
learning_rate = 0.003
chunk = 3000
checkpoint_every = 1
[features]
steps = [4]
modes = ["pool"]
[classify]
classifiers = ["softmax"]
raw_baseline = false
"#,
        dir.display()
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

fn losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("loss.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
        .collect()
}

fn close(a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len(), "trajectories of different lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let rel = (x - y).abs() / x.abs().max(1e-12);
        assert!(rel < tol, "iteration {i}: {x} vs {y} (relative {rel:e})");
    }
}

#[test]
fn two_ranks_train_like_one_and_encode_identically() {
    let d = tmp();
    for opt in ["lbfgs", "adam"] {
        let one = config(d.path(), &format!("one-{opt}"), opt);
        let two = config(d.path(), &format!("two-{opt}"), opt);
        ok(mpirun(1, &["-q", "run", one.to_str().unwrap()], d.path()));
        ok(mpirun(2, &["-q", "run", two.to_str().unwrap()], d.path()));
        let (a, b) = (
            losses(&d.path().join(format!("one-{opt}"))),
            losses(&d.path().join(format!("two-{opt}"))),
        );
        assert!(a.len() > 5, "{opt}: too short a trajectory");
        close(&a, &b, 1e-5);
        // Rank 0 assembled the features of both ranks, in image order.
        let f = d.path().join(format!("two-{opt}/features"));
        let sub = std::fs::read_dir(&f)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let (x, y) = sae::data::store::read_features(&sub.join("step4-pool-train.arrow")).unwrap();
        assert_eq!((x.nrows(), y.len()), (300, 300));
    }
    // One model, encoded by one and by two ranks: the same features, bit for bit.
    let model = d.path().join("one-lbfgs/model.sae");
    let data = d.path().join("one-lbfgs/data");
    for (np, out) in [(1, "enc1"), (2, "enc2")] {
        ok(mpirun(
            np,
            &[
                "-q",
                "encode",
                model.to_str().unwrap(),
                "--format",
                "cifar10",
                "--data",
                data.to_str().unwrap(),
                "--step",
                "2",
                "--mode",
                "pool",
                "--out",
                out,
            ],
            d.path(),
        ));
    }
    for split in ["train", "test"] {
        let a =
            sae::data::store::read_features(&d.path().join(format!("enc1/{split}.arrow"))).unwrap();
        let b =
            sae::data::store::read_features(&d.path().join(format!("enc2/{split}.arrow"))).unwrap();
        assert!(a.0 == b.0 && a.1 == b.1, "{split} features differ");
    }
}

/// Starts a 2-rank run, stops it with SIGTERM once it has written a few checkpoints.
fn interrupted(dir: &Path, cfg: &Path, run: &str) {
    let mut child = mpirun(2, &["-q", "run", cfg.to_str().unwrap()], dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let db = dir.join(run).join("checkpoint.sled");
    let t = Instant::now();
    // Old bodies are pruned, so two files mean at least the second checkpoint.
    while checkpoint_files(&db) < 2 && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(150));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the run finished before it was stopped");
}

#[test]
fn resumed_two_rank_run_matches_an_uninterrupted_one() {
    let d = tmp();
    let whole = config(d.path(), "whole", "lbfgs");
    ok(mpirun(2, &["-q", "run", whole.to_str().unwrap()], d.path()));
    let want = sae::learn::model::Model::load(&d.path().join("whole/model.sae")).unwrap();
    // Same number of ranks: exactly the same parameters.
    let cut = config(d.path(), "cut", "lbfgs");
    interrupted(d.path(), &cut, "cut");
    let err = ok(mpirun(2, &["run", cut.to_str().unwrap()], d.path()));
    assert!(err.contains("resuming from checkpoint"), "{err}");
    let got = sae::learn::model::Model::load(&d.path().join("cut/model.sae")).unwrap();
    assert_eq!(want.net.theta, got.net.theta);
    // Another number of ranks: the same trajectory up to summation order.
    let other = config(d.path(), "other", "lbfgs");
    interrupted(d.path(), &other, "other");
    let err = ok(mpirun(1, &["run", other.to_str().unwrap()], d.path()));
    assert!(err.contains("resuming from checkpoint"), "{err}");
    close(
        &losses(&d.path().join("whole")),
        &losses(&d.path().join("other")),
        1e-5,
    );
}
