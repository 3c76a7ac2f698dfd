#include "relay/pipeline/retention_purger.hpp"

#include <spdlog/spdlog.h>

#include <condition_variable>
#include <mutex>

#include "relay/store/operations.hpp"

namespace outbox {

RetentionPurger::RetentionPurger(const Config& config, Telemetry& telemetry)
    : config_(config), telemetry_(telemetry) {}

void RetentionPurger::run(std::stop_token stop) {
  Counter& purged = telemetry_.metrics.counter("outbox_purged_rows_total",
                                               "Finished rows deleted by the retention purge.");
  std::mutex mutex;
  std::condition_variable_any wake;
  while (!stop.stop_requested()) {
    try {
      const std::int64_t deleted = purge_finished_rows(
          config_.postgres, config_.retention.keep_finished, config_.retention.batch_size,
          /*progress=*/nullptr);
      purged.increment(static_cast<std::uint64_t>(deleted));
      if (deleted > 0) spdlog::info("event=retention_purged rows={}", deleted);
    } catch (const std::exception& error) {
      spdlog::warn("event=retention_purge_failed error=\"{}\"", error.what());
    }
    std::unique_lock lock(mutex);
    wake.wait_for(lock, stop, config_.retention.interval, [] { return false; });
  }
}

}  // namespace outbox
