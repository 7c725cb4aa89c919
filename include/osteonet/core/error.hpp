// Errors and argument checks: one-line messages "<where>: <constraint>, got <name>=<value>".
#pragma once

#include <algorithm>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace osteonet {

/// A bad value (shape, range, unknown name). Python sees it as ValueError.
class ValueError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// A value of the wrong kind (dtype, type of an option). Python sees it as TypeError.
class TypeError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

namespace detail {

template <typename... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

/// Edit distance with adjacent transpositions (optimal string alignment), for "did you mean".
inline std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::vector<std::size_t>> d(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
  for (std::size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (std::size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.size()][b.size()];
}

}  // namespace detail

/// `s` cut to `max` characters with "..." (a long offending value in a message stays one readable line).
inline std::string shorten(const std::string& s, std::size_t max = 80) {
  return s.size() <= max ? s : s.substr(0, max) + "... (" + std::to_string(s.size()) + " characters)";
}

/// The candidate closest to `name` by edit distance (empty when there are none).
inline std::string nearest_name(const std::string& name, const std::vector<std::string>& candidates) {
  std::string best;
  std::size_t best_d = static_cast<std::size_t>(-1);
  for (const auto& c : candidates) {
    const std::size_t d = detail::edit_distance(name, c);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  return best;
}

/// Throws ValueError "<where>: unknown <what> 'name'; did you mean 'x'? (valid: a, b, c)".
[[noreturn]] inline void throw_unknown_name(const std::string& where, const std::string& what,
                                            const std::string& name,
                                            const std::vector<std::string>& valid) {
  std::ostringstream os;
  os << where << ": unknown " << what << " '" << shorten(name) << "'";
  if (!valid.empty()) {
    os << "; did you mean '" << nearest_name(name, valid) << "'? (valid: ";
    for (std::size_t i = 0; i < valid.size(); ++i) os << (i ? ", " : "") << valid[i];
    os << ")";
  }
  throw ValueError(os.str());
}

}  // namespace osteonet

/// Throws osteonet::ValueError with the streamed message when `cond` is false.
#define OSTEONET_CHECK(cond, ...)                                        \
  do {                                                                   \
    if (!(cond)) throw ::osteonet::ValueError(::osteonet::detail::str_cat(__VA_ARGS__)); \
  } while (0)

/// Throws osteonet::TypeError with the streamed message when `cond` is false.
#define OSTEONET_CHECK_TYPE(cond, ...)                                   \
  do {                                                                   \
    if (!(cond)) throw ::osteonet::TypeError(::osteonet::detail::str_cat(__VA_ARGS__)); \
  } while (0)
