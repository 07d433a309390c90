#include "api/token_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>

namespace apiary::apps {

namespace {

std::string errno_text() { return std::strerror(errno); }

std::string new_token() {
  std::random_device rd;  // the kernel's CSPRNG (getrandom) on Linux
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < kTokenBytes; ++i) {
    const auto b = static_cast<unsigned>(rd()) & 0xffu;
    out += kHex[b >> 4];
    out += kHex[b & 0xf];
  }
  return out;
}

}  // namespace

std::string read_token_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    throw TokenFileError("token file " + path + ": " + errno_text());
  if (!S_ISREG(st.st_mode)) throw TokenFileError("token file " + path + ": not a regular file");
  if (st.st_uid != ::geteuid())
    throw TokenFileError("token file " + path + ": owned by uid " + std::to_string(st.st_uid) + ", not by this user");
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%03o", static_cast<unsigned>(st.st_mode & 0777));
    throw TokenFileError("token file " + path + ": mode " + mode + " lets others read or write it; chmod 600 it");
  }
  std::ifstream in(path);
  if (!in) throw TokenFileError("token file " + path + ": cannot be read");
  std::string token;
  std::getline(in, token);
  while (!token.empty() && (token.back() == '\r' || token.back() == ' ')) token.pop_back();
  if (token.empty()) throw TokenFileError("token file " + path + ": empty");
  return token;
}

std::string load_or_create_token(const std::string& path) {
  struct stat existing {};
  if (::stat(path.c_str(), &existing) == 0) return read_token_file(path);
  // Written completely under a temporary name, then linked into place: a
  // crash never leaves a half-written token file, and of two controllers
  // starting at once exactly one token wins (link fails with EEXIST).
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw TokenFileError("token file " + path + ": cannot create " + tmp + ": " + errno_text());
  const std::string line = new_token() + "\n";
  const bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) && ::fsync(fd) == 0;
  const std::string why = ok ? std::string() : errno_text();
  ::close(fd);
  if (!ok) {
    ::unlink(tmp.c_str());
    throw TokenFileError("token file " + path + ": cannot write: " + why);
  }
  const int linked = ::link(tmp.c_str(), path.c_str());
  const int link_errno = errno;
  ::unlink(tmp.c_str());
  if (linked != 0 && link_errno != EEXIST) {
    errno = link_errno;
    throw TokenFileError("token file " + path + ": cannot create: " + errno_text());
  }
  return read_token_file(path);  // ours, or the one another process linked first
}

}  // namespace apiary::apps
