// PostgreSQL access for the check-back sweeper: claiming half messages that are due for a check,
// and recording what their writers answered. Part of relay/store, the only module with pqxx.
#pragma once

#include <chrono>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "relay/config/config.hpp"
#include "relay/core/check_verdict.hpp"
#include "relay/store/store.hpp"

namespace outbox {

class LazySession;  // relay/store/lazy_session.hpp

/// The outcome of one check, to record.
struct CheckRecord {
  OutboxId id;
  CheckVerdict verdict = CheckVerdict::unknown;
  bool request_sent = false;  ///< only checks that reached the endpoint count towards max_checks
  std::string answer;         ///< stored in last_check_answer
  std::chrono::milliseconds next_check_in{0};  ///< when verdict is unknown
};

/// One PostgreSQL session for one sweeper. Not thread-safe. Throws StoreUnavailable (store.hpp)
/// for failures worth retrying; reconnects on next use.
class HalfMessageStore {
 public:
  explicit HalfMessageStore(const PostgresConfig& postgres);
  ~HalfMessageStore();
  HalfMessageStore(const HalfMessageStore&) = delete;
  HalfMessageStore& operator=(const HalfMessageStore&) = delete;

  /// Claims up to `limit` rows still 'unknown' whose check is due (next_attempt_at, or created_at +
  /// `default_delay` when the row has none) and not leased by another sweeper, and leases them for
  /// `lease`. SKIP LOCKED and the lease together keep two instances off the same row.
  /// When the lease fails on one row's data, rows are leased one by one and the failing ones
  /// quarantined (skipped until the process ends); take_claim_problems() returns them.
  std::vector<HalfMessage> claim_due(int limit, std::chrono::milliseconds default_delay,
                                     std::chrono::milliseconds lease);
  /// The rows claim_due quarantined since the last call.
  std::vector<RowProblem> take_claim_problems();

  /// Records checks in one statement. Only rows still 'unknown' change, so a writer's commit or
  /// rollback that landed during the check stands. A counted UNKNOWN that reaches `max_checks`
  /// parks the row dead with the reason "check-back exhausted". When the statement fails on one
  /// row's data, rows are recorded one by one; a failing row is parked dead with the reason, and
  /// when even that fails it is quarantined: claim_due skips it until the process ends. Returns
  /// the rows parked or quarantined that way.
  std::vector<RowProblem> record(std::span<const CheckRecord> records, int max_checks);

 private:
  template <typename Work>
  auto run(const std::string& what, Work&& work);
  std::unique_ptr<LazySession> session_;
  std::vector<std::int64_t> quarantined_ids_;
  std::vector<RowProblem> last_problems_;
};

}  // namespace outbox
