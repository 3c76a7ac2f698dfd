#include "relay/store/outcome_store.hpp"

#include <spdlog/spdlog.h>

#include <pqxx/pqxx>

#include "relay/core/assert.hpp"
#include "relay/core/text.hpp"
#include "relay/store/lazy_session.hpp"
#include "relay/store/sql_errors.hpp"

namespace outbox {

namespace {

// Bounds every way the planner may read the table to the listed ids, whatever join it picks. A
// hash join built from the pending rows (which both generic and custom plans chose once the
// statistics said few rows were pending) scans the whole pending-rows index, stepping over every
// dead entry in it: under a held snapshot nothing is removable, and one record of 1,000 rows took
// 229 ms against 12 ms, growing with the hold. With this condition the pending index, like the
// primary key, is read only at the listed ids.
constexpr const char* kOnlyListedIds = "m.id = ANY($1::bigint[])";

std::string record_outcomes_sql(PublishedRows published_rows) {
  const std::string outcomes =
      "unnest($1::bigint[], $2::text[], $3::int[], $4::bigint[], $5::text[])"
      " AS u(id, outcome, kafka_partition, kafka_offset, error)";
  const std::string update =
      "UPDATE outbox.messages m SET"
      "   state = CASE u.outcome WHEN 'delivered' THEN 'published'::outbox.row_state"
      "                          WHEN 'permanent' THEN 'dead'::outbox.row_state"
      "                          ELSE m.state END,"
      "   attempts = m.attempts + 1,"
      "   published_at = CASE WHEN u.outcome = 'delivered' THEN clock_timestamp()"
      "                       ELSE m.published_at END,"
      "   finished_at = CASE WHEN u.outcome = 'delivered' THEN clock_timestamp()"
      "                      ELSE m.finished_at END,"
      "   kafka_partition = CASE WHEN u.outcome = 'delivered' THEN u.kafka_partition"
      "                          ELSE m.kafka_partition END,"
      "   kafka_offset = CASE WHEN u.outcome = 'delivered' THEN u.kafka_offset"
      "                       ELSE m.kafka_offset END,"
      "   last_error = coalesce(nullif(u.error, ''), m.last_error)"
      " FROM " +
      outcomes + " WHERE m.id = u.id AND m.state = 'pending' AND " + kOnlyListedIds;
  if (published_rows == PublishedRows::keep) return update;
  // Still one statement (one round trip, one snapshot): delivered rows are deleted, the others
  // updated; the two touch disjoint rows. The delete needs no join: the delivered ids are taken
  // out of the outcomes once (an InitPlan) and read as one index condition. Joined, a generic
  // plan estimated one delivered row, so it read the whole id list again for each row: 1,000
  // lookups a row, 345 us of PostgreSQL CPU a row where marking them costs 12.
  return "WITH delivered AS (DELETE FROM outbox.messages m"
         "   WHERE m.id = ANY(ARRAY(SELECT u.id FROM " +
         outcomes +
         " WHERE u.outcome = 'delivered')) AND m.state = 'pending'"
         " RETURNING m.id) " +
         update + " AND u.outcome <> 'delivered'";
}

std::string_view outcome_code(DeliveryOutcome outcome) {
  switch (outcome) {
    case DeliveryOutcome::delivered:
      return "delivered";
    case DeliveryOutcome::permanent_failure:
      return "permanent";
    case DeliveryOutcome::retriable_failure:
      return "retriable";
    case DeliveryOutcome::not_attempted:
      break;
  }
  RELAY_ASSERT(false, "not_attempted outcomes are never recorded");
  return {};
}

}  // namespace

OutcomeStore::OutcomeStore(const PostgresConfig& postgres, PublishedRows published_rows)
    : session_(std::make_unique<LazySession>(
          postgres, [published_rows, postgres](pqxx::connection& connection) {
            connection.prepare("record_outcomes", record_outcomes_sql(published_rows));
            connection.prepare("park_dead", kParkDeadSql);
            store_log()->info("event=connected role=recorder postgres={}",
                              redact_postgres_url(postgres.url));
          })) {}

OutcomeStore::~OutcomeStore() = default;

void OutcomeStore::disconnect() noexcept { session_->reset(); }

RowProblem OutcomeStore::park(OutboxId id, std::string reason) {
  RowProblem problem = isolate_row(id, std::move(reason), [&](const std::string& why) {
    session_->run("park a row as dead", [&](pqxx::connection& connection) {
      pqxx::nontransaction tx{connection};
      tx.exec_prepared("park_dead", id.value, why);
    });
  });
  if (!problem.quarantined) {
    store_log()->error("event=row_parked_dead id={} reason=\"{}\"", id.value,
                       printable(problem.reason));
  }
  return problem;
}

std::vector<RowProblem> OutcomeStore::record_outcomes(std::span<const DeliveryReport> reports,
                                                      const std::optional<LaneCommit>& commit) {
  std::vector<RowProblem> problems = record_rows(reports);
  if (commit) {
    session_->run("record the lanes' committed transaction", [&](pqxx::connection& connection) {
      pqxx::nontransaction tx{connection};
      tx.exec_params(
          "UPDATE outbox.relay_lanes SET committed_seq = $2,"
          "   updated_at = clock_timestamp()"
          " WHERE transactional_id = $1 AND committed_seq < $2",
          commit->transactional_id, commit->seq);
    });
  }
  return problems;
}

std::vector<RowProblem> OutcomeStore::record_rows(std::span<const DeliveryReport> reports) {
  struct Arrays {
    std::vector<std::int64_t> ids, partitions, offsets;
    std::vector<std::string> outcomes, errors;
    void add(const DeliveryReport& report) {
      ids.push_back(report.id.value);
      outcomes.emplace_back(outcome_code(report.outcome));
      partitions.push_back(report.partition);
      offsets.push_back(report.offset);
      errors.push_back(capped(report.error, kReasonBytes));
    }
  };
  auto record = [&](const Arrays& arrays) {
    session_->run("record delivery outcomes", [&](pqxx::connection& connection) {
      pqxx::nontransaction tx{connection};
      tx.exec_prepared("record_outcomes", format_int_array(arrays.ids),
                       format_text_array(arrays.outcomes), format_int_array(arrays.partitions),
                       format_int_array(arrays.offsets), format_text_array(arrays.errors));
    });
  };
  Arrays all;
  for (const DeliveryReport& report : reports) {
    if (report.outcome != DeliveryOutcome::not_attempted) all.add(report);
  }
  if (all.ids.empty()) return {};
  try {
    record(all);
    return {};
  } catch (const pqxx::sql_error& error) {
    store_log()->error(
        "event=record_failed rows={} sqlstate={} error=\"{}\" action=record_rows_one_by_one",
        all.ids.size(), error.sqlstate(), printable(error.what(), kReasonBytes));
  }
  // One statement failed on one row's data: record each row alone, so only that row is held.
  std::vector<RowProblem> problems;
  for (const DeliveryReport& report : reports) {
    if (report.outcome == DeliveryOutcome::not_attempted) continue;
    Arrays one;
    one.add(report);
    try {
      record(one);
    } catch (const pqxx::sql_error& error) {
      problems.push_back(park(report.id, "could not record its outcome (" +
                                             std::string(outcome_code(report.outcome)) +
                                             "): " + error.what()));
    }
  }
  return problems;
}

}  // namespace outbox
