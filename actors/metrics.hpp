// Latency histograms for /metrics, in Prometheus' text exposition format.
//
// Why our own small type instead of a metrics library: Debian has no
// prometheus-cpp package, and what we need is tiny: a few labelled
// histograms whose counters are bumped from actor handlers (one thread per
// actor, but the node's instance actors run on several scheduler threads at
// once, hence atomics and a mutex around the label map) and rendered as
// text on request. No CAF here: the instance actors and the controller
// record into it, and the HTTP layer only sees the rendered text.
//
// Output shape (one family per metric name; the caller prints the HELP and
// TYPE header once, since several nodes' samples go under one family):
//   NAME_bucket{LABELS,le="0.005"} 3
//   ...
//   NAME_bucket{LABELS,le="+Inf"} 7
//   NAME_sum{LABELS} 0.123456
//   NAME_count{LABELS} 7
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace apiary::actors {

// Bucket upper bounds in seconds: 1 ms .. 60 s covers a fan-out phase (ms)
// up to an action that copies a disk (tens of seconds).
inline constexpr std::array<double, 15> kLatencyBucketsSeconds = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                                  0.5,   1.0,    2.5,   5.0,  10.0,  30.0, 60.0};

// A label value with a backslash, " and newline escaped, as the text format wants.
inline std::string escape_label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    if (c == '\\' || c == '"') out += '\\';
    out += c;
  }
  return out;
}

class LatencyHistogram {
 public:
  void observe(std::chrono::microseconds d) {
    const double s = static_cast<double>(d.count()) / 1e6;
    for (size_t i = 0; i < kLatencyBucketsSeconds.size(); ++i)
      if (s <= kLatencyBucketsSeconds[i]) buckets_[i].fetch_add(1, std::memory_order_relaxed);
    count_.fetch_add(1, std::memory_order_relaxed);
    sum_us_.fetch_add(static_cast<uint64_t>(std::max<int64_t>(0, d.count())), std::memory_order_relaxed);
  }
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }

  // The sample lines; `labels` is `key="value",...` (may be empty).
  // Observations may land while this runs: the buckets are read first and
  // the total after, raised to at least the last bucket, so a scrape is
  // always monotonic (le=... <= +Inf == _count).
  void render(std::ostream& out, const std::string& name, const std::string& labels) const {
    const std::string sep = labels.empty() ? "" : ",";
    uint64_t last = 0;
    for (size_t i = 0; i < kLatencyBucketsSeconds.size(); ++i) {
      last = std::max(last, buckets_[i].load(std::memory_order_relaxed));
      out << name << "_bucket{" << labels << sep << "le=\"" << kLatencyBucketsSeconds[i] << "\"} " << last << "\n";
    }
    const uint64_t total = std::max(last, count());
    out << name << "_bucket{" << labels << sep << "le=\"+Inf\"} " << total << "\n";
    char sum[32];
    std::snprintf(sum, sizeof sum, "%.6f", static_cast<double>(sum_us_.load(std::memory_order_relaxed)) / 1e6);
    out << name << "_sum{" << labels << "} " << sum << "\n";
    out << name << "_count{" << labels << "} " << total << "\n";
  }

 private:
  std::array<std::atomic<uint64_t>, kLatencyBucketsSeconds.size()> buckets_{};  // cumulative, as exposed
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_us_{0};
};

// Histograms keyed by the value of one label (e.g. action="pause").
class LatencyFamily {
 public:
  explicit LatencyFamily(std::string label) : label_(std::move(label)) {}

  void observe(const std::string& value, std::chrono::microseconds d) { get(value).observe(d); }

  // Every histogram's samples; `extra` labels (`node="n1"`) go first.
  std::string render(const std::string& name, const std::string& extra = {}) const {
    std::ostringstream out;
    std::lock_guard lock(mu_);
    for (const auto& [value, h] : by_value_)
      h->render(out, name, (extra.empty() ? "" : extra + ",") + label_ + "=\"" + escape_label(value) + "\"");
    return out.str();
  }

 private:
  LatencyHistogram& get(const std::string& value) {
    std::lock_guard lock(mu_);
    auto& h = by_value_[value];
    if (!h) h = std::make_unique<LatencyHistogram>();
    return *h;
  }

  std::string label_;
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<LatencyHistogram>> by_value_;
};

// The "# HELP" and "# TYPE" lines of one family.
inline std::string metric_header(const std::string& name, const std::string& type, const std::string& help) {
  return "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

struct MetricFamily {
  const char* name;
  const char* type;  // counter, gauge, histogram
  const char* help;
};

// Sample lines gathered from several sources (each node's answer appended
// in turn) regrouped so that every family's samples follow its one header,
// in the order of `families`, as the text format requires; a histogram's
// _bucket, _sum and _count lines belong to it. Lines of no listed family
// come last, in their order.
inline std::string group_families(const std::string& samples, std::span<const MetricFamily> families) {
  std::vector<std::string> by_family(families.size());
  std::string rest;
  size_t pos = 0;
  while (pos < samples.size()) {
    size_t end = samples.find('\n', pos);
    if (end == std::string::npos) end = samples.size();
    const std::string line = samples.substr(pos, end - pos);
    pos = end + 1;
    if (line.empty()) continue;
    const std::string name = line.substr(0, line.find_first_of("{ "));
    size_t hit = families.size();
    for (size_t i = 0; i < families.size() && hit == families.size(); ++i) {
      const std::string f = families[i].name;
      if (name == f) hit = i;
      if (std::string_view(families[i].type) == "histogram" &&
          (name == f + "_bucket" || name == f + "_sum" || name == f + "_count"))
        hit = i;
    }
    (hit == families.size() ? rest : by_family[hit]) += line + "\n";
  }
  std::string out;
  for (size_t i = 0; i < families.size(); ++i)
    if (!by_family[i].empty()) out += metric_header(families[i].name, families[i].type, families[i].help) + by_family[i];
  return out + rest;
}

}  // namespace apiary::actors
