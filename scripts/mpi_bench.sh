#!/usr/bin/env bash
# Time per full-batch evaluation with 1 and 2 MPI ranks on this machine, and the bytes
# all-reduced per evaluation, for H = 25, 400, 1600. Needs a build with the `mpi`
# feature (cargo build --release --features mpi) and mpirun.
#
#   scripts/mpi_bench.sh [PATCHES] [OUT]      default 100000 patches, bench-results/mpi
#
# Both runs use the machine's cores: one rank with every core, or one rank per core
# (--threads 1), so the ratio shows what the all-reduce and the split cost.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
OUT=${2:-bench-results/mpi}
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/sae
CORES=$(nproc)
mkdir -p "$OUT"
MPI=(mpirun --allow-run-as-root --oversubscribe)
export OMPI_MCA_btl_vader_single_copy_mechanism=none
"$BIN" -q synth --out "$OUT/data" --format cifar10 --train 5000 --test 100
"$BIN" -q sample --format cifar10 --data "$OUT/data" --count "$N" --chunk 8192 --out "$OUT/patches.arrow"
echo "hidden,ranks,threads_per_rank,evaluations,seconds,seconds_per_eval,allreduce_bytes_per_eval" > "$OUT/mpi.csv"
for H in 25 400 1600; do
    for R in 1 2; do
        T=$(( R == 1 ? CORES : CORES / 2 ))
        "${MPI[@]}" -np "$R" "$BIN" -q --threads "$T" train "$OUT/patches.arrow" --hidden "$H" \
            --max-iter 10 --out "$OUT/h$H-r$R.sae" >/dev/null
        # loss.csv: iteration,evaluations,loss,max_abs_gradient,seconds; the first row is
        # the starting point (one evaluation).
        python3 - "$OUT/h$H-r$R.loss.csv" "$H" "$R" "$T" >> "$OUT/mpi.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
h, r, t = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
evals = int(rows[-1]["evaluations"]) - int(rows[0]["evaluations"])
secs = float(rows[-1]["seconds"]) - float(rows[0]["seconds"])
params = 2 * 192 * h + h + 192
# Per evaluation: the row count, the sparse layer's activation sums, then the squared
# error and every gradient entry, all f64.
nbytes = 8 * (1 + h + 1 + params) if r > 1 else 0
print(f"{h},{r},{t},{evals},{secs:.3f},{secs / evals:.4f},{nbytes}")
PY
    done
done
cat "$OUT/mpi.csv"
