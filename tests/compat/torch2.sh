#!/usr/bin/env bash
# make test-torch2: builds the osteonet package and runs the pytest suite against Debian trixie's torch 2.x
# (python3-torch / python3-torchvision) in a throw-away trixie root made with debootstrap from Debian's
# archive, cached in $OSTEONET_TRIXIE (default build/compat/trixie; about 3 GB). Not part of `make test`
# (it would add ~25 minutes to CI); the last result is recorded in docs/building.md.
# Usage: tests/compat/torch2.sh [pytest arguments]   (default: -q tests/python tests/fuzz)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(realpath -m "${OSTEONET_TRIXIE:-build/compat/trixie}")
PKGS=python3,python3-torch,python3-torchvision,libtorch-dev,libopenblas0-pthread,python3-pybind11,python3-pytest,python3-numpy,python3-scipy,\
python3-sklearn,python3-pil,python3-setuptools,python3-pip,python3-dev,g++,libeigen3-dev,libxtensor-dev,\
ca-certificates,python3-statsmodels,python3-pydicom,python3-nibabel,python3-matplotlib,python3-tqdm,\
python3-onnx,python3-opencv,python3-skimage,python3-hypothesis,dcmtk
if [ ! -x "$ROOT/usr/bin/python3" ]; then  # (a root made earlier gets the packages added below)
  command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap; }
  echo "test-torch2: debootstrap trixie into $ROOT (once)"
  debootstrap --variant=minbase --include="$PKGS" trixie "$ROOT" http://deb.debian.org/debian >/dev/null
fi
missing=$(for p in ${PKGS//,/ }; do chroot "$ROOT" dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null |
  grep -q '^install ok installed' || echo "$p"; done)
if [ -n "$missing" ]; then
  cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
  chroot "$ROOT" bash -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(echo $missing)" >/dev/null 2>&1
fi
cleanup() { umount "$ROOT/proc" 2>/dev/null || true; }
trap cleanup EXIT
mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
# the working tree as it is (tracked and untracked files git does not ignore)
rm -rf "$ROOT/src" && mkdir -p "$ROOT/src" && git ls-files -co --exclude-standard -z | tar -c --null -T - -f - | tar -x -C "$ROOT/src"
# the ImageNet weights' cache (issue 15) travels in, so those tests run rather than fetch
[ -d "${OSTEONET_HOME:-$HOME/.cache/osteonet}" ] && mkdir -p "$ROOT/root/.cache" && \
  cp -r "${OSTEONET_HOME:-$HOME/.cache/osteonet}" "$ROOT/root/.cache/osteonet"
chroot "$ROOT" python3 -c 'import torch, torchvision, sys; print("test-torch2: Python", sys.version.split()[0],
  "torch", torch.__version__, "torchvision", torchvision.__version__)'
chroot "$ROOT" bash -c "set -o pipefail; rm -rf /opt/osteonet && cd /src && MAX_JOBS=${JOBS:-2} python3 -m pip install -q --no-build-isolation --no-deps \
  --no-index --break-system-packages --target /opt/osteonet . 2>&1 | tail -20"
args=("$@")
[ ${#args[@]} = 0 ] && args=(-q -p no:cacheprovider tests/python tests/fuzz)
chroot "$ROOT" bash -c "cd /src && PYTHONPATH=/opt/osteonet OSTEONET_HYPOTHESIS_PROFILE=ci python3 -m pytest ${args[*]}"
