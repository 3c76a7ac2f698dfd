// libFuzzer target: interpreting a status-check endpoint's answer (HTTP status + body), which
// comes from another system and is documented never to throw.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "relay/core/check_verdict.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const long http_status = 100 + (data[0] << 8 | data[1]) % 500;  // 100..599
  const std::string_view body(reinterpret_cast<const char*>(data + 2), size - 2);
  (void)outbox::interpret_check_response(http_status, body);
  return 0;
}
