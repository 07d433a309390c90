// The API token file (api/token_file.hpp): created once with mode 0600 and
// read back unchanged; refused when others can read it, when it is empty or
// not a regular file; a missing file is an error for the reader (the CLI).
#define BOOST_TEST_MODULE token_file
#include <sys/stat.h>
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <filesystem>
#include <fstream>

#include "api/token_file.hpp"

using apiary::apps::kTokenBytes;
using apiary::apps::load_or_create_token;
using apiary::apps::read_token_file;
using apiary::apps::TokenFileError;

namespace {
struct Dir {
  std::filesystem::path path = std::filesystem::temp_directory_path() /
                               ("apiary-token-test-" + std::to_string(::getpid()));
  Dir() { std::filesystem::create_directories(path); }
  ~Dir() { std::filesystem::remove_all(path); }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const TokenFileError& e) {
    return e.what();
  }
  return {};
}
}  // namespace

BOOST_AUTO_TEST_CASE(first_start_creates_a_0600_token_later_starts_read_it) {
  Dir d;
  const auto path = d.file("apiary.token");
  const std::string token = load_or_create_token(path);
  BOOST_TEST(token.size() == 2 * kTokenBytes);
  BOOST_TEST(token.find_first_not_of("0123456789abcdef") == std::string::npos);
  struct stat st {};
  BOOST_REQUIRE(::stat(path.c_str(), &st) == 0);
  BOOST_TEST((st.st_mode & 0777) == 0600u);
  BOOST_TEST(load_or_create_token(path) == token);
  BOOST_TEST(read_token_file(path) == token);
  // No temporary file is left behind.
  BOOST_TEST(std::distance(std::filesystem::directory_iterator(d.path), {}) == 1);
}

BOOST_AUTO_TEST_CASE(unsafe_empty_or_missing_token_files_are_refused_and_left_alone) {
  Dir d;
  const auto open = d.file("open.token");
  { std::ofstream(open) << "abc\n"; }
  ::chmod(open.c_str(), 0644);
  BOOST_TEST(error_of([&] { load_or_create_token(open); }).find("chmod 600") != std::string::npos);
  BOOST_TEST(error_of([&] { read_token_file(open); }).find("mode 644") != std::string::npos);

  const auto empty = d.file("empty.token");
  { std::ofstream(empty) << ""; }
  ::chmod(empty.c_str(), 0600);
  BOOST_TEST(error_of([&] { load_or_create_token(empty); }).find(": empty") != std::string::npos);
  BOOST_TEST(std::filesystem::file_size(empty) == 0u);  // not overwritten

  BOOST_TEST(error_of([&] { read_token_file(d.file("missing.token")); }).find("No such file") != std::string::npos);
  BOOST_TEST(error_of([&] { load_or_create_token(d.path.string()); }).find("not a regular file") != std::string::npos);
}
