#include "relay/config/env_substitution.hpp"

#include <cstdlib>

namespace outbox {

namespace {
bool is_variable_name(std::string_view name) {
  if (name.empty()) return false;
  const auto letter = [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
  };
  if (!letter(name.front())) return false;
  for (char c : name) {
    if (!letter(c) && !(c >= '0' && c <= '9')) return false;
  }
  return true;
}
}  // namespace

bool lookup_process_env(const std::string& name, std::string& value) {
  const char* found = std::getenv(name.c_str());
  if (!found) return false;
  value = found;
  return true;
}

std::string substitute_env(std::string_view text, EnvLookup env) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '$') {
      out.push_back(text[i]);
      continue;
    }
    if (i + 1 < text.size() && text[i + 1] == '$') {
      out.push_back('$');
      ++i;
      continue;
    }
    if (i + 1 >= text.size() || text[i + 1] != '{') {
      out.push_back('$');
      continue;
    }
    const std::size_t close = text.find('}', i + 2);
    if (close == std::string_view::npos) {
      throw SubstitutionError("unterminated ${ in '" + std::string(text) + "'");
    }
    const std::string_view inside = text.substr(i + 2, close - i - 2);
    const std::size_t dash = inside.find(":-");
    const std::string name(inside.substr(0, dash));
    if (!is_variable_name(name)) throw SubstitutionError("invalid variable name '" + name + "'");
    std::string value;
    if (!env(name, value)) {
      if (dash == std::string_view::npos) {
        throw SubstitutionError("environment variable " + name + " is not defined (use ${" + name +
                                ":-default} for a default)");
      }
      value = inside.substr(dash + 2);
    }
    out += value;
    i = close;
  }
  return out;
}

}  // namespace outbox
