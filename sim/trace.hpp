// The simulator's event trace: one line per delivered message, fault, state
// change and violation, each prefixed with its simulated time.
//
// Why a hash: two runs are "the same" when every line is the same in the
// same order, and a 64-bit FNV-1a over all lines says so in 16 hex digits
// without keeping millions of lines in memory. The lines themselves go to a
// file only when asked (--trace), and are kept in memory only for tests.
#pragma once

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace apiary::sim {

class Trace {
 public:
  static constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ull;
  static constexpr uint64_t kFnvPrime = 0x100000001b3ull;

  // path "": no file. keep: lines stay in memory (lines()).
  Trace(const std::string& path, bool keep) : keep_(keep) {
    if (!path.empty()) {
      file_.open(path, std::ios::out | std::ios::trunc);
      if (!file_) throw std::runtime_error("cannot write the trace to " + path);
    }
  }

  // Appends one line (without its newline); returns its position.
  uint64_t add(uint64_t time_ms, std::string_view text) {
    char head[32];
    const int n = std::snprintf(head, sizeof head, "%llu.%03llu ", static_cast<unsigned long long>(time_ms / 1000),
                                static_cast<unsigned long long>(time_ms % 1000));
    hash(std::string_view(head, static_cast<size_t>(n)));
    hash(text);
    hash("\n");
    if (file_.is_open()) file_ << std::string_view(head, static_cast<size_t>(n)) << text << '\n';
    if (keep_) lines_.push_back(std::string(head, static_cast<size_t>(n)) + std::string(text));
    return count_++;
  }

  uint64_t hash_value() const noexcept { return hash_; }
  std::string hash_hex() const {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(hash_));
    return buf;
  }
  uint64_t size() const noexcept { return count_; }
  const std::vector<std::string>& lines() const noexcept { return lines_; }

 private:
  void hash(std::string_view s) {
    for (unsigned char c : s) {
      hash_ ^= c;
      hash_ *= kFnvPrime;
    }
  }
  bool keep_;
  std::ofstream file_;
  std::vector<std::string> lines_;
  uint64_t hash_ = kFnvOffset;
  uint64_t count_ = 0;
};

}  // namespace apiary::sim
