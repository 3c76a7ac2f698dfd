// libFuzzer target: the YAML configuration loader. Any input must either load or be rejected with
// a ConfigError; another exception, a crash or a sanitizer report is a bug.
#include <cstddef>
#include <cstdint>
#include <string>

#include "relay/config/config.hpp"

namespace {

bool fuzz_environment(const std::string& name, std::string& value) {
  if (name != "DEFINED") return false;
  value = "from-environment";
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    (void)outbox::load_config_text(text, "fuzz.yaml", fuzz_environment);
  } catch (const outbox::ConfigError&) {
  }
  return 0;
}
