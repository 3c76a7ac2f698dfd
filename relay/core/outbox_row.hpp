// The values that travel between the store (PostgreSQL) and the publisher (Kafka). No I/O here.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "relay/core/ids.hpp"

namespace outbox {

using MessageHeaders = std::vector<std::pair<std::string, std::string>>;

/// A pending row as claimed from the outbox table, with its destination already resolved.
struct OutboxRow {
  OutboxId id;
  std::string topic;  ///< resolved destination; empty when routing failed
  /// The routing column's value (what a topic hold excludes from claims); nullopt when null.
  std::optional<std::string> route;
  std::optional<std::string> key;     ///< Kafka message key; nullopt for a keyless row
  std::string payload;                ///< raw bytes
  MessageHeaders headers;             ///< decoded from the row's jsonb object
  std::optional<std::string> defect;  ///< why this row cannot be published (parked as dead)
  std::int64_t created_at_ms = 0;     ///< created_at, milliseconds since the Unix epoch
  std::int64_t size_bytes = 0;        ///< payload and key bytes, as PostgreSQL counted them
  std::int32_t lane = 0;              ///< the lane of its key (hashtext(key) & (lanes - 1))
};

/// What became of one row after a produce attempt.
enum class DeliveryOutcome {
  delivered,          ///< acknowledged by all in-sync replicas
  retriable_failure,  ///< not (or possibly not) persisted; the row stays pending and is re-sent
  permanent_failure,  ///< will never succeed as it is; the row is parked as dead with `error`
  not_attempted,      ///< held back (e.g. behind an earlier failure of the same key)
};

struct DeliveryReport {
  OutboxId id;
  DeliveryOutcome outcome = DeliveryOutcome::not_attempted;
  std::int32_t partition = -1;
  std::int64_t offset = -1;
  std::string error;
  /// Not acknowledged, yet possibly written: the message had been sent when it failed (a timeout
  /// or a purge of an in-flight request). Kafka may still append it.
  bool possibly_persisted = false;
};

}  // namespace outbox
