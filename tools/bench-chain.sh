#!/usr/bin/env bash
# Benchmark for `vdar cat` (chain collapse) against `qemu-img convert -O raw`, same input, same run.
#
# Builds an ESX-style chain in $BENCH_DIR (default /var/tmp/vdar-bench-chain):
#   base: vmfs flat, $SIZE virtual (default 8G), ~1/4 of it written with mixed data
#         (fixture::pattern: text-like, random and zero 4 KiB blocks) in 4 MiB extents;
#   vmfsSparse (COWD, 512 B grains): 3000 scattered writes of 4-64 KiB, some explicit zeros;
#   seSparse (4 KiB grains): 3000 scattered writes of 4-256 KiB, zero and unmapped grains.
# (SETUP_ONLY=1: stop here; tools/bench-readpath.sh uses the chain.)
# Then times both tools writing a sparse raw file (hyperfine, warm page cache, median of
# $RUNS), checks the outputs are identical, and reports how many bytes vdar read (rchar from
# /proc/PID/io) against the data the chain actually holds.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-8G}
RUNS=${RUNS:-5}
DIR=${BENCH_DIR:-/var/tmp/vdar-bench-chain}
cargo build -q --release --bin vdar --bin vdar-fixture --features fixture
V=${CARGO_TARGET_DIR:-$PWD/target}/release/vdar
F=${CARGO_TARGET_DIR:-$PWD/target}/release/vdar-fixture
mkdir -p "$DIR"; cd "$DIR"

if [ ! -f top.vmdk ]; then
  rm -f ./*.vmdk
  python3 - "$SIZE" > regions.sh <<'PY'
import random, sys
size = sys.argv[1]; mul = {"G": 1 << 30, "M": 1 << 20}[size[-1]]; cap = int(size[:-1]) * mul
r = random.Random(42)
def spread(n, lo, hi, align):
    out, used = [], set()
    while len(out) < n:
        ln = r.randrange(lo, hi + 1, align); off = r.randrange(0, cap - ln, align)
        if any(u in used for u in range(off // (1 << 20), (off + ln) // (1 << 20) + 1)): continue
        used.update(range(off // (1 << 20), (off + ln) // (1 << 20) + 1)); out.append((off, ln))
    return sorted(out)
base = " ".join(f"D:{o}:{l}:1" for o, l in spread(cap // 4 // (4 << 20), 4 << 20, 4 << 20, 1 << 20))
cowd = []
for o, l in spread(3000, 4096, 65536, 4096):
    cowd.append(f"Z:{o}:{l}" if r.random() < 0.1 else f"D:{o}:{l}:2")
ses = []
for o, l in spread(3000, 4096, 262144, 4096):
    k = r.random()
    ses.append(f"Z:{o}:{l}" if k < 0.05 else f"U:{o}:{l}" if k < 0.1 else f"D:{o}:{l}:3")
print(f'BASE="{base}"'); print(f'COWD="{" ".join(cowd)}"'); print(f'SES="{" ".join(ses)}"')
PY
  . ./regions.sh
  $F flat base "$SIZE" $BASE
  $F delta cowd mid base.vmdk $COWD
  $F delta sesparse top mid.vmdk $SES
fi
$V inspect top.vmdk
[ -n "${SETUP_ONLY:-}" ] && exit 0

hyperfine --runs "$RUNS" --warmup 1 --export-json bench.json \
  -n "vdar cat" "$V cat top.vmdk -o vdar.raw --force" \
  -n "qemu-img convert -O raw" "qemu-img convert -O raw top.vmdk qemu.raw"
cmp vdar.raw qemu.raw && echo "outputs identical"

# Bytes read by vdar: rchar counts every byte returned by read/pread, cached or not. io_uring
# reads do not show in rchar, so this run uses the pread engine: the same requests, one at a time.
VDAR_IO_BACKEND=pread $V cat top.vmdk -o vdar.raw --force & pid=$!
rchar=0
while kill -0 $pid 2>/dev/null; do
  r=$(awk '/^rchar/ {print $2}' /proc/$pid/io 2>/dev/null || true); [ -n "$r" ] && rchar=$r
  sleep 0.05
done
wait $pid
data=$($V inspect --json top.vmdk | python3 -c 'import json,sys; print(json.load(sys.stdin)["disks"][0]["data_bytes"])')
echo "vdar read ${rchar} bytes (last sample); collapsed data runs total ${data} bytes"
python3 - <<'PY'
import json
for r in json.load(open("bench.json"))["results"]:
    print(f'{r["command"]:<28} median {r["median"]:.3f} s  (min {r["min"]:.3f}, max {r["max"]:.3f})')
PY
