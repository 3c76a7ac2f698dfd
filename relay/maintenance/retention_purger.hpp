// Keeps the outbox table's size bounded on long runs: every retention.interval_ms it deletes
// finished rows older than retention.keep_finished_ms, in short batches.
#pragma once

#include <stop_token>

#include "relay/config/config.hpp"
#include "relay/observe/metrics_server.hpp"

namespace outbox {

class RetentionPurger {
 public:
  RetentionPurger(const Config& config, Telemetry& telemetry);
  /// Purges until `stop`; failures are logged and retried at the next interval.
  void run(std::stop_token stop);

 private:
  const Config& config_;
  Telemetry& telemetry_;
};

}  // namespace outbox
