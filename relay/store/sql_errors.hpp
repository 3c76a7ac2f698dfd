// Which PostgreSQL failures are worth retrying, and what becomes of a row a statement fails on.
// Private to relay/store (it includes pqxx).
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <pqxx/except>
#include <string>
#include <string_view>

#include "relay/core/text.hpp"
#include "relay/store/store.hpp"

namespace outbox {

/// The store module's logger (the default one until logging is configured).
inline std::shared_ptr<spdlog::logger> store_log() {
  auto logger = spdlog::get("store");
  return logger ? logger : spdlog::default_logger();
}

enum class SqlFailure {
  connection_lost,  ///< the session is gone (and with it leases and LISTEN): reconnect
  transient,        ///< the server is busy or shutting down: back off and retry
  permanent,        ///< a bug, a schema mismatch or a permission problem: retrying will not help
};

/// One exhaustive decision over SQLSTATE classes
/// (https://www.postgresql.org/docs/15/errcodes-appendix.html), defaulting to permanent.
SqlFailure classify_sqlstate(std::string_view sqlstate);

/// Runs `work`, turning retriable pqxx failures into StoreUnavailable("could not <what>: ...").
/// `on_connection_lost` runs first when the session must be dropped.
template <typename Work, typename OnLost>
auto with_store_errors(const std::string& what, Work&& work, OnLost&& on_connection_lost) {
  auto unavailable = [&](const std::exception& error, bool lost) {
    if (lost) on_connection_lost();
    return StoreUnavailable("could not " + what + ": " + error.what());
  };
  try {
    return work();
  } catch (const pqxx::broken_connection& error) {
    throw unavailable(error, true);
  } catch (const pqxx::in_doubt_error& error) {
    // The commit's outcome is unknown. Every write the relay makes is idempotent (it only moves
    // rows that are still pending), so reconnecting and repeating it is the reconciliation.
    throw unavailable(error, true);
  } catch (const pqxx::transaction_rollback& error) {
    throw unavailable(error, false);
  } catch (const pqxx::sql_error& error) {
    switch (classify_sqlstate(error.sqlstate())) {
      case SqlFailure::connection_lost:
        throw unavailable(error, true);
      case SqlFailure::transient:
        throw unavailable(error, false);
      case SqlFailure::permanent:
        throw;
    }
    throw;
  }
}

// The last step before quarantine: the fewest columns an UPDATE can touch to take a row out of the
// pending set with its reason, so it fails only where no UPDATE of the row can succeed.
inline constexpr const char* kParkDeadSql =
    "UPDATE outbox.messages SET state = 'dead', attempts = attempts + 1, last_error = $2"
    " WHERE id = $1 AND state = 'pending'";

/// How much of a statement's error a row's reason keeps: enough to act on, never a flood.
inline constexpr std::size_t kReasonBytes = 1000;

/// The one rule for a row a statement failed on (see RowProblem): `park(reason)` parks it dead;
/// when even that fails on the row's data, it is marked quarantined for the caller to exclude.
template <typename Park>
RowProblem isolate_row(OutboxId id, std::string reason, Park&& park) {
  RowProblem problem{id, std::nullopt, capped(std::move(reason), kReasonBytes)};
  try {
    park(problem.reason);
  } catch (const pqxx::sql_error& error) {
    problem.quarantined = true;
    problem.reason += capped(std::string("; parking it failed too: ") + error.what(), kReasonBytes);
  }
  return problem;
}

}  // namespace outbox
