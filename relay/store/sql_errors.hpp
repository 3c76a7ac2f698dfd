// Which PostgreSQL failures are worth retrying. Private to relay/store (it includes pqxx).
#pragma once

#include <pqxx/except>
#include <string>
#include <string_view>

#include "relay/store/store.hpp"

namespace outbox {

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

}  // namespace outbox
