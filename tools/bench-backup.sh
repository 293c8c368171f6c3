#!/usr/bin/env bash
# End-to-end backup/restore benchmark: vdar against borg, restic and qemu-img + zstd on the same
# VM disk, same run. Needs borgbackup, restic, zstd, hyperfine, GNU time (apt-get install ...).
#
# The disk: an ESX-style chain with real data, $SIZE virtual (default 6G), under half allocated:
#   base  vmfs flat = an ext4 image populated from /usr/share, /usr/bin, /usr/local, /usr/lib/x86_64-linux-gnu
#         (mke2fs -d, no mount);
#   mid   vmfsSparse (COWD): 4000 rewritten 4-64 KiB ranges holding real bytes (a shared library);
#   top   seSparse: 4000 rewritten 4-256 KiB ranges, some zero/unmapped grains.
# Peers back up the flattened disk (qemu-img convert -O raw of the chain, made once, untimed):
#   borg create --chunker-params fixed,4194304 --compression zstd,3 (as the issue asks);
#   restic backup --stdin (compression auto = zstd);
#   qemu-img convert -O raw + zstd -T0 -3 (timed together, from the chain).
# (SETUP_ONLY=1: build the chain and stop.)
# Reported: wall-clock medians, throughput, sizes, the compression floor (allocated bytes /
# all-core zstd -3 throughput on the same data), peak RSS, and restore vs zstd -d.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-6G}
RUNS=${RUNS:-3}
# qemu-img + zstd takes minutes per run and trails by 30-40x: fewer runs may do (QEMU_RUNS=1).
QEMU_RUNS=${QEMU_RUNS:-$RUNS}
DIR=${BENCH_DIR:-/var/tmp/vdar-bench-backup}
cargo build -q --release --bin vdar --bin vdar-fixture --features fixture
V=${CARGO_TARGET_DIR:-$PWD/target}/release/vdar
F=${CARGO_TARGET_DIR:-$PWD/target}/release/vdar-fixture
# Real bytes for the redo logs: the largest shared library around (an ELF image, partly compressible).
SRC=$(find /root/.rustup/toolchains /usr/lib/x86_64-linux-gnu -maxdepth 3 -name '*.so*' -type f \
        -printf '%s %p\n' 2>/dev/null | sort -n | tail -n 1 | cut -d' ' -f2)
mkdir -p "$DIR"; cd "$DIR"

if [ ! -f top.vmdk ]; then
  rm -rf stage ./*.vmdk
  mkdir stage
  cp -a /usr/share /usr/bin /usr/local stage/
  mkdir -p stage/lib && cp -a /usr/lib/x86_64-linux-gnu stage/lib/ 2>/dev/null || true
  $F flat base "$SIZE"
  rm base-flat.vmdk
  E2FSPROGS_FAKE_TIME=1700000000 mke2fs -q -t ext4 -U 0b5e0000-0000-4000-8000-000000000001 \
    -E root_owner=0:0 -d stage base-flat.vmdk "$SIZE"
  rm -rf stage
  python3 - "$SIZE" "$SRC" > regions.sh <<'PY'
import os, random, sys
size, src = sys.argv[1], sys.argv[2]
cap = int(size[:-1]) * {"G": 1 << 30, "M": 1 << 20}[size[-1]]
srclen = os.path.getsize(src)
r = random.Random(7)
def spread(n, hi):
    out, used = [], set()
    while len(out) < n:
        ln = r.randrange(4096, hi + 1, 4096); off = r.randrange(0, cap - ln, 4096)
        if any(u in used for u in range(off >> 20, ((off + ln) >> 20) + 1)): continue
        used.update(range(off >> 20, ((off + ln) >> 20) + 1)); out.append((off, ln))
    return sorted(out)
def real(o, l): return f"S:{o}:{l}:{r.randrange(0, srclen - l, 4096)}:{src}"
mid = [f"Z:{o}:{l}" if r.random() < 0.05 else real(o, l) for o, l in spread(4000, 65536)]
top = []
for o, l in spread(4000, 262144):
    k = r.random()
    top.append(f"Z:{o}:{l}" if k < 0.03 else f"U:{o}:{l}" if k < 0.06 else real(o, l))
print(f'MID="{" ".join(mid)}"'); print(f'TOP="{" ".join(top)}"')
PY
  . ./regions.sh
  $F delta cowd mid base.vmdk $MID
  $F delta sesparse top mid.vmdk $TOP
  qemu-img convert -O raw top.vmdk flat.raw
fi
# SETUP_ONLY=1: stop once the chain exists (tools/bench-incremental.sh builds on it).
[ "${SETUP_ONLY:-0}" = 1 ] && exit 0
$V inspect top.vmdk
DATA=$($V inspect --json top.vmdk | python3 -c 'import json,sys; print(json.load(sys.stdin)["disks"][0]["data_bytes"])')

# Compression floor: the chain's allocated bytes compressed by zstd -3 on all cores, timed in
# the same hyperfine run as vdar and its peers (this shared machine's speed drifts by tens of
# percent over minutes, so numbers taken apart in time do not compare). The bytes are exactly
# the data runs of the collapsed disk (vdar cat keeps zero runs as holes; SEEK_DATA finds the
# rest): a slice of the raw image would mix in zero runs, which zstd crosses at memory speed,
# and flatter the floor.
$V cat top.vmdk -o cat.raw --force
python3 - cat.raw sample.bin <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY); size = os.fstat(fd).st_size; off = 0
with open(sys.argv[2], "wb") as out:
    while off < size:
        try:
            d = os.lseek(fd, off, os.SEEK_DATA)
        except OSError:
            break
        off = os.lseek(fd, d, os.SEEK_HOLE)
        for p in range(d, off, 1 << 28):
            out.write(os.pread(fd, min(1 << 28, off - p), p))
PY
rm -f cat.raw

rm -rf borg restic out.vdar* q.raw q.raw.zst restored cold.json
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export RESTIC_PASSWORD=bench RESTIC_REPOSITORY=$DIR/restic RESTIC_CACHE_DIR=$DIR/restic-cache
hyperfine --runs "$RUNS" --export-json backup.json \
  --prepare "rm -rf borg restic restic-cache out.vdar q.raw q.raw.zst; borg init -e none borg; restic init -q >/dev/null; sync" \
  -n "vdar backup" "$V backup top.vmdk -o out.vdar" \
  -n "floor: zstd -T0 -3 of the data bytes" "zstd -q -T0 -3 -c sample.bin > /dev/null" \
  -n "borg create fixed 4M zstd,3" "borg create --chunker-params fixed,4194304 --compression zstd,3 borg::a flat.raw" \
  -n "restic backup --stdin" "restic backup -q --stdin --stdin-filename flat.raw < flat.raw"
# qemu-img is slow (minutes per run): timed on its own so the rows above stay close in time.
hyperfine --runs "$QEMU_RUNS" --export-json qemu.json \
  --prepare "rm -f q.raw q.raw.zst; sync" \
  -n "qemu-img convert + zstd -T0 -3" "qemu-img convert -O raw top.vmdk q.raw && zstd -q -T0 -3 q.raw -o q.raw.zst"
rm -f sample.bin

# Sizes (from the last run of each).
rm -rf borg restic restic-cache out.vdar q.raw q.raw.zst
borg init -e none borg; borg create --chunker-params fixed,4194304 --compression zstd,3 borg::a flat.raw
restic init -q >/dev/null; restic backup -q --stdin --stdin-filename flat.raw < flat.raw
$V backup top.vmdk -o out.vdar --force 2> /dev/null
zstd -q -T0 -3 flat.raw -o flat.raw.zst -f
VDAR_SIZE=$(stat -c %s out.vdar); BORG_SIZE=$(du -sb borg | cut -f1); ZST_SIZE=$(stat -c %s flat.raw.zst)
RESTIC_SIZE=$(du -sb restic | cut -f1)


# Peak RSS.
rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; }
RSS_BACKUP=$(rss $V backup top.vmdk -o out2.vdar)
rm -f out2.vdar
RSS_RESTORE=$(rss $V restore out.vdar --to restored --force)
cmp restored/top/base.raw flat.raw && echo "restore identical to qemu-img's flat image"

# Cold page cache: buffered reads against O_DIRECT reads (the default) of the layer files (root
# only: the cache is dropped before each run). The archive goes to /dev/null so only reading
# differs. tools/bench-readpath.sh compares the two warm too.
if [ -w /proc/sys/vm/drop_caches ]; then
  hyperfine --runs "$RUNS" --export-json cold.json \
    --prepare "sync; echo 3 > /proc/sys/vm/drop_caches" \
    -n "vdar backup --read-path buffered (cold cache)" \
    "$V backup --read-path buffered top.vmdk -o /dev/null" \
    -n "vdar backup --read-path direct (cold cache)" \
    "$V backup --read-path direct top.vmdk -o /dev/null"
fi

# vdar fsyncs what it restores; plain zstd -d leaves it in the page cache, so it is timed both
# ways. `vdar verify` decodes and checks everything without writing: the decode speed alone,
# against zstd -d to /dev/null.
hyperfine --runs "$RUNS" --export-json restore.json \
  --prepare "rm -rf restored r.raw; sync" \
  -n "vdar restore (fsync)" "$V restore out.vdar --to restored" \
  -n "zstd -d" "zstd -q -d flat.raw.zst -o r.raw" \
  -n "zstd -d + sync" "zstd -q -d flat.raw.zst -o r.raw && sync r.raw" \
  -n "vdar verify (decode only)" "$V verify out.vdar" \
  -n "zstd -d > /dev/null" "zstd -q -d -c flat.raw.zst > /dev/null"

python3 - "$DATA" "$VDAR_SIZE" "$BORG_SIZE" "$ZST_SIZE" "$RSS_BACKUP" "$RSS_RESTORE" "$RESTIC_SIZE" <<'PY'
import json, sys
data, vsize, bsize, zsize, rssb, rssr, rsize = sys.argv[1:]
data = int(data)
b = {r["command"]: r["median"] for r in json.load(open("backup.json"))["results"]}
b.update({r["command"]: r["median"] for r in json.load(open("qemu.json"))["results"]})
floor = b.pop("floor: zstd -T0 -3 of the data bytes")
r = {x["command"]: x["median"] for x in json.load(open("restore.json"))["results"]}
v = b["vdar backup"]
print(f"allocated (collapsed data) bytes: {data/2**30:.2f} GiB")
for k, t in b.items():
    print(f"  {k:<34} {t:8.2f} s  {data/t/1e6:8.1f} MB/s of allocated data  ({t/v:.2f}x vdar's time)")
print(f"  compression floor (zstd -T0 -3 of the data bytes, {data/floor/1e6:.0f} MB/s): {floor:.2f} s; vdar is {100*(v/floor-1):+.0f}% over it")
# The issue's targets side by side: 3x restic against within 20% of the floor. When restic
# takes less than 3x the floor's time, no level-3 compressor near the floor reaches 3x.
rest = b["restic backup --stdin"]
print(f"  restic / vdar {rest/v:.2f}x (target 3x); restic / floor {rest/floor:.2f}x; borg / vdar {b['borg create fixed 4M zstd,3']/v:.2f}x (target 2x)")
print(f"sizes: vdar archive {int(vsize)/2**20:.1f} MiB, borg repo {int(bsize)/2**20:.1f} MiB, restic repo {int(rsize)/2**20:.1f} MiB, zstd -3 of flat {int(zsize)/2**20:.1f} MiB")
for k, t in r.items():
    print(f"  {k:<34} {t:8.2f} s")
print(f"peak RSS: backup {int(rssb)/1024:.0f} MiB, restore {int(rssr)/1024:.0f} MiB")
import os
if os.path.exists("cold.json"):
    for x in json.load(open("cold.json"))["results"]:
        print(f"  {x['command']:<34} {x['median']:8.2f} s")
PY
