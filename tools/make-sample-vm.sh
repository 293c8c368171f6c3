#!/usr/bin/env bash
# Regenerates tests/data/sample-vm.tar.gz, the bundled ESX-style sample VM:
#   sample.vmx / .vmxf / .nvram / .vmsd (two snapshots)
#   sample.vmdk + sample-flat.vmdk              vmfs base, 256 MiB thin (2 MiB allocated)
#   sample-000001.vmdk + -delta.vmdk            vmfsSparse (COWD) snapshot
#   sample-000002.vmdk + -sesparse.vmdk         seSparse snapshot (current top)
# The tarball stores the sparse files sparse (tar -S), so the checked-in file stays small.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release --bin vdar-fixture --features fixture
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"${CARGO_TARGET_DIR:-target}"/release/vdar-fixture sample-vm "$tmp/sample-vm"
tar --sparse --sort=name --owner=0 --group=0 --numeric-owner --mtime=2026-01-01 \
    -C "$tmp" -cf - sample-vm | gzip -n -9 > tests/data/sample-vm.tar.gz
ls -l tests/data/sample-vm.tar.gz
