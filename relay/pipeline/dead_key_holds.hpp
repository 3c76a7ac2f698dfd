// The dead-key rule (relay.dead_key_policy), in one place. Under `block`, a key with a dead row
// publishes nothing after it until an operator requeues or discards that row. Two halves enforce
// it: the claim skips keys that have a dead row in the database (relay/store's claim statement,
// built from the same policy), and, between a row's permanent failure and its batch being
// recorded (until then the database does not know the row is dead), this class holds the key in
// memory so that no later row of it, in this batch or any produced meanwhile, goes out. Under
// `skip` nothing is held. Not thread-safe: the relay loop and its publisher share one thread.
#pragma once

#include <span>
#include <string>
#include <unordered_map>

#include "relay/config/config.hpp"
#include "relay/core/outbox_row.hpp"
#include "relay/publisher/publisher.hpp"

namespace outbox {

class DeadKeyHolds final : public KeyGate {
 public:
  explicit DeadKeyHolds(DeadKeyPolicy policy) : policy_(policy) {}

  bool held(const OutboxRow& row) const override { return row.key && holds_.contains(*row.key); }

  void failed_permanently(const OutboxRow& row) override {
    if (row.key && policy_ == DeadKeyPolicy::block) ++holds_[*row.key];
  }

  /// A batch's outcomes are recorded: its dead rows are visible to the claim now, which skips
  /// their keys itself, so their in-memory holds end.
  void recorded(std::span<const OutboxRow> rows, std::span<const DeliveryReport> reports) {
    for (std::size_t i = 0; i < rows.size(); ++i) {
      if (reports[i].outcome != DeliveryOutcome::permanent_failure || !rows[i].key) continue;
      const auto hold = holds_.find(*rows[i].key);
      if (hold != holds_.end() && --hold->second == 0) holds_.erase(hold);
    }
  }

 private:
  DeadKeyPolicy policy_;
  std::unordered_map<std::string, int> holds_;  ///< key -> its dead rows not yet recorded
};

}  // namespace outbox
