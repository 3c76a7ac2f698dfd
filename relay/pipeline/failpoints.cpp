#include "relay/pipeline/failpoints.hpp"

#include <algorithm>
#include <stdexcept>

namespace outbox {

Failpoints parse_failpoints(const std::string& text) {
  Failpoints failpoints;
  std::size_t start = 0;
  while (start < text.size()) {
    const std::size_t end = std::min(text.find(',', start), text.size());
    const std::string item = text.substr(start, end - start);
    start = end + 1;
    const auto equals = item.find('=');
    const std::string name = item.substr(0, equals);
    if (name == "producer_fatal_after_batches" && equals != std::string::npos) {
      failpoints.producer_fatal_after_batches = std::stoi(item.substr(equals + 1));
      continue;
    }
    throw std::invalid_argument("RELAY_FAILPOINTS: unknown failpoint or missing value: '" + item +
                                "' (known: producer_fatal_after_batches=N)");
  }
  return failpoints;
}

}  // namespace outbox
