// libFuzzer target: ${VAR} substitution in configuration values (relay/config/env_substitution),
// which reads text from the configuration file. It must return or throw SubstitutionError,
// nothing else. Variables whose names start with A-M are defined (values that hold $ and { too).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "relay/config/env_substitution.hpp"

namespace {
bool fake_env(const std::string& name, std::string& value) {
  if (name.empty() || name[0] < 'A' || name[0] > 'M') return false;
  value = "${" + name + "}$$" + name;  // substituted once, never again
  return true;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const std::string out = outbox::substitute_env(text, &fake_env);
    (void)out;
  } catch (const outbox::SubstitutionError&) {
  }
  return 0;
}
