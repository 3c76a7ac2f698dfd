// Secret values known from the configuration (passwords, tokens, keys) are cut out of every text
// that leaves the process, log lines and command-line errors alike, whoever wrote the text: libpq,
// librdkafka and libcurl quote what they were given in their own error messages, and a malformed
// connection string once sent its password whole into the log.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace outbox {

class SecretRedactor {
 public:
  /// Values shorter than this are not searched for: they would blank out ordinary words, and a
  /// secret that short protects nothing.
  static constexpr std::size_t kMinLength = 4;

  SecretRedactor() = default;
  explicit SecretRedactor(std::vector<std::string> secrets);

  /// `text` with every occurrence of every secret replaced by "***" (longest first, so a secret
  /// that contains another is cut whole).
  std::string redact(std::string_view text) const;
  bool empty() const { return secrets_.empty(); }

 private:
  std::vector<std::string> secrets_;
};

}  // namespace outbox
