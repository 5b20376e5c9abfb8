#!/usr/bin/env bash
# Exactly what CI runs: formatting, lints, the test suite (README's test command),
# and a compile of the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sae-target}"

cargo fmt --all -- --check
cargo clippy --release --all-targets -- -D warnings
scripts/test.sh
cargo bench --no-run
