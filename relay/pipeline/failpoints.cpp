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
    std::optional<int>* slot = name == "producer_fatal_after_batches"
                                   ? &failpoints.producer_fatal_after_batches
                               : name == "freeze_before_commit" ? &failpoints.freeze_before_commit
                               : name == "kill_after_commit"    ? &failpoints.kill_after_commit
                                                                : nullptr;
    if (slot && equals != std::string::npos) {
      *slot = std::stoi(item.substr(equals + 1));
      continue;
    }
    throw std::invalid_argument(
        "RELAY_FAILPOINTS: unknown failpoint or missing value: '" + item +
        "' (known: producer_fatal_after_batches=N, freeze_before_commit=N, kill_after_commit=N)");
  }
  return failpoints;
}

}  // namespace outbox
