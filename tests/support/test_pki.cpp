#include "tests/support/test_pki.hpp"

#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace outbox::test {

TestPki::TestPki() {
  char pattern[] = "/tmp/outbox-relay-pki-XXXXXX";
  REQUIRE(mkdtemp(pattern) != nullptr);
  directory_ = pattern;
  // P-256 keys: generated in milliseconds, unlike RSA.
  const std::string key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  const std::string script =
      "set -e; cd '" + directory_ + "'\n" + "openssl req -x509 " + key +
      " -keyout ca.key -out ca.pem -days 2 -subj '/CN=outbox test CA'\n" + "openssl req -x509 " +
      key +
      " -keyout other-ca.key -out other-ca.pem -days 2"
      " -subj '/CN=some other CA'\n" +
      "openssl req " + key + " -keyout server.key -out server.csr -subj '/CN=127.0.0.1'\n" +
      "printf 'subjectAltName=IP:127.0.0.1\\n' > server.ext\n" +
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2"
      " -extfile server.ext -out server.pem\n" +
      "openssl req " + key + " -keyout client.key -out client.csr -subj '/CN=outbox-relay'\n" +
      "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2"
      " -out client.pem\n" +
      "chmod 644 *.key\n";  // the relay under test may run as another user
  std::ofstream(directory_ + "/make.sh") << script;
  const std::string command = "bash '" + directory_ + "/make.sh' >/dev/null 2>&1";
  REQUIRE_MESSAGE(std::system(command.c_str()) == 0, "openssl could not make the test PKI");
}

TestPki::~TestPki() {
  std::error_code ignored;
  std::filesystem::remove_all(directory_, ignored);
}

}  // namespace outbox::test
