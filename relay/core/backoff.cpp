#include "relay/core/backoff.hpp"

#include <algorithm>

namespace outbox {

Backoff::Backoff(std::chrono::milliseconds initial, std::chrono::milliseconds max,
                 std::uint64_t seed)
    : initial_(std::max(initial, std::chrono::milliseconds(1))),
      max_(std::max(max, initial_)),
      random_(seed) {}

std::chrono::milliseconds Backoff::next_delay() {
  // Doubling stops at 2^20 so the shift cannot overflow however long the outage lasts.
  const int exponent = std::min(failures_, 20);
  ++failures_;
  const auto ceiling =
      std::min<std::int64_t>(initial_.count() * (std::int64_t{1} << exponent), max_.count());
  std::uniform_int_distribution<std::int64_t> jitter(ceiling / 2, ceiling);
  return std::chrono::milliseconds(jitter(random_));
}

}  // namespace outbox
