#include "relay/store/lane_settings.hpp"

#include "relay/store/sql_errors.hpp"
#include "relay/store/store.hpp"

namespace outbox {

/// Stores `lanes` when no count is stored yet, then compares. FOR SHARE waits for a concurrent
/// `lanes set`, so a session that joined the membership before reading sees its outcome.
void agree_on_lane_count(pqxx::connection& connection, int lanes) {
  pqxx::work tx{connection};
  tx.exec_params(
      "INSERT INTO outbox.relay_settings (lanes) VALUES ($1) ON CONFLICT (singleton) DO NOTHING",
      lanes);
  const int stored = tx.exec1("SELECT lanes FROM outbox.relay_settings FOR SHARE")[0].as<int>();
  tx.commit();
  if (stored != lanes) {
    throw LaneCountMismatch(
        "relay.lanes is " + std::to_string(lanes) + " but this outbox's instances share " +
        std::to_string(stored) + " lanes (outbox.relay_settings); set relay.lanes: " +
        std::to_string(stored) + ", or stop every instance and run `outbox-relay lanes set " +
        std::to_string(lanes) + " --config FILE`");
  }
}

int count_instances(pqxx::transaction_base& tx) {
  return tx
      .exec_params1(
          "SELECT count(DISTINCT pid)::int FROM pg_locks"
          " WHERE locktype = 'advisory' AND granted"
          "   AND database = (SELECT oid FROM pg_database"
          "                    WHERE datname = current_database())"
          "   AND classid = $1 AND objid = 0 AND objsubid = 2",
          kMemberLockClass)[0]
      .as<int>();
}

std::optional<int> stored_lane_count(const PostgresConfig& postgres) {
  return with_store_errors(
      "read the lane count",
      [&]() -> std::optional<int> {
        pqxx::connection connection{session_connection_string(postgres)};
        pqxx::nontransaction tx{connection};
        const pqxx::result row = tx.exec("SELECT lanes FROM outbox.relay_settings");
        if (row.empty()) return std::nullopt;
        return row[0][0].as<int>();
      },
      [] {});
}

int change_lane_count(const PostgresConfig& postgres, int lanes) {
  return with_store_errors(
      "change the lane count",
      [&] {
        pqxx::connection connection{session_connection_string(postgres)};
        pqxx::work tx{connection};
        tx.exec("SET LOCAL lock_timeout = '10s'");
        const pqxx::result row = tx.exec("SELECT lanes FROM outbox.relay_settings FOR UPDATE");
        // Counted after the row lock: an instance joining later waits on it (agree_on_lane_count)
        // and reads the new count.
        if (const int running = count_instances(tx); running > 0) {
          throw std::runtime_error(std::to_string(running) +
                                   " relay instance(s) are connected to this outbox; stop every "
                                   "instance, then change the lane count");
        }
        // exactly_once: a lane whose producer stopped without recording everything is recovered
        // from partition <lane> of the marker topic by the lane's next owner. With another count
        // those lanes may never have an owner again: that recovery must happen first.
        const auto unrecovered =
            tx.exec1(
                  "SELECT count(*) FROM outbox.relay_lanes WHERE transactional_id IS NOT NULL")[0]
                .as<long>();
        if (unrecovered > 0) {
          throw std::runtime_error(
              std::to_string(unrecovered) +
              " lane(s) still name the exactly-once producer that last published for them (it "
              "did not stop cleanly); start the relay once with the current count, stop it, "
              "then change the count");
        }
        const int old = row.empty() ? lanes : row[0][0].as<int>();
        if (old != lanes) tx.exec("DELETE FROM outbox.relay_lanes");
        tx.exec_params(
            "INSERT INTO outbox.relay_settings (lanes) VALUES ($1) ON CONFLICT (singleton)"
            " DO UPDATE SET lanes = EXCLUDED.lanes, changed_at = now()",
            lanes);
        tx.commit();
        return old;
      },
      [] {});
}

}  // namespace outbox
