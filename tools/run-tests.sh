#!/usr/bin/env bash
# The whole test suite, as README's second command and CI (.ci/run) run it.
# Installs the system packages the tests use as oracles when they are missing, then checks
# formatting and lints, runs every test, and builds and briefly runs the fuzz targets.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v qemu-img   >/dev/null || need+=(qemu-utils)
command -v vmdkinfo   >/dev/null || need+=(libvmdk-utils)
command -v debugvmfs  >/dev/null || need+=(vmfs-tools)
command -v zstd       >/dev/null || need+=(zstd)
command -v xmllint    >/dev/null || need+=(libxml2-utils)
command -v tar        >/dev/null || need+=(tar)
# tests/volumes.rs: a stream spanned by mbuffer's volumes; loop devices (util-linux's losetup).
command -v mbuffer    >/dev/null || need+=(mbuffer)
command -v losetup    >/dev/null || need+=(mount)
# tests/package.rs: the man pages render without warnings, the example units verify.
command -v groff      >/dev/null || need+=(groff-base)
command -v systemd-analyze >/dev/null || need+=(systemd)
# VMware's own tools as oracles, from ../shared/tools/open-vmdk: ova-compose (tests/ovf.rs)
# needs python3 with PyYAML and lxml; vmdk-convert (tests/oracle_vmware.rs, real_vmdk.rs) is
# built from source (make, a C compiler, zlib headers).
python3 -c 'import yaml, lxml' 2>/dev/null || /usr/bin/python3 -c 'import yaml, lxml' 2>/dev/null \
  || need+=(python3-yaml python3-lxml)
command -v gcc        >/dev/null && command -v make >/dev/null || need+=(build-essential)
[ -f /usr/include/zlib.h ]          || need+=(zlib1g-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "run-tests: installing ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo fmt --all --check
cargo clippy --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --document-private-items -q
# tests/vsphere.rs runs against govmomi's vSphere simulator, built from Debian's Go toolchain
# and govmomi sources (a few minutes the first time, then cached); required, so CI cannot skip.
VDAR_VCSIM=$(bash tools/build-vcsim.sh | tail -n 1)
# The second client that checks what vdar did through the API: pyvmomi from PyPI, in a venv
# when python3 lacks it (Debian's python3-pyvmomi 6.7 cannot speak plain HTTP on Python 3.11).
VDAR_PYTHON=python3
if ! python3 -c 'import pyVmomi' 2>/dev/null; then
  venv="${CARGO_TARGET_DIR:-target}/pyvmomi"
  if [ ! -x "$venv/bin/python" ]; then
    if ! python3 -c 'import ensurepip' 2>/dev/null; then
      SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
      $SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
    fi
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'pyvmomi>=8'
  fi
  VDAR_PYTHON="$venv/bin/python"
fi
# tests/s3.rs runs against a three-node Garage cluster on loopback (S3-compatible, from
# crates.io, pinned; built with its bundled C libraries, none from the system): installed once
# into ~/.cargo/bin (about 7 minutes on 2 cores), then cached; required, so CI cannot skip.
VDAR_GARAGE=$(command -v garage || echo "${CARGO_HOME:-$HOME/.cargo}/bin/garage")
if [ ! -x "$VDAR_GARAGE" ]; then
  echo "run-tests: installing garage"
  cargo install -q --locked garage --version 2.5.0 --no-default-features \
    --features bundled-libs,sqlite
  VDAR_GARAGE="${CARGO_HOME:-$HOME/.cargo}/bin/garage"
fi
export VDAR_GARAGE VDAR_REQUIRE_GARAGE=1
export VDAR_VCSIM VDAR_PYTHON VDAR_REQUIRE_VCSIM=1
cargo test --locked

# Fuzz targets: built with cargo-fuzz (RUSTC_BOOTSTRAP lets the stable toolchain accept the
# sanitizer flags), then each run briefly so a crash on the seed inputs fails CI.
if [ "${VDAR_SKIP_FUZZ:-0}" != 1 ]; then
  command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz >/dev/null
  export RUSTC_BOOTSTRAP=1
  for t in $(cargo fuzz list --fuzz-dir tools/fuzz); do
    # Seeds are copied so the run's new inputs never land in the repository.
    corpus=$(mktemp -d)
    [ -d "tools/fuzz/seeds/$t" ] && cp "tools/fuzz/seeds/$t"/* "$corpus"/
    cargo fuzz run --fuzz-dir tools/fuzz "$t" "$corpus" -- \
      -max_total_time="${VDAR_FUZZ_SECONDS:-20}" -rss_limit_mb=2048 -max_len=262144
    rm -rf "$corpus"
  done
fi
echo "run-tests: all passed"
