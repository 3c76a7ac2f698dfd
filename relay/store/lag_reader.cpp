#include "relay/store/lag_reader.hpp"

#include <pqxx/pqxx>

#include "relay/store/sql_errors.hpp"
#include "relay/store/store.hpp"

namespace outbox {

struct LagReader::Session {
  pqxx::connection connection;
  explicit Session(const std::string& connection_string) : connection(connection_string) {}
};

LagReader::LagReader(const PostgresConfig& postgres, const RoutingConfig& routing)
    : postgres_(postgres), routing_(routing) {}
LagReader::~LagReader() = default;

LagSnapshot LagReader::read() {
  return with_store_errors(
      "read the relay lag",
      [&] {
        if (!session_) session_ = std::make_unique<Session>(session_connection_string(postgres_));
        pqxx::read_transaction tx{session_->connection};
        LagSnapshot snapshot;
        // Routing column validated as [a-z_][a-z0-9_]* by the config.
        const std::string topic = "coalesce(\"" + routing_.topic_column + "\"::text, '')";
        for (const auto& row :
             tx.exec("SELECT " + topic +
                     ", count(*),"
                     "       extract(epoch FROM clock_timestamp() - min(created_at))::float8"
                     "  FROM outbox.messages WHERE state = 'pending' GROUP BY 1 ORDER BY 1")) {
          snapshot.topics.push_back(
              {row[0].c_str(), row[1].as<std::int64_t>(), row[2].as<double>()});
        }
        const auto unknown = tx.exec1(
            "SELECT count(*), coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0)"
            "::float8 FROM outbox.messages WHERE state = 'unknown'");
        snapshot.unknown_rows = unknown[0].as<std::int64_t>();
        snapshot.oldest_unknown_age_seconds = unknown[1].as<double>();
        snapshot.dead_rows =
            tx.exec1("SELECT count(*) FROM outbox.messages WHERE state = 'dead'")[0]
                .as<std::int64_t>();
        snapshot.oldest_transaction_age_seconds =
            tx.exec1(
                  "SELECT coalesce(extract(epoch FROM clock_timestamp() - min(xact_start)), 0)"
                  "::float8 FROM pg_stat_activity"
                  " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                  "   AND xact_start IS NOT NULL")[0]
                .as<double>();
        return snapshot;
      },
      [this] { session_.reset(); });
}

}  // namespace outbox
