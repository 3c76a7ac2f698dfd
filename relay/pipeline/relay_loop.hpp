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

#include <optional>
#include <stop_token>
#include <string>

#include "relay/config/config.hpp"
#include "relay/observe/metrics_server.hpp"

namespace outbox {

/// Faults the loop injects on purpose, for fault-injection tests (README, "Failpoints"). Off unless
/// set; the app reads them from the RELAY_FAILPOINTS environment variable.
struct Failpoints {
  /// After this many batches, put the producer into librdkafka's fatal-error state, once.
  std::optional<int> producer_fatal_after_batches;
};

/// Parses "name=value[,name=value]" (RELAY_FAILPOINTS); throws std::invalid_argument naming an
/// unknown failpoint or a bad value.
Failpoints parse_failpoints(const std::string& text);

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
