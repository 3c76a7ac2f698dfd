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

/// Check outcomes since start, for logs and metrics.
struct CheckbackTotals {
  std::uint64_t commit = 0;
  std::uint64_t rollback = 0;
  std::uint64_t unknown = 0;   ///< the endpoint answered UNKNOWN
  std::uint64_t failed = 0;    ///< no usable answer (counts as UNKNOWN)
  std::uint64_t not_sent = 0;  ///< no request reached the endpoint (not counted on the row)
};

class Sweeper {
 public:
  explicit Sweeper(const Config& config);
  /// Sweeps until `stop` is requested. PostgreSQL failures are retried with backoff; nothing it
  /// meets ends it. Requires a CurlGlobal to exist.
  void run(std::stop_token stop);

 private:
  const Config config_;
};

}  // namespace outbox
