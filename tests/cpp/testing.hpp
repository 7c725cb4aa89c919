// Test prelude: LibTorch first, then doctest. LibTorch 2.x's c10 logging defines glog-style CHECK
// macros that would shadow doctest's; they are dropped here so doctest's definitions win.
#pragma once

#include <torch/torch.h>

#undef CHECK
#undef CHECK_EQ
#undef CHECK_NE
#undef CHECK_LT
#undef CHECK_LE
#undef CHECK_GT
#undef CHECK_GE

#include <doctest/doctest.h>
