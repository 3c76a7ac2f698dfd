#include "relay/maintenance/maintenance.hpp"

#include <spdlog/spdlog.h>

#include <chrono>

#include "relay/core/periodic.hpp"
#include "relay/store/table_vacuum.hpp"

namespace outbox {

namespace {
// Checked every second while rows change, so a busy table is vacuumed soon after it passes the
// threshold; the wait doubles while the count stands still, up to half a minute, so an idle relay
// does not ask PostgreSQL every second.
constexpr std::chrono::seconds kCheckInterval{1};
constexpr std::chrono::seconds kIdleCheckIntervalMax{32};
}  // namespace

void vacuum_when_due(const Config& config, Telemetry& telemetry, std::stop_token stop) {
  Counter& vacuums = telemetry.metrics.counter("outbox_table_vacuums_total",
                                               "VACUUMs of the outbox table run by this relay.");
  OutboxVacuum vacuum(config.postgres);
  bool permission_checked = false;
  // Dead versions a VACUUM could not remove (an old snapshot still sees them) stay counted; the
  // threshold applies to what came after, so such a table is not vacuumed every second.
  std::int64_t left_by_last_vacuum = 0;
  std::chrono::seconds interval = kCheckInterval;
  std::int64_t dead_at_last_check = -1;
  auto check = [&] {
    try {
      if (!permission_checked) {
        if (!vacuum.allowed()) {
          spdlog::warn(
              "event=vacuum_disabled reason=\"the relay's role does not own outbox.messages\" "
              "effect=\"only autovacuum removes dead index entries; claims slow down on long "
              "runs\"");
          return false;
        }
        permission_checked = true;
      }
      const std::int64_t dead = vacuum.dead_row_versions();
      interval = dead == dead_at_last_check ? std::min(interval * 2, kIdleCheckIntervalMax)
                                            : kCheckInterval;
      dead_at_last_check = dead;
      if (dead - left_by_last_vacuum >= config.retention.vacuum_dead_rows) {
        const auto start = std::chrono::steady_clock::now();
        vacuum.run();
        left_by_last_vacuum = vacuum.dead_row_versions();
        dead_at_last_check = left_by_last_vacuum;
        vacuums.increment(1);
        spdlog::info("event=table_vacuumed dead_before={} dead_after={} duration_ms={}", dead,
                     left_by_last_vacuum,
                     std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::steady_clock::now() - start)
                         .count());
      }
    } catch (const std::exception& error) {
      spdlog::warn("event=vacuum_failed error=\"{}\"", error.what());
    }
    return true;
  };
  while (!stop.stop_requested() && check()) wait_unless_stopped(stop, interval);
}

}  // namespace outbox
