// The node actor (see node_actor.hpp for the messages and why it exists).
//
// How an action completes: the node subscribes to each instance actor's
// state stream and keeps the latest (state, target) per instance. An action
// sends the instance its API call and registers a waiter: a predicate over
// the states that follow, a deadline (a delayed wait_dl message) and a
// callback. The first of "predicate satisfied", "predicate failed" (the
// instance went somewhere else, e.g. destroy while booting) and "deadline"
// resolves it, exactly once. Nothing waits forever.
//
// The node is subscribed to each instance actor it spawns from the actor's
// first moment (spawn_instance's subscriber: no subscribe round trip). A state event
// names its instance and comes from the instance actor: an event whose sender
// is not the instance's current VMM is a late one from an earlier VMM (a
// stopped instance is started again as a new one) and is ignored. (Until
// 2026-12-05 a relay actor per instance tagged the events: an actor and a
// message hop per instance, for what the sender says already.) The node
// links to its instances: when the node ends, so do they.
#include "cluster/node_actor.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <utility>

#include "actors/deadline_timer.hpp"
#include "actors/errors.hpp"
#include "actors/instance_actor.hpp"
#include "cluster/controller_actor.hpp"
#include "devices/machine_snapshot.hpp"
#include "devices/virtio_net.hpp"
#include "net/network_actor.hpp"
#include "proto/spec.hpp"
#include "proto/apiary/v1/instance.pb.h"
#include "proto/apiary/v1/snapshot.pb.h"
#include "vmm-core/boot.hpp"

namespace apiary::actors {
namespace {

// A waiter's verdict on one state event.
enum class Verdict { pending, done, failed };
using Check = std::function<Verdict(const std::string& state, const std::string& target)>;
using Done = std::function<void(const std::string& error)>;  // "" = success

// The state waits' deadlines, earliest first: (instance id, waiter no).
// One timer for all of them (actors/deadline_timer.hpp): a node starting a
// hundred instances used to file a hundred delayed messages that fired
// after the waits were long over.
using WaitDeadlines = Deadlines<std::pair<std::string, uint64_t>, wait_dl_atom>;

struct Waiter {
  uint64_t no = 0;
  Check check;
  Done done;
  WaitDeadlines::entry deadline;  // its entry, removed when it resolves in time
};

struct NodeInstance {
  std::string spec_bytes;    // the instance's own spec: what start / reboot / unrescue boot
  std::string old_spec;      // resize: the spec before it, until confirm / revert
  std::string running_spec;  // what the current VMM was built from (the rescue spec while rescued)
  instance_actor handle;
  std::string state = "destroy";  // no VMM until spawn_vm
  std::string target;
  std::string reason;  // why the instance is in `state` (its fault, when it failed)
  std::string saved_path;  // suspended: its state file (no VMM meanwhile)
  // Bumped by every action the controller sends for this instance: a
  // fallback that fires late (stop's forced power-off after the guest
  // ignored the power button) checks that no later action took over.
  uint64_t action_epoch = 0;
  bool migrating_in = false;  // a live migration's destination (migratein)
  std::vector<Waiter> waiters;
};

// --- disk-file jobs ----------------------------------------------------------
//
// Copies and zeroing run on a thread of their own: the actor only starts the
// thread and polls the job's slot (file_poll) until it is done or its
// deadline passes. Polling instead of a message from the thread keeps the
// actor's mailbox fed from actor threads only (which is also what CAF's
// deterministic test scheduler needs). At the deadline the job is told to
// cancel (it checks between 1 MiB chunks and removes its partial file).

struct JobSlot {
  std::mutex m;
  bool done = false;
  std::string error;
  std::string detail;
  std::atomic<bool> cancel{false};
};
// The work: returns the detail (one line per file), throws std::exception on failure.
using JobWork = std::function<std::string(const std::atomic<bool>& cancel)>;
using Reply = std::function<void(const std::string& error, const std::string& detail)>;

struct FileJob {
  std::shared_ptr<JobSlot> slot;
  caf::actor_clock::time_point deadline;
  Reply done;
};

struct NodeState {
  NodeConfig cfg;
  std::map<std::string, NodeInstance> instances;
  std::map<uint64_t, FileJob> jobs;
  uint64_t next_job = 1;
  uint64_t next_waiter = 1;
  // Waiters of instances since forgotten stay until their deadline passes.
  WaitDeadlines wait_deadlines;
  bool draining = false;
  bool stopped = false;
  bool partitioned = false;
  // The controller has every instance's VMM state (lifecycle_atom): false
  // until a check-in is acknowledged after the start, a failed check-in or
  // a partition; the acknowledgement then re-sends them all.
  bool vmm_reported = false;
  // The controller has acknowledged a check-in since the node started: until
  // then report_vmm sends nothing (that acknowledgement sends every state).
  bool acknowledged_once = false;
  // Check-ins failed in a row since the last one answered, and the last
  // failure's reason (NodeConfig::on_log says each new one, and every
  // kCheckinFailuresRepeat-th in a row).
  uint64_t checkins_failed = 0;
  std::string checkin_problem;
  bool disk_fault = false;  // simulation: disk-file jobs fail with EIO
  std::string save_dir;     // cfg.save_dir, or the default under the temp directory (save_dir())
  std::map<std::string, net::SpawnedNetwork> networks;  // network id -> its actor and switch here
  static inline const char* name = "node";
};
using node_pointer = node_actor::stateful_pointer<NodeState>;

std::string power_state(const NodeInstance& ni) {
  // A migration's destination that has not run the guest yet runs nothing
  // (the controller's settlement must not take it for the guest).
  if (ni.migrating_in && ni.state != "run" && ni.state != "quiesce" && ni.state != "halt" && ni.state != "destroy")
    return kPowerMigrating;
  if ((ni.state == "halt" || ni.state == "destroy") && !ni.saved_path.empty()) return kPowerSuspended;
  if (ni.state == "halt" || ni.state == "destroy") return kPowerShutdown;
  if (ni.state == "quiesce" && ni.target == "quiesce") return kPowerPaused;
  return kPowerRunning;
}

bool is_down(const NodeInstance& ni) { return ni.state == "halt" || ni.state == "destroy"; }

// Tells the controller an instance's VMM state (the dashboard shows it live):
// one message per lifecycle step, never per guest event. Nothing until the
// controller has acknowledged the node's first check-in: that
// acknowledgement sends every instance's state, which supersedes whatever
// was reported before it (instances started with the node sent each of
// their steps and then all of them again). Later, a failed check-in does
// not hold reports back: an instance removed meanwhile would otherwise
// never have its last state sent.
void report_vmm(node_pointer self, const std::string& id, const NodeInstance& ni) {
  auto& st = self->state;
  if (!st.cfg.controller || st.partitioned || !st.acknowledged_once) return;
  self->send(caf::actor_cast<controller_actor>(st.cfg.controller), lifecycle_atom::value, st.cfg.name, id, ni.state,
             power_state(ni));
}

InstanceConfig instance_config(const NodeConfig& node, const std::string& id, const v1::InstanceSpec& spec) {
  InstanceConfig c;
  c.name = id;
  auto& m = c.machine;
  m.vcpus = spec.board().vcpus();
  m.memory_mib = spec.board().memory_mib();
  m.cmdline = spec.boot().cmdline();
  if (spec.boot().has_embedded_guest()) {
    if (!node.embedded_guest)
      throw std::runtime_error("embedded guest '" + spec.boot().embedded_guest() + "' requested, but node " +
                               node.name + " has no embedded guests");
    m.kernel = node.embedded_guest(spec.boot().embedded_guest());
  } else if (spec.boot().has_kernel_path()) {
    m.kernel = vmm::read_file(spec.boot().kernel_path());
  } else {
    throw std::runtime_error("the spec names no kernel");
  }
  if (spec.boot().has_initrd_path()) m.initrd = vmm::read_file(spec.boot().initrd_path());
  for (const auto& b : spec.devices().block()) m.disks.push_back({b.id(), b.path(), b.read_only()});
  // NICs: the MAC the controller recorded (or the VMM's default); the port
  // on the network's switch is added by spawn_vm. The guest learns its
  // addresses from the command line (guest/linux/rc reads apiary.ip).
  for (int i = 0; i < spec.devices().nics_size(); ++i) {
    const auto& nic = spec.devices().nics(i);
    auto mac = spec::parse_mac(nic.mac());
    m.nics.push_back({mac ? *mac : devices::default_mac(id, static_cast<unsigned>(i)), nullptr});
    if (!nic.ipv4().empty())
      m.cmdline += (m.cmdline.empty() ? "" : " ") + std::string("apiary.ip=") + spec::format_mac(m.nics.back().mac) +
                   "," + nic.ipv4();
  }
  m.rng = spec.devices().rng().enabled();
  m.pc_testdev = spec.devices().pc_testdev();
  if (spec.devices().serial().history_bytes() > 0) m.console_history_bytes = spec.devices().serial().history_bytes();
  if (node.simulated) m.backend = devices::VcpuBackendKind::simulated;
  c.wait_for_console = spec.boot_conditions().wait_for_console();
  if (spec.boot_conditions().console_wait_timeout_ms() > 0)
    c.console_wait = std::chrono::milliseconds(spec.boot_conditions().console_wait_timeout_ms());
  c.phase_deadline = node.phase_deadline;
  c.fan_out_latency = node.fan_out_latency;
  c.migration_policy.max_bytes_per_second = node.migration_bytes_per_second;
  return c;
}

void retire(node_pointer self, NodeInstance& ni) {
  if (!ni.handle) return;
  self->unlink_from(ni.handle);
  self->send_exit(ni.handle, caf::exit_reason::user_shutdown);
  ni.handle = nullptr;
}

// The network's actor and switch on this node, made on first use.
net::SpawnedNetwork& network(node_pointer self, const std::string& id) {
  auto& st = self->state;
  auto it = st.networks.find(id);
  if (it != st.networks.end()) return it->second;
  net::NetworkActorConfig c;
  c.network_id = id;
  c.node = st.cfg.name;
  c.vni = net::vni_of(id);
  c.tunnel = st.cfg.tunnel;
  if (st.cfg.taps) c.tap = net::tap_name(c.vni);
  auto spawned = net::spawn_network(self->system(), std::move(c));
  self->link_to(spawned.actor);
  return st.networks.emplace(id, std::move(spawned)).first->second;
}

void sync_networks(node_pointer self);

// Spawns (or re-spawns: a new VMM from the same spec) the instance actor
// and subscribes to its states. Returns an error message, "" on success.
// restore: the VMM is built from this saved state rather than booted (its
// NICs still get their ports here: backends are the node's, not the file's).
std::string spawn_vm(node_pointer self, const std::string& id, const std::string& spec_bytes,
                     std::shared_ptr<const devices::snapshot::Header> restore = nullptr,
                     std::shared_ptr<IncomingMigration> incoming = nullptr) {
  auto& st = self->state;
  v1::InstanceSpec spec;
  if (!spec.ParseFromString(spec_bytes)) return "instance " + id + ": the spec does not parse";
  InstanceConfig config;
  try {
    config = instance_config(st.cfg, id, spec);
    if (restore) {
      config.machine = devices::snapshot::restore_config(restore);
      if (config.machine.nics.size() != static_cast<size_t>(spec.devices().nics_size()))
        return "instance " + id + ": the saved machine has " + std::to_string(config.machine.nics.size()) +
               " NICs, its spec " + std::to_string(spec.devices().nics_size());
      config.wait_for_console = false;
    }
    if (incoming) {
      config.incoming = std::move(incoming);
      config.wait_for_console = false;
    }
  } catch (const std::exception& e) {
    return "instance " + id + ": " + e.what();
  }
  bool new_network = false;
  if (st.cfg.data_plane) {
    for (int i = 0; i < spec.devices().nics_size(); ++i) {
      const std::string& net_id = spec.devices().nics(i).network();
      new_network = new_network || !st.networks.count(net_id);
      config.machine.nics[static_cast<size_t>(i)].backend =
          net::make_guest_port(network(self, net_id).sw, id + "/" + std::to_string(i));
    }
  }
  NodeInstance& ni = st.instances[id];
  retire(self, ni);
  ni.running_spec = spec_bytes;
  ni.state = "start";
  ni.target.clear();
  ni.handle = spawn_instance(self->system(), std::move(config), caf::actor_cast<caf::actor>(self));
  self->link_to(ni.handle);
  if (new_network) sync_networks(self);  // peers now, not at the next tick
  return {};
}

void add_waiter(node_pointer self, const std::string& id, Check check, std::chrono::milliseconds deadline,
                Done done) {
  auto it = self->state.instances.find(id);
  if (it == self->state.instances.end()) {
    done("instance " + id + " is not on node " + self->state.cfg.name);
    return;
  }
  auto& st = self->state;
  const uint64_t no = st.next_waiter++;
  auto entry = st.wait_deadlines.add(self, self->clock().now() + deadline, std::pair{id, no});
  it->second.waiters.push_back(Waiter{no, std::move(check), std::move(done), entry});
}

// Takes waiter `no` of instance `id` out of its list; nullopt if there is
// no such waiter (resolved, or its instance forgotten).
std::optional<Waiter> take_waiter(node_pointer self, const std::string& id, uint64_t no) {
  auto it = self->state.instances.find(id);
  if (it == self->state.instances.end()) return std::nullopt;
  auto& ws = it->second.waiters;
  auto w = std::find_if(ws.begin(), ws.end(), [no](const Waiter& x) { return x.no == no; });
  if (w == ws.end()) return std::nullopt;
  Waiter out = std::move(*w);
  ws.erase(w);
  return out;
}

// Resolves one waiter (if still pending) in time, with `error` ("" =
// success): its deadline goes with it. False if there is no such waiter.
bool resolve(node_pointer self, const std::string& id, uint64_t no, const std::string& error) {
  auto w = take_waiter(self, id, no);
  if (!w) return false;
  self->state.wait_deadlines.remove(w->deadline);
  w->done(error);
  return true;
}

// The wait timer fired: every wait whose deadline had passed by the time it
// was set for fails (deadline_timer.hpp: a state event that arrived after
// the timer message, in time for a later deadline, is handled first). Their
// deadline entries are gone already (fired() took them out).
void expire_waits(node_pointer self, uint64_t generation) {
  self->state.wait_deadlines.fired(self, generation, [self](const std::pair<std::string, uint64_t>& w) {
    if (auto t = take_waiter(self, w.first, w.second))
      t->done("instance " + w.first + ": deadline passed waiting for its state");
  });
}

// Sends an instance API call, then waits for `check`. A refused call
// resolves the wait with the instance's error.
template <class Atom>
void call_and_wait(node_pointer self, const std::string& id, Atom atom, Check check, std::chrono::milliseconds deadline,
                   Done done) {
  auto it = self->state.instances.find(id);
  if (it == self->state.instances.end()) {
    done("instance " + id + " is not on node " + self->state.cfg.name);
    return;
  }
  const uint64_t no = self->state.next_waiter;  // the number add_waiter hands out
  add_waiter(self, id, std::move(check), deadline, std::move(done));
  // No timeout of its own: the wait's deadline bounds the call (a timeout
  // would be one more clock entry per call, fired long after the answer).
  self->request(it->second.handle, caf::infinite, atom)
      .then([](ack_atom) {}, [self, id, no](caf::error& e) { resolve(self, id, no, describe(e)); });
}

Check reach(std::string want, std::string want_target = {}) {
  return [want, want_target](const std::string& s, const std::string& t) {
    if (s == want && (want_target.empty() || t == want_target)) return Verdict::done;
    if (want != "destroy" && (s == "destroy" || s == "halt")) return Verdict::failed;
    return Verdict::pending;
  };
}

// Through Reboot and back to Run.
Check rebooted() {
  auto seen = std::make_shared<bool>(false);
  return [seen](const std::string& s, const std::string&) {
    if (s == "reboot") *seen = true;
    if (*seen && s == "run") return Verdict::done;
    if (s == "destroy") return Verdict::failed;
    return Verdict::pending;
  };
}

// Spawns from the spec and starts, then waits for Run.
// Spawns a new VMM from `spec_bytes` and starts it, then waits for Run.
// own_spec: the spec is the instance's own (not a rescue spec) and is kept
// for the next start.
void boot_vm(node_pointer self, const std::string& id, const std::string& spec_bytes, bool own_spec, Done done) {
  if (auto err = spawn_vm(self, id, spec_bytes); !err.empty()) {
    done(err);
    return;
  }
  if (own_spec) self->state.instances[id].spec_bytes = spec_bytes;
  call_and_wait(self, id, start_atom::value, reach("run"), self->state.cfg.state_deadline, std::move(done));
}

std::string saved_file(node_pointer self, const std::string& id);
const std::string& save_dir(node_pointer self);

// A fresh boot: a saved state (a suspended instance hard-rebooted, or
// deleted) is dropped, also one saved before this node process started.
// One unlink(2), not std::filesystem::remove's stat and unlink: every start
// of every instance comes here, and there is almost never a file. (Not
// skipped while the save directory is absent: resume and shelve take any
// file they find there, whoever put it there since.)
void drop_saved(node_pointer self, const std::string& id) {
  ::unlink(saved_file(self, id).c_str());
  auto it = self->state.instances.find(id);
  if (it == self->state.instances.end() || it->second.saved_path.empty()) return;
  ::unlink(it->second.saved_path.c_str());
  it->second.saved_path.clear();
}

void power_on(node_pointer self, const std::string& id, const std::string& spec_bytes, Done done) {
  drop_saved(self, id);
  boot_vm(self, id, spec_bytes, true, std::move(done));
}

void power_off(node_pointer self, const std::string& id, Done done) {
  auto it = self->state.instances.find(id);
  if (it == self->state.instances.end() || it->second.state == "destroy") {
    done({});
    return;
  }
  call_and_wait(self, id, poweroff_atom::value, reach("destroy"), self->state.cfg.state_deadline, std::move(done));
}

// Nova's stop (clean_shutdown): the ACPI power button first. A guest that
// has not armed it (no ACPI OS, still booting, paused) or is not down
// within shutdown_timeout is powered off, as Nova falls back to a hard
// power-off after its shutdown_timeout.
void shut_down(node_pointer self, const std::string& id, Done done) {
  auto it = self->state.instances.find(id);
  if (it == self->state.instances.end() || it->second.state != "run") return power_off(self, id, std::move(done));
  const uint64_t epoch = it->second.action_epoch;
  call_and_wait(self, id, soft_off_atom::value, reach("destroy"), self->state.cfg.shutdown_timeout,
                [self, id, done, epoch](const std::string& err) {
                  if (err.empty()) return done({});
                  // A hard reboot (which Nova lets supersede a stop) ran
                  // meanwhile: its VM must not be powered off now. Found by
                  // the chaos suite: the record said ACTIVE, the node had
                  // powered the VM off 20 s after the superseded stop.
                  auto i = self->state.instances.find(id);
                  if (i != self->state.instances.end() && i->second.action_epoch != epoch)
                    return done("the stop of instance " + id + " was superseded by a later action");
                  power_off(self, id, done);
                });
}

std::string power_of(node_pointer self, const std::string& id) {
  auto it = self->state.instances.find(id);
  return it == self->state.instances.end() ? std::string(kPowerDeleted) : power_state(it->second);
}

// The action table of nodeact.
void run_action(node_pointer self, const std::string& id, const std::string& action, const std::string& spec_bytes,
                std::function<void(const std::string& error)> done) {
  auto& st = self->state;
  auto it = st.instances.find(id);
  const bool known = it != st.instances.end();
  if (known) ++it->second.action_epoch;
  const std::string spec = known && spec_bytes.empty() ? it->second.spec_bytes : spec_bytes;
  const auto deadline = st.cfg.state_deadline;
  if (action == "poweroff") return shut_down(self, id, std::move(done));
  if (action == "delete") {
    return power_off(self, id, [self, id, done](const std::string& err) {
      if (!err.empty()) return done(err);
      drop_saved(self, id);
      auto i = self->state.instances.find(id);
      if (i != self->state.instances.end()) {
        retire(self, i->second);
        self->state.instances.erase(i);
      }
      done({});
    });
  }
  if (action == "poweron" || (action == "hardreboot" && (!known || is_down(it->second)))) {
    if (known && !is_down(it->second) && action == "poweron") return done({});  // already running
    if (spec.empty()) return done("instance " + id + " is not on node " + st.cfg.name + " and no spec was given");
    return power_on(self, id, spec, std::move(done));
  }
  if (!known) return done("instance " + id + " is not on node " + st.cfg.name);
  if (action == "pause") return call_and_wait(self, id, pause_atom::value, reach("quiesce", "quiesce"), deadline, done);
  if (action == "unpause") return call_and_wait(self, id, resume_atom::value, reach("run"), deadline, done);
  if (action == "hardreboot") return call_and_wait(self, id, hard_reset_atom::value, rebooted(), deadline, done);
  if (action == "softreboot") {
    // Ctrl-Alt-Del; a guest that ignores it within the grace period is reset.
    return call_and_wait(self, id, soft_reset_atom::value, rebooted(), st.cfg.soft_reboot_grace,
                         [self, id, done, deadline](const std::string& err) {
                           if (err.empty()) return done({});
                           call_and_wait(self, id, hard_reset_atom::value, rebooted(), deadline, done);
                         });
  }
  done("unknown node action '" + action + "'");
}

// --- disk files (these run on a job thread, never on the actor) ---------------

std::string sys_error(const std::string& what, const std::string& path, int err) {
  return what + " " + path + ": " + std::system_category().message(err);
}

struct Fd {
  int fd;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

// Copies src to dst: written to dst.partial, fsynced, then renamed over dst,
// so dst is either absent (or as it was) or complete. Returns the bytes copied.
uint64_t copy_file(const std::string& src, const std::string& dst, const std::atomic<bool>& cancel) {
  Fd in(::open(src.c_str(), O_RDONLY | O_CLOEXEC));
  if (in.fd < 0) throw std::runtime_error(sys_error("open", src, errno));
  const std::string tmp = dst + ".partial";
  Fd out(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (out.fd < 0) throw std::runtime_error(sys_error("create", tmp, errno));
  auto fail = [&tmp](const std::string& msg) {
    ::unlink(tmp.c_str());
    throw std::runtime_error(msg);
  };
  std::vector<char> buf(size_t{1} << 20);
  uint64_t total = 0;
  for (;;) {
    if (cancel.load()) fail("copy " + src + " -> " + dst + ": cancelled at the deadline");
    const ssize_t n = ::read(in.fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(sys_error("read", src, errno));
    }
    if (n == 0) break;
    for (ssize_t off = 0; off < n;) {
      const ssize_t w = ::write(out.fd, buf.data() + off, static_cast<size_t>(n - off));
      if (w < 0) {
        if (errno == EINTR) continue;
        fail(sys_error("write", tmp, errno));
      }
      off += w;
    }
    total += static_cast<uint64_t>(n);
  }
  if (::fsync(out.fd) != 0) fail(sys_error("fsync", tmp, errno));
  if (::rename(tmp.c_str(), dst.c_str()) != 0) fail(sys_error("rename", tmp, errno));
  return total;
}

// Truncates a file to 0 and back to its size: every byte reads as zero.
uint64_t zero_file(const std::string& path) {
  struct stat sb {};
  if (::stat(path.c_str(), &sb) != 0) throw std::runtime_error(sys_error("stat", path, errno));
  Fd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (fd.fd < 0) throw std::runtime_error(sys_error("open", path, errno));
  if (::ftruncate(fd.fd, 0) != 0) throw std::runtime_error(sys_error("truncate", path, errno));
  if (::ftruncate(fd.fd, sb.st_size) != 0) throw std::runtime_error(sys_error("truncate", path, errno));
  if (::fsync(fd.fd) != 0) throw std::runtime_error(sys_error("fsync", path, errno));
  return static_cast<uint64_t>(sb.st_size);
}

struct DiskFile {
  std::string path;
  bool read_only = false;
};

// The backups of `path`: <path>.backup-<digits>, as (n, file), highest n first.
std::vector<std::pair<uint64_t, std::string>> backups_of(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path p(path);
  const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  const std::string prefix = p.filename().string() + ".backup-";
  std::vector<std::pair<uint64_t, std::string>> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string digits = name.substr(prefix.size());
    if (digits.size() > 18 || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
      continue;
    out.emplace_back(std::stoull(digits), (dir / name).string());
  }
  if (ec) throw std::runtime_error(sys_error("list", dir.string(), ec.value()));
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  return out;
}

// Every disk to <path>.snapshot-<name>; all or nothing.
JobWork snapshot_work(std::vector<DiskFile> disks, std::string name) {
  return [disks = std::move(disks), name = std::move(name)](const std::atomic<bool>& cancel) {
    std::vector<std::string> made;
    std::string detail;
    try {
      for (const auto& d : disks) {
        const std::string dst = d.path + ".snapshot-" + name;
        if (::access(dst.c_str(), F_OK) == 0) throw std::runtime_error(sys_error("create", dst, EEXIST));
        const uint64_t n = copy_file(d.path, dst, cancel);
        made.push_back(dst);
        detail += "copied " + d.path + " -> " + dst + " (" + std::to_string(n) + " bytes)\n";
      }
    } catch (...) {
      for (const auto& f : made) ::unlink(f.c_str());
      throw;
    }
    return detail.empty() ? std::string("the instance has no disks: nothing copied\n") : detail;
  };
}

// Shelving's disk copies: every writable disk to <shelf>/disk-<i> (to_shelf),
// or back from there to its path (unshelve, on whichever node it lands: a
// path on shared storage gets its own bytes back, a local one is filled).
// A disk the shelf has no copy of (read-only) is used as it is.
JobWork shelf_disks_work(std::vector<DiskFile> disks, std::string shelf, bool to_shelf) {
  return [disks = std::move(disks), shelf = std::move(shelf), to_shelf](const std::atomic<bool>& cancel) {
    std::vector<std::string> made;
    std::string detail;
    try {
      if (to_shelf) {
        std::error_code ec;
        std::filesystem::create_directories(shelf, ec);
        if (ec) throw std::runtime_error(sys_error("create", shelf, ec.value()));
      }
      for (size_t i = 0; i < disks.size(); ++i) {
        if (disks[i].read_only) continue;
        const std::string copy = shelf + "/disk-" + std::to_string(i);
        if (!to_shelf && ::access(copy.c_str(), F_OK) != 0) continue;
        const std::string& src = to_shelf ? disks[i].path : copy;
        const std::string& dst = to_shelf ? copy : disks[i].path;
        const uint64_t n = copy_file(src, dst, cancel);
        if (to_shelf) made.push_back(dst);
        detail += "copied " + src + " -> " + dst + " (" + std::to_string(n) + " bytes)\n";
      }
    } catch (...) {
      for (const auto& f : made) ::unlink(f.c_str());
      throw;
    }
    return detail;
  };
}

// Every disk to <path>.backup-<n>, then only the newest `rotation` backups
// of each disk are kept.
JobWork backup_work(std::vector<DiskFile> disks, uint64_t rotation) {
  return [disks = std::move(disks), rotation](const std::atomic<bool>& cancel) {
    std::vector<std::string> made;
    std::string detail;
    try {
      for (const auto& d : disks) {
        const auto existing = backups_of(d.path);
        const uint64_t n = existing.empty() ? 1 : existing.front().first + 1;
        const std::string dst = d.path + ".backup-" + std::to_string(n);
        const uint64_t bytes = copy_file(d.path, dst, cancel);
        made.push_back(dst);
        detail += "copied " + d.path + " -> " + dst + " (" + std::to_string(bytes) + " bytes)\n";
      }
    } catch (...) {
      for (const auto& f : made) ::unlink(f.c_str());
      throw;
    }
    for (const auto& d : disks) {
      const auto all = backups_of(d.path);
      for (size_t i = rotation; i < all.size(); ++i) {
        if (::unlink(all[i].second.c_str()) != 0) throw std::runtime_error(sys_error("remove", all[i].second, errno));
        detail += "removed " + all[i].second + " (rotation " + std::to_string(rotation) + ")\n";
      }
    }
    return detail.empty() ? std::string("the instance has no disks: nothing copied\n") : detail;
  };
}

// Every writable disk zeroed, or the first one copied from `image`.
JobWork rebuild_work(std::vector<DiskFile> disks, std::string image) {
  return [disks = std::move(disks), image = std::move(image)](const std::atomic<bool>& cancel) {
    std::string detail;
    bool first = true;
    for (const auto& d : disks) {
      if (d.read_only) {
        detail += "kept " + d.path + " (read-only)\n";
        continue;
      }
      if (first && !image.empty()) {
        const uint64_t n = copy_file(image, d.path, cancel);
        detail += "recreated " + d.path + " from " + image + " (" + std::to_string(n) + " bytes)\n";
      } else {
        const uint64_t n = zero_file(d.path);
        detail += "zeroed " + d.path + " (" + std::to_string(n) + " bytes)\n";
      }
      first = false;
    }
    return detail.empty() ? std::string("the instance has no disks\n") : detail;
  };
}

void run_file_job(node_pointer self, JobWork work, Reply done) {
  auto& st = self->state;
  if (st.disk_fault) {
    done("disk-file job on node " + st.cfg.name + ": Input/output error (injected disk fault)", {});
    return;
  }
  auto slot = std::make_shared<JobSlot>();
  if (st.cfg.inline_file_jobs) {
    try {
      slot->detail = work(slot->cancel);
    } catch (const std::exception& e) {
      slot->error = e.what();
    }
    slot->done = true;
    const uint64_t no = st.next_job++;
    st.jobs[no] = FileJob{slot, self->clock().now() + st.cfg.file_deadline, std::move(done)};
    self->send(self, file_poll_atom::value, no);
    return;
  }
  try {
    std::thread([slot, work = std::move(work)] {
      std::string detail;
      std::string error;
      try {
        detail = work(slot->cancel);
      } catch (const std::exception& e) {
        error = e.what();
      }
      std::lock_guard lock(slot->m);
      slot->done = true;
      slot->error = std::move(error);
      slot->detail = std::move(detail);
    }).detach();
  } catch (const std::exception& e) {
    done(std::string("no thread for the disk-file job: ") + e.what(), {});
    return;
  }
  const uint64_t no = st.next_job++;
  st.jobs[no] = FileJob{slot, self->clock().now() + st.cfg.file_deadline, std::move(done)};
  self->delayed_send(self, st.cfg.file_poll, file_poll_atom::value, no);
}

void poll_file_job(node_pointer self, uint64_t no) {
  auto& st = self->state;
  auto it = st.jobs.find(no);
  if (it == st.jobs.end()) return;
  bool finished = false;
  std::string error;
  std::string detail;
  {
    std::lock_guard lock(it->second.slot->m);
    finished = it->second.slot->done;
    error = it->second.slot->error;
    detail = it->second.slot->detail;
  }
  if (!finished && self->clock().now() < it->second.deadline) {
    self->delayed_send(self, st.cfg.file_poll, file_poll_atom::value, no);
    return;
  }
  Reply done = std::move(it->second.done);
  if (!finished) {
    it->second.slot->cancel.store(true);
    error = "disk-file job: deadline passed (" + std::to_string(st.cfg.file_deadline.count()) + " ms)";
    detail.clear();
  }
  st.jobs.erase(it);
  done(error, detail);
}

// --- actions with arguments ----------------------------------------------------

std::string board_text(const v1::InstanceSpec& s) {
  return std::to_string(s.board().vcpus()) + " vCPUs, " + std::to_string(s.board().memory_mib()) + " MiB";
}

// The failure of a disk-file step after which the VM is as it was before the
// action (the controller reverts the action instead of erroring the instance).
inline constexpr const char* kIntactPrefix = "vm intact: ";

// The instance refused the call: it was busy (e.g. still rebooting) and
// did nothing. call_and_wait passes its error on as describe() renders it,
// "wrong_state: ...".
const std::string& refusal_prefix() {
  static const std::string prefix = std::string(to_string(ActorErrc::wrong_state)) + ": ";
  return prefix;
}
bool refused_by_instance(const std::string& err) { return err.compare(0, refusal_prefix().size(), refusal_prefix()) == 0; }

// A node action's failure as its answer: the instance's own refusal stays
// wrong_state, for the controller to settle from the power list; any other
// failure is action_failed.
caf::error action_error(const std::string& err) {
  if (refused_by_instance(err))
    return make_error(ActorErrc::wrong_state, err.substr(refusal_prefix().size()));
  return make_error(ActorErrc::action_failed, err);
}

// The failure of the pause an extended action starts with. A pause the
// instance refused did nothing, so the VM is as it was and the controller
// reverts the action (before, a snapshot that met a rebooting VM left its
// instance in ERROR while the VM ran on).
std::string pause_failure(const std::string& purpose, const std::string& err) {
  return (refused_by_instance(err) ? std::string(kIntactPrefix) : std::string()) + "pause for " + purpose + ": " + err;
}

// Pauses a running VM, runs the job, resumes it. A VM that is not running
// (stopped, already paused) is copied as it is.
void quiesced(node_pointer self, const std::string& id, JobWork work, Reply done) {
  auto it = self->state.instances.find(id);
  const bool running = it != self->state.instances.end() && power_state(it->second) == kPowerRunning;
  if (!running) {
    return run_file_job(self, std::move(work), [done](const std::string& err, const std::string& detail) {
      done(err.empty() ? err : kIntactPrefix + err, detail);
    });
  }
  const auto deadline = self->state.cfg.state_deadline;
  call_and_wait(self, id, pause_atom::value, reach("quiesce", "quiesce"), deadline,
                [self, id, work, done, deadline](const std::string& err) {
                  if (!err.empty()) return done(pause_failure("a consistent copy", err), {});
                  run_file_job(self, work, [self, id, done, deadline](const std::string& jerr, const std::string& detail) {
                    call_and_wait(self, id, resume_atom::value, reach("run"), deadline,
                                  [done, jerr, detail](const std::string& rerr) {
                                    const std::string d =
                                        "paused the VM for the copy\n" + detail + (rerr.empty() ? "resumed the VM\n" : "");
                                    if (!rerr.empty())
                                      return done((jerr.empty() ? "" : jerr + "; ") + "resume after the copy: " + rerr, d);
                                    done(jerr.empty() ? jerr : kIntactPrefix + jerr, d);
                                  });
                  });
                });
}

std::vector<DiskFile> disks_of(const v1::InstanceSpec& s) {
  std::vector<DiskFile> out;
  for (const auto& b : s.devices().block()) out.push_back({b.path(), b.read_only()});
  return out;
}

std::string arg(const std::map<std::string, std::string>& args, const std::string& key, std::string fallback = {}) {
  auto it = args.find(key);
  return it == args.end() || it->second.empty() ? fallback : it->second;
}

// Powers off whatever runs, then (if `restart`) a new VMM from `spec`
// (own_spec: it becomes the instance's spec).
void replace_vmm(node_pointer self, const std::string& id, const std::string& spec, bool own_spec, bool restart,
                 Done done) {
  power_off(self, id, [self, id, spec, own_spec, restart, done](const std::string& err) {
    if (!err.empty()) return done("power off: " + err);
    if (own_spec) self->state.instances[id].spec_bytes = spec;
    if (!restart) return done({});
    boot_vm(self, id, spec, own_spec, done);
  });
}

// Found once: std::filesystem::temp_directory_path stats the directory
// each time it is asked.
const std::string& save_dir(node_pointer self) {
  auto& st = self->state;
  if (!st.save_dir.empty()) return st.save_dir;
  if (!st.cfg.save_dir.empty()) return st.save_dir = st.cfg.save_dir;
  std::error_code ec;
  auto tmp = std::filesystem::temp_directory_path(ec);
  return st.save_dir = ((ec ? std::filesystem::path("/tmp") : tmp) / ("apiary-saved-" + st.cfg.name)).string();
}
std::string saved_file(node_pointer self, const std::string& id) { return save_dir(self) + "/" + id + ".snap"; }

// Nova's suspend: pause, save the whole VM state to the node's save_dir,
// then end the VMM. A save that fails resumes a VM this action paused.
void suspend_vm(node_pointer self, const std::string& id, Reply done) {
  auto it = self->state.instances.find(id);
  if (it == self->state.instances.end() || is_down(it->second))
    return done(kIntactPrefix + std::string("instance ") + id + " has no running VMM on node " + self->state.cfg.name, {});
  const bool was_running = power_state(it->second) == kPowerRunning;
  const std::string path = saved_file(self, id);
  auto save = [self, id, path, was_running, done] {
    std::error_code ec;
    std::filesystem::create_directories(save_dir(self), ec);
    auto i = self->state.instances.find(id);
    if (i == self->state.instances.end() || !i->second.handle) return done("instance " + id + " went away", {});
    self->request(i->second.handle, self->state.cfg.file_deadline, save_atom::value, path)
        .then(
            [self, id, path, done](uint64_t bytes, uint64_t pages, uint64_t micros) {
              const std::string detail = "saved " + path + ": " + std::to_string(bytes >> 10) + " KiB, " +
                                         std::to_string(pages) + " pages of RAM, " + std::to_string(micros / 1000) +
                                         " ms\n";
              self->state.instances[id].saved_path = path;
              power_off(self, id, [done, detail](const std::string& err) {
                if (!err.empty()) return done("end the VMM after the save: " + err, detail);
                done({}, detail + "the VMM is gone\n");
              });
            },
            [self, id, path, was_running, done](caf::error& e) {
              const std::string why = "save: " + describe(e);
              std::error_code ec;
              std::filesystem::remove(path, ec);  // a save that finished after its deadline
              if (!was_running) return done(kIntactPrefix + why, {});
              call_and_wait(self, id, resume_atom::value, reach("run"), self->state.cfg.state_deadline,
                            [done, why](const std::string& rerr) {
                              if (!rerr.empty()) return done(why + "; resume after it: " + rerr, {});
                              done(kIntactPrefix + why, "resumed the VM\n");
                            });
            });
  };
  if (!was_running) return save();
  call_and_wait(self, id, pause_atom::value, reach("quiesce", "quiesce"), self->state.cfg.state_deadline,
                [save, done](const std::string& err) {
                  if (!err.empty()) return done(pause_failure("the save", err), {});
                  save();
                });
}

// Nova's resume: a new VMM from the saved state, then Run; the file goes
// once the guest runs again. Works for an instance this node process does
// not know (saved before a restart) as long as its file is there.
void resume_vm(node_pointer self, const std::string& id, const std::string& spec_bytes, Reply done) {
  auto& st = self->state;
  auto it = st.instances.find(id);
  if (it != st.instances.end() && !is_down(it->second))
    return done(kIntactPrefix + std::string("instance ") + id + " already has a VMM on node " + st.cfg.name, {});
  const std::string path =
      it != st.instances.end() && !it->second.saved_path.empty() ? it->second.saved_path : saved_file(self, id);
  std::shared_ptr<const devices::snapshot::Header> header;
  try {
    header = devices::snapshot::read_header(path);
  } catch (const std::exception& e) {
    return done(kIntactPrefix + std::string("restore: ") + e.what(), {});
  }
  if (auto err = spawn_vm(self, id, spec_bytes, header); !err.empty()) return done(kIntactPrefix + err, {});
  auto& ni = st.instances[id];
  ni.spec_bytes = spec_bytes;
  ni.saved_path = path;  // until it runs: a failed restore leaves it suspended
  call_and_wait(self, id, start_atom::value, reach("run"), st.cfg.state_deadline,
                [self, id, path, done](const std::string& err) {
                  if (!err.empty()) {
                    auto i = self->state.instances.find(id);
                    const std::string why = i != self->state.instances.end() && !i->second.reason.empty()
                                                ? i->second.reason
                                                : err;
                    return done(kIntactPrefix + std::string("restore from ") + path + ": " + why, {});
                  }
                  drop_saved(self, id);
                  done({}, "restored from " + path + "\n");
                });
}

// Nova's shelve, the node's part: the VM's state and its writable disks go
// to the shelf directory the controller named, and the VMM ends. A running
// VM is paused first, so the disk copies and the state agree; a suspended
// one's saved state moves to the shelf; a stopped one has no state (it
// boots afresh at unshelve). Until the VMM is gone, any failure leaves the
// VM as it was (resumed, the copies removed).
void shelve_vm(node_pointer self, const std::string& id, const v1::InstanceSpec& spec, const std::string& shelf,
               Reply done) {
  namespace fs = std::filesystem;
  auto it = self->state.instances.find(id);
  const bool known = it != self->state.instances.end();
  const bool live = known && !is_down(it->second);
  const bool was_running = live && power_state(it->second) == kPowerRunning;
  const std::string state_file = shelf + "/state.snap";
  auto undo = [self, id, shelf, was_running, done](const std::string& why) {
    std::error_code ec;
    fs::remove_all(shelf, ec);
    if (!was_running) return done(kIntactPrefix + why, {});
    call_and_wait(self, id, resume_atom::value, reach("run"), self->state.cfg.state_deadline,
                  [done, why](const std::string& rerr) {
                    if (!rerr.empty()) return done(why + "; resume after it: " + rerr, {});
                    done(kIntactPrefix + why, "resumed the VM\n");
                  });
  };
  auto copy_then = [self, spec, shelf, undo](std::function<void(std::string)> next) {
    run_file_job(self, shelf_disks_work(disks_of(spec), shelf, true),
                 [undo, next](const std::string& err, const std::string& detail) {
                   if (!err.empty()) return undo("disk copy to the shelf: " + err);
                   next(detail);
                 });
  };
  if (!live) {
    // Stopped, or suspended (its saved state goes along; also one saved
    // before this node process started).
    std::string saved = known ? it->second.saved_path : std::string();
    if (saved.empty() && fs::exists(saved_file(self, id))) saved = saved_file(self, id);
    return copy_then([self, id, saved, state_file, undo, done](std::string detail) {
      if (saved.empty()) return done({}, detail);
      std::error_code ec;
      fs::rename(saved, state_file, ec);
      if (!ec) {
        self->state.instances[id].saved_path.clear();
        return done({}, detail + "moved the saved state to " + state_file + "\n");
      }
      // Another filesystem: a copy, on a job thread like the disks.
      run_file_job(self,
                   [saved, state_file](const std::atomic<bool>& cancel) {
                     const uint64_t n = copy_file(saved, state_file, cancel);
                     return "copied the saved state to " + state_file + " (" + std::to_string(n) + " bytes)\n";
                   },
                   [self, id, saved, detail, undo, done](const std::string& err, const std::string& d) {
                     if (!err.empty()) return undo("move the saved state " + saved + " to the shelf: " + err);
                     std::error_code rec;
                     fs::remove(saved, rec);
                     self->state.instances[id].saved_path.clear();
                     done({}, detail + d);
                   });
    });
  }
  auto save_and_end = [self, id, state_file, undo, done](std::string detail) {
    auto i = self->state.instances.find(id);
    if (i == self->state.instances.end() || !i->second.handle) return done("instance " + id + " went away", {});
    self->request(i->second.handle, self->state.cfg.file_deadline, save_atom::value, state_file)
        .then(
            [self, id, state_file, detail, done](uint64_t bytes, uint64_t pages, uint64_t) {
              const std::string d = detail + "saved the VM state to " + state_file + " (" +
                                    std::to_string(bytes >> 10) + " KiB, " + std::to_string(pages) + " pages)\n";
              power_off(self, id, [done, d](const std::string& err) {
                if (!err.empty()) return done("end the VMM after the save: " + err, d);
                done({}, d + "the VMM is gone\n");
              });
            },
            [undo](caf::error& e) { undo("save: " + describe(e)); });
  };
  auto paused = [copy_then, save_and_end] { copy_then(save_and_end); };
  if (!was_running) return paused();
  call_and_wait(self, id, pause_atom::value, reach("quiesce", "quiesce"), self->state.cfg.state_deadline,
                [paused, done](const std::string& err) {
                  if (!err.empty()) return done(pause_failure("the shelve", err), {});
                  paused();
                });
}

// Nova's unshelve, on the node the controller picked: the disks come back
// from the shelf, then the VM is restored from the shelved state (or boots
// from its spec when it was shelved stopped), and the shelf is removed once
// it runs. Any failure before that leaves the shelf as it was.
void unshelve_vm(node_pointer self, const std::string& id, const std::string& spec_bytes, const v1::InstanceSpec& spec,
                 const std::string& shelf, Reply done) {
  namespace fs = std::filesystem;
  auto it = self->state.instances.find(id);
  if (it != self->state.instances.end() && !is_down(it->second))
    return done(kIntactPrefix + std::string("instance ") + id + " already has a VMM on node " + self->state.cfg.name, {});
  if (!fs::is_directory(shelf)) return done(kIntactPrefix + std::string("no shelf at ") + shelf, {});
  run_file_job(self, shelf_disks_work(disks_of(spec), shelf, false),
               [self, id, spec_bytes, shelf, done](const std::string& err, const std::string& detail) {
                 if (!err.empty()) return done(kIntactPrefix + std::string("disk copy from the shelf: ") + err, {});
                 const std::string state_file = shelf + "/state.snap";
                 std::shared_ptr<const devices::snapshot::Header> header;
                 if (fs::exists(state_file)) {
                   try {
                     header = devices::snapshot::read_header(state_file);
                   } catch (const std::exception& e) {
                     return done(kIntactPrefix + std::string("restore: ") + e.what(), {});
                   }
                 }
                 if (auto e = spawn_vm(self, id, spec_bytes, header); !e.empty()) return done(kIntactPrefix + e, {});
                 self->state.instances[id].spec_bytes = spec_bytes;
                 const std::string how = header ? "restored from " + state_file : "booted from its spec";
                 call_and_wait(self, id, start_atom::value, reach("run"), self->state.cfg.state_deadline,
                               [self, id, shelf, detail, how, done](const std::string& serr) {
                                 if (!serr.empty()) {
                                   auto i = self->state.instances.find(id);
                                   const std::string why =
                                       i != self->state.instances.end() && !i->second.reason.empty() ? i->second.reason
                                                                                                     : serr;
                                   return done(kIntactPrefix + how + ": " + why, detail);
                                 }
                                 std::error_code ec;
                                 fs::remove_all(shelf, ec);
                                 done({}, detail + how + "\nremoved the shelf " + shelf + "\n");
                               });
               });
}

// Live migration's destination: a VMM that waits for the source on a port
// of its own and runs once the source commits. Answers at once with where
// it listens; the instance actor does the waiting (off the actor thread).
void migrate_in(node_pointer self, const std::string& id, const std::string& spec_bytes, Reply done) {
  auto& st = self->state;
  auto it = st.instances.find(id);
  if (it != st.instances.end() && !is_down(it->second))
    return done(kIntactPrefix + std::string("instance ") + id + " already has a VMM on node " + st.cfg.name, {});
  if (st.cfg.simulated)
    return done(kIntactPrefix + std::string("node ") + st.cfg.name +
                    " runs simulated instances: no guest state to migrate into",
                {});
  auto in = std::make_shared<IncomingMigration>();
  try {
    in->listener = std::make_shared<devices::migration::Listener>(st.cfg.migration_host, 0);
  } catch (const std::exception& e) {
    return done(kIntactPrefix + std::string(e.what()), {});
  }
  in->accept_deadline = st.cfg.state_deadline;
  in->total_deadline = st.cfg.migration_deadline;
  // Only the machine the controller asked for: a stray or hostile
  // connection cannot make this node build another one or create files.
  v1::InstanceSpec spec;
  if (!spec.ParseFromString(spec_bytes)) return done(kIntactPrefix + std::string("the spec does not parse"), {});
  devices::migration::Policy::Shape shape{spec.board().vcpus(), spec.board().memory_mib(), {}};
  for (const auto& b : spec.devices().block()) shape.disk_paths.push_back(b.path());
  in->policy.expect = std::move(shape);
  const std::string where = st.cfg.migration_host + ":" + std::to_string(in->listener->port());
  if (auto err = spawn_vm(self, id, spec_bytes, nullptr, in); !err.empty()) return done(kIntactPrefix + err, {});
  auto& ni = st.instances[id];
  ni.spec_bytes = spec_bytes;
  ni.migrating_in = true;
  self->request(ni.handle, st.cfg.phase_deadline, start_atom::value).then([](ack_atom) {}, [](caf::error&) {});
  done({}, "listening " + where + "\n");
}

// Live migration's source: the instance actor migrates the running VM to
// `destination`; once the destination runs it, this node forgets it.
void migrate_out(node_pointer self, const std::string& id, const std::string& destination, Reply done) {
  auto& st = self->state;
  auto it = st.instances.find(id);
  if (it == st.instances.end() || is_down(it->second) || !it->second.handle)
    return done(kIntactPrefix + std::string("instance ") + id + " has no running VMM on node " + st.cfg.name, {});
  if (power_state(it->second) != kPowerRunning)
    return done(kIntactPrefix + std::string("only a running instance migrates live; this one is ") +
                    power_state(it->second),
                {});
  const size_t colon = destination.rfind(':');
  uint32_t port = 0;
  try {
    port = colon == std::string::npos ? 0 : static_cast<uint32_t>(std::stoul(destination.substr(colon + 1)));
  } catch (const std::exception&) {
  }
  if (colon == std::string::npos || colon == 0 || port == 0 || port > 65535)
    return done(kIntactPrefix + std::string("migrateout needs a destination HOST:PORT, got '") + destination + "'", {});
  self->request(it->second.handle, st.cfg.migration_deadline, migrate_atom::value, destination.substr(0, colon), port)
      .then(
          [self, id, done](const std::string& bytes) {
            v1::MigrationStats m;
            m.ParseFromString(bytes);
            char line[320];
            std::snprintf(line, sizeof line,
                          "migrated to %s: %u rounds, %llu pages (%llu while stopped), %.1f MiB, total %.1f ms, "
                          "downtime %.1f ms%s%s\n",
                          m.destination().c_str(), m.rounds(), static_cast<unsigned long long>(m.pages()),
                          static_cast<unsigned long long>(m.final_pages()), m.bytes() / 1048576.0, m.total_ms(),
                          m.downtime_ms(), m.converged() ? "" : " (did not converge: stopped after the round limit)",
                          m.disk_bytes() ? (", " + std::to_string(m.disk_bytes() >> 10) + " KiB of disk copied").c_str()
                                         : "");
            // The guest runs at the destination: nothing of it is left here.
            auto i = self->state.instances.find(id);
            if (i != self->state.instances.end()) {
              retire(self, i->second);
              self->state.instances.erase(i);
            }
            done({}, line);
          },
          [done](caf::error& e) {
            if (e.category() == kErrorCategory && e.code() == static_cast<uint8_t>(ActorErrc::migrate_unknown))
              return done("live migration: " + describe(e), {});
            done(kIntactPrefix + std::string("live migration: ") + describe(e), {});
          });
}

// The nodeact actions that take arguments or report files.
void run_extended(node_pointer self, const std::string& id, const std::string& action, const std::string& spec_in,
                  const std::map<std::string, std::string>& args, Reply done) {
  auto& st = self->state;
  auto it = st.instances.find(id);
  const bool known = it != st.instances.end();
  if (known) ++it->second.action_epoch;
  const bool was_running = known && !is_down(it->second);
  const std::string spec_bytes = !spec_in.empty() ? spec_in : known ? it->second.spec_bytes : std::string();
  v1::InstanceSpec spec;
  if (spec_bytes.empty() || !spec.ParseFromString(spec_bytes))
    return done("instance " + id + ": no spec (or one that does not parse) for " + action, {});
  auto plain = [done](std::string detail) {
    return [done, detail](const std::string& err) { done(err, err.empty() ? detail : std::string()); };
  };
  if (action == "suspend") return suspend_vm(self, id, done);
  if (action == "migratein") return migrate_in(self, id, spec_bytes, done);
  if (action == "migrateout") return migrate_out(self, id, arg(args, "destination"), done);
  if (action == "resume") return resume_vm(self, id, spec_bytes, done);
  if (action == "shelve" || action == "unshelve") {
    const std::string shelf = arg(args, "shelf");
    if (shelf.empty() || shelf.front() != '/') return done(kIntactPrefix + action + " needs an absolute shelf directory", {});
    if (action == "shelve") return shelve_vm(self, id, spec, shelf, done);
    return unshelve_vm(self, id, spec_bytes, spec, shelf, done);
  }
  if (action == "shelveoffload") {
    // The VM is on the shelf: the node forgets it and frees what it held.
    if (known && !is_down(it->second))
      return done(kIntactPrefix + std::string("instance ") + id + " still has a VMM on node " + st.cfg.name, {});
    if (known) {
      retire(self, it->second);
      st.instances.erase(it);
    }
    return done({}, "forgot the instance; its resources on node " + st.cfg.name + " are free\n");
  }
  if (action == "resize") {
    // The kept spec is the one before the first of possibly several resizes.
    const std::string old = known ? (it->second.old_spec.empty() ? it->second.spec_bytes : it->second.old_spec) : "";
    return replace_vmm(self, id, spec_bytes, true, was_running,
                       [self, id, old, done, was_running, spec](const std::string& err) {
                         if (!err.empty()) return done(err, {});
                         self->state.instances[id].old_spec = old;
                         done({}, was_running ? "new VMM with " + board_text(spec) + "\n"
                                              : "stopped; " + board_text(spec) + " at the next start\n");
                       });
  }
  if (action == "confirmresize") {
    if (known) it->second.old_spec.clear();
    return done({}, "the pre-resize spec is dropped\n");
  }
  if (action == "revertresize") {
    const std::string back = !spec_in.empty() ? spec_in : known ? it->second.old_spec : std::string();
    v1::InstanceSpec old;
    if (back.empty() || !old.ParseFromString(back)) return done("instance " + id + ": no pre-resize spec kept", {});
    return replace_vmm(self, id, back, true, was_running, [self, id, done, was_running, old](const std::string& err) {
      if (!err.empty()) return done(err, {});
      self->state.instances[id].old_spec.clear();
      done({}, was_running ? "new VMM with " + board_text(old) + "\n" : "stopped; " + board_text(old) + "\n");
    });
  }
  if (action == "snapshot") {
    const std::string name = arg(args, "name");
    if (name.empty()) return done("snapshot needs a name", {});
    return quiesced(self, id, snapshot_work(disks_of(spec), name), done);
  }
  if (action == "backup") {
    uint64_t rotation = 1;
    try {
      rotation = std::stoull(arg(args, "rotation", "1"));
    } catch (const std::exception&) {
      return done("backup: rotation is not a number", {});
    }
    if (rotation == 0) return done("backup: rotation must be at least 1", {});
    return quiesced(self, id, backup_work(disks_of(spec), rotation), done);
  }
  if (action == "rebuild") {
    const std::string image = arg(args, "image");
    return power_off(self, id, [self, id, spec, spec_bytes, image, done](const std::string& err) {
      if (!err.empty()) return done("power off: " + err, {});
      run_file_job(self, rebuild_work(disks_of(spec), image),
                   [self, id, spec_bytes, done](const std::string& jerr, const std::string& detail) {
                     if (!jerr.empty()) return done(jerr, detail);
                     power_on(self, id, spec_bytes, [done, detail](const std::string& perr) {
                       done(perr, detail + (perr.empty() ? "started a fresh VMM\n" : ""));
                     });
                   });
    });
  }
  if (action == "rescue") {
    v1::InstanceSpec rescue = spec;
    const std::string image = arg(args, "image", "demo");
    rescue.mutable_boot()->set_embedded_guest(image);
    rescue.mutable_boot()->set_cmdline("rescue");
    rescue.mutable_boot()->clear_initrd_path();
    std::string rescue_bytes;
    rescue.SerializeToString(&rescue_bytes);
    self->state.instances[id].spec_bytes = spec_bytes;  // what unrescue boots
    return replace_vmm(self, id, rescue_bytes, false, true,
                       plain("rescue guest '" + image + "' with " + std::to_string(spec.devices().block_size()) +
                             " disk(s), cmdline \"rescue\"\n"));
  }
  if (action == "unrescue") return replace_vmm(self, id, spec_bytes, true, true, plain("normal spec running\n"));
  run_action(self, id, action, spec_in, [done](const std::string& err) { done(err, {}); });
}

void schedule_tick(node_pointer self) {
  self->delayed_send(self, self->state.cfg.checkin_interval, tick_atom::value);
}

// NodeConfig::status_file: written to a temporary name and renamed, so a
// reader sees the whole of one tick's list or the previous one.
void write_status(node_pointer self) {
  const auto& st = self->state;
  if (st.cfg.status_file.empty()) return;
  const std::string tmp = st.cfg.status_file + ".tmp";
  std::string text;
  for (const auto& [id, ni] : st.instances) text += id + " " + power_state(ni) + "\n";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return;
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  if (ok) ::rename(tmp.c_str(), st.cfg.status_file.c_str());
}

constexpr int kPeerRequestTicks = 5;  // the deadline of a peers request, in check-in intervals

// Networks with no guest port left on this node end (their switch leaves
// the overlay); the others ask the controller for their peers.
void sync_networks(node_pointer self) {
  auto& st = self->state;
  for (auto it = st.networks.begin(); it != st.networks.end();) {
    if (net::guest_ports(it->second.sw->stats()) == 0) {
      // Off the overlay now, not when the actor's state is destroyed: a
      // port of this network made a moment later gets a new switch that
      // must be able to attach under the same VNI.
      if (st.cfg.tunnel) st.cfg.tunnel->detach(net::vni_of(it->first), it->second.sw.get());
      self->unlink_from(it->second.actor);
      self->send_exit(it->second.actor, caf::exit_reason::user_shutdown);
      it = st.networks.erase(it);
    } else {
      ++it;
    }
  }
  if (!st.cfg.controller || st.partitioned || st.stopped || st.networks.empty()) return;
  std::map<std::string, std::string> hosted;
  for (const auto& [id, n] : st.networks) hosted[id] = n.problem;
  const std::string vtep = st.cfg.tunnel ? net::to_string(st.cfg.tunnel->local()) : "";
  // A loaded controller may answer later than one tick: with a deadline of
  // one tick the peers of a busy node were never delivered (seen under
  // ASan). Asked every tick all the same; answers are whole lists, so a
  // late one is corrected by the next.
  self->request(st.cfg.controller, st.cfg.checkin_interval * kPeerRequestTicks, node_net_atom::value, st.cfg.name,
                vtep, hosted)
      .then(
          [self](const std::map<std::string, std::vector<std::string>>& peers) {
            for (const auto& [id, list] : peers) {
              auto it = self->state.networks.find(id);
              if (it != self->state.networks.end()) caf::anon_send(it->second.actor, net::net_peers_atom::value, list);
            }
          },
          [](caf::error&) {});
}

// Appends one Prometheus sample line.
void sample(std::string& out, const char* name, const std::string& labels, uint64_t v) {
  out += std::string(name) + "{" + labels + "} " + std::to_string(v) + "\n";
}

// Prometheus lines of this node's VXLAN tunnel.
std::string render_tunnel(const std::string& node, const net::TunnelStats& t) {
  const std::string base = "node=\"" + escape_label(node) + "\"";
  std::string out;
  auto line = [&](const char* name, const std::string& labels, uint64_t v) { sample(out, name, labels, v); };
  line("apiary_net_tunnel_datagrams_total", base + ",direction=\"rx\"", t.rx_datagrams);
  line("apiary_net_tunnel_datagrams_total", base + ",direction=\"tx\"", t.tx_datagrams);
  line("apiary_net_tunnel_drops_total", base + ",cause=\"garbage\"", t.rx_garbage);
  line("apiary_net_tunnel_drops_total", base + ",cause=\"unknown_vni\"", t.rx_unknown_vni);
  line("apiary_net_tunnel_drops_total", base + ",cause=\"unknown_peer\"", t.rx_unknown_peer);
  line("apiary_net_tunnel_drops_total", base + ",cause=\"send_error\"", t.tx_errors);
  return out;
}

// Prometheus lines of one network's switch on this node.
std::string render_network(const std::string& node, const std::string& network, const net::SwitchStats& s) {
  const std::string base = "node=\"" + escape_label(node) + "\",network=\"" + escape_label(network) + "\"";
  std::string out;
  auto line = [&](const char* name, const std::string& labels, uint64_t v) { sample(out, name, labels, v); };
  for (const auto& p : s.ports) {
    const std::string l = base + ",port=\"" + escape_label(p.name) + "\",kind=\"" + p.kind + "\"";
    line("apiary_net_port_frames_total", l + ",direction=\"rx\"", p.rx_frames);
    line("apiary_net_port_frames_total", l + ",direction=\"tx\"", p.tx_frames);
    line("apiary_net_port_bytes_total", l + ",direction=\"rx\"", p.rx_bytes);
    line("apiary_net_port_bytes_total", l + ",direction=\"tx\"", p.tx_bytes);
    line("apiary_net_port_drops_total", l + ",cause=\"queue_full\"", p.rx_dropped_queue_full);
    line("apiary_net_port_drops_total", l + ",cause=\"bad_frame\"", p.rx_dropped_bad_frame);
    line("apiary_net_port_drops_total", l + ",cause=\"egress_refused\"", p.tx_dropped);
  }
  line("apiary_net_mac_entries", base, s.mac_entries);
  line("apiary_net_flooded_frames_total", base, s.flooded);
  line("apiary_net_hairpin_drops_total", base, s.hairpin_drops);
  line("apiary_net_bad_peers_total", base, s.bad_peers);
  return out;
}

// A node whose check-ins keep failing for the same reason says so again
// after this many, so that its log shows it is still trying.
constexpr uint64_t kCheckinFailuresRepeat = 30;

void check_in(node_pointer self) {
  auto& st = self->state;
  if (!st.cfg.controller || st.partitioned || st.stopped) return;
  self->request(st.cfg.controller, st.cfg.checkin_interval, checkin_atom::value, st.cfg.name, st.cfg.vcpus,
                st.cfg.memory_mib, static_cast<uint32_t>(st.instances.size()), caf::actor_cast<caf::actor>(self),
                st.cfg.cannot_run)
      .then(
          [self](ack_atom) {
            auto& st = self->state;
            if (st.checkins_failed && st.cfg.on_log)
              st.cfg.on_log("checked in again, after " + std::to_string(st.checkins_failed) + " failed check-in(s)");
            st.checkins_failed = 0;
            st.checkin_problem.clear();
            st.acknowledged_once = true;
            if (st.vmm_reported) return;
            st.vmm_reported = true;
            for (const auto& [id, ni] : st.instances) report_vmm(self, id, ni);
          },
          [self](caf::error& e) {
            auto& st = self->state;
            st.vmm_reported = false;
            ++st.checkins_failed;
            std::string why = describe(e);
            if (st.cfg.on_log && why != st.checkin_problem) st.cfg.on_log("check-in failed: " + why);
            else if (st.cfg.on_log && st.checkins_failed % kCheckinFailuresRepeat == 0)
              st.cfg.on_log("check-ins still failing (" + std::to_string(st.checkins_failed) + " in a row): " + why);
            st.checkin_problem = std::move(why);
          });
}

node_actor::behavior_type node_impl(node_pointer self, NodeConfig cfg) {
  self->state.cfg = std::move(cfg);
  // An instance actor that ends on its own is down; any other exit ends the node.
  self->set_exit_handler([self](caf::exit_msg& msg) {
    for (auto& [id, ni] : self->state.instances) {
      if (ni.handle && ni.handle.address() == msg.source) {
        ni.handle = nullptr;
        ni.state = "destroy";
        report_vmm(self, id, ni);
        return;
      }
    }
    // A network actor that ended: the next port of that network makes a new one.
    for (auto it = self->state.networks.begin(); it != self->state.networks.end(); ++it) {
      if (it->second.actor.address() == msg.source) {
        self->state.networks.erase(it);
        return;
      }
    }
    if (self->state.cfg.on_log && msg.reason != caf::exit_reason::user_shutdown)
      self->state.cfg.on_log("stopping: told to exit (" + describe(msg.reason) + ")");
    self->quit(msg.reason);
  });
  // A handler that throws stops the node with what it threw: the process
  // watching it says so and exits (a node that is gone must not look alive).
  self->set_exception_handler([self](caf::scheduled_actor*, std::exception_ptr& thrown) -> caf::error {
    auto why = crash_reason("node " + self->state.cfg.name, thrown);
    if (self->state.cfg.on_log) self->state.cfg.on_log("stopping: " + describe(why));
    return why;
  });
  check_in(self);
  schedule_tick(self);
  return {
      [=](place_atom, const std::string& id, const std::string& spec_bytes) {
        auto rp = self->make_response_promise<std::string>();
        auto& st = self->state;
        if (st.partitioned) return rp;  // cut off: the caller's deadline answers
        if (st.draining || st.stopped) {
          rp.deliver(make_error(ActorErrc::wrong_state, "node " + st.cfg.name + " is draining: no new instances"));
          return rp;
        }
        if (st.instances.count(id)) {
          rp.deliver(make_error(ActorErrc::invalid_argument, "instance " + id + " is already on node " + st.cfg.name));
          return rp;
        }
        if (!st.cfg.cannot_run.empty()) {
          rp.deliver(make_error(ActorErrc::init_failed,
                                "node " + st.cfg.name + " cannot run instances: " + st.cfg.cannot_run));
          return rp;
        }
        power_on(self, id, spec_bytes, [rp](const std::string& err) mutable {
          if (err.empty())
            rp.deliver(std::string(kPowerRunning));
          else
            rp.deliver(make_error(ActorErrc::init_failed, err));
        });
        return rp;
      },
      [=](node_act_atom, const std::string& id, const std::string& action, const std::string& spec_bytes) {
        auto rp = self->make_response_promise<std::string>();
        if (self->state.partitioned) return rp;
        run_action(self, id, action, spec_bytes, [self, rp, id](const std::string& err) mutable {
          if (err.empty())
            rp.deliver(power_of(self, id));
          else
            rp.deliver(action_error(err));
        });
        return rp;
      },
      [=](node_act_atom, const std::string& id, const std::string& action, const std::string& spec_bytes,
          const std::map<std::string, std::string>& args) {
        auto rp = self->make_response_promise<std::string, std::string>();
        if (self->state.partitioned) return rp;
        run_extended(self, id, action, spec_bytes, args,
                     [self, rp, id](const std::string& err, const std::string& detail) mutable {
                       const std::string intact = kIntactPrefix;
                       if (err.empty())
                         rp.deliver(power_of(self, id), detail);
                       else if (err.compare(0, intact.size(), intact) == 0)
                         rp.deliver(make_error(ActorErrc::invalid_argument, err.substr(intact.size())));
                       else
                         rp.deliver(action_error(err));
                     });
        return rp;
      },
      [=](inst_spec_atom, const std::string& id) -> std::string {
        auto it = self->state.instances.find(id);
        return it == self->state.instances.end() || !it->second.handle ? std::string() : it->second.running_spec;
      },
      [=](file_poll_atom, uint64_t no) { poll_file_job(self, no); },
      [=](power_list_atom) {
        auto rp = self->make_response_promise<std::map<std::string, std::string>>();
        if (self->state.partitioned) return rp;
        std::map<std::string, std::string> out;
        for (const auto& [id, ni] : self->state.instances) out[id] = power_state(ni);
        rp.deliver(std::move(out));
        return rp;
      },
      [=](capacity_atom) -> caf::result<uint32_t, uint64_t, uint32_t> {
        auto& st = self->state;
        return {st.cfg.vcpus, st.cfg.memory_mib, static_cast<uint32_t>(st.instances.size())};
      },
      [=](drain_atom) {
        auto rp = self->make_response_promise<ack_atom>();
        auto& st = self->state;
        if (st.partitioned) return rp;
        st.draining = true;
        std::vector<std::string> ids;
        for (const auto& [id, ni] : st.instances) ids.push_back(id);
        auto remaining = std::make_shared<size_t>(ids.size() + 1);
        auto failed = std::make_shared<std::string>();
        auto one_done = [self, rp, remaining, failed](const std::string& err) mutable {
          if (!err.empty()) *failed += (failed->empty() ? "" : "; ") + err;
          if (--*remaining > 0) return;
          self->state.stopped = true;
          if (failed->empty())
            rp.deliver(ack_atom::value);
          else
            rp.deliver(make_error(ActorErrc::ack_timeout, "drain of node " + self->state.cfg.name + ": " + *failed));
        };
        for (const auto& id : ids) power_off(self, id, one_done);
        one_done({});
        return rp;
      },
      [=](instance_of_atom, const std::string& id) -> caf::actor {
        auto it = self->state.instances.find(id);
        return it == self->state.instances.end() ? caf::actor{} : caf::actor_cast<caf::actor>(it->second.handle);
      },
      [=](console_of_atom, const std::string& id) {
        auto rp = self->make_response_promise<caf::actor>();
        auto& st = self->state;
        if (st.partitioned) return rp;
        auto it = st.instances.find(id);
        if (it == st.instances.end() || !it->second.handle) {
          rp.deliver(make_error(ActorErrc::destroyed, "node " + st.cfg.name + " does not run instance " + id));
          return rp;
        }
        self->request(it->second.handle, st.cfg.phase_deadline, console_atom::value)
            .then(
                [rp, id](const console_actor& c) mutable {
                  if (!c)
                    rp.deliver(make_error(ActorErrc::wrong_state, "instance " + id + " has no console yet"));
                  else
                    rp.deliver(caf::actor_cast<caf::actor>(c));
                },
                [rp](caf::error& e) mutable { rp.deliver(std::move(e)); });
        return rp;
      },
      [=](metrics_atom) {
        auto rp = self->make_response_promise<std::string>();
        auto& st = self->state;
        if (st.partitioned) return rp;  // cut off: the caller's deadline answers
        auto text = std::make_shared<std::string>(
            st.cfg.fan_out_latency->render("apiary_fanout_duration_seconds", "node=\"" + escape_label(st.cfg.name) + "\""));
        if (st.cfg.tunnel) *text += render_tunnel(st.cfg.name, st.cfg.tunnel->stats());
        for (const auto& [id, n] : st.networks)
          if (n.tap)
            sample(*text, "apiary_net_tap_read_errors_total",
                   "node=\"" + escape_label(st.cfg.name) + "\",network=\"" + escape_label(id) + "\"", n.tap->read_errors());
        auto left = std::make_shared<size_t>(st.networks.size());
        if (*left == 0) {
          rp.deliver(*text);
          return rp;
        }
        // One answer per network actor (or its failure), then the reply.
        for (const auto& [id, n] : st.networks) {
          auto done = [rp, text, left]() mutable {
            if (--*left == 0) rp.deliver(*text);
          };
          self->request(n.actor, st.cfg.phase_deadline, net::net_stats_atom::value)
              .then(
                  [text, done, node = st.cfg.name, id = id](const net::SwitchStats& s) mutable {
                    *text += render_network(node, id, s);
                    done();
                  },
                  [done](caf::error&) mutable { done(); });
        }
        return rp;
      },
      [=](disk_fault_atom, bool on) -> ack_atom {
        self->state.disk_fault = on;
        return ack_atom::value;
      },
      [=](partition_atom, bool cut) -> ack_atom {
        self->state.partitioned = cut;
        if (cut) self->state.vmm_reported = false;
        if (!cut) check_in(self);
        return ack_atom::value;
      },
      [=](tick_atom) {
        write_status(self);
        check_in(self);
        sync_networks(self);
        schedule_tick(self);
      },
      [=](wait_dl_atom, uint64_t generation) { expire_waits(self, generation); },
      [=](state_atom, const std::string& id, const std::string& state, uint64_t, const std::string& target,
          const std::string& reason) {
        auto& st = self->state;
        auto it = st.instances.find(id);
        if (it == st.instances.end() || !it->second.handle ||
            caf::actor_cast<caf::strong_actor_ptr>(it->second.handle) != self->current_sender())
          return;  // replaced or forgotten, or not from an instance actor
        const std::string power_before = power_state(it->second);
        const bool moved = it->second.state != state;
        it->second.state = state;
        if (state == "run") it->second.migrating_in = false;  // the migrated guest runs here now
        it->second.target = target;
        it->second.reason = reason;
        if (moved || power_state(it->second) != power_before) report_vmm(self, id, it->second);
        std::vector<std::pair<uint64_t, Verdict>> settled;
        for (auto& w : it->second.waiters) {
          Verdict v = w.check(state, target);
          if (v != Verdict::pending) settled.emplace_back(w.no, v);
        }
        for (auto& [no, v] : settled)
          resolve(self, id, no,
                  v == Verdict::done ? std::string()
                                     : "instance " + id + " went to " + state + " instead" +
                                           (reason.empty() ? std::string() : " (" + reason + ")"));
      },
  };
}

}  // namespace

const std::vector<MetricFamily>& node_metric_families() {
  static const std::vector<MetricFamily> families = {
      {"apiary_fanout_duration_seconds", "histogram",
       "Duration of one instance fan-out phase (every vCPU or device acknowledged), by node and phase."},
      {"apiary_net_port_frames_total", "counter", "Frames through a port of a network's switch, by direction."},
      {"apiary_net_port_bytes_total", "counter", "Bytes through a port of a network's switch, by direction."},
      {"apiary_net_port_drops_total", "counter", "Frames a port dropped, by cause."},
      {"apiary_net_mac_entries", "gauge", "MAC addresses a network's switch knows on the node."},
      {"apiary_net_flooded_frames_total", "counter", "Frames flooded to every port of a network's switch."},
      {"apiary_net_hairpin_drops_total", "counter", "Frames whose destination was their own ingress port."},
      {"apiary_net_bad_peers_total", "counter", "Unparsable VTEP peers a network actor was given."},
      {"apiary_net_tap_read_errors_total", "counter", "Failed reads of a network's host tap on the node."},
      {"apiary_net_tunnel_datagrams_total", "counter", "VXLAN datagrams of the node's tunnel, by direction."},
      {"apiary_net_tunnel_drops_total", "counter",
       "VXLAN datagrams the node's tunnel dropped, by cause (garbage, unknown_vni, unknown_peer, send_error)."},
  };
  return families;
}


node_actor spawn_node(caf::actor_system& sys, NodeConfig config) {
  if (!config.fan_out_latency) config.fan_out_latency = std::make_shared<LatencyFamily>("phase");
  return sys.spawn(node_impl, std::move(config));
}

}  // namespace apiary::actors
