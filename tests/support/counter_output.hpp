// What counting guests print ("tick 1", "tick 2", ...), read back from
// their console output: the tests of save/restore and live migration check
// that a guest counts on with no restart and no gap.
#pragma once

#include <regex>
#include <string>
#include <vector>

namespace apiary::test {

// Every number following `word ` and ending a line (`line_end`, a regex:
// a real line end by default, R"(\\r\\n)" for a JSON-escaped history), in order.
inline std::vector<long> numbers_after(const std::string& out, const std::string& word,
                                       const std::string& line_end = "\r?\n") {
  std::vector<long> v;
  const std::regex re(word + " ([0-9]+)" + line_end);
  for (auto it = std::sregex_iterator(out.begin(), out.end(), re); it != std::sregex_iterator(); ++it)
    v.push_back(std::stol((*it)[1]));
  return v;
}

// 1, 2, 3, ... with no gap, repeat or restart.
inline bool consecutive_from_1(const std::vector<long>& v) {
  for (size_t i = 0; i < v.size(); ++i)
    if (v[i] != static_cast<long>(i) + 1) return false;
  return !v.empty();
}

}  // namespace apiary::test
