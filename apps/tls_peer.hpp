// Mutual TLS between `apiary controller` and `apiary node` (docs/security.md):
// the files, checked before CAF's OpenSSL module sees them, and a diagnosis
// of a refused connection.
//
// Why: CAF's OpenSSL module (libcaf_openssl, 0.17.6) loads the certificate,
// key and CA file for every connection and raises an exception on the
// multiplexer thread when one cannot be loaded, which would end the process
// with no useful message; and when a handshake fails it logs the OpenSSL
// error at INFO level and answers remote_actor with a bare
// "disconnect_during_handshake". So the files are loaded here once at start
// (a named error and exit instead), and after a refused connection a node
// makes one TLS connection of its own, with the same files, to say why:
// the controller's certificate does not verify against our CA, the
// controller refused our certificate, or the controller does not speak TLS.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace apiary::apps {

struct TlsFiles {
  std::string ca;    // PEM: the CA that must have signed the peer's certificate
  std::string cert;  // PEM: our certificate (chain)
  std::string key;   // PEM: its private key (unencrypted)
};

// OpenSSL's error queue as text, emptied: the reasons only ("certificate
// verify failed"), "; "-separated; "" when it is empty.
std::string openssl_errors();

// "" when the three files load and the key matches the certificate, else
// why not (naming the file).
std::string check_tls_files(const TlsFiles& files);

// One TLS connection to host:port as a client with `files` (verifying the
// peer against files.ca, presenting files.cert) that waits for the peer's
// first bytes after the handshake, all within `timeout`. "" when that
// worked; else why not, for a person ("the controller's certificate does
// not verify against ...: unable to get local issuer certificate").
std::string diagnose_tls_peer(const std::string& host, uint16_t port, const TlsFiles& files,
                              std::chrono::milliseconds timeout);

}  // namespace apiary::apps
