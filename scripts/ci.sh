#!/usr/bin/env bash
# Exactly what CI runs (.ci/run): install test requirements, formatting, lints, the
# test suite, and a compile of the benchmarks.
set -euo pipefail
exec "$(dirname "$0")/../.ci/run"
