// Exponential backoff with jitter, for every retry loop in the relay (PostgreSQL, Kafka,
// endpoints).
#pragma once

#include <chrono>
#include <cstdint>
#include <random>

namespace outbox {

/// The longest wait between two attempts to reach PostgreSQL again. A connection attempt is cheap
/// for the server, and a relay that waited relay.backoff_max_ms (30 s) after a database restart
/// sat idle that long while the database was back and other instances took all its lanes.
constexpr std::chrono::milliseconds kReconnectBackoffMax{1000};

/// Delays grow as initial * 2^failures, capped at `max`, and each is drawn uniformly from
/// [delay/2, delay] ("equal jitter") so instances that failed together do not retry together.
/// Not thread-safe; one per retry loop.
class Backoff {
 public:
  Backoff(std::chrono::milliseconds initial, std::chrono::milliseconds max,
          std::uint64_t seed = std::random_device{}());

  /// The delay before the next attempt; each call counts one more failure.
  std::chrono::milliseconds next_delay();
  /// Forget the failures after a success.
  void reset() { failures_ = 0; }
  int failures() const { return failures_; }

 private:
  std::chrono::milliseconds initial_;
  std::chrono::milliseconds max_;
  int failures_ = 0;
  std::mt19937_64 random_;
};

}  // namespace outbox
