//! Records the git revision of the source being built (empty outside a git checkout),
//! with `-dirty` when tracked files differ from it, so that result tables can say
//! which build made each run.

fn main() {
    let git = |args: &[&str]| std::process::Command::new("git").args(args).output().ok();
    let rev = git(&["rev-parse", "--short=12", "HEAD"])
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    // `git diff --quiet` exits 1 when tracked files were changed.
    let dirty = !rev.is_empty()
        && git(&["diff", "--quiet", "HEAD", "--"]).is_some_and(|o| o.status.code() == Some(1));
    let rev = if dirty { format!("{rev}-dirty") } else { rev };
    println!("cargo:rustc-env=SAE_GIT_REV={rev}");
    for p in [
        ".git/HEAD",
        ".git/refs",
        ".git/packed-refs",
        ".git/index",
        "src",
        "Cargo.toml",
    ] {
        if std::path::Path::new(p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
