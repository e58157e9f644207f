#!/usr/bin/env bash
# Prepares this checkout for `cargo build --release --features cuda` without the LLVM download
# that burn's CUDA backend would otherwise do at build time (../shared/design/GPU-NOTES.md):
#
#   burn/cuda → cubecl-cuda → cubecl-llvm (NVPTX) → build-dependency tracel-llvm-bundler, whose
#   build script fetches an LLVM 23.1 archive from GitHub unless
#   `$XDG_DATA_HOME/tracel/tracel-llvm-23.1.0-4/.tracel-llvm-installed` exists.
#
# This installs PyPI's relocatable static LLVM 23.1 (`mlc-llvm-static`, with NVPTX and its own
# llvm-config) into .llvm-sdk/ and lays out that folder under .tracel-data/ with links into it;
# .cargo/config.toml points XDG_DATA_HOME at .tracel-data/ for cargo. Both folders are ignored
# by git. Needs python3 with pip and PyPI (about 90 MB). Idempotent; run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."

PKG='mlc-llvm-static[all]==23.1.1.post0'
SDK=.llvm-sdk
STATIC="$SDK/mlc_llvm_static/static"
PREFIX=.tracel-data/tracel/tracel-llvm-23.1.0-4

if [ ! -x "$STATIC/bin/llvm-config" ]; then
  rm -rf "$SDK"
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --target "$SDK" "$PKG"
fi
version=$("$STATIC/bin/llvm-config" --version)
case "$version" in
  23.1.*) ;;
  *) echo "error: $STATIC/bin/llvm-config reports LLVM $version, expected 23.1.x" >&2; exit 1 ;;
esac
if ! "$STATIC/bin/llvm-config" --targets-built | grep -qw NVPTX; then
  echo "error: the LLVM in $STATIC was built without the NVPTX target" >&2
  exit 1
fi

# Only what is missing or wrong is (re)made: the bundler's build script watches the marker
# file, and a newer one would rebuild cubecl-llvm and everything above it.
mkdir -p "$PREFIX"
for d in bin include lib share; do
  if [ "$(readlink "$PREFIX/$d" 2>/dev/null)" != "$PWD/$STATIC/$d" ]; then
    ln -sfn "$PWD/$STATIC/$d" "$PREFIX/$d"
  fi
done
[ -e "$PREFIX/.tracel-llvm-installed" ] || touch "$PREFIX/.tracel-llvm-installed"
echo "LLVM $version for burn's CUDA backend: $PREFIX -> $STATIC"
echo "next: cargo build --release --features cuda   (README, GPU)"
