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
