#!/usr/bin/env bash
# Benchmarks, measured in one run so that ratios are meaningful on a shared machine:
#   - this machine's f32 GEMM rate for the objective's shapes, loss + gradient and
#     encoding throughput (benches/throughput.rs);
#   - the numpy peer (../shared/peer, float32) on identical work, and the ratio;
#   - peak RSS (/usr/bin/time -v) of encoding at steps 8 and 1, and of creating a patch
#     store and training one epoch over it, for growing numbers of patches.
#   - with --e2e: the whole Coates pipeline end to end (scripts/e2e_bench.sh).
# Usage: scripts/bench.sh [--quick | --full | --e2e] [OUT_DIR]   (quick: under a minute)
set -euo pipefail
if [ "${1:-}" = "--e2e" ]; then
  shift
  exec "$(dirname "$0")/e2e_bench.sh" "$@"
fi
cd "$(dirname "$0")/.."
# The build the README's first command (cargo run) makes, unless told otherwise.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
mode="${1:---quick}"
out="${2:-bench-results}"
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ "$mode" = "--full" ]; then
  hidden=25,100,400,1600; qflag=""; sizes="100000 1000000 10000000"; images=13000; images_tr=5000
else
  hidden=25,100,400; qflag="--quick"; sizes="100000"; images=500; images_tr=300
fi

cargo build --release --quiet
bin="$CARGO_TARGET_DIR/release/sae"
cargo bench --quiet --bench throughput -- $qflag --hidden "$hidden" | grep '^{' > "$out/sae.jsonl"

peer_dir="../shared/peer"
if [ -d "$peer_dir" ] && python3 -c "import numpy, scipy, sklearn" 2>/dev/null; then
  if [ "$mode" = "--full" ]; then prows=131072; pimg=128; else prows=32768; pimg=64; fi
  python3 scripts/peer_bench.py --peer "$peer_dir" --rows "$prows" --hidden "$hidden" \
    --images "$pimg" > "$out/peer.jsonl"
else
  echo "peer: $peer_dir or numpy/scipy/scikit-learn missing; skipping the ratio" >&2
  : > "$out/peer.jsonl"
fi

# Peak memory: encoding at the largest and smallest step on 96x96 images.
"$bin" -q synth --out "$work/stl" --format stl10 --train $((images - images_tr)) \
  --test "$images_tr" --unlabeled 0 >/dev/null
"$bin" -q sample --format stl10 --data "$work/stl" --count 20000 --out "$work/small.arrow" >/dev/null
"$bin" -q train "$work/small.arrow" --hidden 25 --max-iter 5 --out "$work/m25.sae" >/dev/null
rss() { /usr/bin/time -f "%M %e" "$@" 2>&1 >/dev/null | tail -1; }
echo "what,n,step,peak_rss_kb,seconds" > "$out/memory.csv"
for step in 8 4 2 1; do
  read -r kb s < <(rss "$bin" -q encode "$work/m25.sae" --format stl10 --data "$work/stl" \
    --step "$step" --mode pool --out "$work/enc")
  echo "encode_pool_h25,$images,$step,$kb,$s" >> "$out/memory.csv"
done
# Patch stores of growing size: creation, then one Adam epoch over the store.
for n in $sizes; do
  read -r kb s < <(rss "$bin" -q sample --format stl10 --data "$work/stl" --count "$n" \
    --out "$work/p.arrow")
  echo "sample_store,$n,,$kb,$s" >> "$out/memory.csv"
  read -r kb s < <(rss "$bin" -q train "$work/p.arrow" --hidden 400 --optimizer adam \
    --epochs 1 --batch-size 4096 --no-lr-probe --out "$work/m.sae")
  echo "adam_epoch_h400,$n,,$kb,$s" >> "$out/memory.csv"
  rm -f "$work/p.arrow"
done

python3 - "$out" <<'PY'
import json, sys, csv
out = sys.argv[1]
rows = [json.loads(l) for l in open(f"{out}/sae.jsonl")]
peer = [json.loads(l) for l in open(f"{out}/peer.jsonl")]
fma = next(r["gflops"] for r in rows if r["bench"] == "fma_peak")
gemm = {(r["visible"], r["hidden"]): r["gflops"] for r in rows if r["bench"] == "gemm"}
table = []
for r in rows:
    if r["bench"] not in ("loss_gradient", "encode", "encode_coates"):
        continue
    # The peer runs 8x8 patches (192 values) only.
    visible = r.get("visible", 108 if r["bench"] == "encode_coates" else 192)
    key = "peer_" + r["bench"]
    p = [q for q in peer if q["bench"] == key and q["hidden"] == r["hidden"]
         and q.get("step") == r.get("step") and visible == 192]
    ref = r.get("product_gflops") or gemm[(visible, r["hidden"])]
    rate = r.get("patches_per_s") or r["images_per_s"] * 729
    table.append({
        "bench": r["bench"], "visible": visible, "hidden": r["hidden"],
        "step": r.get("step", ""), "patches_per_s": round(rate), "gflops": r["gflops"],
        "gemm_gflops": ref, "fraction_of_gemm": round(r["gflops"] / ref, 3),
        "fma_peak_gflops": fma, "fraction_of_fma_peak": round(r["gflops"] / fma, 3),
        "peer_patches_per_s": p[0]["patches_per_s"] if p else "",
        "sae_over_peer": round(rate / p[0]["patches_per_s"], 2) if p else "",
    })
with open(f"{out}/summary.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(table[0].keys()))
    w.writeheader()
    w.writerows(table)
json.dump(table, open(f"{out}/summary.json", "w"), indent=1)
print(open(f"{out}/summary.csv").read())
print(open(f"{out}/memory.csv").read())
PY
