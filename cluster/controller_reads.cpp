#include "cluster/controller_reads.hpp"

#include "cluster/controller_internal.hpp"

namespace apiary::actors {

using namespace controller_detail;

ControllerReads::ControllerReads(std::string store_path, std::shared_ptr<const ChangeFeed> feed)
    : path_(std::move(store_path)), feed_(std::move(feed)) {}

ControllerReads::~ControllerReads() = default;

template <class T, class F>
caf::expected<T> ControllerReads::with_reader(F&& fn) {
  std::unique_ptr<control::StateStore> store;
  {
    std::lock_guard lock(mu_);
    if (!idle_.empty()) {
      store = std::move(idle_.back());
      idle_.pop_back();
    }
  }
  try {
    if (!store) store = std::make_unique<control::StateStore>(control::StateStore::open_reader(path_));
    caf::expected<T> out{caf::error{}};
    store->read_snapshot([&] { out = fn(*store); });
    std::lock_guard lock(mu_);
    idle_.push_back(std::move(store));
    return out;
  } catch (const StoreError& e) {
    return store_failed(e);  // the connection is dropped: the next read opens a fresh one
  }
}

caf::expected<std::vector<InstanceInfo>> ControllerReads::list() {
  return with_reader<std::vector<InstanceInfo>>([&](control::StateStore& s) { return read_instances(s, *feed_); });
}

caf::expected<InstanceInfo> ControllerReads::get(const std::string& id) {
  return with_reader<InstanceInfo>([&](control::StateStore& s) { return read_instance(s, *feed_, id); });
}

caf::expected<std::vector<ActionInfo>> ControllerReads::actions(const std::string& id) {
  return with_reader<std::vector<ActionInfo>>([&](control::StateStore& s) { return read_actions(s, id); });
}

}  // namespace apiary::actors
