// Training checkpoints: atomic file writes and one file format shared by the C++ and Python trainers.
//
// A checkpoint is a PyTorch zip archive holding one pickled dict (torch::pickle_save in C++, torch.save
// in Python, so either side reads the other's with torch.load / torch::pickle_load):
//   osteonet_checkpoint  int, format version (kCheckpointVersion)
//   writer               "c++" or "python"
//   epoch                int, epochs completed
//   model                {name: tensor}: parameters and buffers (torchvision names, = Python state_dict)
//   optimizer            C++: uint8 tensor (a torch::serialize archive); Python: torch.optim state_dict
//   schedule             {name: float}: Schedule::state_dict()
//   rng                  {"torch": uint8 tensor (CPU generator state), ...}
//   extra                {name: float}: e.g. early-stopping counters, best metric
//   history              [{name: float}]: the epoch log so far (so a resumed run's log is complete)
//   checksums            {"model": {name: SHA-256 hex}} (format 2): every model tensor's tensor_sha256,
//                        verified on every read before any tensor reaches a model (verify_checksums);
//                        Python adds {"card": {...}} for a model card holding tensors (osteonet.sequence)
//
// Format 1 (no checksums) still loads, with a one-time warning that its tensors are unverified; a
// format-2 file without checksums is refused (they were stripped or the pickle is damaged).
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <torch/torch.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <caffe2/serialize/inline_container.h>
#include <caffe2/serialize/read_adapter_interface.h>
#include <torch/csrc/jit/serialization/import_read.h>
#include <torch/csrc/jit/serialization/storage_context.h>

#include "osteonet/core/error.hpp"
#include "osteonet/core/sha256.hpp"
#include "osteonet/train/schedule.hpp"

namespace osteonet::train {

/// The checkpoint format this library writes (and the newest it reads).
constexpr int64_t kCheckpointVersion = 2;
/// The oldest format this library reads (format 1 has no checksums: read with a warning).
constexpr int64_t kFirstVerifiedVersion = 2;

namespace detail {

[[noreturn]] inline void throw_io(const std::string& path, const std::string& what) {
  throw std::runtime_error("atomic_write " + path + ": " + what + " (" + std::strerror(errno) + ")");
}

inline std::string parent_dir(const std::string& path) {
  const auto pos = path.find_last_of('/');
  if (pos == std::string::npos) return ".";
  return pos == 0 ? "/" : path.substr(0, pos);
}

/// Deletes `.<base>.XXXXXX.tmp` files in `dir` (what a killed atomic_write of `dir/base` left; Python's
/// writer names its temporaries `.<base>.<random>.tmp[.<ext>]`, also matched).
inline void remove_stale_temporaries(const std::string& dir, const std::string& base) {
  const std::string prefix = "." + base + ".";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return;
  std::vector<std::string> stale;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.size() <= prefix.size() + 4 || name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string rest = name.substr(prefix.size());
    const auto tmp = rest.find(".tmp");
    // the random part has no dot; after it comes ".tmp" and, for Python's, the target's extension
    if (tmp == std::string::npos || tmp == 0 || rest.find('.') != tmp) continue;
    if (tmp + 4 != rest.size() && rest[tmp + 4] != '.') continue;
    stale.push_back(dir + "/" + name);
  }
  ::closedir(d);
  for (const auto& p : stale) ::unlink(p.c_str());
}

}  // namespace detail

/// Writes `size` bytes to `path` atomically, as Python's osteonet.io.atomic_write: to a hidden temporary
/// file beside it (`.<name>.XXXXXX.tmp`), fsync, rename over `path`, fsync the folder. A crash at any
/// point leaves either the previous file or the new one, never a mix; a failed write removes its
/// temporary file. A killed writer leaves it: the next write of the same `path` deletes it (one writer
/// per file, as for any file), and osteonet.io.remove_stale_temporaries cleans a whole folder.
inline void atomic_write(const std::string& path, const char* data, std::size_t size) {
  const std::string dir = detail::parent_dir(path);
  const auto slash = path.find_last_of('/');
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  detail::remove_stale_temporaries(dir, base);
  std::string tmpl = dir + "/." + base + ".XXXXXX.tmp";
  std::vector<char> name(tmpl.begin(), tmpl.end());
  name.push_back('\0');
  const int fd = ::mkstemps(name.data(), 4);
  if (fd < 0) detail::throw_io(tmpl, "cannot create a temporary file");
  const std::string tmp(name.data());
  auto fail = [&](const char* what) {
    const int saved = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    errno = saved;
    detail::throw_io(tmp, what);
  };
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::write(fd, data + done, size - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("write failed");
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fchmod(fd, 0644) != 0) fail("chmod failed");  // mkstemp makes it 0600; a checkpoint is a normal file
  if (::fsync(fd) != 0) fail("fsync failed");
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    detail::throw_io(tmp, "close failed");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int saved = errno;
    ::unlink(tmp.c_str());
    errno = saved;
    detail::throw_io(path, "rename failed");
  }
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {  // the rename itself durable; a folder that cannot be opened still got the file
    ::fsync(dfd);
    ::close(dfd);
  }
}

inline void atomic_write(const std::string& path, const std::string& bytes) { atomic_write(path, bytes.data(), bytes.size()); }

/// Checks the bytes of a would-be checkpoint before unpickling: a PyTorch zip archive (local-header
/// magic at the start) that is complete (end-of-central-directory record at the end). Throws
/// ValueError "checkpoint <path>: not an osteonet checkpoint (...)" or "checkpoint <path>: truncated (...)".
inline void check_checkpoint_bytes(const std::string& path, const std::vector<char>& b) {
  if (b.empty()) throw ValueError("checkpoint " + path + ": truncated (the file is empty)");
  static const char kLocal[4] = {'P', 'K', 3, 4};
  static const char kEnd[4] = {'P', 'K', 5, 6};
  if (b.size() < 4 || std::memcmp(b.data(), kLocal, 4) != 0)
    throw ValueError("checkpoint " + path + ": not an osteonet checkpoint (not a PyTorch zip archive)");
  // The end record is 22 bytes plus a comment of at most 65535 bytes; PyTorch writes no comment.
  const std::size_t lo = b.size() > 65557 ? b.size() - 65557 : 0;
  bool found = false;
  for (std::size_t i = b.size() >= 22 ? b.size() - 22 + 1 : 0; i-- > lo;) {
    if (std::memcmp(b.data() + i, kEnd, 4) == 0) {
      found = true;
      break;
    }
  }
  if (!found)
    throw ValueError("checkpoint " + path + ": truncated (the zip archive has no end record; " +
                     std::to_string(b.size()) + " bytes)");
}

/// The file's bytes, checked with check_checkpoint_bytes (ValueError when it cannot be read).
inline std::vector<char> read_checkpoint_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ValueError("checkpoint " + path + ": cannot be read (no such file or no permission)");
  std::vector<char> b((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  check_checkpoint_bytes(path, b);
  return b;
}

/// SHA-256 of one tensor as stored: its dtype name, its shape and its values (contiguous, CPU, in the
/// machine's byte order), so a flipped byte, a changed dtype or a reshaped tensor all change it.
inline std::string tensor_sha256(const torch::Tensor& t) {
  const auto c = t.detach().to(torch::kCPU).contiguous();
  std::string head = std::string(c10::toString(c.scalar_type())) + '\0';
  for (const auto n : c.sizes()) head += std::to_string(n) + ',';
  head += '\0';
  Sha256 h;
  h.update(head);
  h.update(c.data_ptr(), c.numel() * c.element_size());
  return h.hex();
}

/// name -> tensor_sha256 of every tensor of a state dict.
inline std::map<std::string, std::string> state_checksums(const std::map<std::string, torch::Tensor>& state) {
  std::map<std::string, std::string> out;
  for (const auto& kv : state) out[kv.first] = tensor_sha256(kv.second);
  return out;
}

namespace detail {
/// What hashing a tensor may touch, in bytes: the larger of its values' size (numel * element size) and
/// the reach from its storage's start to its last element ((offset + sum (size - 1) * stride + 1) *
/// element size), 0 when empty, in `out`; false for a negative size, stride or offset, or an overflow.
inline bool view_bytes(const torch::Tensor& t, int64_t& out) {
  out = 0;
  if (!t.defined() || t.storage_offset() < 0) return false;
  const int64_t esize = static_cast<int64_t>(t.element_size());
  int64_t last = t.storage_offset(), count = 1;
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (t.size(d) < 0 || t.stride(d) < 0) return false;
    if (t.size(d) == 0) return true;
    int64_t step = 0;
    if (__builtin_mul_overflow(t.size(d) - 1, t.stride(d), &step) || __builtin_add_overflow(last, step, &last) ||
        __builtin_mul_overflow(count, t.size(d), &count))
      return false;
  }
  int64_t reach = 0, values = 0;
  if (__builtin_mul_overflow(last + 1, esize, &reach) || __builtin_mul_overflow(count, esize, &values)) return false;
  out = std::max(reach, values);
  return true;
}

/// A stored digest shortened for a message.
inline std::string short_hex(const std::string& h) { return h.size() > 12 ? h.substr(0, 12) + "..." : h; }
}  // namespace detail

/// Checks `state` against `checksums` (state_checksums at save time). Throws ValueError
/// "<where>: <what> differs ..." naming the first tensor that differs, one that lacks a checksum, or a
/// checksum whose tensor is missing.
inline void verify_checksums(const std::string& where, const std::map<std::string, torch::Tensor>& state,
                             const std::map<std::string, std::string>& checksums) {
  for (const auto& kv : state) {
    const auto it = checksums.find(kv.first);
    OSTEONET_CHECK(it != checksums.end(), where, ": corrupted, tensor '", kv.first,
                   "' has no checksum (a renamed or added tensor); nothing was loaded");
    // Writers store whole tensors: a view claiming more values than its storage holds (a damaged size
    // or a zero stride) would make hashing it materialise gigabytes from a small file, and one reaching past
    // its storage (a damaged offset or stride) would make it read outside the buffer (found by libFuzzer).
    const auto& t = kv.second;
    const int64_t stored = t.defined() && t.has_storage() ? static_cast<int64_t>(t.storage().nbytes()) : 0;
    int64_t touched = 0;
    OSTEONET_CHECK(detail::view_bytes(t, touched) && touched <= stored, where, ": corrupted, tensor '", kv.first,
                   "' (sizes ", t.sizes(), ", strides ", t.strides(), ", offset ", t.storage_offset(),
                   ") needs more than its storage's ", stored, " bytes; nothing was loaded");
    const auto got = tensor_sha256(kv.second);
    OSTEONET_CHECK(got == it->second, where, ": corrupted, tensor '", kv.first, "' does not match its SHA-256 (stored ",
                   detail::short_hex(it->second), ", computed ", detail::short_hex(got), "); nothing was loaded");
  }
  for (const auto& kv : checksums)
    OSTEONET_CHECK(state.count(kv.first) != 0, where, ": corrupted, tensor '", kv.first,
                   "' has a checksum but is missing; nothing was loaded");
}

namespace detail {
inline std::map<std::string, torch::Tensor> tensor_map(const c10::IValue& v, const std::string& where, const char* key) {
  OSTEONET_CHECK(v.isGenericDict(), where, ": not an osteonet checkpoint ('", key, "' is a ", v.tagKind(), ", not a dict)");
  std::map<std::string, torch::Tensor> out;
  for (const auto& kv : v.toGenericDict()) {
    OSTEONET_CHECK(kv.key().isString() && kv.value().isTensor(), where, ": not an osteonet checkpoint ('", key,
                   "' holds a ", kv.value().tagKind(), ", not name -> tensor)");
    out[kv.key().toStringRef()] = kv.value().toTensor();
  }
  return out;
}
}  // namespace detail

/// Verifies a checkpoint dict's model tensors against its checksums (format >= 2; format 1 warns once
/// that its tensors are unverified). Throws ValueError "checkpoint <path>: corrupted, ..." on a mismatch.
inline void verify_checkpoint(const std::string& path, const c10::impl::GenericDict& d) {
  const std::string where = "checkpoint " + path;
  if (d.at("osteonet_checkpoint").toInt() < kFirstVerifiedVersion) {
    TORCH_WARN_ONCE("osteonet: checkpoint ", path, " is format 1 (written before checksums); its tensors are unverified");
    return;
  }
  OSTEONET_CHECK(d.contains("checksums") && d.at("checksums").isGenericDict(), where,
                 ": corrupted, format ", d.at("osteonet_checkpoint").toInt(), " requires checksums and none are stored");
  const auto sums = d.at("checksums").toGenericDict();
  OSTEONET_CHECK(sums.contains("model") && sums.at("model").isGenericDict(), where,
                 ": corrupted, no 'model' entry in its checksums");
  OSTEONET_CHECK(d.contains("model"), where, ": not an osteonet checkpoint (no 'model' key)");
  std::map<std::string, std::string> expected;
  for (const auto& kv : sums.at("model").toGenericDict()) {
    OSTEONET_CHECK(kv.key().isString() && kv.value().isString(), where, ": corrupted, its model checksums are not name -> hex");
    expected[kv.key().toStringRef()] = kv.value().toStringRef();
  }
  verify_checksums(where, detail::tensor_map(d.at("model"), where, "model"), expected);
}

namespace detail {
/// Walks a pickle's opcodes without running them (as Python's pickletools.genops does) and throws
/// ValueError "<where>: <what>" at the first opcode that is unknown, whose argument runs past the end,
/// or whose memo index could not have been written by a pickle of this size. LibTorch's unpickler trusts
/// a stored length: a damaged one made it allocate gigabytes (and take seconds) before failing.
inline void check_pickle(const std::string& where, const unsigned char* p, std::size_t n) {
  auto fail = [&](std::size_t at, const std::string& what) {
    throw ValueError(where + ": not an osteonet checkpoint (damaged pickle: " + what + " at byte " + std::to_string(at) +
                     " of " + std::to_string(n) + ")");
  };
  auto le = [&](std::size_t at, int bytes) {
    uint64_t v = 0;
    for (int b = bytes - 1; b >= 0; --b) v = (v << 8) | p[at + b];
    return v;
  };
  std::size_t i = 0;
  while (i < n) {
    const std::size_t at = i;
    const unsigned char op = p[i++];
    int fixed = -1;   // bytes of a fixed-size argument
    int counted = 0;  // bytes of a length prefix, followed by that many bytes
    int lines = 0;    // newline-terminated arguments
    bool memo = false;
    switch (op) {
      case '.':
        return;  // STOP
      case '(': case '0': case '1': case '2': case 'N': case 0x88: case 0x89: case '}': case ']': case ')':
      case 't': case 0x85: case 0x86: case 0x87: case 'a': case 'e': case 'd': case 'l': case 's': case 'u':
      case 'b': case 'R': case 0x81: case 0x92: case 'Q': case 0x8f: case 0x90: case 0x91: case 0x93: case 0x94:
      case 'o': case 0x97: case 0x98:
        fixed = 0;
        break;
      case 'K': case 0x80: case 0x82: fixed = 1; break;
      case 'M': case 0x83: fixed = 2; break;
      case 'J': case 0x84: fixed = 4; break;
      case 'G': case 0x95: fixed = 8; break;
      case 'q': case 'h': fixed = 1, memo = true; break;
      case 'r': case 'j': fixed = 4, memo = true; break;
      case 0x8a: case 'U': case 'C': case 0x8c: counted = 1; break;
      case 0x8b: case 'T': case 'B': case 'X': counted = 4; break;
      case 0x8e: case 0x8d: case 0x96: counted = 8; break;
      case 'I': case 'L': case 'F': case 'S': case 'V': case 'P': case 'g': case 'p': lines = 1; break;
      case 'c': case 'i': lines = 2; break;
      default: {
        char hex[8];
        std::snprintf(hex, sizeof hex, "0x%02x", op);
        fail(at, std::string("unknown opcode ") + hex);
      }
    }
    if (fixed >= 0) {
      if (n - i < static_cast<std::size_t>(fixed)) fail(at, "an argument past the end");
      // Every memo entry costs its PUT at least two bytes: an index beyond n / 2 is damage.
      if (memo && le(i, fixed) > n / 2) fail(at, "memo index " + std::to_string(le(i, fixed)));
      i += fixed;
    } else if (counted > 0) {
      if (n - i < static_cast<std::size_t>(counted)) fail(at, "a length past the end");
      const uint64_t len = le(i, counted);
      i += counted;
      if (len > n - i) fail(at, "a length of " + std::to_string(len) + " bytes past the end");
      i += len;
    } else {
      for (int k = 0; k < lines; ++k) {
        const void* nl = std::memchr(p + i, '\n', n - i);
        if (nl == nullptr) fail(at, "an unterminated argument");
        i = static_cast<const unsigned char*>(nl) - p + 1;
      }
    }
  }
  fail(n, "no STOP opcode");
}

/// The bytes of a would-be archive, for LibTorch's zip reader, never read outside them: LibTorch's own
/// in-memory readers (torch::pickle_load's, MemoryReadAdapter) copy whatever offset miniz asks for, and a
/// damaged zip directory can ask for one beyond the buffer (found by libFuzzer under UBSan). A short read
/// is an error to miniz, so such an archive is refused.
class BoundedReader final : public caffe2::serialize::ReadAdapterInterface {
 public:
  explicit BoundedReader(const std::vector<char>& bytes) : bytes_(bytes) {}
  size_t size() const override { return bytes_.size(); }
  size_t read(uint64_t pos, void* buf, size_t n, const char* /*what*/ = "") const override {
    if (pos >= bytes_.size()) return 0;
    n = static_cast<size_t>(std::min<uint64_t>(n, bytes_.size() - pos));
    std::memcpy(buf, bytes_.data() + pos, n);
    return n;
  }

 private:
  const std::vector<char>& bytes_;
};

/// What torch::pickle_load does, through a BoundedReader, with the pickle's opcodes walked (check_pickle)
/// before LibTorch's unpickler runs them, and with every storage as large as its record really is.
/// LibTorch sizes a storage by the element count the pickle claims, not by its record: a damaged count
/// gave a 12-byte record a 48-byte storage, and hashing it read past the buffer (found by libFuzzer under
/// AddressSanitizer). Handing the unpickler the storages, made from the records, closes that; views are
/// then checked against them (verify_checksums). Throws ValueError "<where>: ..." naming the damage.
inline c10::IValue load_archive(const std::string& where, const std::vector<char>& bytes) {
  try {
    caffe2::serialize::PyTorchStreamReader reader(std::make_shared<BoundedReader>(bytes));
    at::DataPtr data;
    std::size_t size = 0;
    std::tie(data, size) = reader.getRecord("data.pkl");
    check_pickle(where, static_cast<const unsigned char*>(data.get()), size);
    auto storages = std::make_shared<torch::jit::DeserializationStorageContext>();
    for (const auto& name : reader.getAllRecords()) {
      if (name.rfind("data/", 0) != 0) continue;
      at::DataPtr record;
      std::size_t n = 0;
      std::tie(record, n) = reader.getRecord(name);
      storages->addStorage(name.substr(5), c10::Storage(c10::Storage::use_byte_size_t(), static_cast<int64_t>(n),
                                                        std::move(record), nullptr, false));
    }
    return torch::jit::readArchiveAndTensors("data", "", "", {}, {}, {}, reader,
                                             torch::jit::Unpickler::defaultTypeParser, storages);
  } catch (const ValueError&) {
    throw;
  } catch (const c10::Error& e) {
    std::string msg = e.what_without_backtrace();
    throw ValueError(where + ": not an osteonet checkpoint (cannot be unpickled: " + shorten(msg.substr(0, msg.find('\n')), 200) + ")");
  } catch (const std::exception& e) {
    // LibTorch's unpickler also throws plain std::out_of_range on a damaged pickle (the checkpoint
    // campaign found `vector::_M_range_check` from a flipped memo index): the same clean refusal.
    throw ValueError(where + ": not an osteonet checkpoint (cannot be unpickled: " + shorten(e.what(), 200) + ")");
  }
}
}  // namespace detail

/// The checkpoint dict held by `bytes` (a file's content; `path` names it in errors), checked as
/// read_checkpoint checks a file: what the libFuzzer target (tests/fuzz/cpp) feeds with mutated bytes.
inline c10::impl::GenericDict parse_checkpoint(const std::string& path, const std::vector<char>& bytes) {
  check_checkpoint_bytes(path, bytes);
  const c10::IValue v = detail::load_archive("checkpoint " + path, bytes);
  if (!v.isGenericDict())
    throw ValueError("checkpoint " + path + ": not an osteonet checkpoint (holds a " + v.tagKind() + ", not a dict)");
  auto d = v.toGenericDict();
  if (!d.contains("osteonet_checkpoint"))
    throw ValueError("checkpoint " + path + ": not an osteonet checkpoint (no 'osteonet_checkpoint' key)");
  const auto ver = d.at("osteonet_checkpoint");
  if (!ver.isInt())
    throw ValueError("checkpoint " + path + ": not an osteonet checkpoint ('osteonet_checkpoint' is not an int)");
  if (ver.toInt() > kCheckpointVersion)
    throw ValueError("checkpoint " + path + ": format " + std::to_string(ver.toInt()) +
                     " is newer than this osteonet reads, got version=" + std::to_string(ver.toInt()) +
                     " (reads <= " + std::to_string(kCheckpointVersion) + ")");
  verify_checkpoint(path, d);
  return d;
}

/// The checkpoint's dict (checked: complete archive, unpicklable, the osteonet key, a version this reads,
/// the model tensors' checksums).
inline c10::impl::GenericDict read_checkpoint(const std::string& path) {
  return parse_checkpoint(path, read_checkpoint_bytes(path));
}

/// Parameters and buffers by qualified name (whole, contiguous tensors: verify_checksums refuses a view
/// larger than its storage).
inline c10::impl::GenericDict module_state(const torch::nn::Module& m) {
  c10::impl::GenericDict d(c10::StringType::get(), c10::TensorType::get());
  for (const auto& kv : m.named_parameters(true)) d.insert(kv.key(), kv.value().detach().contiguous());
  for (const auto& kv : m.named_buffers(true)) d.insert(kv.key(), kv.value().detach().contiguous());
  return d;
}

/// Copies a state dict into the module's tensors (every name present, equal shapes, nothing extra), all
/// checked before the first copy, so a state that does not fit leaves the module untouched.
inline void load_module_state(torch::nn::Module& m, const c10::impl::GenericDict& state, const std::string& where) {
  torch::NoGradGuard no_grad;
  std::vector<std::pair<torch::Tensor, torch::Tensor>> copies;
  auto check = [&](const std::string& name, const torch::Tensor& t) {
    OSTEONET_CHECK(state.contains(name), where, ": the model state lacks '", name, "'");
    const auto src = state.at(name);
    OSTEONET_CHECK(src.isTensor(), where, ": '", name, "' is a ", src.tagKind(), ", not a tensor");
    OSTEONET_CHECK(src.toTensor().sizes() == t.sizes(), where, ": shape of '", name, "' differs, got ",
                   src.toTensor().sizes(), " for ", t.sizes());
    copies.emplace_back(t, src.toTensor());
  };
  for (const auto& kv : m.named_parameters(true)) check(kv.key(), kv.value());
  for (const auto& kv : m.named_buffers(true)) check(kv.key(), kv.value());
  OSTEONET_CHECK(copies.size() == state.size(), where, ": the model state has ", state.size() - copies.size(),
                 " name(s) this model lacks (a different architecture?), got ", state.size(), " entries");
  for (auto& c : copies) c.first.copy_(c.second);
}

/// A number of a checkpoint dict as a double (Python may have written an int).
inline double as_double(const c10::IValue& v) { return v.isInt() ? static_cast<double>(v.toInt()) : v.toDouble(); }

/// The default CPU generator's state (what torch.get_rng_state() returns in Python).
inline torch::Tensor torch_rng_state() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}
inline void set_torch_rng_state(const torch::Tensor& s) {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(s);
}

/// What a checkpoint restores besides the tensors: epochs completed and the extra numbers saved.
struct CheckpointInfo {
  int64_t epoch = 0;
  std::string writer;
  std::map<std::string, double> extra;
  std::vector<std::map<std::string, double>> history;
};

/// One epoch's log line: numbers by name.
using EpochLog = std::map<std::string, double>;

/// Saves model, optimiser (may be null), schedule (may be null), epochs completed, the torch CPU RNG
/// state and extra numbers to `path`, atomically.
inline void save_checkpoint(const std::string& path, const torch::nn::Module& model, const torch::optim::Optimizer* optimizer,
                            const Schedule* schedule, int64_t epoch, const std::map<std::string, double>& extra = {},
                            const std::vector<EpochLog>& history = {}) {
  c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
  d.insert("osteonet_checkpoint", kCheckpointVersion);
  d.insert("writer", std::string("c++"));
  d.insert("epoch", epoch);
  const auto state = module_state(model);
  d.insert("model", state);
  c10::impl::GenericDict sums(c10::StringType::get(), c10::StringType::get());
  for (const auto& kv : state) sums.insert(kv.key().toStringRef(), tensor_sha256(kv.value().toTensor()));
  c10::impl::GenericDict checksums(c10::StringType::get(), c10::AnyType::get());
  checksums.insert("model", sums);
  d.insert("checksums", checksums);
  if (optimizer != nullptr) {
    torch::serialize::OutputArchive ar;
    optimizer->save(ar);
    std::string bytes;
    ar.save_to([&bytes](const void* p, size_t n) {
      bytes.append(static_cast<const char*>(p), n);
      return n;
    });
    d.insert("optimizer", torch::from_blob(bytes.data(), {static_cast<int64_t>(bytes.size())}, torch::kUInt8).clone());
  }
  c10::impl::GenericDict sched(c10::StringType::get(), c10::FloatType::get());
  if (schedule != nullptr)
    for (const auto& kv : schedule->state_dict()) sched.insert(kv.first, kv.second);
  d.insert("schedule", sched);
  c10::impl::GenericDict rng(c10::StringType::get(), c10::TensorType::get());
  rng.insert("torch", torch_rng_state());
  d.insert("rng", rng);
  c10::impl::GenericDict ex(c10::StringType::get(), c10::FloatType::get());
  for (const auto& kv : extra) ex.insert(kv.first, kv.second);
  d.insert("extra", ex);
  c10::impl::GenericList hist(c10::AnyType::get());
  for (const auto& rec : history) {
    c10::impl::GenericDict r(c10::StringType::get(), c10::FloatType::get());
    for (const auto& kv : rec) r.insert(kv.first, kv.second);
    hist.push_back(r);
  }
  d.insert("history", hist);
  const auto bytes = torch::pickle_save(d);
  atomic_write(path, bytes.data(), bytes.size());
}

/// Restores what save_checkpoint saved into `model`, `optimizer` and `schedule` (each may be null to
/// skip it) and the torch CPU RNG state. The optimiser of a checkpoint written by Python's trainer
/// (a torch.optim state_dict) cannot be restored here: pass null to load its model and schedule.
inline CheckpointInfo load_checkpoint(const std::string& path, torch::nn::Module* model, torch::optim::Optimizer* optimizer,
                                      Schedule* schedule, bool restore_rng = true) {
  const auto d = read_checkpoint(path);
  const std::string where = "checkpoint " + path;
  auto need = [&](const char* key) {
    OSTEONET_CHECK(d.contains(key), where, ": not an osteonet checkpoint (no '", key, "' key)");
    return d.at(key);
  };
  CheckpointInfo info;
  info.epoch = need("epoch").toInt();
  info.writer = d.contains("writer") ? d.at("writer").toStringRef() : std::string("?");
  if (model != nullptr) load_module_state(*model, need("model").toGenericDict(), where);
  if (optimizer != nullptr) {
    const auto o = need("optimizer");
    OSTEONET_CHECK(o.isTensor(), where, ": the optimiser state was written by ", info.writer,
                   " (a torch.optim state_dict), which C++ optimisers cannot load; pass optimizer=nullptr");
    const auto t = o.toTensor().contiguous();
    torch::serialize::InputArchive ar;
    ar.load_from(static_cast<const char*>(t.data_ptr()), static_cast<std::size_t>(t.numel()));
    optimizer->load(ar);
  }
  if (schedule != nullptr) {
    ScheduleState s;
    for (const auto& kv : need("schedule").toGenericDict()) s[kv.key().toStringRef()] = as_double(kv.value());
    schedule->load_state_dict(s);
  }
  if (restore_rng) {
    const auto rng = need("rng").toGenericDict();
    if (rng.contains("torch")) set_torch_rng_state(rng.at("torch").toTensor());
  }
  if (d.contains("extra"))
    for (const auto& kv : d.at("extra").toGenericDict()) info.extra[kv.key().toStringRef()] = as_double(kv.value());
  if (d.contains("history")) {
    for (const auto& rec : d.at("history").toListRef()) {
      EpochLog e;
      for (const auto& kv : rec.toGenericDict()) e[kv.key().toStringRef()] = as_double(kv.value());
      info.history.push_back(std::move(e));
    }
  }
  return info;
}

}  // namespace osteonet::train
