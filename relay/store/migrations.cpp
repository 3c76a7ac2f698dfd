#include <spdlog/spdlog.h>

#include <pqxx/pqxx>

#include "migrations.generated.hpp"
#include "relay/store/lane_settings.hpp"
#include "relay/store/sql_errors.hpp"
#include "relay/store/store.hpp"

namespace outbox {

namespace {
// Serializes concurrent `migrate` runs on one database; unrelated to the lane lock classes.
constexpr std::int64_t kMigrationLockKey = 0x6f62786d69677261;  // "obxmigra"
}  // namespace

std::vector<int> apply_migrations(const PostgresConfig& postgres, bool notify, int lanes) {
  std::vector<int> applied;
  with_store_errors(
      "migrate " + redact_postgres_url(postgres.url),
      [&] {
        pqxx::connection connection{session_connection_string(postgres)};
        // A migration may build an index over a large table: no statement deadline. lock_timeout
        // stays, so a migration that would queue behind a long transaction, and every writer
        // behind it, fails instead (run it again).
        pqxx::nontransaction{connection}.exec("SET statement_timeout = 0");
        for (const auto& migration : generated::kMigrations) {
          pqxx::work tx{connection};
          // A transaction-scoped lock: released by commit or rollback, even if we crash.
          tx.exec_params("SELECT pg_advisory_xact_lock($1)", kMigrationLockKey);
          tx.exec(
              "CREATE SCHEMA IF NOT EXISTS outbox;"
              "CREATE TABLE IF NOT EXISTS outbox.schema_migrations ("
              "  version integer PRIMARY KEY, name text NOT NULL,"
              "  applied_at timestamptz NOT NULL DEFAULT now())");
          if (!tx.exec_params("SELECT 1 FROM outbox.schema_migrations WHERE version = $1",
                              migration.version)
                   .empty()) {
            continue;  // the transaction ends unchanged when tx goes out of scope
          }
          try {
            tx.exec(std::string(migration.sql));
          } catch (const pqxx::sql_error& error) {
            throw std::runtime_error("migration " + std::string(migration.name) +
                                     " failed: " + error.what());
          }
          tx.exec_params("INSERT INTO outbox.schema_migrations (version, name) VALUES ($1, $2)",
                         migration.version, std::string(migration.name));
          tx.commit();
          applied.push_back(migration.version);
          spdlog::info("event=migration_applied version={} name={}", migration.version,
                       migration.name);
        }
        pqxx::work tx{connection};
        tx.exec_params("SELECT outbox.set_notify($1)", notify);
        tx.commit();
        agree_on_lane_count(connection, lanes);
      },
      [] {});
  return applied;
}

}  // namespace outbox
