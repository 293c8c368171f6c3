#!/usr/bin/env bash
# The main job on the bundled sample VM (README's first command): build vdar, unpack the
# ESX-style sample VM (vmfs base + vmfsSparse + seSparse snapshots), inspect its chain, back it
# up into one archive, verify and list the archive, restore it, and check the restored disk
# against qemu-img's reading of the original chain when qemu-img is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release --bin vdar
V=${CARGO_TARGET_DIR:-$PWD/target}/release/vdar
work=${1:-$(mktemp -d /tmp/vdar-demo.XXXXXX)}
mkdir -p "$work"
tar -xzf tests/data/sample-vm.tar.gz -C "$work"
set -x
"$V" inspect "$work/sample-vm/sample.vmx"
"$V" backup "$work/sample-vm/sample.vmx" -o "$work/sample.vdar"
"$V" verify "$work/sample.vdar"
"$V" list "$work/sample.vdar"
"$V" restore "$work/sample.vdar" --to "$work/restored"
set +x
if command -v qemu-img >/dev/null; then
  qemu-img compare -q -f vmdk -F raw "$work/sample-vm/sample-000002.vmdk" "$work/restored/sample/sample.raw" \
    && echo "demo: restored disk is identical to qemu-img's view of the original chain"
fi
echo "demo: outputs in $work"
