#!/usr/bin/env bash
# Fuzzes the readers of files sae did not write (libFuzzer through cargo-fuzz), each
# for a bounded time, from seeds built out of the test fixtures and configs.
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET ...]      (default 60 s, all targets)
# Needs a nightly toolchain (rustup toolchain install nightly) and cargo-fuzz (installed
# here when missing). Crashing inputs land in fuzz/artifacts/<target>/; copy each into
# tests/data/hostile/<target>/ so that tests/hostile.rs keeps it fixed. Prints one line
# per target with the executions run and writes them to fuzz/stats.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(pickle stl10 cifar10 image_folder config patch_store checkpoint model)
fi
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/sae-fuzz-target}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

seeds=fuzz/seeds
rm -rf "$seeds"
mkdir -p "$seeds"/{pickle,stl10,cifar10,image_folder,config,patch_store,checkpoint,model}
cp configs/*.toml configs/sweeps/*.toml "$seeds/config/" 2>/dev/null || true
cp tests/data/v1/patches.arrow "$seeds/patch_store/"
cp tests/data/v1/checkpoint.sled/ckpt-*.bin "$seeds/checkpoint/"
# A model file without its magic and checksum, which the target adds back.
python3 - "$seeds" <<'PY'
import os, struct, sys, pickle, random
seeds = sys.argv[1]
m = open("tests/data/v1/model.sae", "rb").read()
open(os.path.join(seeds, "model", "v1"), "wb").write(m[8:-4])
random.seed(1)
# Two CIFAR-10 records split as the target splits its input (2-byte split point).
rec = lambda l: bytes([l]) + bytes(random.randrange(256) for _ in range(3072))
a, b = rec(3), rec(7) + rec(1)
open(os.path.join(seeds, "cifar10", "two"), "wb").write(struct.pack("<H", len(a)) + a + b)
# One STL-10 image and its label file.
x = bytes(random.randrange(256) for _ in range(3 * 96 * 96))
open(os.path.join(seeds, "stl10", "one"), "wb").write(struct.pack("<H", 1) + bytes([4]) + x)
# Pickles as the study wrote them: a dict of a uint8 image array and a label list.
try:
    import numpy as np
    for proto in (2, 4, 5):
        d = {"data": np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072), "labels": [1, 2]}
        open(os.path.join(seeds, "pickle", f"p{proto}"), "wb").write(pickle.dumps(d, protocol=proto))
    f = {"data": np.linspace(0, 1, 2 * 3072, dtype=np.float32).reshape(2, 3072), "labels": [0, 1]}
    open(os.path.join(seeds, "pickle", "f4"), "wb").write(pickle.dumps(f, protocol=2))
except ImportError:
    open(os.path.join(seeds, "pickle", "list"), "wb").write(pickle.dumps({"labels": [1, 2]}, protocol=2))
PY
# Small PNG and JPEG images (first byte: 0 = PNG, 1 = JPEG).
for f in tests/data/*.png tests/data/*.jpg; do
  [ -e "$f" ] || continue
  case "$f" in *.png) k='\x00' ;; *) k='\x01' ;; esac
  { printf "$k"; cat "$f"; } > "$seeds/image_folder/$(basename "$f")"
done
if [ -z "$(ls "$seeds/image_folder")" ]; then
  python3 - "$seeds" <<'PY'
import io, sys, os
from PIL import Image
img = Image.new("RGB", (8, 8), (10, 200, 30))
for k, fmt in ((0, "PNG"), (1, "JPEG")):
    b = io.BytesIO(); img.save(b, fmt)
    open(os.path.join(sys.argv[1], "image_folder", fmt.lower()), "wb").write(bytes([k]) + b.getvalue())
PY
fi

declare -A maxlen=([stl10]=60000 [cifar10]=16384 [pickle]=16384 [patch_store]=65536 [checkpoint]=16384 [model]=8192 [image_folder]=16384 [config]=4096)
cd fuzz
cargo +nightly fuzz build --release 2>&1 | tail -3
: > stats.tsv
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log="$(mktemp)"
  # -malloc_limit_mb: any single allocation over 512 MB counts as a crash (an
  # allocation size taken from the file without checking it against the file length).
  set +e
  cargo +nightly fuzz run --release "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$secs" -max_len="${maxlen[$t]}" -rss_limit_mb=2048 \
    -malloc_limit_mb=512 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="artifacts/$t/" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  crashes=$(ls "artifacts/$t" | wc -l)
  printf '%s\t%s s\t%s executions\t%s crash files\texit %s\n' "$t" "$secs" "$execs" "$crashes" "$rc" | tee -a stats.tsv
  if [ "$rc" -ne 0 ]; then tail -40 "$log"; fi
  rm -f "$log"
done
