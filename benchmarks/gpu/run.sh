#!/usr/bin/env bash
# On a GPU machine (issue 18): builds osteonet's extension and the C++ runtime test against that machine's
# PyTorch with CUDA, runs the CUDA tests (tests/python/test_cuda.py, tests/python/test_runtime.py, the C++
# runtime test) and the GPU benchmark (benchmarks/bench_gpu.py). Everything it writes goes to $OUT
# (default out/gpu): build.log, probe.log, pytest.log, cpp.log, bench.log, gpu.json, gpu.md.
#
# Headers the GPU image lacks (xtensor, xtl, doctest, Eigen: Debian packages here) travel in .gpu/include,
# made here with:  mkdir -p .gpu/include/eigen3 && cp -r /usr/include/{xtensor,xtl,doctest} .gpu/include/ &&
#                  cp -r /usr/include/eigen3/Eigen .gpu/include/eigen3/
# Usage: benchmarks/gpu/run.sh [--quick]   (--quick: a short benchmark)
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
QUICK=${1:-}
PY=${PYTHON:-python3}
[ -d .gpu/include ] && cp -r .gpu/include/* /usr/local/include/ 2>/dev/null
TORCH=$($PY -c 'import os, torch; print(os.path.dirname(torch.__file__))')
ABI=$($PY -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')
# pip's torch links the CUDA runtime from its nvidia-* wheels: the C++ test links the same libcudart.
CUDART_LIB=$(find "$TORCH/.." "$TORCH/../nvidia" -name 'libcudart.so*' 2>/dev/null | head -1)  # libcudart.so.13: no .so link
CUDART=$(dirname "$CUDART_LIB")
CUDA_INC=$($PY -c 'from torch.utils.cpp_extension import CUDA_HOME; print(CUDA_HOME or "/usr/local/cuda")')/include
{
  nvidia-smi -L; $PY -c 'import torch, torchvision; print("torch", torch.__version__, "cuda", torch.version.cuda, "torchvision", torchvision.__version__)'
  echo "== C++ runtime test (background) and the extension, $(nproc) cores"
} > "$OUT/build.log" 2>&1
start=$(date +%s)
# The C++ runtime test (doctest) against the same LibTorch, built beside the extension.
( g++ -std=c++17 -O1 -DOSTEONET_WITH_CUDA=1 -D_GLIBCXX_USE_CXX11_ABI="$ABI" -Iinclude -Itests/cpp \
    -isystem "$TORCH/include" -isystem "$TORCH/include/torch/csrc/api/include" -isystem "$CUDA_INC" \
    tests/cpp/main.cpp tests/cpp/test_runtime.cpp -o /tmp/osteonet_test_runtime \
    -L"$TORCH/lib" -Wl,-rpath,"$TORCH/lib" -L"$CUDART" -Wl,-rpath,"$CUDART" \
    -Wl,--no-as-needed -ltorch -ltorch_cuda -ltorch_cpu -lc10_cuda -lc10 "$CUDART_LIB" \
  > /tmp/cpp_build.log 2>&1; echo "cpp build rc=$? after $(( $(date +%s) - start )) s" >> /tmp/cpp_build.log ) &
cpp_pid=$!
MAX_JOBS=$(nproc) $PY -m pip install --no-build-isolation --no-deps --no-index --no-compile --target /tmp/osteonet-site . \
  >> "$OUT/build.log" 2>&1
rc=$?
echo "extension build rc=$rc after $(( $(date +%s) - start )) s" >> "$OUT/build.log"
wait $cpp_pid
cat /tmp/cpp_build.log >> "$OUT/build.log"
if [ $rc != 0 ]; then grep -m20 -B2 -A3 "error" "$OUT/build.log" | tail -60; exit 1; fi
export PYTHONPATH=/tmp/osteonet-site
$PY -c 'import osteonet, torch; print("osteonet", osteonet.__version__ if hasattr(osteonet, "__version__") else "?",
        "built_with_cuda", osteonet.runtime.built_with_cuda(), "cuda", torch.cuda.is_available())' >> "$OUT/build.log" 2>&1

# A native backtrace if a process crashes (benchmarks/gpu/backtrace.c, preloaded).
gcc -shared -fPIC -O1 benchmarks/gpu/backtrace.c -o /tmp/backtrace.so && export LD_PRELOAD=/tmp/backtrace.so
export TORCH_SHOW_CPP_STACKTRACES=1
echo "== probes: one session construction per process" > "$OUT/probe.log"
for p in det_fp32_graph det_fp32 r50_bf16; do
  timeout 40 $PY benchmarks/gpu/probe.py $p >> "$OUT/probe.log" 2>&1; echo "probe $p rc=$?" >> "$OUT/probe.log"
done

echo "== pytest (CUDA tests) in 4 xdist workers: a test that crashes its worker is reported, the rest go on" > "$OUT/pytest.log"
timeout 150 $PY -m pytest -q -p no:cacheprovider -rs -n 4 tests/python/test_cuda.py >> "$OUT/pytest.log" 2>&1
echo "pytest test_cuda rc=$?" >> "$OUT/pytest.log"

if [ "$QUICK" = "--quick" ]; then args=(--quick --repeats 20); else args=(--repeats ${REPEATS:-100}); fi
timeout ${BENCH_TIMEOUT:-300} $PY benchmarks/bench_gpu.py --out "$OUT" "${args[@]}" > "$OUT/bench.log" 2>&1
echo "bench rc=$?" >> "$OUT/bench.log"

echo "== C++ runtime test" > "$OUT/cpp.log"
[ -x /tmp/osteonet_test_runtime ] && timeout 30 /tmp/osteonet_test_runtime >> "$OUT/cpp.log" 2>&1
echo "cpp rc=$?" >> "$OUT/cpp.log"
timeout ${RUNTIME_TIMEOUT:-90} $PY -m pytest -q -p no:cacheprovider -rs -x tests/python/test_runtime.py >> "$OUT/pytest.log" 2>&1
echo "pytest test_runtime rc=$?" >> "$OUT/pytest.log"
grep -E "rc=|passed|failed|native|^built" "$OUT/probe.log" "$OUT/pytest.log"; tail -3 "$OUT/cpp.log"; tail -30 "$OUT/bench.log"
