// `apiary certs`: a small certificate authority for mutual TLS between the
// controller and its nodes (docs/security.md).
//
//   apiary certs init --dir DIR [--days N]
//       DIR/ca.key (0600) and DIR/ca.crt, a self-signed CA.
//   apiary certs issue NAME --dir DIR [--days N] [--san ADDR_OR_DNS]...
//       DIR/NAME.key (0600) and DIR/NAME.crt signed by DIR/ca.{key,crt}:
//       CN=NAME, subjectAltName DNS:NAME plus every --san (an IP address
//       becomes IP:, anything else DNS:), usable as TLS server and client.
//
// Why our own: the controller and every node need a key, a certificate and
// the CA that signed both; asking users to drive openssl(1) through a dozen
// flags (and to get the key modes right) is how keys end up world-readable.
// Keys are ECDSA P-256. Nothing is ever overwritten: an existing file is a
// refusal before anything is written, and a failure half-way removes what
// this run wrote.
//
// Exit status: 0 done, 1 refused or failed (named error on stderr), 2 usage.
#pragma once

#include <string>
#include <vector>

namespace apiary::apps {

// `args` are the words after "certs".
int certs_command(const std::vector<std::string>& args);

}  // namespace apiary::apps
