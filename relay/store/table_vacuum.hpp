// VACUUM of the outbox table, for the relay's own schedule (relay/pipeline/table_vacuumer).
// Every row the relay marks published (or deletes) leaves a dead entry in the pending index, and
// each claim steps over those entries until a VACUUM removes them: on a long drain the claim's
// cost grows with the rows published since the last VACUUM. Autovacuum, when it runs at all,
// waits for a fifth of the table to be dead, which for a queue table is far too late.
#pragma once

#include <cstdint>
#include <memory>

#include "relay/config/config.hpp"

namespace outbox {

class LazySession;  // relay/store/lazy_session.hpp

/// One connection of its own, opened on first use and dropped after a failure. Not thread-safe.
/// Every call throws StoreUnavailable (store.hpp) when PostgreSQL cannot be reached.
class OutboxVacuum {
 public:
  explicit OutboxVacuum(const PostgresConfig& postgres);
  ~OutboxVacuum();
  OutboxVacuum(const OutboxVacuum&) = delete;
  OutboxVacuum& operator=(const OutboxVacuum&) = delete;

  /// Whether this role may vacuum the table: its owner (or a member of the owning role) or a
  /// superuser. For anyone else PostgreSQL skips the table with a mere warning.
  bool allowed();
  /// Dead row versions in the table, by PostgreSQL's cumulative statistics (pg_stat_user_tables).
  std::int64_t dead_row_versions();
  /// VACUUM (SKIP_LOCKED): returns at once if another VACUUM (autovacuum's, another relay's)
  /// holds the table.
  void run();

 private:
  template <typename Work>
  auto with_connection(const char* what, Work&& work);

  std::unique_ptr<LazySession> session_;
};

}  // namespace outbox
