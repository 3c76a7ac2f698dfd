// What operators do to the outbox: inspect, requeue or discard dead rows, and purge finished rows
// past their retention. Every change runs in small batches of short transactions, so none holds
// locks for long against writers or the relay.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "relay/config/config.hpp"

namespace outbox {

/// Which dead rows a command acts on; unset fields match everything.
struct DeadRowFilter {
  std::optional<std::string> topic;
  std::optional<std::int64_t> from_id;         ///< inclusive
  std::optional<std::int64_t> to_id;           ///< inclusive
  std::optional<std::string> reason_contains;  ///< case-insensitive substring of last_error
};

struct DeadRow {
  std::int64_t id = 0;
  std::string topic;
  std::optional<std::string> key;
  std::string created_at;
  std::string reason;
  int attempts = 0;
  int check_count = 0;
};

/// Called after each batch with the rows done so far.
using ProgressCallback = std::function<void(std::int64_t done)>;

/// Each function opens its own connection. Throws StoreUnavailable (store.hpp) or pqxx errors.
std::vector<DeadRow> list_dead_rows(const PostgresConfig& postgres, const RoutingConfig& routing,
                                    const DeadRowFilter& filter, int limit);
/// Puts matching dead rows back (see outbox.requeue): returns how many.
std::int64_t requeue_dead_rows(const PostgresConfig& postgres, const RoutingConfig& routing,
                               const DeadRowFilter& filter, int batch_size,
                               const ProgressCallback& progress);
/// Discards matching dead rows with `reason` recorded (see outbox.discard): returns how many.
std::int64_t discard_dead_rows(const PostgresConfig& postgres, const RoutingConfig& routing,
                               const DeadRowFilter& filter, const std::string& reason,
                               int batch_size, const ProgressCallback& progress);
/// Deletes published, rolled-back and discarded rows finished more than `older_than` ago, in
/// batches of `batch_size`; returns how many.
std::int64_t purge_finished_rows(const PostgresConfig& postgres,
                                 std::chrono::milliseconds older_than, int batch_size,
                                 const ProgressCallback& progress);

}  // namespace outbox
