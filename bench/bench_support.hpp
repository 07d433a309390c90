// Small helpers shared by the benchmarks: a temporary directory that cleans
// up after itself, reading a whole file, a median, a benchmark's own
// numeric flags, rusage times in seconds, and the requirements a figure
// must meet.
#pragma once

#include <stdlib.h>
#include <sys/time.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>
#include <cstdio>

namespace apiary::bench {

// A fresh directory under $TMPDIR named <prefix>-XXXXXX; removed with
// everything in it.
struct TempDir {
  std::string path;
  explicit TempDir(const std::string& prefix) {
    std::string tmpl = (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX")).string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error(std::string("mkdtemp: ") + std::strerror(errno));
    path = tmpl;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

// The whole file ("" if it cannot be read).
inline std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The median of v (0 when empty).
inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// A benchmark's own `--name=N` flag with N > 0: true and out = N when `arg`
// is one.
inline bool parse_flag(const std::string& arg, const std::string& name, long& out) {
  if (arg.rfind(name, 0) != 0) return false;
  char* end = nullptr;
  out = std::strtol(arg.c_str() + name.size(), &end, 10);
  return end && *end == '\0' && out > 0;
}

// Takes the benchmark's own flags out of argv (`own` returns true for one it
// used) and leaves Google Benchmark's; false when an argument is known to
// neither. Call after benchmark::Initialize.
template <class Own>
bool strip_own_flags(int& argc, char** argv, Own own) {
  int kept = 1;
  for (int i = 1; i < argc; ++i)
    if (!own(std::string(argv[i]))) argv[kept++] = argv[i];
  argc = kept;
  return !benchmark::ReportUnrecognizedArguments(argc, argv);
}

inline double seconds(const timeval& t) {
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) * 1e-6;
}

// The requirements an issue set for a benchmark's figures. Each is printed
// as `figure: <name> 1|0 bool`, and each miss once more on stderr with the
// figure, its value and the bound; the program exits 1 when any is missed
// (so `make bench` does), and 0 exactly when all are met.
class Requirements {
 public:
  explicit Requirements(std::string program) : program_(std::move(program)) {}
  // `value` must be at least (at_least = true) or below `bound`.
  void check(FILE* out, const std::string& name, const std::string& figure, double value, bool at_least,
             double bound, const char* unit) {
    const bool met = at_least ? value >= bound : value < bound;
    std::fprintf(out, "figure: %s %d bool\n", name.c_str(), met ? 1 : 0);
    if (!met) {
      char line[256];
      std::snprintf(line, sizeof line, "%s %.3g %s, the requirement is %s %.3g %s", figure.c_str(), value, unit,
                    at_least ? "at least" : "under", bound, unit);
      missed_.push_back(line);
    }
  }
  void report() const {
    for (const auto& m : missed_) std::fprintf(stderr, "%s: requirement missed: %s\n", program_.c_str(), m.c_str());
  }
  bool all_met() const { return missed_.empty(); }

 private:
  std::string program_;
  std::vector<std::string> missed_;
};

}  // namespace apiary::bench
