// The shape of the relay's background workers (lag gauges, retention purge, vacuum): a task run
// on a fixed interval until the relay stops.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stop_token>

namespace outbox {

/// Calls `task` at once and then every `interval` until `stop` is requested; a stop request ends
/// the wait at once. `task` returns false to end the loop early.
template <typename Task>
void run_every(std::chrono::milliseconds interval, std::stop_token stop, Task&& task) {
  std::mutex mutex;
  std::condition_variable_any wake;
  while (!stop.stop_requested()) {
    if (!task()) return;
    std::unique_lock lock(mutex);
    wake.wait_for(lock, stop, interval, [] { return false; });
  }
}

}  // namespace outbox
