#!/usr/bin/env bash
# The test suite: unit and integration tests in release mode (the numeric tests are
# slow unoptimised). Benchmarks are only compiled here (scripts/ci.sh); run them with
# scripts/bench.sh. Tests on real images read ../shared/data when it exists and say
# so when it does not.
set -euo pipefail
cd "$(dirname "$0")/.."
# The build the README's first command (cargo run) makes, unless told otherwise.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
if [ "$#" -gt 0 ]; then
    cargo test --release "$@"
else
    cargo test --release --lib --bins --tests
    # The examples in the API docs compile (and run, unless marked no_run).
    cargo test --release --doc
fi
