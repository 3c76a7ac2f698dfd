// Exactly-once delivery's rules (kafka.exactly_once; README, "Exactly-once delivery"), apart from
// the I/O that carries them out (relay_loop.cpp, store.hpp, publisher.hpp):
//
// - A transaction (up to relay.max_in_flight_batches claimed batches) is one Kafka transaction of
//   one producer, whose transactional.id names the database, the relay instance and the
//   producer's generation (a fenced or broken producer is replaced by the next generation).
//   Transactions of one id are numbered 1, 2, ...
// - Transactions commit without waiting for PostgreSQL; the recorder records them in order, and
//   with transaction n's last batch sets the lanes' committed_seq (outbox.relay_lanes) to n.
// - Each transaction writes one marker to the marker topic (partition 0, keyed by its
//   transactional id): its id, its number, and the outbox ids that are committed and not recorded
//   once it commits: its own and those of earlier transactions still waiting for the recorder. So
//   a producer's last committed marker covers every row it committed and PostgreSQL did not
//   record. One partition, not one per lane: each partition a transaction touches costs the
//   commit a marker write, and at 1,000 rows/s one per lane doubled commit-to-visible latency.
// - Whoever takes a lane whose row names another producer fences that producer (InitProducerId:
//   its open transaction is aborted, it can commit nothing more), reads that producer's last
//   committed marker, and marks its ids published when it is newer than the lane's
//   committed_seq (ids_to_recover): ids of other lanes too, which that producer committed all the
//   same. Only then does it claim rows of the lane.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "relay/core/ids.hpp"

namespace outbox {

struct TransactionMarker {
  std::string transactional_id;
  std::int64_t seq = 0;
  std::vector<OutboxId> ids;

  bool operator==(const TransactionMarker&) const = default;
};

/// A small JSON object: {"transactional_id": ..., "seq": n, "ids": [...]}.
std::string encode_marker(const TransactionMarker& marker);
/// nullopt for anything that is not a marker this relay wrote (a foreign record in the topic
/// recovers nothing).
std::optional<TransactionMarker> decode_marker(std::string_view text);

/// "<prefix>.<instance>.<generation>"; `prefix` is the configured one, or for "auto"
/// "outbox-relay.<database identity>".
std::string transactional_id_for(const std::string& prefix, const std::string& database_identity,
                                 const std::string& instance, int generation);

/// What a lane's new owner must mark published: the ids of `last_marker` (the last committed
/// marker under the key `previous_id`, the producer the lane's row names) when it is that
/// producer's and newer than the row's committed_seq; nothing otherwise (recorded already, or a
/// foreign record, whose rows may have been requeued since).
std::vector<OutboxId> ids_to_recover(const std::optional<std::string>& previous_id,
                                     std::int64_t committed_seq,
                                     const std::optional<TransactionMarker>& last_marker);

}  // namespace outbox
