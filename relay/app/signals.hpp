// Turns SIGINT and SIGTERM into a stop request, without a global flag or a signal handler.
#pragma once

#include <stop_token>
#include <thread>

namespace outbox {

/// Blocks SIGINT and SIGTERM in the calling thread (and so in every thread created after it, which
/// is why it must be constructed before the Kafka producer) and waits for them on its own thread.
/// The first signal requests stop on `stop_source()`; a second one exits at once (128 + its
/// number), for an operator who will not wait for the clean stop. Restores the signal mask when
/// destroyed.
class StopOnSignals {
 public:
  StopOnSignals();
  ~StopOnSignals();
  StopOnSignals(const StopOnSignals&) = delete;
  StopOnSignals& operator=(const StopOnSignals&) = delete;

  std::stop_token token() const { return stop_.get_token(); }

 private:
  std::stop_source stop_;
  std::jthread waiter_;
};

}  // namespace outbox
