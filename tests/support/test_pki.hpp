// A private certificate authority for the TLS tests, made with the openssl command: a CA, a
// server certificate for 127.0.0.1 and a client certificate, both signed by it, and a second CA
// that signed neither. The files live in a fresh directory, removed on destruction.
#pragma once

#include <string>

namespace outbox::test {

class TestPki {
 public:
  TestPki();
  ~TestPki();
  TestPki(const TestPki&) = delete;
  TestPki& operator=(const TestPki&) = delete;

  std::string ca_cert() const { return directory_ + "/ca.pem"; }
  std::string other_ca_cert() const { return directory_ + "/other-ca.pem"; }
  std::string server_cert() const { return directory_ + "/server.pem"; }
  std::string server_key() const { return directory_ + "/server.key"; }
  std::string client_cert() const { return directory_ + "/client.pem"; }
  std::string client_key() const { return directory_ + "/client.key"; }

 private:
  std::string directory_;
};

}  // namespace outbox::test
