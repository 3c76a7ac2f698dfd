// What the configuration knows about connection strings and secrets, through libpq's own parser
// (PQconninfoParse), never a pattern: redacted URLs for logs, and the secret values the
// SecretRedactor cuts out of every output (declared in config.hpp).
#include <libpq-fe.h>

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "relay/config/config.hpp"

namespace outbox {

std::string redact_postgres_url(const std::string& url) {
  // libpq's own parser, not a pattern: what is shown is rebuilt from the fields libpq will use,
  // and the password is never among them, however it is written (a malformed percent-escape, a
  // space, an '@' all once leaked its tail through a pattern).
  char* parse_error = nullptr;
  std::unique_ptr<PQconninfoOption, decltype(&PQconninfoFree)> parsed(
      PQconninfoParse(url.c_str(), &parse_error), &PQconninfoFree);
  if (!parsed) {
    PQfreemem(parse_error);
    return "(a postgres.url libpq cannot parse)";
  }
  std::map<std::string, std::string> fields;
  for (const PQconninfoOption* option = parsed.get(); option->keyword; ++option) {
    if (option->val) fields[option->keyword] = option->val;
  }
  auto field = [&](const char* name) {
    const auto found = fields.find(name);
    return found == fields.end() ? std::string() : found->second;
  };
  std::string shown = "postgresql://" + field("user");
  if (fields.contains("password")) shown += ":***";
  if (fields.contains("user") || fields.contains("password")) shown += "@";
  // A second '@' in a URI ends the password early: libpq reads its tail as the host name.
  const std::string host = field("host").find('@') == std::string::npos ? field("host") : "***";
  shown += host + (fields.contains("port") ? ":" + field("port") : "") + "/" + field("dbname");
  return shown;
}

namespace {
/// The password of a URL's user-info as written (scheme://user:password@host/...), found by the
/// last '@' before the path, however malformed the rest is.
std::string written_url_password(const std::string& url) {
  const auto scheme = url.find("://");
  if (scheme == std::string::npos) return {};
  const auto start = scheme + 3;
  const auto path = url.find_first_of("/?#", start);
  const std::string authority = url.substr(start, path == std::string::npos ? path : path - start);
  const auto at = authority.rfind('@');
  if (at == std::string::npos) return {};
  const auto colon = authority.find(':');
  return colon == std::string::npos || colon > at ? std::string()
                                                  : authority.substr(colon + 1, at - colon - 1);
}

bool names_a_secret(std::string_view property) {
  for (std::string_view word : {"password", "secret", "token", "key.pem", "keystore", "jaas"}) {
    if (property.find(word) != std::string_view::npos) return true;
  }
  return false;
}
}  // namespace

std::vector<std::string> configured_secrets(const Config& config) {
  std::vector<std::string> secrets;
  const std::string& url = config.postgres.url;
  secrets.push_back(written_url_password(url));
  char* parse_error = nullptr;
  std::unique_ptr<PQconninfoOption, decltype(&PQconninfoFree)> parsed(
      PQconninfoParse(url.c_str(), &parse_error), &PQconninfoFree);
  PQfreemem(parse_error);
  for (const PQconninfoOption* option = parsed.get(); option && option->keyword; ++option) {
    if (option->val && std::string_view(option->keyword) == "password") {
      secrets.emplace_back(option->val);
    }
  }
  if (!parsed) {
    // Not even libpq can read it (key=value form with a bad quote): the text after password=.
    const auto at = url.find("password=");
    if (at != std::string::npos) secrets.push_back(url.substr(at + 9, url.find(' ', at + 9)));
  }
  for (const auto& [name, value] : config.kafka.properties) {
    if (names_a_secret(name)) secrets.push_back(value);
  }
  for (const auto& [group, endpoint] : config.checkback.endpoints) {
    secrets.push_back(endpoint.authorization);
    if (const auto space = endpoint.authorization.find(' '); space != std::string::npos) {
      secrets.push_back(endpoint.authorization.substr(space + 1));  // "Bearer <token>"
    }
    secrets.push_back(written_url_password(endpoint.url));
  }
  return secrets;
}

}  // namespace outbox
