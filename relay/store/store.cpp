#include "relay/store/store.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <pqxx/pqxx>
#include <thread>

#include "relay/core/assert.hpp"
#include "relay/core/routing.hpp"
#include "relay/store/sql_errors.hpp"

namespace outbox {

namespace {

// Advisory lock keys, in the two-int4 form: (kLaneLockClass, lane) for lane leases and
// (kMemberLockClass, 0), held in shared mode by every instance, to count instances.
// Advisory locks are per database, so two outboxes in two databases never collide.
constexpr int kLaneLockClass = 0x6f627831;    // "obx1"
constexpr int kMemberLockClass = 0x6f62786d;  // "obxm"
constexpr const char* kNotifyChannel = "outbox_relay";

std::shared_ptr<spdlog::logger> store_log() {
  auto logger = spdlog::get("store");
  return logger ? logger : spdlog::default_logger();
}

class WakeupReceiver final : public pqxx::notification_receiver {
 public:
  explicit WakeupReceiver(pqxx::connection_base& connection)
      : pqxx::notification_receiver(connection, kNotifyChannel) {}
  void operator()(const std::string&, int) override { ++received_; }
  int take() { return std::exchange(received_, 0); }

 private:
  int received_ = 0;
};

std::string claim_sql(const RoutingConfig& routing, DeadKeyPolicy dead_key_policy) {
  // The lane filter hashes the key the same way for every instance; keyless rows all share the
  // lane of '' so they keep their id order. The partial index keeps the scan to pending rows.
  // The in-flight ids are skipped through a hashed subplan, built once per claim. "<> ALL($3)"
  // is hashed only when the array is a constant, in a custom plan; in the generic plan that
  // PostgreSQL picks for the prepared claim (by the table's size) it compared each row with each
  // of up to 4,000 ids: 42 ms instead of 2 ms per claim, and a drain rate that changed
  // threefold between backlogs of 200,000 and 300,000 rows.
  std::string sql = "SELECT m.id, m.\"" + routing.topic_column +  // validated as [a-z_][a-z0-9_]*
                    "\"::text, m.message_key, m.payload, m.headers::text,"
                    " (extract(epoch FROM m.created_at) * 1000)::bigint"
                    " FROM outbox.messages m"
                    " WHERE m.state = 'pending'"
                    "   AND (hashtext(coalesce(m.message_key, '')) & $1) = ANY($2::int[])"
                    "   AND m.id NOT IN (SELECT unnest($3::bigint[]))";
  if (dead_key_policy == DeadKeyPolicy::block) {
    sql +=
        "   AND (m.message_key IS NULL OR NOT EXISTS ("
        "     SELECT 1 FROM outbox.messages d"
        "      WHERE d.state = 'dead' AND d.message_key = m.message_key AND d.id < m.id))";
  }
  sql += " ORDER BY m.id LIMIT $4";
  return sql;
}

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
      "   kafka_partition = CASE WHEN u.outcome = 'delivered' THEN u.kafka_partition"
      "                          ELSE m.kafka_partition END,"
      "   kafka_offset = CASE WHEN u.outcome = 'delivered' THEN u.kafka_offset"
      "                       ELSE m.kafka_offset END,"
      "   last_error = coalesce(nullif(u.error, ''), m.last_error)"
      " FROM " +
      outcomes + " WHERE m.id = u.id AND m.state = 'pending'";
  if (published_rows == PublishedRows::keep) return update;
  // Still one statement (one round trip, one snapshot): delivered rows are deleted, the others
  // updated; the two touch disjoint rows.
  return "WITH delivered AS (DELETE FROM outbox.messages m USING " + outcomes +
         "   WHERE m.id = u.id AND u.outcome = 'delivered' AND m.state = 'pending' RETURNING "
         "m.id) " +
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

std::string session_connection_string(const PostgresConfig& postgres) {
  const std::string& url = postgres.url;
  const bool is_uri = url.starts_with("postgres://") || url.starts_with("postgresql://");
  const std::string timeout_seconds =
      std::to_string(std::max<std::int64_t>(1, (postgres.connect_timeout.count() + 999) / 1000));
  std::string result = url;
  auto add = [&](const std::string& name, const std::string& value) {
    if (url.find(name + "=") != std::string::npos) return;
    if (is_uri) {
      result += (result.find('?') == std::string::npos ? "?" : "&") + name + "=" + value;
    } else {
      result += (result.empty() ? "" : " ") + name + "=" + value;
    }
  };
  add("connect_timeout", timeout_seconds);
  add("application_name", "outbox-relay");
  // The claim's plan is estimated expensive (a per-row dead-key subplan over the whole backlog),
  // so with PostgreSQL's default jit=on every claim paid ~8 ms of JIT compilation per 1000 rows,
  // three times the query itself. A user's own "options" in the URL is left as it is.
  add("options", is_uri ? "-c%20jit%3Doff" : "'-c jit=off'");
  return result;
}

struct OutboxStore::Session {
  // Declared in this order so the receiver (which UNLISTENs) is destroyed before its connection.
  pqxx::connection connection;
  std::unique_ptr<WakeupReceiver> wakeups;
  std::vector<LaneId> owned_lanes;
  std::string lanes_param;  // owned_lanes as an int[] literal, rebuilt when they change

  explicit Session(const std::string& connection_string) : connection(connection_string) {}
};

template <typename Work>
auto OutboxStore::run(const std::string& what, Work&& work) {
  return with_store_errors(what, std::forward<Work>(work), [this] { disconnect(); });
}

OutboxStore::OutboxStore(const PostgresConfig& postgres, const RoutingConfig& routing,
                         const RelayConfig& relay, PublishedRows published_rows, SessionRole role)
    : postgres_(postgres),
      routing_(routing),
      relay_(relay),
      published_rows_(published_rows),
      role_(role) {
  RELAY_ASSERT(relay_.lanes > 0 && (relay_.lanes & (relay_.lanes - 1)) == 0,
               "lanes is a power of two (validated by config)");
}

OutboxStore::~OutboxStore() {
  // A clean stop, not disconnect()'s lost session: the lanes go with the session, for other
  // instances to take.
  if (session_ && !session_->owned_lanes.empty()) {
    store_log()->info("event=lanes_released lanes={}", session_->owned_lanes.size());
  }
  session_.reset();
}

bool OutboxStore::connected() const { return session_ && session_->connection.is_open(); }

void OutboxStore::disconnect() noexcept {
  if (session_ && !session_->owned_lanes.empty()) {
    store_log()->warn("event=leases_dropped lanes={}", session_->owned_lanes.size());
  }
  session_.reset();
}

void OutboxStore::ensure_connected() {
  if (connected()) return;
  session_.reset();
  run("connect to " + redact_postgres_url(postgres_.url), [&] {
    auto session = std::make_unique<Session>(session_connection_string(postgres_));
    session->connection.prepare("record_outcomes", record_outcomes_sql(published_rows_));
    if (role_ == SessionRole::claimer) {
      session->connection.prepare("claim", claim_sql(routing_, relay_.dead_key_policy));
      pqxx::nontransaction join{session->connection};
      join.exec_params("SELECT pg_advisory_lock_shared($1, 0)", kMemberLockClass);
      join.commit();
      if (relay_.notify) session->wakeups = std::make_unique<WakeupReceiver>(session->connection);
    }
    session_ = std::move(session);
  });
  store_log()->info("event=connected role={} postgres={}",
                    role_ == SessionRole::claimer ? "claimer" : "recorder",
                    redact_postgres_url(postgres_.url));
}

bool OutboxStore::wait_for_wakeup(std::chrono::milliseconds timeout) {
  ensure_connected();
  if (!session_->wakeups) {
    std::this_thread::sleep_for(timeout);
    return false;
  }
  return run("wait for NOTIFY", [&] {
    // A notification that arrived while we were busy is already buffered; take it first.
    session_->connection.get_notifs();
    if (session_->wakeups->take() > 0) return true;
    const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(timeout).count();
    session_->connection.await_notification(micros / 1'000'000, micros % 1'000'000);
    return session_->wakeups->take() > 0;
  });
}

LaneOwnership OutboxStore::rebalance_lanes(bool may_release) {
  ensure_connected();
  return run("rebalance lanes", [&] {
    pqxx::nontransaction tx{session_->connection};
    LaneOwnership ownership;
    ownership.instances =
        std::max(1, tx.exec_params1("SELECT count(DISTINCT pid)::int FROM pg_locks"
                                    " WHERE locktype = 'advisory' AND granted"
                                    "   AND database = (SELECT oid FROM pg_database"
                                    "                    WHERE datname = current_database())"
                                    "   AND classid = $1 AND objid = 0 AND objsubid = 2",
                                    kMemberLockClass)[0]
                        .as<int>());
    ownership.fair_share = (relay_.lanes + ownership.instances - 1) / ownership.instances;

    auto& owned = session_->owned_lanes;
    const std::size_t before = owned.size();
    for (int lane = 0;
         lane < relay_.lanes && owned.size() < static_cast<std::size_t>(ownership.fair_share);
         ++lane) {
      if (std::find(owned.begin(), owned.end(), LaneId{lane}) != owned.end()) continue;
      if (tx.exec_params1("SELECT pg_try_advisory_lock($1, $2)", kLaneLockClass, lane)[0]
              .as<bool>()) {
        owned.push_back(LaneId{lane});
      }
    }
    std::sort(owned.begin(), owned.end());
    int released = 0;
    while (may_release && owned.size() > static_cast<std::size_t>(ownership.fair_share)) {
      tx.exec_params("SELECT pg_advisory_unlock($1, $2)", kLaneLockClass, owned.back().value);
      owned.pop_back();
      ++released;
    }
    if (owned.size() != before || released > 0) {
      std::vector<std::int64_t> lane_numbers;
      for (LaneId lane : owned) lane_numbers.push_back(lane.value);
      session_->lanes_param = format_int_array(lane_numbers);
      store_log()->info("event=lanes_rebalanced owned={} instances={} fair_share={} released={}",
                        owned.size(), ownership.instances, ownership.fair_share, released);
    }
    ownership.owned = owned;
    return ownership;
  });
}

ClaimedBatch OutboxStore::claim_batch(std::span<const OutboxId> in_flight, int limit) {
  ensure_connected();
  ClaimedBatch batch;
  if (session_->owned_lanes.empty()) {
    batch.reached_end = true;
    return batch;
  }
  std::vector<std::int64_t> excluded;
  excluded.reserve(in_flight.size());
  for (OutboxId id : in_flight) excluded.push_back(id.value);

  const pqxx::result result = run("claim pending rows", [&] {
    pqxx::nontransaction tx{session_->connection};
    return tx.exec_prepared("claim", relay_.lanes - 1, session_->lanes_param,
                            format_int_array(excluded), limit);
  });

  batch.rows.reserve(result.size());
  for (const auto& row : result) {
    OutboxRow outbox_row;
    outbox_row.id = OutboxId{row[0].as<std::int64_t>()};
    if (row[1].is_null()) {
      outbox_row.defect = "routing column " + routing_.topic_column + " is null";
    } else {
      outbox_row.topic = resolve_topic(routing_.topic_pattern, row[1].c_str());
      outbox_row.defect = topic_name_defect(outbox_row.topic);
    }
    if (!row[2].is_null()) outbox_row.key = row[2].as<std::string>();
    if (!row[3].is_null()) outbox_row.payload = pqxx::binarystring(row[3]).str();
    try {
      outbox_row.headers = decode_headers(row[4].c_str());
    } catch (const std::invalid_argument& bad_headers) {
      if (!outbox_row.defect) outbox_row.defect = bad_headers.what();
    }
    outbox_row.created_at_ms = row[5].as<std::int64_t>();
    batch.rows.push_back(std::move(outbox_row));
  }
  batch.reached_end = static_cast<int>(result.size()) < limit;
  return batch;
}

void OutboxStore::record_outcomes(std::span<const DeliveryReport> reports) {
  std::vector<std::int64_t> ids, partitions, offsets;
  std::vector<std::string> outcomes, errors;
  for (const DeliveryReport& report : reports) {
    if (report.outcome == DeliveryOutcome::not_attempted) continue;
    ids.push_back(report.id.value);
    outcomes.emplace_back(outcome_code(report.outcome));
    partitions.push_back(report.partition);
    offsets.push_back(report.offset);
    errors.push_back(report.error);
  }
  if (ids.empty()) return;
  ensure_connected();
  run("record delivery outcomes", [&] {
    pqxx::nontransaction tx{session_->connection};
    tx.exec_prepared("record_outcomes", format_int_array(ids), format_text_array(outcomes),
                     format_int_array(partitions), format_int_array(offsets),
                     format_text_array(errors));
  });
}

}  // namespace outbox
