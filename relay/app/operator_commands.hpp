// The operator's subcommands: status (lag from the database, for cron and scripts), dead-row
// handling and the retention purge. They need no running relay.
#pragma once

#include <optional>
#include <string>

#include "relay/config/config.hpp"
#include "relay/store/operations.hpp"

namespace outbox {

struct StatusThresholds {
  std::optional<double> max_lag_seconds;
  std::optional<long long> max_backlog;
  std::optional<long long> max_dead;
};

/// Prints lag per topic (a table, or JSON); returns kExitThreshold when a threshold is passed.
int print_status(const Config& config, bool json, const StatusThresholds& thresholds);
int list_dead(const Config& config, const DeadRowFilter& filter, int limit, bool json);
int requeue_dead(const Config& config, const DeadRowFilter& filter, int batch_size);
int discard_dead(const Config& config, const DeadRowFilter& filter, const std::string& why,
                 int batch_size);
int purge(const Config& config);

}  // namespace outbox
