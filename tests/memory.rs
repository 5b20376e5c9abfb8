//! The memory budget (`--max-memory`): every subcommand that allocates plans within it,
//! and each stage's measured peak resident set (the kernel's peak where the stage
//! raised it, else the largest sampled reading) stays within the budget and within its
//! own estimate.

use std::path::Path;

use crate::util::{run_bin, tmp};

const BUDGET_MIB: u64 = 192;

/// `sae` with a fixed thread count: per-thread buffers are part of every estimate,
/// and the budget is sized for two.
fn sae(args: &[&str], cwd: &Path) -> (bool, String, String) {
    let mut all = vec!["--threads", "2"];
    all.extend_from_slice(args);
    run_bin(&all, cwd)
}

fn config(dir: &Path, name: &str) -> std::path::PathBuf {
    // 100,000 patches x 512 units: the activation cache alone (205 MB) is over the
    // budget, so the budget must change what the run does, not just watch it.
    let text = format!(
        r#"
name = "{name}"
out_dir = "{}"
seed = 5
[synth]
layout = "cifar10"
train = 120
test = 60
[data]
format = "cifar10"
[patches]
count = 100000
size = 4
norm = "ufldl"
[model]
hidden = [512]
[train]
max_iter = 2
[features]
steps = [4]
modes = ["pool"]
[classify]
classifiers = ["softmax", "rf"]
rf_trees = 4
raw_baseline = false
"#,
        dir.display()
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// (stage, peak MiB, estimate MiB) of every "memory: <stage> peak" line.
fn peaks(err: &str) -> Vec<(String, u64, u64)> {
    err.lines()
        .filter_map(|l| {
            let rest = l.split("memory: ").nth(1)?;
            let (stage, rest) = rest.split_once(" peak ")?;
            let peak = rest.split(" MiB").next()?.trim().parse().ok()?;
            let est = rest
                .split("estimated ")
                .nth(1)?
                .split(" MiB")
                .next()?
                .parse()
                .ok()?;
            Some((stage.to_string(), peak, est))
        })
        .collect()
}

/// The largest peak resident set of the children this test process has waited for,
/// KiB: what `/usr/bin/time` reports of a command.
fn children_maxrss_kib() -> u64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    assert_eq!(rc, 0, "getrusage failed");
    u.ru_maxrss as u64
}

fn check_within(err: &str, stages: &[&str], budget: Option<u64>) -> Vec<(String, u64, u64)> {
    let p = peaks(err);
    for s in stages {
        assert!(
            p.iter().any(|(n, _, _)| n == s),
            "no measurement of {s}: {err}"
        );
    }
    for (stage, peak, est) in &p {
        assert!(
            peak <= est,
            "{stage}: measured {peak} MiB over its estimate {est} MiB\n{err}"
        );
        if let Some(b) = budget {
            assert!(
                *peak <= b,
                "{stage}: measured {peak} MiB over the budget {b} MiB\n{err}"
            );
        }
    }
    assert!(!err.contains("over the max_memory budget"), "{err}");
    p
}

#[test]
fn every_stage_stays_within_the_budget_and_its_estimate() {
    let d = tmp();
    let budget = format!("{BUDGET_MIB}M");
    let cfg = config(d.path(), "tight");
    let (ok, _, err) = sae(
        &["--max-memory", &budget, "run", cfg.to_str().unwrap()],
        d.path(),
    );
    assert!(ok, "{err}");
    check_within(
        &err,
        &["sample", "train", "encode", "classify"],
        Some(BUDGET_MIB),
    );

    // Without the budget the same run keeps its activation cache and goes over it.
    let cfg = config(d.path(), "loose");
    let (ok, _, err) = sae(&["run", cfg.to_str().unwrap()], d.path());
    assert!(ok, "{err}");
    let p = check_within(&err, &["sample", "train", "encode", "classify"], None);
    let train = p.iter().find(|s| s.0 == "train").unwrap().1;
    assert!(
        train > BUDGET_MIB,
        "training used {train} MiB without a budget: the test shows nothing"
    );
    // The kernel's peak is never reset, so what `/usr/bin/time` reads of the finished
    // process (its rusage) is the whole run's peak, training's, not the last stage's.
    let seen_kib = children_maxrss_kib();
    assert!(
        seen_kib >= (train - 1) * 1024,
        "the finished run's rusage peak is {seen_kib} KiB, below its training peak of \
         {train} MiB"
    );

    // The subcommands honour the flag too.
    let store = d.path().join("tight/patches.arrow");
    let model = d.path().join("m.sae");
    let (ok, _, err) = sae(
        &[
            "--max-memory",
            &budget,
            "train",
            store.to_str().unwrap(),
            "--hidden",
            "512",
            "--max-iter",
            "2",
            "--out",
            model.to_str().unwrap(),
        ],
        d.path(),
    );
    assert!(ok, "{err}");
    check_within(&err, &["train"], Some(BUDGET_MIB));
    let data = d.path().join("tight/data");
    let (ok, _, err) = sae(
        &[
            "--max-memory",
            &budget,
            "encode",
            model.to_str().unwrap(),
            "--format",
            "cifar10",
            "--data",
            data.to_str().unwrap(),
            "--step",
            "1",
            "--precision",
            "f16",
            "--out",
            d.path().join("enc").to_str().unwrap(),
        ],
        d.path(),
    );
    assert!(ok, "{err}");
    check_within(&err, &["encode"], Some(BUDGET_MIB));
    let feats = sae::data::store::Store::open(
        &d.path().join("enc/train.arrow"),
        sae::data::store::Kind::Features,
    )
    .unwrap();
    assert_eq!(feats.precision(), sae::data::store::Precision::F16);
    let (ok, _, err) = sae(
        &[
            "--max-memory",
            &budget,
            "sample",
            "--format",
            "cifar10",
            "--data",
            data.to_str().unwrap(),
            "--count",
            "50000",
            "--size",
            "4",
            "--out",
            d.path().join("s.arrow").to_str().unwrap(),
        ],
        d.path(),
    );
    assert!(ok, "{err}");
    check_within(&err, &["sample"], Some(BUDGET_MIB));

    // A budget too small for training stops every command before work starts,
    // naming what to change: `train` and a sweep's runs alike.
    let (ok, _, err) = sae(
        &[
            "--max-memory",
            "150M",
            "train",
            store.to_str().unwrap(),
            "--hidden",
            "512",
            "--out",
            model.to_str().unwrap(),
        ],
        d.path(),
    );
    assert!(!ok && err.contains("train.chunk"), "{err}");
    let sweep = d.path().join("sweep.toml");
    std::fs::write(
        &sweep,
        "name = \"g\"\nbase = \"tight.toml\"\n[grid]\n\"model.rho\" = [0.01]\n",
    )
    .unwrap();
    let (ok, _, err) = sae(
        &["--max-memory", "150M", "sweep", sweep.to_str().unwrap()],
        d.path(),
    );
    assert!(!ok && err.contains("train.chunk"), "{err}");
}
