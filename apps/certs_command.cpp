#include "apps/certs_command.hpp"

#include "apps/tls_peer.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace apiary::apps {

namespace {

constexpr int kDefaultCaDays = 3650;
constexpr int kDefaultCertDays = 825;
constexpr int kMaxDays = 36500;
constexpr std::size_t kMaxNameLength = 64;
constexpr int kSerialBits = 120;

// A refusal or failure; its text goes to stderr after "apiary certs: ".
struct CertsError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void fail_ssl(const std::string& what) {
  const std::string why = openssl_errors();
  throw CertsError(what + ": " + (why.empty() ? "unknown error" : why));
}

template <class T, void (*F)(T*)>
struct Deleter {
  void operator()(T* p) const { F(p); }
};
using PKey = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using Cert = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using Ext = std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION, X509_EXTENSION_free>>;

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 || errno != ENOENT;
}

// Files this run created; removed unless commit() is called, so a failure
// half-way leaves the directory as it was.
class Created {
 public:
  ~Created() {
    if (!committed_)
      for (auto& p : paths_) ::unlink(p.c_str());
  }
  void add(const std::string& p) { paths_.push_back(p); }
  void commit() { committed_ = true; }

 private:
  std::vector<std::string> paths_;
  bool committed_ = false;
};

// Creates `path` (never replacing anything: O_EXCL) with `mode` and lets
// `write` fill it through a FILE*.
template <class Write>
void write_new_file(const std::string& path, mode_t mode, Created& created, Write&& write) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) throw CertsError("cannot create " + path + ": " + std::strerror(errno));
  created.add(path);
  // The umask may have taken bits away from a certificate; a key keeps 0600.
  ::fchmod(fd, mode);
  FILE* f = ::fdopen(fd, "w");
  if (!f) {
    ::close(fd);
    throw CertsError("cannot write " + path + ": " + std::strerror(errno));
  }
  const bool ok = write(f);
  const bool flushed = std::fflush(f) == 0 && ::fsync(fd) == 0;
  std::fclose(f);
  if (!ok) fail_ssl("cannot write " + path);
  if (!flushed) throw CertsError("cannot write " + path + ": " + std::strerror(errno));
}

PKey new_key() {
  PKey key(EVP_EC_gen("P-256"));
  if (!key) fail_ssl("cannot generate an EC P-256 key");
  return key;
}

void add_ext(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  Ext ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  if (!ext || X509_add_ext(cert, ext.get(), -1) != 1)
    fail_ssl(std::string("cannot add the extension ") + OBJ_nid2sn(nid) + " = " + value);
}

// A certificate for `key` named CN=`cn`, valid from now for `days`, not yet
// signed; its issuer is `issuer` (nullptr: itself).
Cert new_cert(EVP_PKEY* key, const std::string& cn, int days, X509* issuer) {
  Cert cert(X509_new());
  if (!cert || X509_set_version(cert.get(), 2) != 1) fail_ssl("cannot create a certificate");
  // A random positive serial: certificates of one CA must not share one.
  std::unique_ptr<BIGNUM, Deleter<BIGNUM, BN_free>> bn(BN_new());
  if (!bn || BN_rand(bn.get(), kSerialBits, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
      !BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert.get())))
    fail_ssl("cannot make a serial number");
  if (!X509_gmtime_adj(X509_getm_notBefore(cert.get()), 0) ||
      !X509_time_adj_ex(X509_getm_notAfter(cert.get()), days, 0, nullptr))
    fail_ssl("cannot set the validity");
  X509_NAME* name = X509_get_subject_name(cert.get());
  if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(cn.c_str()), -1,
                                 -1, 0) != 1)
    fail_ssl("cannot set the subject CN=" + cn);
  if (X509_set_issuer_name(cert.get(), issuer ? X509_get_subject_name(issuer) : name) != 1)
    fail_ssl("cannot set the issuer");
  if (X509_set_pubkey(cert.get(), key) != 1) fail_ssl("cannot set the public key");
  return cert;
}

void write_key(const std::string& path, EVP_PKEY* key, Created& created) {
  write_new_file(path, 0600, created, [key](FILE* f) {
    return PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr) == 1;
  });
}

void write_cert(const std::string& path, X509* cert, Created& created) {
  write_new_file(path, 0644, created, [cert](FILE* f) { return PEM_write_X509(f, cert) == 1; });
}

std::optional<int> parse_days(const std::string& text) {
  int v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size() || v < 1 || v > kMaxDays) return std::nullopt;
  return v;
}

// NAME of `certs issue`: it becomes a file name and a DNS name, so letters,
// digits, '.', '-', '_', starting with a letter or digit; "ca" is the CA's.
std::string name_problem(const std::string& name) {
  if (name.empty()) return "NAME is empty";
  if (name.size() > kMaxNameLength) return "NAME is longer than " + std::to_string(kMaxNameLength) + " characters";
  if (!std::isalnum(static_cast<unsigned char>(name[0]))) return "NAME must start with a letter or a digit";
  for (char c : name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_')
      return std::string("NAME may hold only letters, digits, '.', '-' and '_' (found '") + c + "')";
  if (name == "ca") return "NAME 'ca' is the CA's own (ca.key, ca.crt)";
  return {};
}

// "IP:a.b.c.d" / "IP:v6" for addresses, "DNS:name" for host names.
std::string san_entry(const std::string& san) {
  unsigned char buf[sizeof(in6_addr)];
  if (::inet_pton(AF_INET, san.c_str(), buf) == 1 || ::inet_pton(AF_INET6, san.c_str(), buf) == 1) return "IP:" + san;
  if (san.empty() || san.size() > 253) throw CertsError("--san '" + san + "': not an IP address or a DNS name");
  for (size_t i = 0; i < san.size(); ++i) {
    const char c = san[i];
    const bool wildcard = c == '*' && i == 0 && san.size() > 2 && san[1] == '.';
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && !wildcard)
      throw CertsError("--san '" + san + "': not an IP address or a DNS name");
  }
  return "DNS:" + san;
}

struct Options {
  std::vector<std::string> positional;
  std::optional<std::string> dir;
  std::optional<std::string> days;
  std::vector<std::string> sans;
  bool help = false;
};

// Returns a usage problem, or "".
std::string parse(const std::vector<std::string>& args, Options& o, bool allow_san) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      o.help = true;
    } else if (a == "--dir" || a == "--days" || (allow_san && a == "--san")) {
      if (i + 1 >= args.size()) return a + " needs a value";
      const std::string& v = args[++i];
      if (a == "--dir") o.dir = v;
      if (a == "--days") o.days = v;
      if (a == "--san") o.sans.push_back(v);
    } else if (a.starts_with("-")) {
      return "unknown option: " + a;
    } else {
      o.positional.push_back(a);
    }
  }
  return {};
}

constexpr const char* kHelp = R"(Usage: apiary certs init --dir DIR [--days N]
       apiary certs issue NAME --dir DIR [--days N] [--san ADDR_OR_DNS]...

A small certificate authority for mutual TLS between `apiary controller`
and `apiary node` (docs/security.md).

  init    makes the CA: DIR/ca.key (mode 0600) and DIR/ca.crt, valid for
          N days (default 3650). DIR is created (0700) when missing.
  issue   makes DIR/NAME.key (0600) and DIR/NAME.crt, signed by the CA in
          DIR, valid for N days (default 825), with CN=NAME and the subject
          alternative names DNS:NAME plus every --san (an IP address or a
          DNS name; repeatable). Good for both TLS server and client use.

Keys are ECDSA P-256, unencrypted: protect DIR. Nothing is ever
overwritten: existing files are refused and left as they were.
Exit status: 0 done, 1 refused or failed, 2 usage.
)";

int init(const Options& o) {
  if (o.positional.size() != 0) throw std::invalid_argument("certs init takes no NAME (unexpected '" + o.positional[0] + "')");
  if (!o.dir) throw std::invalid_argument("certs init: --dir DIR is required");
  const int days = o.days ? parse_days(*o.days).value_or(0) : kDefaultCaDays;
  if (days == 0) throw std::invalid_argument("--days: expected 1 to " + std::to_string(kMaxDays) + ", got '" + *o.days + "'");
  const std::string dir = *o.dir;
  const std::string key_path = dir + "/ca.key", cert_path = dir + "/ca.crt";
  for (const auto& p : {key_path, cert_path})
    if (exists(p)) throw CertsError("refusing to overwrite " + p + ": a CA already exists in " + dir);
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    throw CertsError("cannot create the directory " + dir + ": " + std::strerror(errno));
  PKey key = new_key();
  Cert cert = new_cert(key.get(), "Apiary CA", days, nullptr);
  add_ext(cert.get(), cert.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
  add_ext(cert.get(), cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign");
  add_ext(cert.get(), cert.get(), NID_subject_key_identifier, "hash");
  if (X509_sign(cert.get(), key.get(), EVP_sha256()) <= 0) fail_ssl("cannot sign the CA certificate");
  Created created;
  write_key(key_path, key.get(), created);
  write_cert(cert_path, cert.get(), created);
  created.commit();
  std::cout << "apiary certs: CA in " << cert_path << " (key " << key_path << ", valid " << days << " days)\n";
  return 0;
}

int issue(const Options& o) {
  if (o.positional.size() != 1) throw std::invalid_argument("certs issue: exactly one NAME is required");
  if (!o.dir) throw std::invalid_argument("certs issue: --dir DIR is required");
  const std::string name = o.positional[0];
  if (auto problem = name_problem(name); !problem.empty()) throw CertsError("bad NAME '" + name + "': " + problem);
  const int days = o.days ? parse_days(*o.days).value_or(0) : kDefaultCertDays;
  if (days == 0) throw std::invalid_argument("--days: expected 1 to " + std::to_string(kMaxDays) + ", got '" + *o.days + "'");
  std::string san = "DNS:" + name;
  for (const auto& s : o.sans) san += "," + san_entry(s);
  const std::string dir = *o.dir;
  const std::string ca_key_path = dir + "/ca.key", ca_cert_path = dir + "/ca.crt";
  const std::string key_path = dir + "/" + name + ".key", cert_path = dir + "/" + name + ".crt";
  for (const auto& p : {ca_key_path, ca_cert_path})
    if (!exists(p)) throw CertsError("no CA in " + dir + " (" + p + " is missing): run apiary certs init --dir " + dir);
  for (const auto& p : {key_path, cert_path})
    if (exists(p)) throw CertsError("refusing to overwrite " + p);

  std::unique_ptr<FILE, int (*)(FILE*)> kf(std::fopen(ca_key_path.c_str(), "r"), &std::fclose);
  if (!kf) throw CertsError("cannot read " + ca_key_path + ": " + std::strerror(errno));
  PKey ca_key(PEM_read_PrivateKey(kf.get(), nullptr, nullptr, nullptr));
  if (!ca_key) fail_ssl("cannot read the CA key " + ca_key_path);
  std::unique_ptr<FILE, int (*)(FILE*)> cf(std::fopen(ca_cert_path.c_str(), "r"), &std::fclose);
  if (!cf) throw CertsError("cannot read " + ca_cert_path + ": " + std::strerror(errno));
  Cert ca(PEM_read_X509(cf.get(), nullptr, nullptr, nullptr));
  if (!ca) fail_ssl("cannot read the CA certificate " + ca_cert_path);
  if (X509_check_private_key(ca.get(), ca_key.get()) != 1)
    fail_ssl(ca_key_path + " is not the key of " + ca_cert_path);

  PKey key = new_key();
  Cert cert = new_cert(key.get(), name, days, ca.get());
  add_ext(cert.get(), ca.get(), NID_basic_constraints, "critical,CA:FALSE");
  add_ext(cert.get(), ca.get(), NID_key_usage, "critical,digitalSignature,keyEncipherment,keyAgreement");
  add_ext(cert.get(), ca.get(), NID_ext_key_usage, "serverAuth,clientAuth");
  add_ext(cert.get(), ca.get(), NID_subject_alt_name, san);
  add_ext(cert.get(), ca.get(), NID_subject_key_identifier, "hash");
  add_ext(cert.get(), ca.get(), NID_authority_key_identifier, "keyid:always");
  if (X509_sign(cert.get(), ca_key.get(), EVP_sha256()) <= 0) fail_ssl("cannot sign the certificate");
  Created created;
  write_key(key_path, key.get(), created);
  write_cert(cert_path, cert.get(), created);
  created.commit();
  std::cout << "apiary certs: " << cert_path << " (key " << key_path << ", " << san << ", valid " << days
            << " days)\n";
  return 0;
}

}  // namespace

int certs_command(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::cout << kHelp;
    return args.empty() ? 2 : 0;
  }
  const std::string verb = args[0];
  Options o;
  if (verb != "init" && verb != "issue") {
    std::cerr << "apiary certs: unknown command '" << verb << "' (init or issue; apiary certs --help)\n";
    return 2;
  }
  if (auto err = parse({args.begin() + 1, args.end()}, o, verb == "issue"); !err.empty()) {
    std::cerr << "apiary certs " << verb << ": " << err << " (apiary certs --help)\n";
    return 2;
  }
  if (o.help) {
    std::cout << kHelp;
    return 0;
  }
  try {
    return verb == "init" ? init(o) : issue(o);
  } catch (const std::invalid_argument& e) {
    std::cerr << "apiary certs: " << e.what() << " (apiary certs --help)\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "apiary certs " << verb << ": " << e.what() << "\n";
    return 1;
  }
}

}  // namespace apiary::apps
