#include "relay/store/half_message_store.hpp"

#include <pqxx/pqxx>
#include <utility>

#include "relay/core/text.hpp"
#include "relay/store/lazy_session.hpp"
#include "relay/store/sql_errors.hpp"
#include "relay/store/store.hpp"

namespace outbox {

namespace {

// Due half messages: unknown, past their check time, not leased by another sweeper, not
// quarantined here. `extra` narrows it (to one id, for isolation).
std::string due_rows_sql(const std::string& extra) {
  return "SELECT id FROM outbox.messages"
         " WHERE state = 'unknown'"
         "   AND coalesce(next_attempt_at, created_at + $2 * interval '1 millisecond')"
         "       <= clock_timestamp()"
         "   AND (checking_until IS NULL OR checking_until < clock_timestamp())"
         "   AND id <> ALL($4::bigint[])" +
         extra +
         " ORDER BY coalesce(next_attempt_at, created_at), id"
         " LIMIT $1";
}

// Leases the due rows for $3 ms and returns what a check needs.
std::string claim_due_sql(const std::string& extra) {
  return "UPDATE outbox.messages m"
         "   SET checking_until = clock_timestamp() + $3 * interval '1 millisecond'"
         "  FROM (" +
         due_rows_sql(extra) +
         " FOR UPDATE SKIP LOCKED) due"
         " WHERE m.id = due.id"
         " RETURNING m.id, m.producer_group, m.transaction_id, m.topic, m.message_key,"
         "           m.headers::text, m.check_count + 1,"
         "           to_char(m.created_at AT TIME ZONE 'UTC', "
         "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')";
}

constexpr const char* kRecordSql =
    "UPDATE outbox.messages m SET"
    "   state = CASE"
    "     WHEN u.verdict = 'COMMIT' THEN 'pending'::outbox.row_state"
    "     WHEN u.verdict = 'ROLLBACK' THEN 'rolled_back'::outbox.row_state"
    "     WHEN u.sent AND m.check_count + 1 >= $6 THEN 'dead'::outbox.row_state"
    "     ELSE m.state END,"
    "   last_error = CASE WHEN u.verdict = 'UNKNOWN' AND u.sent AND m.check_count + 1 >= $6"
    "                     THEN 'check-back exhausted' ELSE m.last_error END,"
    "   check_count = m.check_count + CASE WHEN u.sent THEN 1 ELSE 0 END,"
    "   last_check_answer = u.answer,"
    "   next_attempt_at = clock_timestamp() + u.retry_ms * interval '1 millisecond',"
    "   checking_until = NULL,"
    "   finished_at = CASE WHEN u.verdict = 'ROLLBACK' THEN clock_timestamp()"
    "                      ELSE m.finished_at END"
    " FROM unnest($1::bigint[], $2::text[], $3::boolean[], $4::text[], $5::bigint[])"
    "   AS u(id, verdict, sent, answer, retry_ms)"
    // Whatever join the planner picks, the table is read only at the listed ids ("= ANY($1)"),
    // never by a scan of the whole unknown-rows index (outcome_store.cpp says why that matters).
    // That index leads with next_attempt_at, so it cannot look ids up: the state is compared as
    // text, which keeps the planner from using it at all. It estimated a full bitmap scan of it
    // cheaper than the lookups, not knowing the dead entries a held snapshot keeps there.
    " WHERE m.id = u.id AND m.id = ANY($1::bigint[]) AND m.state::text = 'unknown'";

// The fewest columns an UPDATE can touch to take a half message out of the sweep with its reason.
constexpr const char* kParkSql =
    "UPDATE outbox.messages SET state = 'dead', last_error = $2, checking_until = NULL"
    " WHERE id = $1 AND state = 'unknown'";

std::string format_bool_array(const std::vector<bool>& values) {
  std::string text = "{";
  for (std::size_t i = 0; i < values.size(); ++i) {
    text += (i > 0 ? "," : "");
    text += values[i] ? "t" : "f";
  }
  return text + "}";
}

void prepare_half_message_statements(pqxx::connection& connection) {
  connection.prepare("claim_due", claim_due_sql(""));
  // For isolation: the due ids without leasing them, and the lease of one of them. The budget
  // parameters are typed by the shared text; $3 is the lease, unused by the id list.
  connection.prepare("due_ids", due_rows_sql(" AND $3::bigint > 0"));
  connection.prepare("claim_one", claim_due_sql(" AND id = $5"));
  connection.prepare("record_checks", kRecordSql);
  connection.prepare("park_half_message", kParkSql);
}

}  // namespace

template <typename Work>
auto HalfMessageStore::run(const std::string& what, Work&& work) {
  return session_->run(what, std::forward<Work>(work));
}

HalfMessageStore::HalfMessageStore(const PostgresConfig& postgres)
    : session_(std::make_unique<LazySession>(postgres, &prepare_half_message_statements)) {}
HalfMessageStore::~HalfMessageStore() = default;

namespace {
HalfMessage decode_half_message(const pqxx::row& row) {
  HalfMessage message;
  message.id = OutboxId{row[0].as<std::int64_t>()};
  message.producer_group = row[1].is_null() ? "" : row[1].c_str();
  message.transaction_id = row[2].is_null() ? "" : row[2].c_str();
  if (!row[3].is_null()) message.topic = row[3].c_str();
  if (!row[4].is_null()) message.key = row[4].c_str();
  message.headers_json = row[5].c_str();
  message.check_number = row[6].as<int>();
  message.created_at = row[7].c_str();
  return message;
}
}  // namespace

std::vector<HalfMessage> HalfMessageStore::claim_due(int limit,
                                                     std::chrono::milliseconds default_delay,
                                                     std::chrono::milliseconds lease) {
  std::vector<HalfMessage> due;
  try {
    const pqxx::result rows = run("claim half messages due for a check", [&](pqxx::connection& c) {
      pqxx::nontransaction tx{c};
      return tx.exec_prepared("claim_due", limit, default_delay.count(), lease.count(),
                              format_int_array(quarantined_ids_));
    });
    for (const auto& row : rows) due.push_back(decode_half_message(row));
    return due;
  } catch (const pqxx::sql_error&) {
    // The lease is an UPDATE: one row that no UPDATE can change fails it for all. Lease them one
    // by one, and keep the ones that fail out of later sweeps.
  }
  const pqxx::result ids = run("list half messages due", [&](pqxx::connection& c) {
    pqxx::nontransaction tx{c};
    return tx.exec_prepared("due_ids", limit, default_delay.count(), lease.count(),
                            format_int_array(quarantined_ids_));
  });
  for (const auto& id_row : ids) {
    const std::int64_t id = id_row[0].as<std::int64_t>();
    try {
      const pqxx::result one = run("lease a half message", [&](pqxx::connection& c) {
        pqxx::nontransaction tx{c};
        return tx.exec_prepared("claim_one", limit, default_delay.count(), lease.count(),
                                format_int_array(quarantined_ids_), id);
      });
      for (const auto& row : one) due.push_back(decode_half_message(row));
    } catch (const pqxx::sql_error& error) {
      quarantined_ids_.push_back(id);
      last_problems_.push_back(
          {OutboxId{id}, std::nullopt,
           capped(std::string("could not be leased for a check: ") + error.what(), kReasonBytes),
           /*quarantined=*/true});
    }
  }
  return due;
}

std::vector<RowProblem> HalfMessageStore::take_claim_problems() {
  return std::exchange(last_problems_, {});
}

std::vector<RowProblem> HalfMessageStore::record(std::span<const CheckRecord> records,
                                                 int max_checks) {
  if (records.empty()) return {};
  auto record_some = [&](std::span<const CheckRecord> some) {
    std::vector<std::int64_t> ids, retry_ms;
    std::vector<std::string> verdicts, answers;
    std::vector<bool> sent;
    for (const CheckRecord& record : some) {
      ids.push_back(record.id.value);
      verdicts.emplace_back(to_string(record.verdict));
      sent.push_back(record.request_sent);
      answers.push_back(capped(record.answer, kReasonBytes));
      retry_ms.push_back(record.next_check_in.count());
    }
    run("record check-back answers", [&](pqxx::connection& c) {
      pqxx::nontransaction tx{c};
      tx.exec_prepared("record_checks", format_int_array(ids), format_text_array(verdicts),
                       format_bool_array(sent), format_text_array(answers),
                       format_int_array(retry_ms), max_checks);
    });
  };
  try {
    record_some(records);
    return {};
  } catch (const pqxx::sql_error&) {
    // One row's data fails the statement (retriable failures were StoreUnavailable): find it.
  }
  std::vector<RowProblem> problems;
  for (const CheckRecord& record : records) {
    try {
      record_some(std::span(&record, 1));
    } catch (const pqxx::sql_error& error) {
      RowProblem problem = isolate_row(
          record.id, std::string("could not record its check-back answer: ") + error.what(),
          [&](const std::string& why) {
            run("park a half message", [&](pqxx::connection& c) {
              pqxx::nontransaction tx{c};
              tx.exec_prepared("park_half_message", record.id.value, why);
            });
          });
      if (problem.quarantined) quarantined_ids_.push_back(record.id.value);
      problems.push_back(std::move(problem));
    }
  }
  return problems;
}

}  // namespace outbox
