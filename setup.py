"""Builds osteonet's compiled core (osteonet._core) against the installed PyTorch."""

import glob
import os

from setuptools import setup
import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))
# Eigen (Debian's libeigen3-dev) installs its headers under include/eigen3.
EIGEN = [d for d in ("/usr/include/eigen3", "/usr/local/include/eigen3") if os.path.isdir(d)]

# The torch this build links: osteonet/__init__.py refuses to import under another one (one clear line,
# not a symbol error from the dynamic loader or a silent ABI mismatch).
with open(os.path.join(ROOT, "python", "osteonet", "_build_info.py"), "w") as f:
    f.write(f'"""Written by setup.py: the torch osteonet._core was built against."""\nTORCH_VERSION = {torch.__version__!r}\n')

# The runtime's CUDA graphs (include/osteonet/runtime) compile only against a LibTorch with CUDA.
WITH_CUDA = torch.version.cuda is not None and CUDA_HOME is not None
Extension = CUDAExtension if WITH_CUDA else CppExtension

ext = Extension(
    name="osteonet._core",
    sources=sorted(glob.glob(os.path.join("bindings", "*.cpp"))),
    include_dirs=[os.path.join(ROOT, "include"), os.path.join(ROOT, "bindings")] + EIGEN,
    define_macros=[("OSTEONET_WITH_CUDA", "1")] if WITH_CUDA else [],
    extra_compile_args=["-O2", "-std=c++17", "-g0", "-Wno-unused-parameter"],
)

setup(
    ext_modules=[ext],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
