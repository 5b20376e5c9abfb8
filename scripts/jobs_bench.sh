#!/usr/bin/env bash
# The speed-up of `sae sweep --jobs 2` over one process using every core: a four-run
# sweep on synthetic data, timed both ways in one go with /usr/bin/time (wall time and
# peak RSS); the two results tables must agree. GRID `seeds` (the default) gives each
# run its own patch store; `units` varies the hidden layer, so the four runs share one
# store (sampled once, the other worker waiting for it) and differ in their models.
# usage: scripts/jobs_bench.sh [JOBS] [GRID]   (default 2 seeds)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/time ]; then
    echo "jobs_bench: needs /usr/bin/time (Debian: apt-get install time)" >&2
    exit 1
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --quiet --bin sae
sae="$CARGO_TARGET_DIR/release/sae"
jobs="${1:-2}"
grid="${2:-seeds}"
case "$grid" in
    seeds) axis='seed = [1, 2, 3, 4]' ;;
    units) axis='"model.hidden" = [[48], [56], [64], [72]]' ;;
    *) echo "jobs_bench: GRID is seeds or units, not $grid" >&2; exit 1 ;;
esac
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cat > "$work/base.toml" <<'TOML'
name = "base"
seed = 1
[synth]
layout = "cifar10"
train = 1500
test = 500
[data]
format = "cifar10"
[patches]
count = 30000
size = 8
norm = "zca"
[model]
hidden = [64]
decoder = "linear"
[train]
max_iter = 100
[features]
steps = [4]
modes = ["pool"]
[classify]
classifiers = ["rf", "lr"]
raw_baseline = false
rf_trees = 50
TOML
printf 'name = "seeds"\nbase = "base.toml"\n[grid]\n%s\n' "$axis" > "$work/seeds.toml"

declare -A wall
for j in 1 "$jobs"; do
    rm -rf "$work/runs"
    (cd "$work" && /usr/bin/time -v "$sae" --quiet sweep --jobs "$j" seeds.toml \
        > /dev/null 2> "time-$j.txt" || { cat "time-$j.txt" >&2; exit 1; })
    wall[$j]=$(awk -F': ' '/Elapsed/ {n = split($2, t, ":"); s = 0;
        for (i = 1; i <= n; i++) s = s * 60 + t[i]; print s}' "$work/time-$j.txt")
    rss=$(awk -F': ' '/Maximum resident/ {print $2}' "$work/time-$j.txt")
    cut -d, -f1,4,5,6 "$work/runs/seeds/results.csv" | sort > "$work/table-$j.csv"
    echo "--jobs $j: ${wall[$j]} s, peak RSS ${rss} kB"
done
if ! cmp -s "$work/table-1.csv" "$work/table-$jobs.csv"; then
    echo "jobs_bench: the two results tables differ" >&2
    exit 1
fi
awk -v a="${wall[1]}" -v b="${wall[$jobs]}" -v j="$jobs" -v g="$grid" \
    'BEGIN {printf "speed-up of --jobs %s (%s grid): %.2fx (same results table)\n", j, g, a / b}'
