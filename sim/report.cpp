// The simulator's report as text and as JSON (see simulator.hpp).
//
// Why both from one protobuf message: the JSON is the message's standard
// mapping (stable field names for scripts), and the text is a reading of the
// same fields for people; nothing is computed twice.
#include <google/protobuf/util/json_util.h>

#include <cinttypes>
#include <cstdio>
#include <map>
#include <sstream>

#include "sim/simulator.hpp"

namespace apiary::sim {

namespace {
std::string at(uint64_t ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%6" PRIu64 ".%03" PRIu64 "s", ms / 1000, ms % 1000);
  return buf;
}
}  // namespace

std::string render_text(const v1::SimReport& r) {
  std::ostringstream o;
  o << "scenario " << r.scenario() << ", seed " << r.seed() << "\n";
  o << "trace hash: " << r.trace_hash() << " (" << r.trace_lines() << " lines)\n";
  o << "events: " << r.events() << " delivered in " << r.simulated_ms() / 1000.0 << " s simulated, "
    << r.wall_seconds() << " s wall (" << static_cast<uint64_t>(r.events_per_second()) << " events/s), peak RSS "
    << r.peak_rss_kib() / 1024 << " MiB\n";
  o << "\ntimeline:\n";
  for (const auto& e : r.timeline())
    o << "  " << at(e.time_ms()) << " #" << e.trace_position() << " " << e.kind() << ": " << e.detail() << "\n";
  auto dropped = r.counters().find("sim.timeline_dropped");
  if (dropped != r.counters().end()) o << "  ... " << dropped->second << " more (see --trace)\n";
  o << "\nviolations: " << (r.violations().empty() ? "none" : "") << "\n";
  for (const auto& v : r.violations()) {
    o << "  " << at(v.time_ms()) << " #" << v.trace_position() << " " << v.invariant() << ": " << v.detail();
    if (!v.actors().empty()) {
      o << " [";
      for (int i = 0; i < v.actors_size(); ++i) o << (i ? ", " : "") << v.actors(i);
      o << "]";
    }
    o << "\n";
  }
  o << "\nnodes:\n";
  for (const auto& n : r.nodes()) o << "  " << n << "\n";
  o << "\ncounters:\n";
  std::map<std::string, uint64_t> sorted(r.counters().begin(), r.counters().end());
  for (const auto& [k, v] : sorted) o << "  " << k << " = " << v << "\n";
  if (!r.expectation_failures().empty()) {
    o << "\nexpectations not met:\n";
    for (const auto& f : r.expectation_failures()) o << "  " << f << "\n";
  }
  o << "\nresult: " << (r.violations().empty() && r.ok() ? "ok" : "FAILED") << "\n";
  o << "replay: " << r.replay() << "\n";
  return o.str();
}

std::string render_json(const v1::SimReport& r) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(r, &out, options);
  return out;
}

}  // namespace apiary::sim
