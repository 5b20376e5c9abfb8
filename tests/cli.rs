//! The command line, run as a user would.

use crate::util::{run_bin, tmp};

#[test]
fn gradcheck_prints_max_relative_error_last() {
    let d = tmp();
    let (ok, out, _) = run_bin(&["gradcheck"], d.path());
    assert!(ok);
    let last = out.lines().last().unwrap();
    let v: f64 = last
        .strip_prefix("max relative error: ")
        .expect("last line format")
        .parse()
        .unwrap();
    assert!(v < 1e-7, "{v}");
}

#[test]
fn synth_then_info() {
    let d = tmp();
    let (ok, _, err) = run_bin(
        &[
            "synth", "--out", "s", "--format", "stl10", "--train", "3", "--test", "2",
        ],
        d.path(),
    );
    assert!(ok, "{err}");
    let (ok, out, err) = run_bin(&["info", "--format", "stl10", "s"], d.path());
    assert!(ok, "{err}");
    assert!(
        out.contains("train") && out.contains("96x96x3") && out.contains("cwh"),
        "{out}"
    );
}

#[test]
fn bad_config_names_the_key() {
    let d = tmp();
    std::fs::write(
        d.path().join("c.toml"),
        "name = \"x\"\n[data]\nformat = \"cifar10\"\npath = \"nowhere\"\n[model]\nrho = 1.5\n",
    )
    .unwrap();
    let (ok, _, err) = run_bin(&["run", "c.toml"], d.path());
    assert!(!ok);
    assert!(err.contains("model.rho"), "{err}");
    std::fs::write(
        d.path().join("c.toml"),
        "name = \"x\"\n[model]\nhiden = [3]\n",
    )
    .unwrap();
    let (ok, _, err) = run_bin(&["run", "c.toml"], d.path());
    assert!(!ok && err.contains("hiden"), "{err}");
    let (ok, _, err) = run_bin(&["info", "--format", "cifar10", "missing"], d.path());
    assert!(!ok && err.contains("missing"), "{err}");
}

#[test]
fn log_json_writes_one_object_per_line() {
    let d = tmp();
    let (ok, _, e2) = run_bin(
        &["synth", "--out", "s", "--train", "20", "--test", "5"],
        d.path(),
    );
    assert!(ok, "{e2}");
    let (ok, _, err2) = run_bin(
        &[
            "--log-json",
            "sample",
            "--format",
            "cifar10",
            "--data",
            "s",
            "--count",
            "40000",
            "--out",
            "p.arrow",
        ],
        d.path(),
    );
    assert!(ok, "{err2}");
    let lines: Vec<&str> = err2.lines().collect();
    assert!(!lines.is_empty());
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
        assert!(v.get("event").is_some(), "{l}");
    }
    let (ok, _, err3) = run_bin(
        &[
            "--log-json",
            "sample",
            "--format",
            "cifar10",
            "--data",
            "nowhere",
            "--out",
            "q.arrow",
        ],
        d.path(),
    );
    let v: serde_json::Value = serde_json::from_str(err3.trim()).expect("error as JSON");
    assert!(!ok && v["event"] == "error" && v["message"].as_str().unwrap().contains("nowhere"));
}

#[test]
fn a_memory_budget_is_checked_before_any_work() {
    let d = tmp();
    std::fs::write(
        d.path().join("c.toml"),
        "name = \"m\"\n[synth]\nlayout = \"cifar10\"\ntrain = 20\ntest = 10\n\
         [data]\nformat = \"cifar10\"\n[model]\nhidden = [1600]\n[patches]\ncount = 500\n",
    )
    .unwrap();
    // A budget the network's own buffers exceed: stops before sampling, naming the key.
    let (ok, _, err) = run_bin(&["run", "c.toml", "--max-memory", "300M"], d.path());
    assert!(
        !ok && err.contains("train.chunk") && err.contains("max_memory"),
        "{err}"
    );
    assert!(!d.path().join("runs/m/patches.arrow").exists());
    let (ok, _, err) = run_bin(&["run", "c.toml", "--max-memory", "lots"], d.path());
    assert!(!ok && err.contains("lots"), "{err}");
}

/// Every config and sweep shipped in `configs/` parses and passes its checks, and every
/// sweep expands into runs with distinct folders.
#[test]
fn shipped_configs_and_sweeps_load() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut seen = 0;
    for dir in [root.clone(), root.join("study")] {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                sae::run::config::Config::load(&p).unwrap_or_else(|e| panic!("{e}"));
                seen += 1;
            }
        }
    }
    for e in std::fs::read_dir(root.join("sweeps")).unwrap() {
        let p = e.unwrap().path();
        let (sweep, base) = sae::run::sweep::SweepFile::load(&p).unwrap_or_else(|e| panic!("{e}"));
        let runs = sweep
            .expand(&base)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let names: std::collections::HashSet<_> =
            runs.iter().map(|r| r.config.name.clone()).collect();
        assert_eq!(names.len(), runs.len(), "{}", p.display());
        seen += 1;
    }
    assert!(seen > 10, "{seen} files");
}
