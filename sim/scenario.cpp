// Scenario parsing, defaults and checks (see scenario.hpp).
#include "sim/scenario.hpp"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

namespace apiary::sim {

namespace {

class Collector final : public google::protobuf::io::ErrorCollector {
 public:
  explicit Collector(std::string origin) : origin_(std::move(origin)) {}
  void AddError(int line, int column, const std::string& message) override {
    if (first_.empty())
      first_ = origin_ + ":" + std::to_string(line + 1) + ":" + std::to_string(column + 1) + ": " + message;
  }
  void AddWarning(int, int, const std::string&) override {}
  const std::string& first() const { return first_; }

 private:
  std::string origin_;
  std::string first_;
};


void check_target(const v1::SimTarget& t, const std::string& where) {
  if (t.fraction() < 0 || t.fraction() > 1) throw ScenarioError(where + ".fraction: must be within 0..1");
  if (t.names().empty() && t.count() == 0 && t.fraction() == 0)
    throw ScenarioError(where + ": names, count or fraction is required");
}

}  // namespace

v1::Scenario parse_scenario(const std::string& text, const std::string& origin) {
  google::protobuf::TextFormat::Parser parser;
  Collector errors(origin);
  parser.RecordErrorsTo(&errors);
  v1::Scenario s;
  if (!parser.ParseFromString(text, &s))
    throw ScenarioError(errors.first().empty() ? origin + ": does not parse as a scenario" : errors.first());
  normalize(s);
  return s;
}

v1::Scenario load_scenario(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ScenarioError(path + ": cannot be read");
  std::ostringstream text;
  text << in.rdbuf();
  try {
    return parse_scenario(text.str(), path);
  } catch (const ScenarioError& e) {
    const std::string what = e.what();
    if (what.rfind(path, 0) == 0) throw;
    throw ScenarioError(path + ": " + what);
  }
}

void normalize(v1::Scenario& s) {
  if (s.name().empty()) throw ScenarioError("name: is required");
  if (s.duration_ms() == 0) throw ScenarioError("duration_ms: must be > 0");
  auto& c = *s.mutable_controller();
  if (!c.sweep_interval_ms()) c.set_sweep_interval_ms(5000);
  if (!c.action_deadline_ms()) c.set_action_deadline_ms(30000);
  if (!c.node_deadline_ms()) c.set_node_deadline_ms(10000);
  if (!c.checkin_max_s()) c.set_checkin_max_s(120);
  if (c.cpu_allocation_ratio() == 0) c.set_cpu_allocation_ratio(16.0);
  if (c.ram_allocation_ratio() == 0) c.set_ram_allocation_ratio(1.5);
  if (s.nodes().empty()) throw ScenarioError("nodes: at least one node group is required");
  std::set<std::string> prefixes;
  for (int i = 0; i < s.nodes_size(); ++i) {
    auto& g = *s.mutable_nodes(i);
    const std::string where = "nodes[" + std::to_string(i) + "]";
    if (g.prefix().empty()) g.set_prefix("node");
    if (g.count() == 0) throw ScenarioError(where + ".count: must be > 0");
    if (!prefixes.insert(g.prefix()).second) throw ScenarioError(where + ".prefix: '" + g.prefix() + "' used twice");
    if (!g.vcpus()) g.set_vcpus(64);
    if (!g.memory_mib()) g.set_memory_mib(65536);
    if (!g.checkin_interval_ms()) g.set_checkin_interval_ms(10000);
    if (!g.phase_deadline_ms()) g.set_phase_deadline_ms(2000);
    if (!g.state_deadline_ms()) g.set_state_deadline_ms(10000);
  }
  std::set<std::string> networks;
  for (int i = 0; i < s.networks_size(); ++i) {
    if (s.networks(i).name().empty()) throw ScenarioError("networks[" + std::to_string(i) + "].name: is required");
    networks.insert(s.networks(i).name());
  }
  std::set<std::string> iprefixes;
  for (int i = 0; i < s.instances_size(); ++i) {
    auto& g = *s.mutable_instances(i);
    const std::string where = "instances[" + std::to_string(i) + "]";
    if (g.prefix().empty()) g.set_prefix("vm");
    if (!iprefixes.insert(g.prefix()).second) throw ScenarioError(where + ".prefix: '" + g.prefix() + "' used twice");
    if (g.count() == 0) throw ScenarioError(where + ".count: must be > 0");
    if (!g.vcpus()) g.set_vcpus(1);
    if (!g.memory_mib()) g.set_memory_mib(4);
    if (g.clients() == 0) g.set_clients(1);
    if (g.clients() > 64) throw ScenarioError(where + ".clients: at most 64");
    if (!g.network().empty() && !networks.count(g.network()))
      throw ScenarioError(where + ".network: no network named '" + g.network() + "'");
  }
  for (int i = 0; i < s.workload_size(); ++i) {
    const auto& a = s.workload(i);
    const std::string where = "workload[" + std::to_string(i) + "]";
    if (a.action().empty()) throw ScenarioError(where + ".action: is required");
    check_target(a.instances(), where + ".instances");
  }
  for (int i = 0; i < s.faults_size(); ++i) {
    const auto& f = s.faults(i);
    const std::string where = "faults[" + std::to_string(i) + "]";
    switch (f.kind_case()) {
      case v1::SimFault::kNodeCrash: check_target(f.node_crash().nodes(), where + ".node_crash.nodes"); break;
      case v1::SimFault::kPartition: check_target(f.partition().nodes(), where + ".partition.nodes"); break;
      case v1::SimFault::kMissedCheckins:
        check_target(f.missed_checkins().nodes(), where + ".missed_checkins.nodes");
        if (!f.missed_checkins().count()) throw ScenarioError(where + ".missed_checkins.count: must be > 0");
        break;
      case v1::SimFault::kControllerCrash: break;
      case v1::SimFault::kStuckDevice: check_target(f.stuck_device().instances(), where + ".stuck_device.instances"); break;
      case v1::SimFault::kIgnoreKicks: check_target(f.ignore_kicks().instances(), where + ".ignore_kicks.instances"); break;
      case v1::SimFault::kTripleFault: check_target(f.triple_fault().instances(), where + ".triple_fault.instances"); break;
      case v1::SimFault::kDiskErrors: check_target(f.disk_errors().nodes(), where + ".disk_errors.nodes"); break;
      case v1::SimFault::kMessageDelay:
        check_target(f.message_delay().nodes(), where + ".message_delay.nodes");
        if (!f.message_delay().delay_ms()) throw ScenarioError(where + ".message_delay.delay_ms: must be > 0");
        break;
      case v1::SimFault::KIND_NOT_SET: throw ScenarioError(where + ": no fault kind set");
    }
  }
  auto& l = *s.mutable_links();
  if (!l.has_reconnect_min_ms()) l.set_reconnect_min_ms(0);
  if (!l.has_reconnect_max_ms()) l.set_reconnect_max_ms(std::max<uint64_t>(1000, l.reconnect_min_ms()));
  if (l.reconnect_max_ms() < l.reconnect_min_ms())
    throw ScenarioError("links.reconnect_max_ms: must be >= reconnect_min_ms");
  if (!l.has_lose_in_flight()) l.set_lose_in_flight(true);
  if (l.has_slow_checkin_nodes()) {
    check_target(l.slow_checkin_nodes(), "links.slow_checkin_nodes");
    if (!l.slow_checkin_delay_ms() && !l.slow_checkin_jitter_ms())
      throw ScenarioError("links.slow_checkin_delay_ms: slow_checkin_delay_ms or slow_checkin_jitter_ms is required");
  }
  auto& inv = *s.mutable_invariants();
  if (!inv.error_fanout_ms()) inv.set_error_fanout_ms(1000);
  if (!inv.action_grace_ms()) inv.set_action_grace_ms(2 * c.sweep_interval_ms());
}

}  // namespace apiary::sim
