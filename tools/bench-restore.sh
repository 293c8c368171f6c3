#!/usr/bin/env bash
# Benchmark for `vdar restore --format ...` against the obvious alternatives, same data, same run.
#
# Builds an ESX flat disk in $BENCH_DIR (default /var/tmp/vdar-bench-restore): $SIZE virtual
# (default 512M), about half of it written with mixed data (fixture::pattern: text-like, random
# and zero 4 KiB blocks) in 4 MiB extents. Backs it up (`vdar backup`, zstd level 3) and
# compresses the raw image with `zstd -3` for the reference. Then, with hyperfine (warm page
# cache, median of $RUNS):
#   raw, vmdk   vs  `zstd -d` of the same raw image (both write a sparse file of $SIZE); vdar
#               fsyncs what it restored, so `zstd -d` followed by `sync FILE` is timed too;
#   stream, ova vs  `qemu-img convert -O vmdk -o subformat=streamOptimized` of the same disk.
# Every output is checked against the source with qemu-img before timing.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-512M}
RUNS=${RUNS:-5}
DIR=${BENCH_DIR:-/var/tmp/vdar-bench-restore}
cargo build -q --release --bin vdar --bin vdar-fixture --features fixture
V=${CARGO_TARGET_DIR:-$PWD/target}/release/vdar
F=${CARGO_TARGET_DIR:-$PWD/target}/release/vdar-fixture
mkdir -p "$DIR"; cd "$DIR"

if [ ! -f a.vdar ]; then
  rm -rf ./*.vmdk a.vdar src.raw src.raw.zst
  regions=$(python3 - "$SIZE" <<'PY'
import sys
size = sys.argv[1]; mul = {"G": 1 << 30, "M": 1 << 20}[size[-1]]; cap = int(size[:-1]) * mul
ext = 4 << 20
print(" ".join(f"D:{o}:{ext}:{i % 7 + 1}" for i, o in enumerate(range(0, cap, 2 * ext))))
PY
)
  $F flat base "$SIZE" $regions
  $V backup base.vmdk -o a.vdar
  qemu-img convert -O raw base.vmdk src.raw
  zstd -q -3 -T1 src.raw -o src.raw.zst
fi
ls -l a.vdar src.raw.zst

# Correctness first: each output reads back as the source.
rm -rf chk && for f in raw vmdk sparse stream ova; do $V restore a.vdar --to chk/$f --format $f 2>/dev/null; done
cmp chk/raw/base/base.raw src.raw
for f in vmdk sparse stream; do
  qemu-img convert -O raw chk/$f/base/base.vmdk chk/back.raw && cmp chk/back.raw src.raw
done
tar -xOf chk/ova/base/base.ova base-disk1.vmdk > chk/ova.vmdk
qemu-img convert -O raw chk/ova.vmdk chk/back.raw && cmp chk/back.raw src.raw
qemu-img convert -O vmdk -o subformat=streamOptimized base.vmdk chk/q.vmdk
ls -l chk/stream/base/base.vmdk chk/ova/base/base.ova chk/q.vmdk
rm -rf chk
echo "all outputs read back identical"

hyperfine --runs "$RUNS" --warmup 1 --export-json bench-raw.json --prepare "rm -rf out z.raw" \
  -n "zstd -d" "zstd -q -d -f src.raw.zst -o z.raw" \
  -n "zstd -d, then sync the file" "zstd -q -d -f src.raw.zst -o z.raw && sync z.raw" \
  -n "vdar restore raw" "$V restore a.vdar --to out" \
  -n "vdar restore vmdk" "$V restore a.vdar --to out --format vmdk"

hyperfine --runs "$RUNS" --warmup 1 --export-json bench-stream.json --prepare "rm -rf out q.vmdk" \
  -n "qemu-img streamOptimized" "qemu-img convert -O vmdk -o subformat=streamOptimized base.vmdk q.vmdk" \
  -n "vdar restore stream" "$V restore a.vdar --to out --format stream" \
  -n "vdar restore ova" "$V restore a.vdar --to out --format ova" \
  -n "vdar restore ova to stdout" "$V restore a.vdar --to - --format ova > /dev/null"

python3 - <<'PY'
import json
for f in ("bench-raw.json", "bench-stream.json"):
    for r in json.load(open(f))["results"]:
        print(f'{r["command"]:<28} median {r["median"]:.3f} s  (min {r["min"]:.3f}, max {r["max"]:.3f})')
PY
