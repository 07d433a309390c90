// The `apiary` binary: one executable, one subcommand per role.
#include <csignal>
#include <iostream>
#include <string>
#include <vector>

#include "apps/certs_command.hpp"
#include "apps/cluster_command.hpp"
#include "apps/ctl_command.hpp"
#include "apps/process_commands.hpp"
#include "apps/run_command.hpp"
#include "apps/simulate_command.hpp"

namespace {
void print_help() {
  std::cout <<
R"(Usage: apiary <command> [options]

Apiary: an actor-model KVM hypervisor runtime.

Commands:
  run        boot one VM with its serial console on this terminal
             (the embedded demo guest by default)
  cluster    an all-in-one control plane: controller, N nodes, HTTP API
  controller the controller process: HTTP API + endpoint for nodes
  node       a node process: runs instances for a controller
  simulate   deterministic failure simulation of a scenario (docs/simulation.md)
  ctl        the command-line client of the control plane's HTTP API
  certs      a small CA for mutual TLS between controller and nodes
             (docs/security.md)
  help       this text; `apiary <command> --help` for a command

Examples:
  apiary run
  apiary run --kernel guest/hello.elf --cmdline "hello world"
)";
}
}  // namespace

int main(int argc, char** argv) {
  // A closed pipe or socket is an error to handle where it happens, not a
  // reason for the whole VMM to die.
  ::signal(SIGPIPE, SIG_IGN);
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    print_help();
    return args.empty() ? 2 : 0;
  }
  const std::string cmd = args[0];
  args.erase(args.begin());
  if (cmd == "run") return apiary::apps::run_command(args);
  if (cmd == "cluster") return apiary::apps::cluster_command(args);
  if (cmd == "controller") return apiary::apps::controller_command(args);
  if (cmd == "node") return apiary::apps::node_command(args);
  if (cmd == "simulate") return apiary::apps::simulate_command(args);
  if (cmd == "ctl") return apiary::apps::ctl_command(args);
  if (cmd == "certs") return apiary::apps::certs_command(args);
  std::cerr << "apiary: unknown command '" << cmd << "' (try apiary --help)\n";
  return 2;
}
