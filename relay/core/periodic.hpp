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

/// When a task that runs every `interval`, but should take at most `busy_share` (0 < share <= 1)
/// of the time, may run next: `interval` after the last run started, and at least
/// t * (1 - busy_share) / busy_share after it ended when it took t. A task whose cost grows with
/// what it reads (counting a backlog of millions, stepping over the dead entries a held snapshot
/// keeps) then runs less often instead of back to back. Pure; tests/unit/core_test.cpp.
class PacedSchedule {
 public:
  using Clock = std::chrono::steady_clock;

  PacedSchedule(std::chrono::nanoseconds interval, double busy_share)
      : interval_(std::chrono::duration_cast<Clock::duration>(interval)), busy_share_(busy_share) {}

  bool due(Clock::time_point now) const { return now >= next_; }
  Clock::time_point next() const { return next_; }

  /// Records a run; `due` is false until the next one may start.
  void ran(Clock::time_point started, Clock::time_point ended) {
    const auto rest = std::chrono::duration_cast<Clock::duration>(
        (ended - started) * ((1 - busy_share_) / busy_share_));
    next_ = std::max(started + interval_, ended + rest);
  }

 private:
  Clock::duration interval_;
  double busy_share_;
  Clock::time_point next_{};  // the first run is due at once
};

/// Calls `task` at once and then, after each call, waits `interval` or longer until `stop` is
/// requested; a stop request ends the wait at once. `task` returns false to end the loop early.
/// The wait after a call is that of a PacedSchedule whose interval counts from the call's end.
template <typename Task>
void run_paced(std::chrono::milliseconds interval, double busy_share, std::stop_token stop,
               Task&& task) {
  PacedSchedule schedule(std::chrono::nanoseconds::zero(), busy_share);
  while (!stop.stop_requested()) {
    const auto started = PacedSchedule::Clock::now();
    if (!task()) return;
    const auto ended = PacedSchedule::Clock::now();
    schedule.ran(started, ended);
    wait_unless_stopped(
        stop, std::max<PacedSchedule::Clock::duration>(interval, schedule.next() - ended));
  }
}

/// Calls `task` at once and then every `interval` until `stop` is requested (see run_paced).
template <typename Task>
void run_every(std::chrono::milliseconds interval, std::stop_token stop, Task&& task) {
  run_paced(interval, 1.0, stop, std::forward<Task>(task));
}

}  // namespace outbox
