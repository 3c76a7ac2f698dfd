// Environment variables in configuration values: ${VAR}, ${VAR:-default}; $$ is a literal $ and a
// $ not followed by { is itself. Text from the configuration file, so the parser is fuzzed
// (tests/fuzz/env_fuzz.cpp): it either returns or throws SubstitutionError, nothing else.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace outbox {

/// Looks up an environment variable; returns false when it is not defined. Injected so tests and
/// callers decide where variables come from (no hidden global state in the parser).
using EnvLookup = bool (*)(const std::string& name, std::string& value);
bool lookup_process_env(const std::string& name, std::string& value);

/// Why a value could not be substituted; the configuration loader adds the file, line and key.
class SubstitutionError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// `text` with each ${VAR} replaced by the variable's value, or by its default when it has one
/// and the variable is not defined. Throws SubstitutionError for an unterminated ${, an invalid
/// name, or an undefined variable without a default.
std::string substitute_env(std::string_view text, EnvLookup env);

}  // namespace outbox
