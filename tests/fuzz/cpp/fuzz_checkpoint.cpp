// libFuzzer target: the checkpoint reader (zip checks, pickle walk, LibTorch unpickler, checksums) on arbitrary bytes,
// built with AddressSanitizer + UndefinedBehaviorSanitizer by `make test-asan` (docs/reliability.md).
// Every input must end in a dict or in osteonet::ValueError/TypeError; a c10::Error from LibTorch's
// unpickler is caught by parse_checkpoint and reported as ValueError, anything else aborts the run.
#include <osteonet/train/checkpoint.hpp>

#include <cstddef>
#include <cstdint>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<char> bytes(reinterpret_cast<const char*>(data), reinterpret_cast<const char*>(data) + size);
  try {
    const auto d = osteonet::train::parse_checkpoint("fuzz.pt", bytes);
    (void)d.size();
  } catch (const std::invalid_argument&) {  // osteonet::ValueError and TypeError: the clean refusals
  }
  return 0;
}
