// The API's bearer token, kept in a file only its owner can read.
//
// Why a file: the controller generates the token on its first start and
// every later start (and the CLI, `apiary ctl`) reads the same file, so an
// operator never has to pass a secret on a command line (where `ps` would
// show it). Like ssh with its keys, a token file that others can read is
// refused rather than used.
#pragma once

#include <stdexcept>
#include <string>

namespace apiary::apps {

// Why a token file could not be used; what() names the file and the cause.
class TokenFileError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Length of a generated token in bytes (printed as twice as many hex digits).
inline constexpr size_t kTokenBytes = 32;

// Reads the token from `path`; when the file does not exist, creates it
// (mode 0600, one line of hex) with a new random token first. Throws
// TokenFileError: unreadable, empty, not a regular file, or readable or
// writable by group/others.
std::string load_or_create_token(const std::string& path);

// Reads an existing token file (the CLI's side); the same checks, but a
// missing file is an error too.
std::string read_token_file(const std::string& path);

}  // namespace apiary::apps
