#include "net/switch.hpp"

namespace apiary::net {

Switch::Switch(Config config)
    : config_(std::move(config)), table_(config_.mac_ageing, config_.mac_capacity), thread_([this] { run(); }) {}

Switch::~Switch() {
  {
    std::lock_guard lk(wake_mutex_);
    stop_ = true;
  }
  wake_cv_.notify_all();
  thread_.join();
}

PortId Switch::add_port(std::string name, std::string kind, std::shared_ptr<PortSink> sink) {
  std::unique_lock lk(ports_mutex_);
  auto p = std::make_shared<Port>();
  p->id = next_id_++;
  p->name = std::move(name);
  p->kind = std::move(kind);
  p->sink = std::move(sink);
  ports_.emplace(p->id, p);
  ++generation_;
  return p->id;
}

void Switch::remove_port(PortId id) {
  std::shared_ptr<Port> gone;
  {
    std::unique_lock lk(ports_mutex_);
    auto it = ports_.find(id);
    if (it == ports_.end()) return;
    gone = it->second;
    ports_.erase(it);
    ++generation_;
  }
  size_t dropped;
  {
    std::lock_guard q(gone->q_mutex);
    dropped = gone->queue.size();
    gone->queue.clear();
  }
  {
    std::lock_guard lk(wake_mutex_);
    pending_ -= std::min(pending_, dropped);
  }
  idle_cv_.notify_all();
  std::lock_guard t(table_mutex_);
  table_.forget_port(id);
}

bool Switch::ingress(PortId id, std::span<const uint8_t> frame) noexcept {
  std::shared_lock lk(ports_mutex_);
  auto it = ports_.find(id);
  if (it == ports_.end()) return false;
  Port& p = *it->second;
  if (!frame_size_ok(frame.size())) {
    p.rx_bad.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  {
    std::lock_guard q(p.q_mutex);
    if (p.queue.size() >= config_.queue_frames) {
      p.rx_queue_full.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    try {
      p.queue.emplace_back(frame.begin(), frame.end());
    } catch (...) {
      p.rx_queue_full.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
  }
  p.rx_frames.fetch_add(1, std::memory_order_relaxed);
  p.rx_bytes.fetch_add(frame.size(), std::memory_order_relaxed);
  {
    std::lock_guard w(wake_mutex_);
    ++pending_;
  }
  wake_cv_.notify_one();
  return true;
}

void Switch::run() {
  std::vector<std::shared_ptr<Port>> ports;
  uint64_t seen_generation = ~uint64_t{0};
  std::vector<std::vector<uint8_t>> batch;
  for (;;) {
    {
      std::unique_lock lk(wake_mutex_);
      busy_ = false;
      idle_cv_.notify_all();
      wake_cv_.wait(lk, [&] { return stop_ || pending_ > 0; });
      if (stop_) return;
      busy_ = true;
    }
    {
      std::shared_lock lk(ports_mutex_);
      if (generation_ != seen_generation) {
        ports.clear();
        for (auto& [id, p] : ports_) ports.push_back(p);
        seen_generation = generation_;
      }
    }
    // One pass: up to kBatchFrames from each port in turn, so one busy port
    // cannot starve the others.
    size_t taken_total = 0;
    for (auto& p : ports) {
      batch.clear();
      {
        std::lock_guard q(p->q_mutex);
        while (!p->queue.empty() && batch.size() < switch_defaults::kBatchFrames) {
          batch.push_back(std::move(p->queue.front()));
          p->queue.pop_front();
        }
      }
      if (batch.empty()) continue;
      taken_total += batch.size();
      {
        std::lock_guard w(wake_mutex_);
        pending_ -= std::min(pending_, batch.size());
      }
      for (const auto& f : batch) forward(ports, *p, f);
    }
    if (taken_total == 0) {
      // The pending count belonged to ports that were removed meanwhile.
      std::lock_guard w(wake_mutex_);
      size_t queued = 0;
      std::shared_lock lk(ports_mutex_);
      for (auto& [id, p] : ports_) {
        std::lock_guard q(p->q_mutex);
        queued += p->queue.size();
      }
      pending_ = queued;
    }
  }
}

void Switch::emit(Port& out, std::span<const uint8_t> frame) {
  if (out.sink && out.sink->emit(frame)) {
    out.tx_frames.fetch_add(1, std::memory_order_relaxed);
    out.tx_bytes.fetch_add(frame.size(), std::memory_order_relaxed);
  } else {
    out.tx_dropped.fetch_add(1, std::memory_order_relaxed);
  }
}

void Switch::forward(const std::vector<std::shared_ptr<Port>>& ports, const Port& in, std::span<const uint8_t> frame) {
  const auto now = Clock::now();
  const Mac dst = destination(frame);
  std::optional<PortId> to;
  {
    std::lock_guard t(table_mutex_);
    table_.learn(source(frame), in.id, now);
    if (!is_group(dst)) to = table_.lookup(dst, now);
    if (to && *to == in.id) {
      ++hairpin_;
      return;
    }
    if (!to) ++flooded_;
  }
  for (auto& p : ports) {
    if (p->id == in.id) continue;
    if (to && p->id != *to) continue;
    emit(*p, frame);
  }
}

SwitchStats Switch::stats() const {
  SwitchStats s;
  {
    std::shared_lock lk(ports_mutex_);
    for (auto& [id, p] : ports_) {
      PortStats ps;
      ps.id = id;
      ps.name = p->name;
      ps.kind = p->kind;
      ps.rx_frames = p->rx_frames.load();
      ps.rx_bytes = p->rx_bytes.load();
      ps.tx_frames = p->tx_frames.load();
      ps.tx_bytes = p->tx_bytes.load();
      ps.rx_dropped_queue_full = p->rx_queue_full.load();
      ps.rx_dropped_bad_frame = p->rx_bad.load();
      ps.tx_dropped = p->tx_dropped.load();
      s.ports.push_back(std::move(ps));
    }
  }
  std::lock_guard t(table_mutex_);
  s.mac_entries = table_.size();
  s.mac_moves = table_.moves();
  s.mac_not_learned = table_.not_learned();
  s.flooded = flooded_;
  s.hairpin_drops = hairpin_;
  return s;
}

size_t Switch::port_count() const {
  std::shared_lock lk(ports_mutex_);
  return ports_.size();
}

bool Switch::wait_idle(std::chrono::milliseconds timeout) const {
  std::unique_lock lk(wake_mutex_);
  return idle_cv_.wait_for(lk, timeout, [&] { return pending_ == 0 && !busy_; });
}

namespace {

// The switch's side of a guest NIC: hands frames to the device while one is
// connected.
class GuestSink final : public PortSink {
 public:
  bool emit(std::span<const uint8_t> frame) noexcept override {
    std::lock_guard lk(mutex_);
    return port_ != nullptr && port_->deliver(frame);
  }
  void connect(devices::NetPort* port) noexcept {
    std::lock_guard lk(mutex_);
    port_ = port;
  }

 private:
  std::mutex mutex_;
  devices::NetPort* port_ = nullptr;
};

class GuestBackend final : public devices::NetBackend {
 public:
  GuestBackend(std::shared_ptr<Switch> sw, std::string name) : sw_(std::move(sw)), sink_(std::make_shared<GuestSink>()) {
    id_ = sw_->add_port(std::move(name), "guest", sink_);
  }
  ~GuestBackend() override {
    sink_->connect(nullptr);
    sw_->remove_port(id_);
  }
  void connect(devices::NetPort* port) noexcept override { sink_->connect(port); }
  bool transmit(std::span<const uint8_t> frame) noexcept override { return sw_->ingress(id_, frame); }

 private:
  std::shared_ptr<Switch> sw_;
  std::shared_ptr<GuestSink> sink_;
  PortId id_ = 0;
};

}  // namespace

std::shared_ptr<devices::NetBackend> make_guest_port(std::shared_ptr<Switch> sw, std::string name) {
  return std::make_shared<GuestBackend>(std::move(sw), std::move(name));
}

}  // namespace apiary::net
