#include "relay/store/lag_reader.hpp"

#include <map>
#include <pqxx/pqxx>

#include "relay/store/lazy_session.hpp"
#include "relay/store/sql_errors.hpp"
#include "relay/store/store.hpp"

namespace outbox {

namespace {
std::string topic_of_row(const RoutingConfig& routing) {
  return "coalesce(\"" + routing.topic_column + "\"::text, '')";  // validated by the config
}
}  // namespace

std::string finished_last_minute_sql(const RoutingConfig& routing) {
  // now(), the transaction's start, and not clock_timestamp(): a volatile function cannot bound
  // an index scan, and the finished-rows index was read whole, history and all. With 10,000,000
  // published rows kept, that read ran back to back with the relay and cost a 100,000-row drain
  // 28% of its rate.
  return "SELECT " + topic_of_row(routing) +
         ", count(*) FILTER (WHERE state = 'published')"
         "  FROM outbox.messages"
         " WHERE state IN ('published', 'rolled_back', 'discarded')"
         "   AND finished_at > now() - interval '1 minute'"
         " GROUP BY 1";
}

LagReader::LagReader(const PostgresConfig& postgres, const RoutingConfig& routing)
    : routing_(routing), session_(std::make_unique<LazySession>(postgres)) {}
LagReader::~LagReader() = default;

LagSnapshot LagReader::read() {
  return session_->run("read the relay lag", [&](pqxx::connection& connection) {
    pqxx::read_transaction tx{connection};
    // Each query is served by one partial index (pending, unknown, dead, finished rows), so
    // none grows with the published history.
    const std::string topic = topic_of_row(routing_);
    const std::string age =
        "coalesce(extract(epoch FROM clock_timestamp() -"
        "  min(created_at) FILTER (WHERE isfinite(created_at))), 0)::float8";
    std::map<std::string, TopicLag> topics;
    auto lag_of = [&](const pqxx::row& row) -> TopicLag& {
      TopicLag& lag = topics[row[0].c_str()];
      lag.topic = row[0].c_str();
      return lag;
    };
    for (const auto& row : tx.exec("SELECT " + topic + ", count(*), " + age +
                                   " FROM outbox.messages WHERE state = 'pending' GROUP BY 1")) {
      lag_of(row).backlog_rows = row[1].as<std::int64_t>();
      lag_of(row).oldest_pending_age_seconds = row[2].as<double>();
    }
    // Only rows that failed or waited on Kafka carry a last_error while pending: few, so this
    // does not grow with the backlog.
    for (const auto& row :
         tx.exec("SELECT DISTINCT ON (1) " + topic +
                 ", left(last_error, 300) FROM outbox.messages"
                 " WHERE state = 'pending' AND last_error IS NOT NULL ORDER BY 1, id")) {
      lag_of(row).oldest_pending_error = row[1].c_str();
    }
    for (const auto& row : tx.exec("SELECT " + topic +
                                   ", count(*)"
                                   " FROM outbox.messages WHERE state = 'unknown' GROUP BY 1")) {
      lag_of(row).unknown_rows = row[1].as<std::int64_t>();
    }
    for (const auto& row : tx.exec("SELECT " + topic +
                                   ", count(*)"
                                   " FROM outbox.messages WHERE state = 'dead' GROUP BY 1")) {
      lag_of(row).dead_rows = row[1].as<std::int64_t>();
    }
    for (const auto& row : tx.exec(finished_last_minute_sql(routing_))) {
      lag_of(row).published_last_minute = row[1].as<std::int64_t>();
    }
    LagSnapshot snapshot;
    for (auto& [name, lag] : topics) {
      snapshot.unknown_rows += lag.unknown_rows;
      snapshot.dead_rows += lag.dead_rows;
      snapshot.topics.push_back(std::move(lag));
    }
    snapshot.oldest_unknown_age_seconds =
        tx.exec1("SELECT " + age + " FROM outbox.messages WHERE state = 'unknown'")[0].as<double>();
    // The unknown rows' partial index serves it; there are as many as are undecided. Written as a
    // materialized CTE, so the planner cannot take the ORDER BY id LIMIT 1 to the primary key and
    // walk the whole table in id order looking for an unknown row: it did, on a table not yet
    // analyzed, and took 0.7 s at 400,000 rows.
    if (const auto answer =
            tx.exec("WITH answered AS MATERIALIZED ("
                    "  SELECT id, last_check_answer FROM outbox.messages"
                    "   WHERE state = 'unknown' AND last_check_answer IS NOT NULL)"
                    " SELECT left(last_check_answer, 300) FROM answered ORDER BY id LIMIT 1");
        !answer.empty()) {
      snapshot.oldest_unknown_answer = answer[0][0].c_str();
    }
    // Prepared transactions (two-phase commit) belong to no session, so pg_stat_activity does
    // not show them, yet they hold back visibility and VACUUM just the same: counted from when
    // they were prepared. Other roles' xact_start is visible only with pg_read_all_stats.
    snapshot.oldest_transaction_age_seconds =
        tx.exec1(
              "SELECT coalesce(extract(epoch FROM clock_timestamp() - least("
              "  (SELECT min(xact_start) FROM pg_stat_activity"
              "    WHERE datname = current_database() AND pid <> pg_backend_pid()"
              "      AND xact_start IS NOT NULL),"
              "  (SELECT min(prepared) FROM pg_prepared_xacts"
              "    WHERE database = current_database()))), 0)::float8")[0]
            .as<double>();
    return snapshot;
  });
}

}  // namespace outbox
