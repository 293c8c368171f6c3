#!/usr/bin/env bash
# vSphere backups against govmomi's simulator on loopback, same chain, same run:
#   - `vdar backup` of the chain's files read locally (the baseline);
#   - `vdar backup --vsphere --vm` over the network transport (ranged GETs on /folder);
#   - the orchestration alone (login, snapshot, layout, remove) on a VM with a 1 MiB disk;
#   - restores of the backup onto the datastore, `--upload files` against `--upload nfc`.
# The chain is tools/bench-chain.sh's ESX chain (flat base, COWD, SEsparse) at $SIZE (8G; at least 4G),
# linked into the simulated datastore; its thin flat base is a sparse file. The network backup
# runs with change tracking on (vdar asks QueryChangedDiskAreas "*" and reads the base only
# where it is in use; tools/vcsim/cbt.go answers it) and off (the base fetched whole, holes
# included). vcsim computes its answer with qemu-img once per chain state and caches it, as
# ESX answers from its change tracking file: one untimed backup warms that cache. Every timed
# backup starts with the layer files evicted from the page cache. Reports median wall times
# of $RUNS, throughput in virtual bytes per second, the CPU seconds vcsim spent serving one
# backup (it shares this machine's cores with vdar), and the bytes fetched over HTTP against
# the layer files' sizes and their allocated bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
SIZE=${SIZE:-8G}
DIR=${BENCH_DIR:-/var/tmp/vdar-bench-chain}
SETUP_ONLY=1 SIZE=$SIZE BENCH_DIR=$DIR tools/bench-chain.sh >/dev/null
cargo build -q --release --bin vdar
V=${CARGO_TARGET_DIR:-$PWD/target}/release/vdar
SIM=$(bash tools/build-vcsim.sh | tail -n 1)
PY=${VDAR_PYTHON:-python3}
export VDAR_VSPHERE_USER=user VDAR_VSPHERE_PASSWORD=pass
LAYERS=(base-flat.vmdk mid-delta.vmdk top-sesparse.vmdk)

log=$(mktemp)
# vcsim makes its datastore directories under TMPDIR and cannot remove them once killed.
simtmp=$(mktemp -d)
trap 'rm -rf "$simtmp" "$log"' EXIT
# The simulator exits when its stdin closes: hold a pipe open for the script's lifetime.
exec 3> >(TMPDIR=$simtmp "$SIM" -listen 127.0.0.1:0 >"$log" 2>/dev/null)
sim_pid=$!
for _ in $(seq 100); do grep -q VCSIM_READY "$log" && break; sleep 0.1; done
URL=$(sed -n 's/^VCSIM_URL=//p' "$log")
DS=$(sed -n 's/^VCSIM_DATASTORE LocalDS_0=//p' "$log")
mkdir -p "$DS/bench" "$DS/tiny"
for f in base.vmdk mid.vmdk top.vmdk "${LAYERS[@]}"; do ln -sf "$DIR/$f" "$DS/bench/$f"; done
: > "$DS/bench/top-flat.vmdk"
qemu-img create -q -f vmdk "$DS/tiny/tiny.vmdk" 1M
: > "$DS/tiny/tiny-flat.vmdk"
"$PY" tools/vcsim/client.py "$URL" attach DC0_H0_VM0 "[LocalDS_0] bench/top.vmdk" \
  "$(numfmt --from=iec "$SIZE")"
# A .vmx that names the disk, as ESX keeps it (vcsim's is empty), for the restores below.
printf 'displayName = "DC0_H0_VM0"\nscsi0.virtualDev = "pvscsi"\nscsi0:0.fileName = "%s"\n' \
  "/vmfs/volumes/LocalDS_0/bench/top.vmdk" > "$DS/DC0_H0_VM0/DC0_H0_VM0.vmx"
"$PY" tools/vcsim/client.py "$URL" attach DC0_H0_VM1 "[LocalDS_0] tiny/tiny.vmdk" 1048576
cbt() { "$PY" tools/vcsim/client.py "$URL" cbt DC0_H0_VM0 "$1"; }

evict() {
  python3 - "${LAYERS[@]/#/$DIR/}" <<'PY'
import os, sys
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
PY
}
none() { :; }

# Median wall time of RUNS runs of "$@" after the preparation $1.
timed() {
  local prep=$1; shift
  local times=()
  for _ in $(seq "$RUNS"); do
    $prep
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null 2>&1
    t1=$(date +%s.%N)
    times+=("$(echo "$t1 - $t0" | bc)")
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR] = $1} END {printf "%.2f", a[int((NR + 1) / 2)]}'
}

out=$DIR/bench.vdar
virtual=$(numfmt --from=iec "$SIZE")
net=("$V" backup --vsphere "$URL" --vm DC0_H0_VM0 -o "$out" --force)
# CPU seconds (user + system) the simulator has used so far.
sim_cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$sim_pid/stat"; }
local_s=$(timed evict "$V" backup "$DIR/top.vmdk" -o "$out" --force)
cbt on
"${net[@]}" >/dev/null 2>&1
c0=$(sim_cpu)
cbt_s=$(timed evict "${net[@]}")
cbt_cpu=$(echo "($(sim_cpu) - $c0) / $RUNS" | bc -l)
cbt_fetched=$("${net[@]}" --json | python3 -c 'import json,sys; v=json.load(sys.stdin)["vsphere"][0]; print(v["fetched_bytes"], v["fetch_requests"], v["in_use_bytes"][0])' 2>/dev/null)
# Restore of the CBT backup (the archive the line above left) onto the datastore, once each
# way (each run needs a new VM name).
# vcsim's RegisterVM wants NAME.nvram and vmware.log beside the .vmx (ESX makes them); its
# NFC endpoint reads each disk stream and throws it away, where ESX would write a thin disk.
restore_onto() {
  mkdir -p "$DS/$2"
  : > "$DS/$2/$2.nvram"
  : > "$DS/$2/vmware.log"
  local t0 t1 sent
  t0=$(date +%s.%N)
  sent=$("$V" restore "$out" --vsphere "$URL" --datastore LocalDS_0 --name "$2" --upload "$1" \
    --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["vsphere"]["bytes_uploaded"])')
  t1=$(date +%s.%N)
  rm -rf "${DS:?}/$2"
  echo "$(echo "$t1 - $t0" | bc) $sent"
}
read -r files_s files_sent <<<"$(restore_onto files r-files)"
read -r nfc_s nfc_sent <<<"$(restore_onto nfc r-nfc)"
cbt off
c0=$(sim_cpu)
net_s=$(timed evict "${net[@]}")
net_cpu=$(echo "($(sim_cpu) - $c0) / $RUNS" | bc -l)
fetched=$("${net[@]}" --json | python3 -c 'import json,sys; v=json.load(sys.stdin)["vsphere"][0]; print(v["fetched_bytes"], v["fetch_requests"])')
orch_s=$(timed none "$V" backup --vsphere "$URL" --vm DC0_H0_VM1 -o "$out" --force)
tiny_local_s=$(timed none "$V" backup "$DS/tiny/tiny.vmdk" -o "$out" --force)
apparent=$(cd "$DIR" && du -cbL "${LAYERS[@]}" | tail -1 | cut -f1)
allocated=$(cd "$DIR" && du -cL --block-size=1 "${LAYERS[@]}" | tail -1 | cut -f1)
rm -f "$out"

rate() { awk -v b="$virtual" -v s="$1" 'BEGIN {printf "%.0f MiB/s", b / s / 1048576}'; }
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -r); $(date -u +%F)"
echo "chain: $SIZE virtual; layer files $apparent bytes, $allocated allocated"
printf '%-44s %8ss  %s\n' "vdar backup, files read locally (cold)" "$local_s" "$(rate "$local_s")"
versus() { printf '%-44s %8ss  %s  (%.2fx local; vcsim used %.1f s CPU)\n' "$1" "$2" "$(rate "$2")" \
  "$(echo "$local_s / $2" | bc -l)" "$3"; }
versus "vdar backup --vsphere, network, CBT (cold)" "$cbt_s" "$cbt_cpu"
versus "vdar backup --vsphere, network, no CBT" "$net_s" "$net_cpu"
printf '%-44s %8ss  (local backup of it: %ss)\n' "vdar backup --vsphere of a 1 MiB VM" "$orch_s" "$tiny_local_s"
report() {
  read -r bytes reqs in_use <<<"$2"
  awk -v w="$1" -v f="$bytes" -v r="$reqs" -v a="$apparent" -v l="$allocated" -v u="${in_use:-}" 'BEGIN {
    printf "fetched over HTTP, %s: %.0f bytes in %d requests = %.3fx the layer files, %.3fx their allocated bytes",
      w, f, r, f / a, f / l
    if (u != "") printf " (server reported %.0f bytes in use)", u
    printf "\n" }'
}
printf '%-44s %8.2fs  %s bytes uploaded\n' "vdar restore --vsphere --upload files" "$files_s" "$files_sent"
printf '%-44s %8.2fs  %s bytes uploaded\n' "vdar restore --vsphere --upload nfc" "$nfc_s" "$nfc_sent"
report "CBT" "$cbt_fetched"
report "no CBT" "$fetched"
