// Keeps the relay-lag gauges fresh: every metrics.refresh_interval_ms it reads the outbox's
// backlog, oldest pending age per topic, unknown and dead rows, and the oldest open transaction
// (LagReader) into outbox_* gauges. When a read takes longer than 5% of that interval (counting a
// backlog of millions takes seconds), the reads are spaced out so they take 5% of the time.
#pragma once

#include <stop_token>

#include "relay/config/config.hpp"
#include "relay/observe/metrics_server.hpp"

namespace outbox {

class LagMonitor {
 public:
  LagMonitor(const Config& config, Telemetry& telemetry);
  /// Refreshes until `stop`; a PostgreSQL failure is logged and retried at the next interval.
  void run(std::stop_token stop);

 private:
  const Config& config_;
  Telemetry& telemetry_;
};

}  // namespace outbox
