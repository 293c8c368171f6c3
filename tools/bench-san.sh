#!/usr/bin/env bash
# End-to-end SAN-mode benchmark: `vdar cat` and `vdar backup` of one VM read directly from its
# files vs read through a block map from fragmented LUN images (vdar-fixture lun-rig), same run;
# then
# SAN write-back (`restore --blockmap` into an eager-zeroed target on LUN images) vs restore of
# the same archive to a raw file. Write-back needs python3 (to drop the map's probes, which only
# hold for the empty target, between runs).
#
#   tools/bench-san.sh [DATA_MIB]     (default 512; needs ~3x that in free space under $TMPDIR)
#
# Each mode runs twice after a warm-up pass; the page cache is dropped before each timed run
# when /proc/sys/vm/drop_caches is writable (root), otherwise the numbers are cache-warm and the
# script says so. SAN mode is timed buffered and direct (O_DIRECT on the LUNs, the default).
set -euo pipefail
MIB=${1:-512}
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin vdar --bin vdar-fixture --features fixture
BIN=${CARGO_TARGET_DIR:-target}/release
W=$(mktemp -d "${TMPDIR:-/tmp}/vdar-bench-san.XXXXXX")
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/vm"
# A flat base with MIB MiB of mixed data (text-like, random, zero blocks) in a 2x larger disk.
"$BIN/vdar-fixture" flat "$W/vm/big" "$((MIB * 2))M" "D:0:${MIB}M:7" >/dev/null
"$BIN/vdar-fixture" lun-rig "$W/vm" "$W/rig" --luns 2 --pe 256M --block 1M --max-extent 4
drop() {
  if [ -w /proc/sys/vm/drop_caches ]; then sync; echo 3 >/proc/sys/vm/drop_caches; return 0; fi
  return 1
}
cold=yes
t() { # label, command...
  local label=$1; shift
  "$@" >/dev/null 2>&1 # warm-up / correctness pass
  for i in 1 2; do
    drop || cold=no
    local s e
    s=$(date +%s.%N)
    "$@" >/dev/null 2>"$W/stderr" || { cat "$W/stderr" >&2; exit 1; }
    e=$(date +%s.%N)
    awk -v l="$label" -v s="$s" -v e="$e" -v m="$MIB" \
      'BEGIN { printf "%-28s %6.2f s  %7.1f MiB/s of data\n", l, e - s, m / (e - s) }'
  done
}
SAN=(--blockmap "$W/rig/blockmap.json" --lun "$W/rig/lun*.img")
t "direct vdar cat" "$BIN/vdar" cat "$W/vm/big.vmdk" -o "$W/direct.raw" --force
t "SAN vdar cat (buffered)" "$BIN/vdar" cat --force -o "$W/san.raw" "${SAN[@]}" --read-path buffered -- big.vmdk
t "SAN vdar cat (direct)" "$BIN/vdar" cat --force -o "$W/san.raw" "${SAN[@]}" -- big.vmdk
t "SAN vdar cat (pread)" env VDAR_IO_BACKEND=pread "$BIN/vdar" cat --force -o "$W/san.raw" "${SAN[@]}" -- big.vmdk
cmp "$W/direct.raw" "$W/san.raw" && echo "cat outputs identical"
export SOURCE_DATE_EPOCH=1700000000
t "direct vdar backup" "$BIN/vdar" backup "$W/vm/big.vmdk" -o "$W/direct.vda" --force
t "SAN vdar backup (buffered)" "$BIN/vdar" backup -o "$W/san.vda" --force "${SAN[@]}" --read-path buffered -- big.vmdk
t "SAN vdar backup (direct)" "$BIN/vdar" backup -o "$W/san.vda" --force "${SAN[@]}" -- big.vmdk
cmp "$W/direct.vda" "$W/san.vda" && echo "archives identical"

# Write-back: the disk is 2x MIB MiB (half zeros); MiB/s below are of data, as above.
"$BIN/vdar" backup "$W/vm/big.vmdk" -o "$W/big.vdar" --chunk-size 1M >/dev/null
mkdir -p "$W/tgt"
"$BIN/vdar-fixture" flat "$W/tgt/target" "$((MIB * 2))M" >/dev/null
"$BIN/vdar-fixture" lun-rig "$W/tgt" "$W/wrig" --luns 2 --pe 256M --block 1M --max-extent 4 \
  --eager-zeroed
python3 -c 'import json,sys; m=json.load(open(sys.argv[1]))
for f in m["files"]: f["probes"]=[]
json.dump(m, open(sys.argv[2], "w"))' "$W/wrig/blockmap.json" "$W/wrig/noprobes.json"
WB=(--blockmap "$W/wrig/noprobes.json" --lun "$W/wrig/lun*.img")
t "restore to raw file" "$BIN/vdar" restore "$W/big.vdar" --to "$W/out" --force
t "write-back (zeros, verify)" "$BIN/vdar" restore "$W/big.vdar" "${WB[@]}"
t "write-back --no-verify" "$BIN/vdar" restore "$W/big.vdar" "${WB[@]}" --no-verify
t "write-back --assume-zeroed" "$BIN/vdar" restore "$W/big.vdar" "${WB[@]}" --assume-zeroed
t "write-back --direct" "$BIN/vdar" restore "$W/big.vdar" "${WB[@]}" --direct
t "write-back pwrite --direct" env VDAR_IO_BACKEND=pread "$BIN/vdar" restore "$W/big.vdar" \
  "${WB[@]}" --direct
echo "page cache dropped between runs: $cold; $(nproc) CPUs; kernel $(uname -r)"
