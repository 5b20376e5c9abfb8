#!/usr/bin/env bash
# End-to-end benchmark: the Coates pipeline (6x6 ZCA patches, 1,600 units, stride-1
# soft-threshold features pooled over quadrants, L2-SVM and softmax) run by `sae run`,
# with wall time, GFLOP/s and fraction of this machine's FMA peak per stage and the
# peak RSS, all measured in this one run:
#   - on the full CIFAR-10 set when it is present (README, "Full CIFAR-10"; pass its
#     folder as CIFAR10_DIR, default data/cifar-10-batches-bin), L-BFGS and Adam;
#   - on ../shared/data/cifar10-small (or SMALL_DIR), where the numpy peer runs
#     the same work (8x8 patches, ZCA, 400 units, sigmoid codes at stride 1, pooled,
#     logistic regression; its only layout) beside `sae`, and the ratio is printed.
# Usage: scripts/e2e_bench.sh [OUT_DIR]      (full CIFAR-10: about 10 min per optimiser)
#   CIFAR10_DIR=<folder>  E2E_LBFGS=0 (Adam only)  E2E_SMALL=0 (skip cifar10-small)
#   E2E_PATCHES, E2E_ITER (shrink the cifar10-small runs)
set -euo pipefail
cd "$(dirname "$0")/.."
# The build the README's first command (cargo run) makes, unless told otherwise.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
out="$(realpath -m "${1:-bench-results/e2e}")"
mkdir -p "$out"
cargo build --release --quiet
bin="$CARGO_TARGET_DIR/release/sae"
fma=$(cargo bench --quiet --bench throughput -- --only fma | sed -n 's/.*"gflops":\([0-9.]*\).*/\1/p')
echo "FMA peak: $fma GFLOP/s"

# Runs a config with /usr/bin/time, keeping its stderr for the stage times.
run() { # name config
  rm -rf "$out/runs/$1"   # every stage runs: nothing reused from an earlier benchmark
  /usr/bin/time -v "$bin" run "$2" 2> "$out/$1.log" >/dev/null || {
    tail -5 "$out/$1.log"; exit 1; }
}

# A config derived from $1 with its data path, name and output folder replaced, plus
# extra `section.key = value` lines from the remaining arguments.
derive() { # base data name key=value...
  local base=$1 data=$2 name=$3
  shift 3
  python3 - "$base" "$data" "$name" "$out" "$@" <<'PY'
import re, sys
base, data, name, out, *sets = sys.argv[1:]
text = open(base).read()
text = re.sub(r'(?m)^name = .*$', f'name = "{name}"\nout_dir = "{out}/runs"', text)
text = re.sub(r'(?m)^path = .*$', f'path = "{data}"', text)
for kv in sets:
    key, val = kv.split("=", 1)
    sec, k = key.split(".")
    block = re.search(rf'(?ms)^\[{sec}\]\n(.*?)(?=^\[|\Z)', text)
    body = block.group(1)
    if re.search(rf'(?m)^{k} = ', body):
        body = re.sub(rf'(?m)^{k} = .*$', f'{k} = {val}', body)
    else:
        body = f'{k} = {val}\n' + body
    text = text[:block.start(1)] + body + text[block.end(1):]
open(f"{out}/{name}.toml", "w").write(text)
PY
  echo "$out/$name.toml"
}

report() { # name hidden visible
  python3 - "$out/$1.log" "$fma" "$2" "$3" "$1" <<'PY'
import re, sys
log, h, d, name = sys.argv[1], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
fma = float(sys.argv[2] or "nan")   # no AVX2 + FMA: no peak, no fractions
text = open(log).read()
def total(pattern):
    return sum(float(m) for m in re.findall(pattern, text, re.M))
stage = {
    "patches": total(r"^patches \(write store\): .* in ([\d.]+) s"),
    "train": total(r"^train: stopped .*, ([\d.]+) s$"),
    "encode": total(r"^encode [^:]*: \d+ images in ([\d.]+) s"),
    "classify": total(r"^classify \S+ l2 \S+: \d+ iterations in ([\d.]+) s"),
}
# Work in flops: training from the store size and passes, encoding from the patches
# encoded (one product of 2·d·H per patch), as in benches/throughput.rs.
rows = int(re.search(r"^patches \(write store\): (\d+) patches in", text, re.M).group(1))
if "EpochsDone" in text:
    # Five products per row and epoch (mini-batch activations are kept between passes).
    passes = 5 * len(re.findall(r"^train: epoch \d+ mean", text, re.M))
else:
    # Five or six per evaluation, as the objective's activation cache (256 MiB) allows.
    evals = re.search(r"^train: stopped .*, (\d+) evaluations", text, re.M).group(1)
    passes = (6 if rows * h * 4 > (256 << 20) else 5) * int(evals)
flops_train = passes * 2 * rows * d * h
images = sum(int(n) for n in re.findall(r"^encode [^:]*: (\d+) images in", text, re.M))
per = (32 - round((d / 3) ** 0.5) + 1) ** 2
flops_enc = 2 * images * per * d * h
wall = re.search(r"Elapsed \(wall clock\) time.*: (.*)$", text, re.M).group(1)
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
acc = re.findall(r"^classify:\s+(\S+)\s+(\S+)\s+accuracy ([\d.]+)(?:.*validation ([\d.]+))?", text, re.M)
print(f"== {name}: wall {wall}, peak RSS {rss / 1024:.0f} MiB")
for k, v in stage.items():
    line = f"  {k:9s} {v:7.1f} s"
    f = {"train": flops_train, "encode": flops_enc}.get(k)
    if f and v > 0:
        line += f"  {f / v / 1e9:6.1f} GFLOP/s  {f / v / 1e9 / fma:5.1%} of FMA peak"
    print(line)
for feat, clf, a, va in acc:
    print(f"  {clf:8s} test {float(a):.4f}" + (f"  validation {float(va):.4f}" if va else ""))
PY
}

full="${CIFAR10_DIR:-data/cifar-10-batches-bin}"
if [ -f "$full/data_batch_1.bin" ]; then
  full="$(realpath "$full")"
  run full-adam "$(derive configs/cifar10-coates-adam.toml "$full" full-adam)"
  report full-adam 1600 108
  if [ "${E2E_LBFGS:-1}" = 1 ]; then
    run full-lbfgs "$(derive configs/cifar10-coates.toml "$full" full-lbfgs)"
    report full-lbfgs 1600 108
  fi
else
  echo "full CIFAR-10 not found in $full (README, \"Full CIFAR-10\"); skipping it"
fi

[ "${E2E_SMALL:-1}" = 1 ] || exit 0
# cifar10-small beside the numpy peer, on the work the peer can do.
small="$(realpath "${SMALL_DIR:-../shared/data/cifar10-small}")"
patches="${E2E_PATCHES:-100000}"; iters="${E2E_ITER:-400}"
peer_dir="../shared/peer"
common=(patches.count="$patches" patches.size=8 model.hidden="[400]" model.beta=3.0
  features.encoder='"sigmoid"' classify.classifiers='["softmax"]' classify.l2="[1e-3]"
  classify.max_iter=1000 train.max_iter="$iters")
run small-lbfgs "$(derive configs/cifar10-coates.toml "$small" small-lbfgs "${common[@]}")"
report small-lbfgs 400 192
# The same with the mini-batch path (not the peer's work: its own optimiser).
run small-adam "$(derive configs/cifar10-coates-adam.toml "$small" small-adam "${common[@]}")"
report small-adam 400 192
if [ -d "$peer_dir" ] && python3 -c "import numpy, scipy, sklearn" 2>/dev/null; then
  /usr/bin/time -v python3 "$peer_dir/peer.py" --data "$small" --format cifar10 \
    --patches "$patches" --hidden 400 --step 1 --features pool --norm zca \
    --maxiter "$iters" --dtype float32 --classifiers lr --no-baselines \
    > "$out/small-peer.log" 2>&1
  python3 - "$out/small-lbfgs.log" "$out/small-adam.log" "$out/small-peer.log" <<'PY'
import re, sys
def wall(path):
    w = re.search(r"Elapsed \(wall clock\) time.*: (.*)$", open(path).read(), re.M).group(1)
    parts = [float(p) for p in w.split(":")]
    return sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
lbfgs, adam, peer = (wall(p) for p in sys.argv[1:4])
print(f"== cifar10-small end to end: numpy peer {peer:.1f} s; sae on the same work "
      f"(L-BFGS) {lbfgs:.1f} s, {peer / lbfgs:.2f}x faster; sae with Adam {adam:.1f} s, "
      f"{peer / adam:.2f}x faster")
print("   peer:", " ".join(l.strip() for l in open(sys.argv[3]) if "acc" in l.lower())[:400])
PY
else
  echo "peer: $peer_dir or numpy/scipy/scikit-learn missing; no ratio"
fi
