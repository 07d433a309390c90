#include "apps/tls_peer.hpp"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstring>
#include <memory>

namespace apiary::apps {

namespace {

using Clock = std::chrono::steady_clock;

struct CtxFree {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
struct SslFree {
  void operator()(SSL* s) const { SSL_free(s); }
};
using Ctx = std::unique_ptr<SSL_CTX, CtxFree>;

// A client context with our certificate and key, verifying the peer
// against files.ca; or "" in `err` with why not.
Ctx make_ctx(const TlsFiles& files, std::string& err) {
  ERR_clear_error();
  Ctx ctx(SSL_CTX_new(TLS_client_method()));
  if (!ctx) {
    err = "cannot create an OpenSSL context: " + openssl_errors();
    return nullptr;
  }
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), files.cert.c_str()) != 1) {
    err = "cannot load the certificate " + files.cert + ": " + openssl_errors();
    return nullptr;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), files.key.c_str(), SSL_FILETYPE_PEM) != 1) {
    const std::string why = openssl_errors();
    err = why.find("key values mismatch") != std::string::npos
              ? files.key + " is not the key of " + files.cert + " (" + why + ")"
              : "cannot load the private key " + files.key + ": " + why;
    return nullptr;
  }
  if (SSL_CTX_check_private_key(ctx.get()) != 1) {
    err = files.key + " is not the key of " + files.cert + ": " + openssl_errors();
    return nullptr;
  }
  if (SSL_CTX_load_verify_locations(ctx.get(), files.ca.c_str(), nullptr) != 1) {
    err = "cannot load the CA certificate " + files.ca + ": " + openssl_errors();
    return nullptr;
  }
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  return ctx;
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

int ms_left(Clock::time_point end) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count();
  return left > 0 ? static_cast<int>(left) : 0;
}

// Waits until `fd` is ready for `events` or the deadline; false on timeout.
bool wait_fd(int fd, short events, Clock::time_point end) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, ms_left(end));
    if (n > 0) return true;
    if (n == 0) return false;
    if (errno != EINTR) return false;
  }
}

// A connected non-blocking TCP socket, or -1 with `err` set.
int connect_tcp(const std::string& host, uint16_t port, Clock::time_point end, std::string& err) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res); rc != 0) {
    err = "cannot resolve " + host + ": " + ::gai_strerror(rc);
    return -1;
  }
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> guard(res, ::freeaddrinfo);
  err = "no address for " + host;
  for (addrinfo* a = res; a; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) return fd;
    if (errno == EINPROGRESS && wait_fd(fd, POLLOUT, end)) {
      int so = 0;
      socklen_t len = sizeof so;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &len);
      if (so == 0) return fd;
      err = std::string("cannot connect: ") + std::strerror(so);
    } else {
      err = errno == EINPROGRESS ? "cannot connect: timed out" : std::string("cannot connect: ") + std::strerror(errno);
    }
    ::close(fd);
  }
  return -1;
}

}  // namespace

std::string check_tls_files(const TlsFiles& files) {
  std::string err;
  make_ctx(files, err);
  return err;
}

std::string diagnose_tls_peer(const std::string& host, uint16_t port, const TlsFiles& files,
                              std::chrono::milliseconds timeout) {
  const auto end = Clock::now() + timeout;
  std::string err;
  Ctx ctx = make_ctx(files, err);
  if (!ctx) return err;
  Fd fd(connect_tcp(host, port, end, err));
  if (fd.get() < 0) return err;
  std::unique_ptr<SSL, SslFree> ssl(SSL_new(ctx.get()));
  if (!ssl) return "cannot create an OpenSSL session: " + openssl_errors();
  SSL_set_fd(ssl.get(), fd.get());
  ERR_clear_error();
  // The handshake, then the peer's first bytes: with TLS 1.3 a server that
  // refuses our certificate says so only after the client's handshake is
  // done, in an alert instead of the first data (a CAF server speaks first).
  bool handshaken = false;
  for (;;) {
    char byte = 0;
    const int rc = handshaken ? SSL_read(ssl.get(), &byte, 1) : SSL_connect(ssl.get());
    if (rc > 0) {
      if (handshaken) return {};
      handshaken = true;
      continue;
    }
    const int e = SSL_get_error(ssl.get(), rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      if (!wait_fd(fd.get(), e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, end))
        return handshaken ? "the TLS handshake completed but the peer sent nothing within " +
                                std::to_string(timeout.count()) + " ms"
                          : "the TLS handshake did not complete within " + std::to_string(timeout.count()) +
                                " ms (the peer sent no TLS answer: does it speak TLS?)";
      continue;
    }
    const long verify = SSL_get_verify_result(ssl.get());
    const std::string ssl_err = openssl_errors();
    if (!handshaken && verify != X509_V_OK)
      return std::string("the TLS handshake failed: the peer's certificate does not verify against ") + files.ca +
             ": " + X509_verify_cert_error_string(verify);
    if (ssl_err.find("alert") != std::string::npos)
      return std::string("the TLS handshake failed: the peer refused this side's certificate ") + files.cert + " (" +
             ssl_err + "; is it signed by the peer's CA?)";
    if (ssl_err.find("wrong version number") != std::string::npos ||
        ssl_err.find("packet length too long") != std::string::npos ||
        ssl_err.find("record layer failure") != std::string::npos)
      return "the TLS handshake failed: the peer does not speak TLS (" + ssl_err + "; is it running with --insecure?)";
    if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ssl_err.empty()))
      return handshaken ? "the TLS handshake failed: the peer closed the connection after the handshake "
                          "(it refused this side's certificate " + files.cert + "?)"
                        : "the TLS handshake failed: the peer closed the connection during the handshake";
    return "the TLS handshake failed: " + (ssl_err.empty() ? std::string("error ") + std::to_string(e) : ssl_err);
  }
}

std::string openssl_errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    // "error:0A000086:SSL routines::certificate verify failed": keep the reason.
    std::string s = buf;
    const auto colon = s.rfind(':');
    out += colon == std::string::npos ? s : s.substr(colon + 1);
  }
  return out;
}

}  // namespace apiary::apps
