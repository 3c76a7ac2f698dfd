// The check-back sweeper (RocketMQ's transaction check, for half messages): finds rows left
// 'unknown' past their check delay, asks each writer's status-check endpoint what became of the
// transaction, and records COMMIT (publish), ROLLBACK (never publish) or UNKNOWN (ask again later,
// at most checkback.max_checks times, then park the row dead as "check-back exhausted").
//
// It runs on its own thread with its own PostgreSQL session, so a slow or failing endpoint never
// slows publishing. Bad answers (non-2xx, time-outs, connection errors, redirects, oversized or
// invalid bodies, unknown statuses) are never decisions: they count as UNKNOWN.
#pragma once

#include <cstdint>
#include <stop_token>

#include "relay/config/config.hpp"
#include "relay/observe/metrics_server.hpp"

namespace outbox {

/// libcurl's process-wide set-up. Construct one before any thread that may use libcurl starts
/// (curl_global_init is not thread-safe), and keep it for the life of the process.
class CurlGlobal {
 public:
  CurlGlobal();
  ~CurlGlobal();
  CurlGlobal(const CurlGlobal&) = delete;
  CurlGlobal& operator=(const CurlGlobal&) = delete;
};

class Sweeper {
 public:
  /// Counts checks in `telemetry.metrics` (outbox_checkback_*), which must outlive run().
  Sweeper(const Config& config, Telemetry& telemetry);
  /// Sweeps until `stop` is requested. PostgreSQL failures are retried with backoff; nothing it
  /// meets ends it. Requires a CurlGlobal to exist.
  void run(std::stop_token stop);

 private:
  const Config config_;
  Telemetry& telemetry_;
};

}  // namespace outbox
