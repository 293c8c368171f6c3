#!/usr/bin/env bash
# Incremental backup benchmark: vdar's three change sources against borg's and restic's second
# runs on the same changed disk, same run. Needs what tools/bench-backup.sh needs.
#
# The disk: bench-backup.sh's 6 GiB chain (ext4 of /usr, COWD and SEsparse layers of real bytes;
# built there with SETUP_ONLY=1 when missing). The change, a package upgrade: a new SEsparse
# redo log on it holding about 5% of the allocated bytes: files written in a few clusters
# (contiguous 256 KiB - 4 MiB runs of a real shared library) and scattered 4 KiB metadata
# writes. The CBT list names exactly those ranges.
#   full      vdar backup of the old chain (with its catalog; untimed base for the rest)
#   redo-log  vdar backup upd.vmdk --base full.vcat         (reads the new log's grains)
#   cbt       vdar backup upd.vmdk --base full.vcat --changed-areas cbt1.json
#   dedup     vdar backup upd.vmdk --base full.vcat --read-all (reads everything)
#   borg / restic: a second `create`/`backup` of the flattened changed disk into a repository
#   holding the first (restored from a copy before each run).
# Then 7 more such changes, an incremental each, and the restore of the base + 8 incrementals
# against the restore of one full archive of the same disk.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DIR=${BENCH_DIR:-/var/tmp/vdar-bench-backup}
[ -f "$DIR/top.vmdk" ] || SETUP_ONLY=1 BENCH_DIR=$DIR bash tools/bench-backup.sh
cargo build -q --release --bin vdar --bin vdar-fixture --features fixture
V=${CARGO_TARGET_DIR:-$PWD/target}/release/vdar
F=${CARGO_TARGET_DIR:-$PWD/target}/release/vdar-fixture
SRC=$(find /root/.rustup/toolchains /usr/lib/x86_64-linux-gnu -maxdepth 3 -name '*.so*' -type f \
        -printf '%s %p\n' 2>/dev/null | sort -n | tail -n 1 | cut -d' ' -f2)
cd "$DIR"
rm -rf inc && mkdir inc && cd inc

# One upgrade: regions for the fixture writer, and the CBT list of the same ranges.
# upgrade N PARENT: writes upd$N.vmdk over PARENT and cbt$N.json.
upgrade() {
  python3 - "$1" "$SRC" "$(stat -c %s ../flat.raw)" <<'PY' > regions.sh
import json, os, random, sys
n, src, cap = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
srclen = os.path.getsize(src)
r = random.Random(100 + n)
out = []
# Files: 3 clusters of 12 files, each file contiguous, 256 KiB - 4 MiB.
starts = []
for _ in range(3):
    at = r.randrange(0, cap - (192 << 20), 1 << 20)
    starts.append(at)
    for _ in range(12):
        ln = r.randrange(256 << 10, (4 << 20) + 1, 4096)
        out.append((at, ln)); at += ln + r.randrange(0, 256 << 10, 4096)
# Metadata, 4 KiB each: ext4 keeps a file's inode, bitmaps and directory blocks in its block
# group (128 MiB), so most land near the files; some anywhere (other directories, the journal).
for k in range(300):
    if k % 10:
        near = starts[k % 3] + r.randrange(-(64 << 20), 128 << 20, 4096)
        out.append((min(max(near, 0), cap - 4096), 4096))
    else:
        out.append((r.randrange(0, cap - 4096, 4096), 4096))
out.sort()
merged = []
for o, l in out:
    if merged and o <= merged[-1][0] + merged[-1][1]:
        merged[-1] = (merged[-1][0], max(merged[-1][1], o + l - merged[-1][0]))
    else:
        merged.append((o, l))
regions = [f"S:{o}:{l}:{r.randrange(0, srclen - l, 4096)}:{src}" for o, l in merged]
print(f'REGIONS="{" ".join(regions)}"')
print(f"CHANGED={sum(l for _, l in merged)}")
areas = [{"start": o, "length": l} for o, l in merged]
json.dump({"disks": [{"disk": f"upd{n}.vmdk", "since": f"cbt/{n - 1}", "change_id": f"cbt/{n}",
           "areas": areas}]}, open(f"cbt{n}.json", "w"))
json.dump([[o, l] for o, l in merged], open(f"areas{n}.json", "w"))
PY
  . ./regions.sh
  $F delta sesparse "upd$1" "$2" $REGIONS > /dev/null
  echo "$CHANGED"
}

# The base: the old chain, with change id cbt/0 (from a list since "*").
echo '{"disks":[{"disk":"top.vmdk","since":"*","change_id":"cbt/0","areas":[]}]}' > cbt0.json
ln -sf ../top.vmdk ../top-sesparse.vmdk ../mid.vmdk ../mid-delta.vmdk ../base.vmdk ../base-flat.vmdk .
$V backup top.vmdk -o full.vdar --catalog full.vcat --changed-areas cbt0.json 2> /dev/null
CHANGED=$(upgrade 1 top.vmdk)
qemu-img convert -O raw upd1.vmdk flat1.raw
# zstd -3 of exactly the changed bytes, and of the 4 MiB chunks they touch.
python3 - flat1.raw areas1.json changed.bin chunks.bin <<'PY'
import json, sys
f = open(sys.argv[1], "rb"); areas = json.load(open(sys.argv[2]))
with open(sys.argv[3], "wb") as o:
    for s, l in areas:
        f.seek(s); o.write(f.read(l))
chunks = sorted({c for s, l in areas for c in range(s >> 22, ((s + l - 1) >> 22) + 1)})
with open(sys.argv[4], "wb") as o:
    for c in chunks:
        f.seek(c << 22); o.write(f.read(4 << 20))
print(f"changed: {sum(l for _, l in areas)} bytes in {len(areas)} ranges, touching {len(chunks)} chunks of 4 MiB", file=sys.stderr)
PY
Z_CHANGED=$(zstd -q -3 -c changed.bin | wc -c); Z_CHUNKS=$(zstd -q -3 -c chunks.bin | wc -c)
rm -f changed.bin chunks.bin

export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$PWD/restic-cache BORG_CACHE_DIR=$PWD/borg-cache
# borg's security directory remembers the newest manifest it saw per repository id: it, too, is
# restored with each repository copy, or the next run takes the copy for a rolled-back repo.
export BORG_SECURITY_DIR=$PWD/borg-security
# borg archives a symlink as a symlink: the disk is hard-linked under one name for both runs.
# Each second run starts from a copy of the repository and of its cache as the first left them
# (a cache newer than its repository is refused).
rm -rf borg0 restic0 borg-cache borg-security && borg init -e none borg0 > /dev/null
ln -f ../flat.raw flat.raw
borg create --chunker-params fixed,4194304 --compression zstd,3 borg0::a flat.raw
cp -a borg-cache borg-cache0; cp -a borg-security borg-security0
RESTIC_REPOSITORY=$PWD/restic0 restic init -q > /dev/null
RESTIC_REPOSITORY=$PWD/restic0 restic backup -q --stdin --stdin-filename flat.raw < ../flat.raw
# The second runs read the same file name as the first, as a nightly job would.
mv flat1.raw flat.raw.new
# vdar's runs need only their output removed; the peers' need their repositories copied back,
# which would leave vdar's runs behind a page cache full of dirty copies.
hyperfine --runs "$RUNS" --export-json inc.json --prepare "rm -f o.vdar; sync" \
  -n "vdar full backup" "$V backup upd1.vmdk -o o.vdar" \
  -n "vdar incremental, redo log" "$V backup upd1.vmdk -o o.vdar --base full.vcat" \
  -n "vdar incremental, CBT" "$V backup upd1.vmdk -o o.vdar --base full.vcat --changed-areas cbt1.json" \
  -n "vdar incremental, dedup" "$V backup upd1.vmdk -o o.vdar --base full.vcat --read-all" \
  -n "vdar incremental, dedup from the base archive" "$V backup upd1.vmdk -o o.vdar --base full.vdar --read-all"
hyperfine --runs "$RUNS" --export-json peers.json \
  --prepare "rm -rf borg restic borg-cache borg-security; cp -a borg0 borg; cp -a borg-cache0 borg-cache; cp -a borg-security0 borg-security; cp -a restic0 restic; ln -f flat.raw.new flat.raw; sync" \
  -n "borg create (second run)" "borg create --chunker-params fixed,4194304 --compression zstd,3 borg::b flat.raw" \
  -n "restic backup (second run)" "RESTIC_REPOSITORY=$PWD/restic restic backup -q --stdin --stdin-filename flat.raw < flat.raw"
for s in redo cbt dedup dedup-archive; do
  base=full.vcat
  case $s in
    redo) extra=() ;; cbt) extra=(--changed-areas cbt1.json) ;; dedup) extra=(--read-all) ;;
    dedup-archive) extra=(--read-all); base=full.vdar ;;
  esac
  $V backup upd1.vmdk -o "$s.vdar" --base "$base" "${extra[@]}" 2> /dev/null
done
rm -rf borg restic borg-cache borg-security; cp -a borg0 borg; cp -a borg-cache0 borg-cache
cp -a borg-security0 borg-security; cp -a restic0 restic
borg create --chunker-params fixed,4194304 --compression zstd,3 borg::b flat.raw
RESTIC_REPOSITORY=$PWD/restic restic backup -q --stdin --stdin-filename flat.raw < flat.raw.new
BORG_GROWTH=$(( $(du -sb borg | cut -f1) - $(du -sb borg0 | cut -f1) ))
RESTIC_GROWTH=$(( $(du -sb restic | cut -f1) - $(du -sb restic0 | cut -f1) ))
# Every incremental restores to the changed disk.
for s in redo cbt dedup dedup-archive; do
  rm -rf r && $V restore "$s.vdar" --base full.vdar --to r 2> /dev/null
  cmp r/*/base.raw flat.raw.new && echo "$s incremental restores identical to qemu-img's image"
done
rm -rf r borg0 restic0 borg restic restic-cache borg-cache borg-cache0 borg-security borg-security0 flat.raw
# The same change at 1 MiB chunks (a chain is cut in its full backup's chunk size).
$V backup top.vmdk -o full1m.vdar --catalog full1m.vcat --changed-areas cbt0.json --chunk-size 1M 2> /dev/null
$V backup upd1.vmdk -o cbt1m.vdar --base full1m.vcat --changed-areas cbt1.json 2> /dev/null
FULL1M=$(stat -c %s full1m.vdar); CBT1M=$(stat -c %s cbt1m.vdar); rm -f full1m.vdar full1m.vcat

# A week: 7 more upgrades, an incremental (CBT) each on the previous, then restore the newest
# with its 8 bases against a full archive of the same disk.
cp cbt.vdar inc1.vdar; $V catalog inc1.vdar -o inc1.vcat 2> /dev/null
for n in 2 3 4 5 6 7 8; do
  upgrade $n "upd$((n - 1)).vmdk" > /dev/null
  $V backup "upd$n.vmdk" -o "inc$n.vdar" --base "inc$((n - 1)).vcat" --catalog "inc$n.vcat" \
    --changed-areas "cbt$n.json" 2> /dev/null
done
$V backup upd8.vmdk -o full8.vdar 2> /dev/null
BASES=(--base full.vdar); for n in 1 2 3 4 5 6 7; do BASES+=(--base "inc$n.vdar"); done
hyperfine --runs "$RUNS" --export-json chain.json --prepare "rm -rf r; sync" \
  -n "vdar restore of one full archive" "$V restore full8.vdar --to r" \
  -n "vdar restore of base + 8 incrementals" "$V restore inc8.vdar ${BASES[*]} --to r"
# A chain from tape, in place: the full archive from a pipe, then each incremental from a pipe
# onto the same images (each renames the VM's directory: loose disks are named after the top
# descriptor, upd1, upd2, ...).
cat > inplace.sh <<SH
set -e
rm -rf ip; $V restore - --to ip < full.vdar 2> /dev/null
$V restore - --to ip --in-place --base full.vcat < inc1.vdar 2> /dev/null
for n in 2 3 4 5 6 7 8; do
  $V restore - --to ip --in-place --base inc\$((n - 1)).vcat < inc\$n.vdar 2> /dev/null
done
SH
hyperfine --runs "$RUNS" --export-json tape.json --prepare "rm -rf ip r; sync" \
  -n "vdar restore of one full archive from a pipe" "$V restore - --to r < full8.vdar" \
  -n "vdar full + 8 incrementals in place, from pipes" "bash inplace.sh"
bash inplace.sh && \
  qemu-img convert -O raw upd8.vmdk want8.raw && cmp ip/*/base.raw want8.raw && \
  echo "the chain applied in place is identical to qemu-img's image"
rm -rf ip want8.raw
$V restore inc8.vdar "${BASES[@]}" --to r 2> /dev/null
qemu-img convert -O raw upd8.vmdk want8.raw
cmp r/*/base.raw want8.raw && echo "the week's chain restores identical to qemu-img's image"
rm -rf r want8.raw

python3 - "$CHANGED" "$Z_CHANGED" "$Z_CHUNKS" "$BORG_GROWTH" "$RESTIC_GROWTH" "$FULL1M" "$CBT1M" <<'PY'
import json, os, sys
changed, zc, zk, bg, rg, f1m, c1m = map(int, sys.argv[1:])
t = {r["command"]: r["median"] for f in ["inc.json", "peers.json"] for r in json.load(open(f))["results"]}
full = t["vdar full backup"]
print(f"change: {changed/2**20:.1f} MiB; zstd -3 of it {zc/2**20:.1f} MiB, of the 4 MiB chunks it touches {zk/2**20:.1f} MiB")
for k, v in t.items():
    print(f"  {k:<32} {v:8.2f} s  ({100*v/full:5.1f}% of the full backup)")
for s in ["redo", "cbt", "dedup", "dedup-archive"]:
    n = os.path.getsize(f"{s}.vdar")
    print(f"  {s+'.vdar':<32} {n/2**20:8.1f} MiB ({n/zc:.2f}x the compressed change, {n/zk:.2f}x its chunks)")
print(f"  borg repository growth {bg/2**20:.1f} MiB, restic {rg/2**20:.1f} MiB")
print(f"  at 1 MiB chunks: full {f1m/2**20:.1f} MiB, CBT incremental {c1m/2**20:.1f} MiB ({c1m/zc:.2f}x the compressed change)")
b, r = t["borg create (second run)"], t["restic backup (second run)"]
for k in ["vdar incremental, redo log", "vdar incremental, CBT", "vdar incremental, dedup",
          "vdar incremental, dedup from the base archive"]:
    print(f"  borg / {k}: {b/t[k]:.1f}x, restic / it: {r/t[k]:.1f}x")
c = {x["command"]: x["median"] for x in json.load(open("chain.json"))["results"]}
c.update({x["command"]: x["median"] for x in json.load(open("tape.json"))["results"]})
for k, v in c.items():
    print(f"  {k:<40} {v:8.2f} s")
PY
