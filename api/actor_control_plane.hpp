// ControlPlaneApi (what the HTTP server calls) implemented on the controller
// and node actors: each call is one request with a deadline from a scoped
// actor, so an HTTP handler never waits longer than `deadline`.
#pragma once

#include <caf/all.hpp>

#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "actors/console_actor.hpp"
#include "cluster/controller_actor.hpp"
#include "cluster/controller_reads.hpp"
#include "cluster/node_actor.hpp"
#include "api/control_plane_api.hpp"

namespace apiary::apps {

class ActorControlPlane final : public ControlPlaneApi {
 public:
  // `nodes` by name: the console routes go straight to the node running the
  // instance (in-process cluster); for any other node they go through the
  // controller (consoleof), which reaches nodes in other processes.
  // With `reads` (a controller in this process, its store on disk), the
  // reads of instances (list, get, action log) are served off the writer
  // on the calling thread (cluster/controller_reads.hpp); without, they
  // are requests to the controller like everything else.
  ActorControlPlane(caf::actor_system& sys, actors::controller_actor controller,
                    std::map<std::string, actors::node_actor> nodes,
                    std::chrono::milliseconds deadline = std::chrono::seconds(10),
                    std::shared_ptr<actors::ControllerReads> reads = nullptr);

  Result<v1::Instance> create(const v1::InstanceSpec& spec) override;
  Result<v1::InstanceList> list() override;
  Result<v1::Instance> get(const std::string& id) override;
  Result<v1::ActionAccepted> act(const std::string& id, const v1::ActionRequest& request) override;
  Result<v1::ActionLog> actions(const std::string& id) override;
  Result<v1::ConsoleHistory> console_history(const std::string& id) override;
  Result<ConsoleSubscription> console_attach(const std::string& id,
                                             std::function<void(std::string)> on_output) override;
  Result<v1::Network> create_network(const v1::CreateNetworkRequest& request) override;
  Result<v1::NetworkList> list_networks() override;
  Result<v1::Network> get_network(const std::string& id) override;
  Result<v1::Network> delete_network(const std::string& id) override;
  Result<v1::Instance> create_with_request_id(const v1::InstanceSpec& spec, const std::string& request_id) override;
  Result<v1::NodeList> list_nodes() override;
  Result<v1::Node> stop_node(const std::string& name) override;
  Result<std::string> metrics() override;
  // A relay actor subscribed to the controller (watch_atom) and monitoring
  // it (its end is on_end); detach() ends the relay.
  Result<WatchSubscription> watch(std::function<void(const v1::Changes&)> on_change,
                                  std::function<void(const std::string&)> on_end) override;

 private:
  // The console actor of a running instance, or an error answer.
  Result<actors::console_actor> console_of(const std::string& id);

  caf::actor_system& sys_;
  actors::controller_actor controller_;
  std::map<std::string, actors::node_actor> nodes_;
  std::chrono::milliseconds deadline_;
  std::shared_ptr<actors::ControllerReads> reads_;
};

}  // namespace apiary::apps
