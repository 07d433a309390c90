// scripts/check-layers, the build's guard on the layer stack: the tree as
// it is passes; an include of a higher layer's header, and CAF below
// actors/, are each refused with the file, the line and what is allowed.
#define BOOST_TEST_MODULE check_layers
#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tests/support/process.hpp"

using namespace std::chrono_literals;
using apiary::test::run_process;
namespace fs = std::filesystem;

namespace {

const std::string kScript = APIARY_SOURCE_DIR "/scripts/check-layers";

struct Tree {
  fs::path root;
  Tree() {
    char tmpl[] = "/tmp/check-layers.XXXXXX";
    BOOST_REQUIRE(::mkdtemp(tmpl));
    root = tmpl;
  }
  ~Tree() { fs::remove_all(root); }
  void write(const std::string& rel, const std::string& body) {
    fs::create_directories((root / rel).parent_path());
    std::ofstream(root / rel) << body;
  }
};

bool has(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

}  // namespace

BOOST_AUTO_TEST_CASE(the_source_tree_follows_its_layers) {
  auto r = run_process({kScript, APIARY_SOURCE_DIR}, "", 60s);
  BOOST_TEST(r.exit_code == 0, r.err);
  BOOST_TEST(r.err.empty());
}

BOOST_AUTO_TEST_CASE(downward_and_same_layer_includes_are_allowed) {
  Tree t;
  t.write("cluster/a.cpp", "#include \"cluster/a.hpp\"\n#include \"actors/instance_actor.hpp\"\n#include <caf/all.hpp>\n");
  t.write("api/b.cpp", "#include \"cluster/controller_actor.hpp\"\n#include <boost/beast.hpp>\n");
  t.write("apps/c.cpp", "#include \"api/http_api.hpp\"\n#include \"sim/simulator.hpp\"\n#include \"guest/embedded.hpp\"\n");
  t.write("devices/d.cpp", "#include \"vmm-core/layout.hpp\"\n#include \"proto/spec.hpp\"\n#include <vector>\n");
  auto r = run_process({kScript, t.root.string()}, "", 60s);
  BOOST_TEST(r.exit_code == 0, r.err);
}

BOOST_AUTO_TEST_CASE(an_include_of_a_higher_layer_is_refused_with_file_and_line) {
  Tree t;
  t.write("actors/x.cpp", "// the VM runtime\n#include \"actors/x.hpp\"\n#include \"cluster/state_store.hpp\"\n");
  t.write("cluster/y.hpp", "#pragma once\n  #  include \"api/http_api.hpp\"\n");
  t.write("net/z.cpp", "#include \"actors/instance_actor.hpp\"\n");
  t.write("vmm-core/k.cpp", "#include \"devices/machine.hpp\"\n");
  auto r = run_process({kScript, t.root.string()}, "", 60s);
  BOOST_TEST(r.exit_code == 1);
  BOOST_TEST(has(r.err, "actors/x.cpp:3: actors/ may not include \"cluster/state_store.hpp\" (allowed: actors/ devices/ proto/ vmm-core/)"), r.err);
  BOOST_TEST(has(r.err, "cluster/y.hpp:2: cluster/ may not include \"api/http_api.hpp\""), r.err);
  BOOST_TEST(has(r.err, "net/z.cpp:1: net/ may not include \"actors/instance_actor.hpp\""), r.err);
  BOOST_TEST(has(r.err, "vmm-core/k.cpp:1: vmm-core/ may not include \"devices/machine.hpp\""), r.err);
  BOOST_TEST(has(r.err, "check-layers: 4 include(s) against the layers"), r.err);
}

BOOST_AUTO_TEST_CASE(caf_below_actors_is_refused) {
  Tree t;
  t.write("devices/uart.cpp", "#include <caf/all.hpp>\n");
  auto r = run_process({kScript, t.root.string()}, "", 60s);
  BOOST_TEST(r.exit_code == 1);
  BOOST_TEST(has(r.err, "devices/uart.cpp:1: devices/ may not include <caf/all.hpp> (no CAF below actors/)"), r.err);
}
