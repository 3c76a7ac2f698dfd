// The relay's main loop: wake up (NOTIFY or poll), claim pending rows of the owned lanes, hand them
// to Kafka, record the outcomes — with up to relay.max_in_flight_batches batches between claim
// and record, so PostgreSQL and Kafka work at the same time.
//
// Ordering: batches are produced in claim order on one idempotent producer, so rows of one key
// (one lane, one partition) reach Kafka in id order. A claim never skips a pending row that is not
// in flight, so a row that became visible late is published before any later row of its key.
// After a retriable failure the loop stops claiming until every in-flight batch is recorded and a
// backoff has passed, then resumes from the oldest pending row.
#pragma once

#include <stop_token>
#include <string>

#include "relay/config/config.hpp"
#include "relay/observe/metrics_server.hpp"
#include "relay/pipeline/failpoints.hpp"

namespace outbox {

class RelayLoop {
 public:
  /// Reports into `telemetry` (outbox_* metrics, readiness), which must outlive run().
  RelayLoop(const Config& config, Telemetry& telemetry, Failpoints failpoints = {});

  /// Runs until `stop` is requested, then stops claiming, waits up to relay.shutdown_timeout_ms for
  /// in-flight deliveries, records what was delivered and returns. Retries PostgreSQL and Kafka
  /// failures with backoff for ever. Throws PublisherConfigError for an unusable Kafka
  /// configuration and pqxx errors that retrying cannot fix (a missing table: run migrate).
  void run(std::stop_token stop);

 private:
  const Config config_;
  Telemetry& telemetry_;
  Failpoints failpoints_;
};

}  // namespace outbox
