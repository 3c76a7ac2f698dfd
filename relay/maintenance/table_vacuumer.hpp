// Keeps claims cheap on long runs: once retention.vacuum_dead_rows dead row versions have piled
// up in the outbox table since the last VACUUM, it runs one (relay/store/table_vacuum.hpp says
// why). Off when the setting is 0, and when the relay's role may not vacuum the table (then
// autovacuum is the only cleaner, and the relay says so once).
#pragma once

#include <stop_token>

#include "relay/config/config.hpp"
#include "relay/observe/metrics_server.hpp"

namespace outbox {

class TableVacuumer {
 public:
  TableVacuumer(const Config& config, Telemetry& telemetry);
  /// Checks every second until `stop`; failures are logged and retried at the next check.
  void run(std::stop_token stop);

 private:
  const Config& config_;
  Telemetry& telemetry_;
};

}  // namespace outbox
