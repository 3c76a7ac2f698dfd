// The shape of the relay's background workers (lag gauges, retention purge, vacuum): a task run
// on an interval until the relay stops, and the wait that a stop request ends.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stop_token>
#include <utility>

namespace outbox {

/// Waits `duration`, or less when `stop` is requested first (then at once).
inline void wait_unless_stopped(std::stop_token stop, std::chrono::nanoseconds duration) {
  std::mutex mutex;
  std::condition_variable_any wake;
  std::unique_lock lock(mutex);
  wake.wait_for(lock, stop, duration, [] { return false; });
}

/// Calls `task` at once and then, after each call, waits `interval` or longer until `stop` is
/// requested; a stop request ends the wait at once. `task` returns false to end the loop early.
/// The wait after a call that took t is at least t * (1 - busy_share) / busy_share, so a task
/// whose cost grows with what it reads (counting a backlog of millions) takes at most
/// `busy_share` of the time instead of running back to back.
template <typename Task>
void run_paced(std::chrono::milliseconds interval, double busy_share, std::stop_token stop,
               Task&& task) {
  while (!stop.stop_requested()) {
    const auto started = std::chrono::steady_clock::now();
    if (!task()) return;
    const auto took = std::chrono::steady_clock::now() - started;
    const auto wait = std::max<std::chrono::steady_clock::duration>(
        interval, std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                      took * ((1 - busy_share) / busy_share)));
    wait_unless_stopped(stop, wait);
  }
}

/// Calls `task` at once and then every `interval` until `stop` is requested (see run_paced).
template <typename Task>
void run_every(std::chrono::milliseconds interval, std::stop_token stop, Task&& task) {
  run_paced(interval, 1.0, stop, std::forward<Task>(task));
}

}  // namespace outbox
