// What the chaos suite (tests/chaos) stands on: a small network of Linux
// network namespaces joined by a bridge, one per process, so that faults are
// those of a real network (iptables drops, tc netem delay and loss) and of
// real processes (SIGKILL, SIGSTOP/SIGCONT, restarts), and a bounded HTTP
// client that answers "no answer" instead of throwing when the controller is
// dead, frozen or cut off.
//
// Needs root (CAP_NET_ADMIN) and the kernel's veth, bridge, sch_netem and
// nf_tables modules: inside scripts/kvm-vm (Debian's kernel) they are
// loaded with modprobe; the host kernel of the CI machines has no netem.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/e2e.hpp"
#include "tests/support/process.hpp"

extern char** environ;

namespace apiary::test::chaos {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using namespace std::chrono_literals;

// A shell command with a deadline; its result (exit code -1 if killed).
// (Generous: under the VM's emulation a loaded machine takes seconds for one
// iptables call.)
// High priority: the nemesis must keep its timing on a machine the cluster
// keeps busy (a heal that took 20 s turned a 5 s partition into a long one).
inline ProcessResult sh(const std::string& cmd, std::chrono::milliseconds deadline = 60s) {
  return run_process({"/usr/bin/nice", "-n", "-15", "/bin/sh", "-c", cmd}, "", deadline);
}

// The bridge "apch-br" (10.77.0.254/24 in the test's own namespace) and one
// namespace "apch-<name>" per member, each with one veth ("eth0") on the
// bridge and its own address. Everything is removed by the destructor, and
// left-overs of an earlier run by the constructor.
class Topology {
 public:
  static constexpr const char* kSubnet = "10.77.0.";

  explicit Topology(const std::map<std::string, int>& members) : members_(members) {
    sh("modprobe -a veth bridge tun sch_netem nf_tables nft_compat iptable_filter ip_tables xt_tcpudp 2>/dev/null");
    cleanup();
    must("ip link add apch-br type bridge && ip link set apch-br up && ip addr add " + std::string(kSubnet) +
         "254/24 dev apch-br");
    for (const auto& [name, host] : members_) {
      const std::string ns = netns(name);
      must("ip netns add " + ns + " && ip link add " + link(name) + " type veth peer name eth0 netns " + ns +
           " && ip link set " + link(name) + " master apch-br up && ip -n " + ns + " addr add " + address(name) +
           "/24 dev eth0 && ip -n " + ns + " link set eth0 up && ip -n " + ns + " link set lo up");
    }
  }
  ~Topology() { cleanup(); }

  static std::string netns(const std::string& name) { return "apch-" + name; }
  std::string address(const std::string& name) const { return kSubnet + std::to_string(members_.at(name)); }

  // Drops everything between `name` and `peer` (both directions), in
  // name's namespace.
  void partition(const std::string& name, const std::string& peer) {
    const std::string a = address(peer);
    must("ip netns exec " + netns(name) + " iptables -w -A INPUT -s " + a + " -j DROP && ip netns exec " +
         netns(name) + " iptables -w -A OUTPUT -d " + a + " -j DROP");
  }
  // Delay (with jitter) and loss on everything `name` sends.
  void degrade(const std::string& name, int delay_ms, int jitter_ms, int loss_percent) {
    must("ip netns exec " + netns(name) + " tc qdisc replace dev eth0 root netem delay " +
         std::to_string(delay_ms) + "ms " + std::to_string(jitter_ms) + "ms loss " + std::to_string(loss_percent) +
         "%");
  }
  // Undoes partition() and degrade() for `name`.
  void heal(const std::string& name) {
    sh("ip netns exec " + netns(name) + " iptables -w -F; ip netns exec " + netns(name) +
       " tc qdisc del dev eth0 root 2>/dev/null");
  }

 private:
  static std::string link(const std::string& name) { return "apch-" + name; }
  static void must(const std::string& cmd) {
    auto r = sh(cmd);
    if (r.exit_code != 0)
      throw std::runtime_error("chaos: `" + cmd + "` " +
                               (r.timed_out ? "timed out" : "failed (exit " + std::to_string(r.exit_code) + ")") +
                               ": " + r.err + r.out);
  }
  void cleanup() {
    for (const auto& [name, host] : members_) sh("ip netns del " + netns(name) + " 2>/dev/null");
    sh("ip link del apch-br 2>/dev/null");
  }
  std::map<std::string, int> members_;
};

// A long-running `apiary` service in a namespace, stdout and stderr to
// `log`. `pid` is apiary's own (ip netns exec execs it), so signals reach
// it directly.
class Service {
 public:
  Service(std::string ns, std::vector<std::string> argv, std::string log)
      : ns_(std::move(ns)), argv_(std::move(argv)), log_(std::move(log)) {}
  ~Service() { kill(SIGKILL); }

  void start() {
    std::vector<std::string> full = {"/usr/sbin/ip", "netns", "exec", ns_, APIARY_BINARY};
    full.insert(full.end(), argv_.begin(), argv_.end());
    std::lock_guard<std::mutex> g(m_);
    pid_ = spawn_logged(full, log_, true);
    stopped_ = false;
  }
  // SIGKILL/SIGTERM wait (bounded) for the end; SIGSTOP/SIGCONT do not.
  void kill(int sig) {
    std::lock_guard<std::mutex> g(m_);
    if (pid_ <= 0) return;
    if (sig == SIGSTOP || sig == SIGCONT) {
      ::kill(pid_, sig);
      stopped_ = sig == SIGSTOP;
      return;
    }
    if (stopped_) ::kill(pid_, SIGCONT);
    ::kill(pid_, sig);
    int status = 0;
    const auto end = std::chrono::steady_clock::now() + 20s;
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > end) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(10ms);
    }
    pid_ = -1;
    stopped_ = false;
  }
  // False once the process has ended (by itself or a signal): its end is
  // then written to the log, so that a crash is not mistaken for a fault.
  bool running() {
    std::lock_guard<std::mutex> g(m_);
    if (pid_ <= 0) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) != pid_) return true;
    const std::string how =
        WIFEXITED(status) ? "exit " + std::to_string(WEXITSTATUS(status)) : "signal " + std::to_string(WTERMSIG(status));
    std::ofstream(log_, std::ios::app) << "chaos: the process ended by itself: " << how << "\n";
    ends_.push_back(how);
    pid_ = -1;
    return false;
  }
  // How the process ended each time it ended by itself (not by kill()).
  std::vector<std::string> ends_by_itself() {
    std::lock_guard<std::mutex> g(m_);
    return ends_;
  }
  pid_t pid() {
    std::lock_guard<std::mutex> g(m_);
    return pid_;
  }
  const std::string& log() const { return log_; }

 private:
  std::mutex m_;
  std::string ns_;
  std::vector<std::string> argv_;
  std::vector<std::string> ends_;
  std::string log_;
  pid_t pid_ = -1;
  bool stopped_ = false;
};

struct Answer {
  int status = 0;  // 0: no answer within the deadline (refused, reset, silent)
  std::string body;
};

// One HTTP request with a deadline; never throws.
inline Answer request(const std::string& host, int port, http::verb verb, const std::string& target,
                      const std::string& token, const std::string& body = {},
                      std::chrono::milliseconds deadline = 5s) {
  try {
    net::io_context io;
    beast::tcp_stream stream(io);
    stream.expires_after(deadline);
    stream.connect(net::ip::tcp::endpoint(net::ip::make_address(host), static_cast<unsigned short>(port)));
    http::request<http::string_body> req{verb, target, 11};
    req.set(http::field::host, host);
    req.set(http::field::content_type, "application/json");
    req.set(http::field::authorization, "Bearer " + token);
    req.body() = body;
    req.prepare_payload();
    http::write(stream, req);
    beast::flat_buffer buf;
    http::response<http::string_body> res;
    http::read(stream, buf, res);
    beast::error_code ec;
    stream.socket().shutdown(net::ip::tcp::socket::shutdown_both, ec);
    return {static_cast<int>(res.result_int()), res.body()};
  } catch (const std::exception&) {
    return {};
  }
}

// Instances a node process holds a KVM VM for, counted from its file
// descriptors (one "anon_inode:kvm-vm" per VM): what the kernel says, not
// what any part of Apiary says.
inline int kvm_vms_of(pid_t pid) {
  std::error_code ec;
  int n = 0;
  for (const auto& fd : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    std::error_code lec;
    if (std::filesystem::read_symlink(fd.path(), lec).string() == "anon_inode:kvm-vm") ++n;
  }
  return ec ? -1 : n;
}

}  // namespace apiary::test::chaos
