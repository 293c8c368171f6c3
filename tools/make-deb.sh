#!/usr/bin/env bash
# Builds the Debian package target/debian/vdar_VERSION-1_ARCH.deb: vdar and vdar-restore (the
# release profile: stripped), their man pages and bash, zsh and fish completions, the README,
# and the example systemd units of tools/systemd/ under /usr/share/doc/vdar/examples/ (not
# enabled). The test tool vdar-fixture is left out. Extra arguments go to cargo-deb (`--fast`,
# `-o DIR`, `--install`).
#
# cargo-deb only packages files, so the man pages and completions, which the binaries print
# from their clap definitions (`vdar man`, `vdar completions SHELL`), are generated first into
# the target dir, where Cargo.toml's [package.metadata.deb] assets list picks them up.
#
# The package's Maintainer field is "$DEBFULLNAME <$DEBEMAIL>" (as for Debian's own tools),
# else git's user.name and user.email.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-deb >/dev/null || cargo install --locked cargo-deb
# cargo-deb computes the Depends line with dpkg-shlibdeps, from dpkg-dev.
if ! command -v dpkg-shlibdeps >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dpkg-dev >/dev/null
fi
cargo build --release --locked --bin vdar --bin vdar-restore

# The target dir as cargo sees it (CARGO_TARGET_DIR, .cargo/config), as cargo-deb will.
target=$(cargo metadata --format-version 1 --no-deps --locked \
  | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
release="$target/release"
assets="$release/deb-assets"
rm -rf "$assets"
mkdir -p "$assets"
for bin in vdar vdar-restore; do
  "$release/$bin" man | gzip -9n > "$assets/$bin.1.gz"
  "$release/$bin" completions bash > "$assets/$bin.bash"
  "$release/$bin" completions zsh > "$assets/_$bin"
  "$release/$bin" completions fish > "$assets/$bin.fish"
done
gzip -9n < README.md > "$assets/README.md.gz"

maintainer=()
name=${DEBFULLNAME:-$(git config user.name || true)}
email=${DEBEMAIL:-$(git config user.email || true)}
if [ -n "$name" ] && [ -n "$email" ]; then
  maintainer=(--maintainer "$name <$email>")
else
  echo "make-deb: no DEBFULLNAME/DEBEMAIL or git user: the package has no Maintainer field" >&2
fi

cargo deb --no-build --locked "${maintainer[@]}" "$@"
