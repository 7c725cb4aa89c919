#!/usr/bin/env bash
# Compiles every osteonet translation unit (-fsyntax-only) against LibTorch 2.x headers: Debian
# trixie's libtorch-dev (2.6), downloaded and unpacked into a cache folder, never installed. This
# machine's LibTorch is 1.13; the check keeps the code building for pip's torch 2.x users too.
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE=$(realpath -m "${OSTEONET_COMPAT_CACHE:-build/compat}")
mkdir -p "$CACHE/lists/partial" "$CACHE/archives/partial" "$CACHE/root"
if [ ! -d "$CACHE/root/usr/include/torch" ]; then
  echo "deb http://deb.debian.org/debian trixie main" > "$CACHE/sources.list"
  o=(-o Dir::Etc::SourceList="$CACHE/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o Dir::State::Lists="$CACHE/lists" -o Dir::Cache="$CACHE" -o APT::Sandbox::User=root)
  if ! apt-get "${o[@]}" update -qq >/dev/null 2>&1; then
    echo "check_libtorch2: SKIPPED (Debian's trixie archive is not reachable from this machine)"
    exit 0
  fi
  (cd "$CACHE" && apt-get "${o[@]}" download libtorch-dev >/dev/null 2>&1)
  dpkg -x "$CACHE"/libtorch-dev_*.deb "$CACHE/root"
fi
T="$CACHE/root/usr/include"
V="$T/torch/csrc/api/include/torch/version.h"
version=$(awk '/define TORCH_VERSION_(MAJOR|MINOR|PATCH)/ {printf "%s%s", sep, $3; sep="."}' "$V")
PYINC=$(/usr/bin/python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
status=0
for f in tests/cpp/*.cpp tests/consumption/main.cpp benchmarks/cpp/*.cpp examples/cpp/*.cpp bindings/*.cpp; do
  if ! g++ -std=c++17 -fsyntax-only -Iinclude -Ibindings -Itests/cpp -isystem "$T" \
       -isystem "$T/torch/csrc/api/include" -isystem "$PYINC" -isystem /usr/include/eigen3 "$f" 2> "$CACHE/err.txt"; then
    echo "check_libtorch2: $f does not compile against LibTorch 2.x ($version):"
    grep -m5 error "$CACHE/err.txt" || true
    status=1
  fi
done
[ $status = 0 ] && echo "check_libtorch2: every translation unit compiles against LibTorch 2.x headers ($version)"
exit $status
