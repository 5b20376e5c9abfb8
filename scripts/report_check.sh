#!/usr/bin/env bash
# Builds a small sweep on synthetic data (one of its points diverges), draws its report
# and checks the page in headless Chromium (scripts/report_check.py): no console errors,
# every image loads; the screenshots land in OUT (default: a temporary folder).
# usage: scripts/report_check.sh [OUT]
set -euo pipefail
out="$(realpath -m "${1:-$(mktemp -d)}")"
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --quiet --bin sae
sae="$CARGO_TARGET_DIR/release/sae"
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cat > "$work/base.toml" <<'TOML'
name = "base"
seed = 3
[synth]
layout = "cifar10"
train = 300
test = 150
[data]
format = "cifar10"
[patches]
count = 10000
size = 6
norm = "zca"
[model]
hidden = [32]
decoder = "linear"
[train]
optimizer = "sgd"
epochs = 3
batch_size = 500
lr_probe = false
[features]
steps = [4]
modes = ["pool"]
encoder = "softthreshold"
[classify]
classifiers = ["lr"]
raw_baseline = false
TOML
cat > "$work/sweep.toml" <<'TOML'
name = "check"
base = "base.toml"
[grid]
"train.learning_rate" = [1e9, 1e-2, 3e-3]
"model.learner" = ["autoencoder", "omp1"]
TOML

# One point diverges: the sweep goes on and says so with exit code 3.
status=0
(cd "$work" && "$sae" --quiet sweep sweep.toml) || status=$?
if [ "$status" != 3 ]; then
    echo "report_check: the sweep ended with status $status, not 3 (one failed run)" >&2
    exit 1
fi
"$sae" --quiet report "$work/runs/check"
python3 scripts/report_check.py "$work/runs/check/report/index.html" "$out/sweep-report.png"
# A finished run's own report (the failed one has no results to draw).
run="$(dirname "$(ls "$work"/runs/check/runs/*/done.json | head -n 1)")"
"$sae" --quiet report "$run"
python3 scripts/report_check.py "$run/report/index.html" "$out/run-report.png"
