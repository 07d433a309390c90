// Reads off the writer: the API's reads of instances (list, get, action
// log) served on the caller's thread from read-only connections to the
// controller's store, with the controller's live views (the VMM states
// nodes report, the histories) added as the controller adds them.
//
// Why: through the controller every read waited behind each message
// already in its mailbox and then for the open batch's fsync (group commit
// holds every answer until the batch is durable); under load that made a
// GET ~30x slower than idle. A reader connection sees only committed
// transactions, which synchronous=FULL has made durable, so it needs
// neither: it shows nothing that a crash could take back.
//
// What a reader shows may lag the controller by the batch in flight; an
// answer the controller gave (an id, an action id) is committed before it
// is sent, so a read after it sees it.
#pragma once

#include <caf/expected.hpp>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cluster/control_types.hpp"

namespace apiary::control {
class StateStore;
}

namespace apiary::actors {

namespace controller_detail {
struct ChangeFeed;
}

class ControllerReads {
 public:
  // Connections are opened on first use: one per caller at a time, kept
  // for the next (an HTTP server's threads each end up with one).
  ControllerReads(std::string store_path, std::shared_ptr<const controller_detail::ChangeFeed> feed);
  ~ControllerReads();
  ControllerReads(const ControllerReads&) = delete;
  ControllerReads& operator=(const ControllerReads&) = delete;

  // The errors are the controller's own answers for the same reads:
  // not_found (404) for an unknown id, a store failure (500) otherwise.
  caf::expected<std::vector<InstanceInfo>> list();
  caf::expected<InstanceInfo> get(const std::string& id);
  caf::expected<std::vector<ActionInfo>> actions(const std::string& id);

 private:
  // Runs fn on an idle connection (opening one if none is), in one read
  // snapshot; a connection that failed is closed, not kept.
  template <class T, class F>
  caf::expected<T> with_reader(F&& fn);

  std::string path_;
  std::shared_ptr<const controller_detail::ChangeFeed> feed_;
  std::mutex mu_;
  std::vector<std::unique_ptr<control::StateStore>> idle_;
};

}  // namespace apiary::actors
