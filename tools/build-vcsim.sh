#!/usr/bin/env bash
# Builds govmomi's vSphere simulator (tools/vcsim/*.go) into
# ${CARGO_TARGET_DIR:-target}/vcsim/vcsim from Debian packages only: Go in GOPATH mode against
# /usr/share/gocode (golang-github-vmware-govmomi-dev), no module downloads.
# Installs the two packages when missing. Skips the build when the binary is newer than the Go files.
# Prints the binary's path on stdout as its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

src=tools/vcsim
out_dir="${CARGO_TARGET_DIR:-target}/vcsim"
bin="$out_dir/vcsim"
gopath=/usr/share/gocode

fresh=1
for f in "$src"/*.go "$0"; do [ "$bin" -nt "$f" ] || fresh=0; done
if [ -x "$bin" ] && [ "$fresh" = 1 ]; then
  echo "$bin"
  exit 0
fi

need=()
command -v go >/dev/null || [ -x /usr/lib/go/bin/go ] || need+=(golang-go)
[ -d "$gopath/src/github.com/vmware/govmomi/simulator" ] || need+=(golang-github-vmware-govmomi-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "build-vcsim: installing ${need[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
GO=$(command -v go || echo /usr/lib/go/bin/go)

mkdir -p "$out_dir"
# Go needs a build cache; without HOME (or XDG_CACHE_HOME) it has no default.
if [ -z "${GOCACHE:-}" ] && [ -z "${HOME:-}" ] && [ -z "${XDG_CACHE_HOME:-}" ]; then
  export GOCACHE="$PWD/$out_dir/go-build"
fi

start=$(date +%s.%N)
# GOPATH mode: imports resolve under $gopath/src; GOFLAGS cleared so no -mod= flag applies.
GO111MODULE=off GOPATH="$gopath" GOFLAGS= GOPROXY=off CGO_ENABLED=0 \
  "$GO" build -o "$bin.tmp" "./$src"
mv "$bin.tmp" "$bin"
end=$(date +%s.%N)
printf 'build-vcsim: built %s in %.1fs\n' "$bin" "$(awk "BEGIN{print $end - $start}")" >&2
echo "$bin"
