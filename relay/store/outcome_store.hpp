// The recording session: the outcomes of delivered batches written back to the outbox, on a
// connection of its own (the recorder's thread), so recording one batch and claiming the next run
// on two PostgreSQL backends at once. It joins no membership, takes no lane and LISTENs to
// nothing: the claiming session (store.hpp) does those.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "relay/config/config.hpp"
#include "relay/core/outbox_row.hpp"
#include "relay/store/store.hpp"

namespace outbox {

class LazySession;  // relay/store/lazy_session.hpp

/// What recording a delivery does to the row.
enum class PublishedRows {
  keep,            ///< mark it published, with partition and offset (retention purges it later)
  delete_at_once,  ///< delete it (retention.delete_on_publish): no audit trail, smallest table
};

/// exactly_once: transaction `seq` of producer `transactional_id` is recorded with the batch, so
/// the lanes it publishes for need no recovery of it (schema/010_lane_transactions.sql).
struct LaneCommit {
  std::string transactional_id;
  std::int64_t seq = 0;
};

class OutcomeStore {
 public:
  OutcomeStore(const PostgresConfig& postgres, PublishedRows published_rows);
  ~OutcomeStore();
  OutcomeStore(const OutcomeStore&) = delete;
  OutcomeStore& operator=(const OutcomeStore&) = delete;

  /// Records a batch's outcomes in one statement: delivered rows become published with their
  /// partition and offset, permanent failures dead with their reason, retriable failures stay
  /// pending with the attempt counted. Only rows still pending change, so recording twice is
  /// harmless (which is what makes a retry after an in-doubt commit safe). When the statement
  /// fails on a row's data, rows are recorded one by one and the failing ones parked or reported
  /// for quarantine in the result. Throws StoreUnavailable.
  /// With `commit`, the lanes of its producer then count it recorded (after the rows: a crash in
  /// between leaves a recovery that finds every row already published).
  std::vector<RowProblem> record_outcomes(std::span<const DeliveryReport> reports,
                                          const std::optional<LaneCommit>& commit = std::nullopt);

  /// Drops the session; the next call reconnects.
  void disconnect() noexcept;

 private:
  RowProblem park(OutboxId id, std::string reason);
  std::vector<RowProblem> record_rows(std::span<const DeliveryReport> reports);
  std::unique_ptr<LazySession> session_;
};

}  // namespace outbox
