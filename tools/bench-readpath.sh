#!/usr/bin/env bash
# Which read path should `vdar backup` use by default: buffered reads or O_DIRECT?
#
# A backup proxy reads each disk once, and the disks are not in its page cache (cold); a test
# bench that just wrote them has them all cached (warm). This script measures both on the
# bench chain of tools/bench-chain.sh (8 GiB virtual, ESX flat base + COWD + SEsparse), in one
# run, for:
#   vdar backup --read-path buffered | --read-path direct, cold and warm;
#   qemu-img convert -O raw of the same chain (the peer), cold, one run;
#   cat of the layer files' allocated bytes to /dev/null (what the disk can give, cold).
# "Cold" evicts only the layer files (posix_fadvise DONTNEED), not the whole page cache.
# It then reports how much of the layer files each read path leaves in the page cache: what a
# buffered backup pushes out of a busy proxy's cache.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DIR=${BENCH_DIR:-/var/tmp/vdar-bench-chain}
SETUP_ONLY=1 BENCH_DIR=$DIR tools/bench-chain.sh >/dev/null
V=${CARGO_TARGET_DIR:-$PWD/target}/release/vdar
OUT=${OUT_DIR:-$DIR}
cd "$DIR"
LAYERS=(base-flat.vmdk mid-delta.vmdk top-sesparse.vmdk)

evict() {
  python3 - "${LAYERS[@]}" <<'PY'
import os, sys
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
PY
}
warm() { cat "${LAYERS[@]}" >/dev/null; }
cached_mib() { fincore -b -n -o RES "${LAYERS[@]}" | awk '{s += $1} END {printf "%.0f", s / 1048576}'; }

# Median wall time of RUNS runs of "$@", each after the given cache preparation.
timed() {
  local prep=$1; shift
  local times=()
  for _ in $(seq "${RUNS}"); do
    $prep
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null 2>&1
    t1=$(date +%s.%N)
    times+=("$(echo "$t1 - $t0" | bc)")
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR] = $1} END {printf "%.2f", a[int((NR + 1) / 2)]}'
}

read_allocated() { python3 - "${LAYERS[@]}" <<'PY'
import os, sys
# The allocated bytes of each layer file (SEEK_DATA/SEEK_HOLE), as the disk gives them.
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY); end = os.fstat(fd).st_size; off = 0
    while off < end:
        try: off = os.lseek(fd, off, os.SEEK_DATA)
        except OSError: break
        hole = os.lseek(fd, off, os.SEEK_HOLE)
        while off < hole:
            n = len(os.pread(fd, min(8 << 20, hole - off), off)); off += n
    os.close(fd)
PY
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -r); $(date -u +%F)"
echo "layers: $(du -cb "${LAYERS[@]}" | tail -1 | cut -f1) bytes apparent, $(du -c "${LAYERS[@]}" | tail -1 | cut -f1) KiB allocated"
printf '%-36s %8s %8s\n' "" cold warm
for path in buffered direct; do
  cold=$(timed evict "$V" backup top.vmdk -o "$OUT/readpath.vdar" --force --read-path "$path")
  warmt=$(timed warm "$V" backup top.vmdk -o "$OUT/readpath.vdar" --force --read-path "$path")
  printf '%-36s %7ss %7ss\n' "vdar backup --read-path $path" "$cold" "$warmt"
done
# qemu-img takes minutes on this chain (it reads the whole virtual disk): one cold run.
cold=$(RUNS=1 timed evict qemu-img convert -O raw top.vmdk "$OUT/readpath.raw")
printf '%-36s %7ss\n' "qemu-img convert -O raw" "$cold"
printf '%-36s %7ss\n' "read allocated layer bytes" "$(timed evict read_allocated)"
rm -f "$OUT/readpath.raw"

for path in buffered direct; do
  evict
  "$V" backup top.vmdk -o "$OUT/readpath.vdar" --force --read-path "$path" >/dev/null 2>&1
  echo "page cache held by the layers after a cold backup --read-path $path: $(cached_mib) MiB"
done
rm -f "$OUT/readpath.vdar"
