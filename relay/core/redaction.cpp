#include "relay/core/redaction.hpp"

#include <algorithm>

namespace outbox {

SecretRedactor::SecretRedactor(std::vector<std::string> secrets) {
  for (std::string& secret : secrets) {
    if (secret.size() >= kMinLength) secrets_.push_back(std::move(secret));
  }
  std::sort(secrets_.begin(), secrets_.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  secrets_.erase(std::unique(secrets_.begin(), secrets_.end()), secrets_.end());
}

std::string SecretRedactor::redact(std::string_view text) const {
  std::string out(text);
  for (const std::string& secret : secrets_) {
    for (std::size_t at = out.find(secret); at != std::string::npos;
         at = out.find(secret, at + 3)) {
      out.replace(at, secret.size(), "***");
    }
  }
  return out;
}

}  // namespace outbox
