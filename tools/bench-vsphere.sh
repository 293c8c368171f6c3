#!/usr/bin/env bash
# vSphere backups against govmomi's simulator on loopback, same chain, same run:
#   - `vdar backup` of the chain's files read locally (the baseline);
#   - `vdar backup --vsphere --vm` over the network transport (ranged GETs on /folder);
#   - the orchestration alone (login, snapshot, layout, remove) on a VM with a 1 MiB disk.
# The chain is tools/bench-chain.sh's ESX chain (flat base, COWD, SEsparse) at $SIZE (8G; at least 4G),
# linked into the simulated datastore. Both backups start with the layer files evicted from
# the page cache. Reports median wall times of $RUNS, throughput in virtual bytes per second,
# and the bytes fetched over HTTP against the layer files' sizes (what the file access can
# offer: a flat extent has no holes over HTTP) and their allocated bytes.
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
# The simulator exits when its stdin closes: hold a pipe open for the script's lifetime.
exec 3> >("$SIM" -listen 127.0.0.1:0 >"$log" 2>/dev/null)
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
"$PY" tools/vcsim/client.py "$URL" attach DC0_H0_VM1 "[LocalDS_0] tiny/tiny.vmdk" 1048576

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
local_s=$(timed evict "$V" backup "$DIR/top.vmdk" -o "$out" --force)
net_s=$(timed evict "$V" backup --vsphere "$URL" --vm DC0_H0_VM0 -o "$out" --force)
orch_s=$(timed none "$V" backup --vsphere "$URL" --vm DC0_H0_VM1 -o "$out" --force)
tiny_local_s=$(timed none "$V" backup "$DS/tiny/tiny.vmdk" -o "$out" --force)
fetched=$("$V" backup --vsphere "$URL" --vm DC0_H0_VM0 -o "$out" --force --json |
  python3 -c 'import json,sys; v=json.load(sys.stdin)["vsphere"][0]; print(v["fetched_bytes"], v["fetch_requests"])')
apparent=$(cd "$DIR" && du -cbL "${LAYERS[@]}" | tail -1 | cut -f1)
allocated=$(cd "$DIR" && du -cL --block-size=1 "${LAYERS[@]}" | tail -1 | cut -f1)
rm -f "$out"

rate() { awk -v b="$virtual" -v s="$1" 'BEGIN {printf "%.0f MiB/s", b / s / 1048576}'; }
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -r); $(date -u +%F)"
echo "chain: $SIZE virtual; layer files $apparent bytes, $allocated allocated"
printf '%-44s %8ss  %s\n' "vdar backup, files read locally (cold)" "$local_s" "$(rate "$local_s")"
printf '%-44s %8ss  %s  (%.2fx local)\n' "vdar backup --vsphere, network (cold)" "$net_s" "$(rate "$net_s")" \
  "$(echo "$local_s / $net_s" | bc -l)"
printf '%-44s %8ss  (local backup of it: %ss)\n' "vdar backup --vsphere of a 1 MiB VM" "$orch_s" "$tiny_local_s"
read -r bytes reqs <<<"$fetched"
awk -v f="$bytes" -v r="$reqs" -v a="$apparent" -v l="$allocated" 'BEGIN {
  printf "fetched over HTTP: %.0f bytes in %d requests = %.3fx the layer files, %.3fx their allocated bytes\n",
    f, r, f / a, f / l }'
