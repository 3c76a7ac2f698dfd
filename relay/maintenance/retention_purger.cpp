#include "relay/maintenance/maintenance.hpp"

#include <spdlog/spdlog.h>

#include "relay/core/periodic.hpp"
#include "relay/store/operations.hpp"

namespace outbox {

void run_retention_purge(const Config& config, Telemetry& telemetry, std::stop_token stop) {
  Counter& purged = telemetry.metrics.counter("outbox_purged_rows_total",
                                              "Finished rows deleted by the retention purge.");
  run_every(config.retention.interval, stop, [&] {
    try {
      const std::int64_t deleted = purge_finished_rows(
          config.postgres, config.retention.keep_finished, config.retention.batch_size,
          /*progress=*/nullptr);
      purged.increment(static_cast<std::uint64_t>(deleted));
      if (deleted > 0) spdlog::info("event=retention_purged rows={}", deleted);
    } catch (const std::exception& error) {
      spdlog::warn("event=retention_purge_failed error=\"{}\"", error.what());
    }
    return true;
  });
}

}  // namespace outbox
