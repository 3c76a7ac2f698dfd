// The relay's background upkeep beside the pipeline. Each task runs on its own thread and
// PostgreSQL session until `stop` is requested; a PostgreSQL failure is logged and retried at the
// task's next interval, never ending the task.
#pragma once

#include <stop_token>

#include "relay/config/config.hpp"
#include "relay/observe/metrics_server.hpp"

namespace outbox {

/// Keeps the relay-lag gauges fresh: every metrics.refresh_interval_ms it reads the outbox's
/// backlog, oldest pending age per topic, unknown and dead rows, and the oldest open transaction
/// (LagReader) into outbox_* gauges. When a read takes longer than 5% of that interval (counting a
/// backlog of millions takes seconds), the reads are spaced out so they take 5% of the time.
void refresh_lag_gauges(const Config& config, Telemetry& telemetry, std::stop_token stop);

/// Keeps the outbox table's size bounded on long runs: every retention.interval_ms it deletes
/// finished rows older than retention.keep_finished_ms, in short batches.
void run_retention_purge(const Config& config, Telemetry& telemetry, std::stop_token stop);

/// Keeps claims cheap on long runs: once retention.vacuum_dead_rows dead row versions have piled
/// up in the outbox table since the last VACUUM, it runs one (relay/store/table_vacuum.hpp says
/// why). Off when the setting is 0, and when the relay's role may not vacuum the table (then
/// autovacuum is the only cleaner, and the relay says so once).
void vacuum_when_due(const Config& config, Telemetry& telemetry, std::stop_token stop);

}  // namespace outbox
