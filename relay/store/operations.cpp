#include "relay/store/operations.hpp"

#include <pqxx/pqxx>

#include "relay/store/lazy_session.hpp"
#include "relay/store/sql_errors.hpp"
#include "relay/store/store.hpp"

namespace outbox {

namespace {

/// The WHERE clause selecting dead rows by `filter`, with parameters $1..$4 (NULL = any).
std::string dead_rows_where(const RoutingConfig& routing) {
  return " WHERE state = 'dead'"
         "   AND ($1::text IS NULL OR coalesce(\"" +
         routing.topic_column +
         "\"::text, '') = $1)"
         "   AND ($2::bigint IS NULL OR id >= $2)"
         "   AND ($3::bigint IS NULL OR id <= $3)"
         "   AND ($4::text IS NULL OR strpos(lower(coalesce(last_error, '')), lower($4)) > 0)";
}

/// One session for one operator command: opened here, closed on return.
template <typename Work>
auto with_connection(const PostgresConfig& postgres, const std::string& what, Work&& work) {
  return LazySession(postgres).run(what, std::forward<Work>(work));
}

/// Runs `batch_sql` (which acts on at most $5 rows matching the filter, in id order, and returns
/// the id of each row changed first) until it changes nothing; each batch is its own short
/// transaction. Batches move an id cursor forward, so a row that dies again after a requeue is
/// not picked up again by the same command.
std::int64_t in_batches(const PostgresConfig& postgres, const std::string& what,
                        const std::string& batch_sql, const DeadRowFilter& filter, int batch_size,
                        const std::optional<std::string>& extra, const ProgressCallback& progress) {
  return with_connection(postgres, what, [&](pqxx::connection& connection) {
    std::int64_t done = 0;
    DeadRowFilter remaining = filter;
    for (;;) {
      pqxx::work tx{connection};
      const auto changed =
          extra ? tx.exec_params(batch_sql, remaining.topic, remaining.from_id, remaining.to_id,
                                 remaining.reason_contains, batch_size, *extra)
                : tx.exec_params(batch_sql, remaining.topic, remaining.from_id, remaining.to_id,
                                 remaining.reason_contains, batch_size);
      tx.commit();
      if (changed.empty()) return done;
      done += static_cast<std::int64_t>(changed.size());
      remaining.from_id = changed[changed.size() - 1][0].as<std::int64_t>() + 1;
      if (progress) progress(done);
    }
  });
}

}  // namespace

std::vector<DeadRow> list_dead_rows(const PostgresConfig& postgres, const RoutingConfig& routing,
                                    const DeadRowFilter& filter, int limit) {
  return with_connection(postgres, "list dead rows", [&](pqxx::connection& connection) {
    pqxx::read_transaction tx{connection};
    std::vector<DeadRow> rows;
    for (const auto& row : tx.exec_params(
             "SELECT id, coalesce(\"" + routing.topic_column +
                 "\"::text, ''), message_key,"
                 "       to_char(created_at, 'YYYY-MM-DD HH24:MI:SS'), coalesce(last_error, '') ||"
                 // An exhausted half message's reason is what its endpoint last answered (a TLS
                 // failure, a timeout, UNKNOWN): last_error itself stays the literal requeue knows.
                 "       CASE WHEN last_error = 'check-back exhausted' AND last_check_answer IS NOT"
                 "            NULL THEN '; last answer: ' || left(last_check_answer, 500) ELSE '' "
                 "END,"
                 "       attempts, check_count"
                 "  FROM outbox.messages" +
                 dead_rows_where(routing) + " ORDER BY id LIMIT $5",
             filter.topic, filter.from_id, filter.to_id, filter.reason_contains, limit)) {
      DeadRow dead;
      dead.id = row[0].as<std::int64_t>();
      dead.topic = row[1].c_str();
      if (!row[2].is_null()) dead.key = row[2].c_str();
      dead.created_at = row[3].c_str();
      dead.reason = row[4].c_str();
      dead.attempts = row[5].as<int>();
      dead.check_count = row[6].as<int>();
      rows.push_back(std::move(dead));
    }
    return rows;
  });
}

std::int64_t requeue_dead_rows(const PostgresConfig& postgres, const RoutingConfig& routing,
                               const DeadRowFilter& filter, int batch_size,
                               const ProgressCallback& progress) {
  return in_batches(postgres, "requeue dead rows",
                    "SELECT id, outbox.requeue(id) FROM (SELECT id FROM outbox.messages" +
                        dead_rows_where(routing) +
                        " ORDER BY id LIMIT $5 FOR UPDATE SKIP LOCKED) batch ORDER BY id",
                    filter, batch_size, std::nullopt, progress);
}

std::int64_t discard_dead_rows(const PostgresConfig& postgres, const RoutingConfig& routing,
                               const DeadRowFilter& filter, const std::string& reason,
                               int batch_size, const ProgressCallback& progress) {
  return in_batches(postgres, "discard dead rows",
                    "SELECT id, outbox.discard(id, $6) FROM (SELECT id FROM outbox.messages" +
                        dead_rows_where(routing) +
                        " ORDER BY id LIMIT $5 FOR UPDATE SKIP LOCKED) batch ORDER BY id",
                    filter, batch_size, reason, progress);
}

std::int64_t purge_finished_rows(const PostgresConfig& postgres,
                                 std::chrono::milliseconds older_than, int batch_size,
                                 const ProgressCallback& progress) {
  return with_connection(postgres, "purge finished rows", [&](pqxx::connection& connection) {
    std::int64_t done = 0;
    for (;;) {
      pqxx::work tx{connection};
      const auto deleted = tx.exec_params(
          "DELETE FROM outbox.messages WHERE id IN ("
          "  SELECT id FROM outbox.messages"
          "   WHERE state IN ('published', 'rolled_back', 'discarded')"
          "     AND finished_at"  // now(): an index bound, see lag_reader
          "         < now() - $1 * interval '1 millisecond'"
          "   LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id",
          older_than.count(), batch_size);
      tx.commit();
      if (deleted.empty()) return done;
      done += static_cast<std::int64_t>(deleted.size());
      if (progress) progress(done);
    }
  });
}

}  // namespace outbox
