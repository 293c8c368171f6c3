#!/usr/bin/env bash
# Tape streaming benchmark (issue 18): does the drive buffer keep a 300 MB/s drive fed while
# compression runs? The "drive" is mbuffer limited to 300 MB/s with a 4 MiB buffer of its own
# (an LTO drive's cache is of that order), writing to /dev/null, fed through a pipe by
# `vdar backup -o -` of the bench chain (tools/bench-backup.sh's, built with SETUP_ONLY=1
# when missing). For each --drive-buffer size, vdar's own -v report gives how many times the
# drive side waited for data and for how long, and how long the backup waited for the drive.
#
# Reported per buffer size: wall time, archive bytes, stalls, seconds starved, seconds the
# backup was blocked, and the drive's utilization (busy minus starved, over busy). Needs
# mbuffer (apt-get install mbuffer).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${BENCH_DIR:-/var/tmp/vdar-bench-backup}
RATE=${RATE:-300M}
command -v mbuffer >/dev/null || { echo "bench-tape: needs mbuffer"; exit 2; }
[ -f "$DIR/top.vmdk" ] || SETUP_ONLY=1 BENCH_DIR="$DIR" bash tools/bench-backup.sh
cargo build -q --release --bin vdar
V=${CARGO_TARGET_DIR:-$PWD/target}/release/vdar
echo "machine: $(nproc) cores, $(uname -r); $(date -u +%FT%TZ); drive: mbuffer -R $RATE -m 4M"
printf '%-10s %8s %12s %7s %10s %10s %6s\n' buffer wall_s bytes stalls starved_s blocked_s util
for buf in 1M 64M 256M; do
  log=$(mktemp)
  start=$(date +%s.%N)
  "$V" -v backup "$DIR/top.vmdk" -o - --block-size 256K --drive-buffer "$buf" 2>"$log" \
    | mbuffer -q -m 4M -s 256k -R "$RATE" -A /bin/false -o /dev/null
  end=$(date +%s.%N)
  line=$(grep 'drive buffer:' "$log" || true)
  [ -n "$line" ] || { echo "bench-tape: no drive report"; cat "$log"; exit 1; }
  # "...: drive buffer: B bytes in T s; the drive waited N times, S s in all; the archive
  #  writer waited W s for room"
  read -r bytes busy stalls starved blocked < <(echo "$line" | sed -E \
    's/.*drive buffer: ([0-9]+) bytes in ([0-9.]+) s; the drive waited ([0-9]+) times, ([0-9.]+) s in all; the archive writer waited ([0-9.]+) s.*/\1 \2 \3 \4 \5/')
  util=$(python3 -c "b=$busy; s=$starved; print(f'{(b-s)/b*100:.0f}%' if b else '-')")
  printf '%-10s %8.2f %12s %7s %10s %10s %6s\n' "$buf" "$(echo "$end - $start" | bc)" \
    "$bytes" "$stalls" "$starved" "$blocked" "$util"
  rm -f "$log"
done
