#include "relay/store/store.hpp"

#include <spdlog/spdlog.h>

#include <libpq-fe.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <random>

#include <pqxx/pqxx>
#include <thread>

#include "relay/core/assert.hpp"
#include "relay/core/routing.hpp"
#include "relay/core/text.hpp"
#include "relay/store/claim_floor.hpp"
#include "relay/store/floor_rescanner.hpp"
#include "relay/store/lane_settings.hpp"
#include "relay/store/sql_errors.hpp"

namespace outbox {

namespace {

// Advisory lock keys, in the two-int4 form: (kLaneLockClass, lane) for lane leases and
// (kMemberLockClass, 0), held in shared mode by every instance, to count instances.
// Advisory locks are per database, so two outboxes in two databases never collide.
constexpr int kLaneLockClass = 0x6f627831;  // "obx1"
constexpr const char* kNotifyChannel = "outbox_relay";
// A session whose peer does not acknowledge sent data for this long is broken (both sides).
constexpr int kSessionTcpUserTimeoutMs = 10000;
// What a row weighs for the claim's byte budget.
constexpr std::string_view kRowBytes =
    "(coalesce(octet_length(m.payload), 0) + coalesce(octet_length(m.message_key), 0))::bigint";

// A row's lane: its key hashed the same way by every instance; keyless rows all share the lane of
// '' so they keep their id order. `mask` is lanes - 1, as a literal or a parameter.
std::string lane_of_row(std::string_view mask) {
  return "(hashtext(coalesce(m.message_key, '')) & " + std::string(mask) + ")";
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

// The columns a claim reads, as one expression list for the batch claim and the one-row reads that
// isolate a row the batch claim could not read. Every expression is total over what a writer can
// store: an infinite created_at gives NULL (no latency figure) instead of an error, and a payload
// larger than `max_row_bytes` (message.max.bytes) is not read at all.
std::string claim_columns(const RoutingConfig& routing, std::string_view max_row_bytes,
                          int lane_mask) {
  return "m.id, m.\"" + routing.topic_column +  // validated as [a-z_][a-z0-9_]*
         "\"::text AS route, m.message_key,"
         " CASE WHEN " +
         std::string(kRowBytes) + " <= " + std::string(max_row_bytes) +
         " THEN m.payload END AS payload,"
         " m.headers::text AS headers,"
         " CASE WHEN isfinite(m.created_at)"
         "      THEN (date_part('epoch', m.created_at) * 1000)::bigint END AS created_ms,"
         " " +
         std::string(kRowBytes) + " AS size, " +
         // The lane, as the claim's filter computes it: exactly-once markers are kept per lane.
         lane_of_row(std::to_string(lane_mask)) + " AS lane";
}

// The pending rows of the owned lanes that claims skip: held topics' (`held`, a text[]),
// quarantined keys' (`keys`, a text[]) and, under dead_key_policy block, those of keys with an
// earlier dead row. The floor's probe and rescan skip them too (claim_floor.hpp). Held topics and
// quarantined keys are few, usually none.
//
// `held_starts` (a bigint[] in the order of `held`, or empty): a held topic's rows below its
// start are not skipped.
std::string skipped_rows_filter(DeadKeyPolicy dead_key_policy, const RoutingConfig& routing,
                                const std::string& held, const std::string& keys,
                                const std::string& held_starts = "") {
  const std::string route = "m.\"" + routing.topic_column + "\"";  // validated as [a-z_][a-z0-9_]*
  const std::string not_held = held_starts.empty()
                                   ? route + "::text <> ALL(" + held + "::text[])"
                                   : "NOT EXISTS (SELECT 1 FROM unnest(" + held + "::text[], " +
                                         held_starts +
                                         "::bigint[]) h(route, start) WHERE h.route = " + route +
                                         "::text AND m.id >= h.start)";
  std::string sql = "   AND (cardinality(" + held + "::text[]) = 0 OR " + route + " IS NULL OR " +
                    not_held + ")" + "   AND (cardinality(" + keys +
                    "::text[]) = 0 OR m.message_key IS NULL" + "        OR m.message_key <> ALL(" +
                    keys + "::text[]))";
  if (dead_key_policy == DeadKeyPolicy::block) {
    sql +=
        "   AND (m.message_key IS NULL OR NOT EXISTS ("
        "     SELECT 1 FROM outbox.messages d"
        "      WHERE d.state = 'dead' AND d.message_key = m.message_key AND d.id < m.id))";
  }
  return sql;
}

std::string claim_filter(DeadKeyPolicy dead_key_policy, const RoutingConfig& routing,
                         bool floor_enabled) {
  // The partial index keeps the scan to pending rows.
  // The in-flight ids are skipped through a hashed subplan, built once per claim. "<> ALL($3)"
  // is hashed only when the array is a constant, in a custom plan; in the generic plan that
  // PostgreSQL picks for the prepared claim (by the table's size) it compared each row with each
  // of up to 4,000 ids: 42 ms instead of 2 ms per claim, and a drain rate that changed
  // threefold between backlogs of 200,000 and 300,000 rows.
  return " FROM outbox.messages m"
         " WHERE m.state = 'pending'"
         "   AND " +
         lane_of_row("$1") +
         " = ANY($2::int[])"
         "   AND m.id NOT IN (SELECT unnest($3::bigint[]))" +
         skipped_rows_filter(dead_key_policy, routing, "$7", "$8") +
         // The claim floor (claim_floor.hpp): the index scan starts here, past the dead entries.
         // Or lower, at a rewind of the owned lanes that this claim's snapshot sees and the
         // probe's did not: a dead row requeued between the two is pending again below the floor,
         // and the later rows of its key it blocked are claimable in this snapshot, above it.
         // Started at the floor alone, the claim took those and left the requeued row for the
         // next one. With the floor off ($9 is 0) nothing takes the rewinds, so none is read.
         (floor_enabled ? "   AND m.id >= LEAST($9, (SELECT min(r.id) FROM outbox.claim_rewinds r"
                          "                           WHERE (r.key_hash & $1) = ANY($2::int[])))"
                        : "   AND m.id >= $9");
}

std::string claim_sql(const RoutingConfig& routing, DeadKeyPolicy dead_key_policy, int lane_mask,
                      bool floor_enabled) {
  // Bounded by rows ($4) and by bytes ($5): the window sums row sizes in id order and keeps the
  // rows that start within the budget (so the first row always comes). Sizes are octet_length,
  // which reads a TOASTed value's header, not the value; only the rows kept are sent, and an
  // oversized row's payload (over $6) not even then. `running` tells a claim cut by bytes from
  // one that reached the end of the backlog (see claim_batch). The window streams: a
  // count(*) OVER () here made PostgreSQL hold every candidate row, payload and all, before
  // sending the first, and a bigint sum is numeric arithmetic; the two were 40% of the claim's
  // time. A counted size fits int: each of the two octet_lengths is at most 1 GB.
  return "SELECT id, route, message_key, payload, headers, created_ms, size, lane, running FROM ("
         "  SELECT c.*,"
         "         sum((CASE WHEN c.size <= $6 THEN c.size ELSE 0 END)::int)"
         "           OVER (ORDER BY c.id ROWS UNBOUNDED PRECEDING) AS running"
         "    FROM (SELECT " +
         claim_columns(routing, "$6", lane_mask) +
         claim_filter(dead_key_policy, routing, floor_enabled) +
         "           ORDER BY m.id LIMIT $4) c) b"
         " WHERE b.running - CASE WHEN b.size <= $6 THEN b.size ELSE 0 END < $5"
         " ORDER BY id";
}

std::string claim_ids_sql(const RoutingConfig& routing, DeadKeyPolicy dead_key_policy,
                          bool floor_enabled) {
  // Same rows as the claim, ids only: what isolation reads when the claim failed on a row's data.
  // It takes the claim's parameters so both run with one argument list; the budgets ($5, $6) are
  // positive, and only named so that PostgreSQL can type them.
  return "SELECT m.id" + claim_filter(dead_key_policy, routing, floor_enabled) +
         " AND $5::bigint > 0 AND $6::bigint > 0 ORDER BY m.id LIMIT $4";
}

// The rows of the owned lanes ($1) that the floor counts as pending: not quarantined ($3, ids),
// not of a held topic ($4; unless below its start in `held_starts`) or a quarantined key ($5), not
// blocked by a dead row.
std::string floor_rows_filter(DeadKeyPolicy dead_key_policy, const RoutingConfig& routing,
                              int lane_mask, const std::string& held_starts = "") {
  return " AND " + lane_of_row(std::to_string(lane_mask)) +
         " = ANY($1::int[]) AND m.id <> ALL($3::bigint[])" +
         skipped_rows_filter(dead_key_policy, routing, "$4", "$5", held_starts);
}

std::string floor_probe_sql(DeadKeyPolicy dead_key_policy, const RoutingConfig& routing,
                            int lane_mask) {
  // One snapshot for all of it (claim_floor.hpp): the rewinds of the owned lanes, taken; the
  // lowest pending id from the floor ($2) on, which the index gives at once when the floor is
  // right; the snapshot's bounds; the id sequence's last value (NULL before its first use).
  const std::string mask = std::to_string(lane_mask);
  return "WITH rewound AS (DELETE FROM outbox.claim_rewinds r WHERE (r.key_hash & " + mask +
         ") = ANY($1::int[]) RETURNING r.id)"
         " SELECT (SELECT min(id) FROM rewound),"
         "  (SELECT min(m.id) FROM outbox.messages m WHERE m.state = 'pending' AND m.id >= $2" +
         floor_rows_filter(dead_key_policy, routing, lane_mask) +
         "),"
         "  pg_snapshot_xmin(pg_current_snapshot())::text::bigint,"
         "  pg_snapshot_xmax(pg_current_snapshot())::text::bigint,"
         "  pg_sequence_last_value(pg_get_serial_sequence('outbox.messages', 'id')::regclass)";
}

std::string rescan_sql(DeadKeyPolicy dead_key_policy, const RoutingConfig& routing, int lane_mask) {
  // The lowest pending id below the floor ($2) in the lanes ($1): rows the floor's rule cannot
  // see (claim_floor.hpp). A held topic's such row is looked for too, below where its hold began
  // ($6, each held topic's start): the floor rises past it again, but the hold's release must
  // come down to it, and no other look will find it there. Named in a comment so that
  // pg_stat_activity tells its session.
  return "SELECT /* claim floor rescan */ min(m.id) FROM outbox.messages m"
         " WHERE m.state = 'pending' AND m.id < $2" +
         floor_rows_filter(dead_key_policy, routing, lane_mask, "$6");
}

std::string read_one_sql(const RoutingConfig& routing, int lane_mask) {
  return "SELECT " + claim_columns(routing, "$2", lane_mask) +
         " FROM outbox.messages m"
         " WHERE m.id = $1 AND m.state = 'pending'";
}

/// Whether the id sequence hands out one value at a time: with a cache, a session takes ids long
/// before it uses them, and the claim floor's rule does not hold (claim_floor.hpp).
bool id_sequence_caches_one(pqxx::connection& connection) {
  pqxx::nontransaction tx{connection};
  const pqxx::result cache = tx.exec(
      "SELECT s.seqcache FROM pg_sequence s"
      " WHERE s.seqrelid = pg_get_serial_sequence('outbox.messages', 'id')::regclass");
  if (!cache.empty() && cache[0][0].as<std::int64_t>() == 1) return true;
  store_log()->warn(
      "event=claim_floor_off reason=\"the sequence of outbox.messages.id caches {} values per "
      "session\" effect=\"every claim scans from the first pending index entry; set CACHE 1\"",
      cache.empty() ? std::string("an unknown number of") : cache[0][0].c_str());
  return false;
}

/// Unique per process start: a restarted instance on the same host and pid is a new instance.
std::string make_instance_name() {
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  std::random_device random;
  char suffix[17];
  std::snprintf(suffix, sizeof suffix, "%08x%08x", random(), random());
  return std::string(host) + ":" + std::to_string(getpid()) + ":" + suffix;
}

}  // namespace

std::string session_connection_string(const PostgresConfig& postgres) {
  // libpq's own parser reads both forms (URI and keyword=value) exactly as libpq will; the result
  // is written back as keyword='value' pairs with the relay's settings added where the user set
  // none. Its error text is not passed on: for a malformed URL it quotes the password.
  char* parse_error = nullptr;
  std::unique_ptr<PQconninfoOption, decltype(&PQconninfoFree)> parsed(
      PQconninfoParse(postgres.url.c_str(), &parse_error), &PQconninfoFree);
  if (!parsed) {
    PQfreemem(parse_error);
    throw ConfigError("postgres.url", 0, "",
                      "not a connection string libpq can parse (its reason is not shown: it may "
                      "quote the password)");
  }
  std::vector<std::pair<std::string, std::string>> settings;
  std::string user_options;
  for (const PQconninfoOption* option = parsed.get(); option->keyword; ++option) {
    if (option->val && std::string_view(option->keyword) == "host" &&
        std::string_view(option->val).find('@') != std::string_view::npos) {
      // libpq would look the password's tail up as a host name, in DNS.
      throw ConfigError("postgres.url", 0, "",
                        "its host part contains '@': an '@' in the password must be written "
                        "%40");
    }
  }
  for (const PQconninfoOption* option = parsed.get(); option->keyword; ++option) {
    if (!option->val) continue;
    if (std::string_view(option->keyword) == "options") {
      user_options = option->val;
      continue;
    }
    settings.emplace_back(option->keyword, option->val);
  }
  auto set_default = [&](const std::string& keyword, const std::string& value) {
    const bool given = std::any_of(settings.begin(), settings.end(),
                                   [&](const auto& setting) { return setting.first == keyword; });
    if (!given) settings.emplace_back(keyword, value);
  };
  set_default("connect_timeout", std::to_string(std::max<std::int64_t>(
                                     1, (postgres.connect_timeout.count() + 999) / 1000)));
  set_default("application_name", "outbox-relay");
  // Every session has a deadline of its own, so a peer that vanishes (a silent partition, a host
  // gone) is noticed in seconds rather than when the kernel gives up (minutes to hours): TCP
  // keepalives and tcp_user_timeout on the relay's side, and the same for the server's side of the
  // session, so that PostgreSQL ends the backend of a relay that disappeared and its advisory
  // locks (lane leases) fall.
  set_default("keepalives", "1");
  set_default("keepalives_idle", "5");
  set_default("keepalives_interval", "2");
  set_default("keepalives_count", "3");
  set_default("tcp_user_timeout", std::to_string(kSessionTcpUserTimeoutMs));
  // jit=off: the claim's plan is estimated expensive (a per-row dead-key subplan over the whole
  // backlog), so with PostgreSQL's default every claim paid ~8 ms of JIT compilation per 1000
  // rows, three times the query itself. lock_timeout: a relay statement that would queue behind
  // an exclusive lock (a migration, an operator's DDL) fails and is retried instead of holding
  // every writer queued behind it. statement_timeout: no relay statement runs for a minute in
  // health (the migration and the VACUUM lift it for themselves); one that does is cancelled and
  // retried, and a session stuck in it no longer holds the loop, or its heartbeat, for longer.
  // The user's own options come last, so they win.
  std::string options =
      "-c jit=off -c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2"
      " -c tcp_keepalives_count=3 -c tcp_user_timeout=" +
      std::to_string(kSessionTcpUserTimeoutMs) + " -c lock_timeout=10s -c statement_timeout=60s";
  if (!user_options.empty()) options += " " + user_options;
  settings.emplace_back("options", options);

  std::string result;
  for (const auto& [keyword, value] : settings) {
    if (!result.empty()) result += ' ';
    result += keyword + "='";
    for (char c : value) {
      if (c == '\'' || c == '\\') result += '\\';
      result += c;
    }
    result += '\'';
  }
  return result;
}

struct OutboxStore::Session {
  // Declared in this order so the receiver (which UNLISTENs) is destroyed before its connection.
  pqxx::connection connection;
  std::unique_ptr<WakeupReceiver> wakeups;
  std::vector<LaneId> owned_lanes;
  std::string lanes_param;  // owned_lanes as an int[] literal, rebuilt when they change
  // Off when the id sequence caches more than one value per session (claim_floor.hpp).
  bool floor_enabled = false;
  ClaimFloor floor;

  explicit Session(const std::string& connection_string) : connection(connection_string) {}
};

template <typename Work>
auto OutboxStore::run(const std::string& what, Work&& work) {
  return with_store_errors(what, std::forward<Work>(work), [this] { disconnect(); });
}

OutboxStore::OutboxStore(const PostgresConfig& postgres, const RoutingConfig& routing,
                         const RelayConfig& relay)
    : postgres_(postgres), routing_(routing), relay_(relay), instance_(make_instance_name()) {
  RELAY_ASSERT(relay_.lanes > 0 && (relay_.lanes & (relay_.lanes - 1)) == 0,
               "lanes is a power of two (validated by config)");
}

OutboxStore::~OutboxStore() {
  // A clean stop, not disconnect()'s lost session: the lanes go with the session, for other
  // instances to take, and the heartbeat row goes too, so nobody waits for it to expire.
  if (session_ && !session_->owned_lanes.empty()) {
    store_log()->info("event=lanes_released lanes={}", session_->owned_lanes.size());
  }
  if (session_) {
    try {
      pqxx::nontransaction tx{session_->connection};
      tx.exec_params("DELETE FROM outbox.relay_instances WHERE instance = $1", instance_);
    } catch (const std::exception&) {
      // Gone with the session: the row expires and the others remove it.
    }
  }
  session_.reset();
}

std::int64_t OutboxStore::claim_floor() const { return session_ ? session_->floor.floor() : 0; }

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
    session->connection.prepare("park_dead", kParkDeadSql);
    session->floor_enabled = id_sequence_caches_one(session->connection);
    session->connection.prepare("claim", claim_sql(routing_, relay_.dead_key_policy,
                                                   relay_.lanes - 1, session->floor_enabled));
    session->connection.prepare(
        "claim_ids", claim_ids_sql(routing_, relay_.dead_key_policy, session->floor_enabled));
    session->connection.prepare("read_one", read_one_sql(routing_, relay_.lanes - 1));
    session->connection.prepare(
        "floor_probe", floor_probe_sql(relay_.dead_key_policy, routing_, relay_.lanes - 1));
    if (session->floor_enabled && !rescanner_) {
      rescanner_ = std::make_unique<FloorRescanner>(
          postgres_, rescan_sql(relay_.dead_key_policy, routing_, relay_.lanes - 1),
          relay_.claim_rescan_interval);
    }
    pqxx::nontransaction join{session->connection};
    join.exec_params("SELECT pg_advisory_lock_shared($1, 0)", kMemberLockClass);
    join.commit();
    // After joining: a `lanes set` that counted no instance has committed, or waits for us.
    agree_on_lane_count(session->connection, relay_.lanes);
    pqxx::nontransaction beat{session->connection};
    beat.exec_params(
        "INSERT INTO outbox.relay_instances (instance, backend_pid, heartbeat_at, expires_at)"
        " VALUES ($1, pg_backend_pid(), clock_timestamp(),"
        "         clock_timestamp() + $2 * interval '1 millisecond')"
        " ON CONFLICT (instance) DO UPDATE SET backend_pid = EXCLUDED.backend_pid,"
        "   heartbeat_at = EXCLUDED.heartbeat_at, expires_at = EXCLUDED.expires_at",
        instance_, relay_.lease_timeout.count());
    if (relay_.notify) session->wakeups = std::make_unique<WakeupReceiver>(session->connection);
    session_ = std::move(session);
  });
  store_log()->info("event=connected role=claimer postgres={}", redact_postgres_url(postgres_.url));
}

bool OutboxStore::wait_for_wakeup(std::chrono::milliseconds timeout, int interrupt_fd) {
  ensure_connected();
  const bool listening = session_->wakeups != nullptr;
  return run("wait for NOTIFY", [&] {
    if (listening) {
      // A notification that arrived while we were busy is already buffered; take it first.
      session_->connection.get_notifs();
      if (session_->wakeups->take() > 0) return true;
    }
    // One poll() over the session's socket and the interrupt: no wake-ups in between, so an idle
    // relay costs nothing until its next deadline.
    pollfd watched[2];
    nfds_t count = 0;
    if (interrupt_fd >= 0) watched[count++] = {interrupt_fd, POLLIN, 0};
    if (listening) watched[count++] = {session_->connection.sock(), POLLIN, 0};
    if (count == 0) {
      std::this_thread::sleep_for(timeout);
      return false;
    }
    if (poll(watched, count, static_cast<int>(timeout.count())) <= 0 || !listening) return false;
    session_->connection.get_notifs();  // reads the socket; a broken session throws here
    return session_->wakeups->take() > 0;
  });
}

LaneOwnership OutboxStore::rebalance_lanes(bool may_release) {
  ensure_connected();
  return run("rebalance lanes", [&] {
    pqxx::nontransaction tx{session_->connection};
    LaneOwnership ownership;
    // Taken before the statement is sent: the row's expiry, computed by the server when it runs,
    // is later than sent + lease_timeout, so this instance's own deadline always comes first. The
    // margin covers the rebalance interval in which the others look.
    const auto sent = std::chrono::steady_clock::now();
    if (tx.exec_params("UPDATE outbox.relay_instances SET heartbeat_at = clock_timestamp(),"
                       "   expires_at = clock_timestamp() + $2 * interval '1 millisecond'"
                       " WHERE instance = $1 AND backend_pid = pg_backend_pid()",
                       instance_, relay_.lease_timeout.count())
            .affected_rows() == 0) {
      session_->owned_lanes.clear();
      disconnect();
      throw LeaseLost(
          "this instance's heartbeat row was removed: another instance took it for "
          "dead and may hold its lanes");
    }
    ownership.lease_valid_until =
        sent + relay_.lease_timeout -
        std::min(relay_.lease_timeout / 5, std::chrono::milliseconds(3000));
    end_expired_instances(tx, ownership);
    ownership.instances = std::max(1, tx.exec("SELECT count(*)::int FROM outbox.relay_instances"
                                              " WHERE expires_at >= clock_timestamp()")[0][0]
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
        ownership.acquired.push_back(LaneId{lane});
      }
    }
    std::sort(owned.begin(), owned.end());
    // The floor was found for the lanes held before; a taken lane's rows may lie below it.
    if (!ownership.acquired.empty()) session_->floor.reset();
    int released = 0;
    while (may_release && owned.size() > static_cast<std::size_t>(ownership.fair_share)) {
      if (lane_publisher_) {
        // Released with nothing in flight: every transaction of ours is recorded.
        tx.exec_params(
            "UPDATE outbox.relay_lanes SET transactional_id = NULL,"
            "   updated_at = clock_timestamp()"
            " WHERE lane = $1 AND transactional_id = $2",
            owned.back().value, *lane_publisher_);
      }
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

std::string OutboxStore::database_identity() {
  ensure_connected();
  return run("read the database's identity", [&] {
    pqxx::nontransaction tx{session_->connection};
    try {
      const pqxx::row row = tx.exec1(
          "SELECT (SELECT system_identifier FROM pg_control_system())::text || '.' ||"
          "       current_database()");
      return std::string(row[0].c_str());
    } catch (const pqxx::insufficient_privilege&) {
      throw std::runtime_error(
          "kafka.exactly_once: this role may not read pg_control_system() to name the "
          "database in transactional ids; set kafka.transactional_id_prefix");
    }
  });
}

OutboxStore::LaneTransaction OutboxStore::lane_transaction(LaneId lane) {
  ensure_connected();
  return run("read the lane's transactional producer", [&] {
    pqxx::nontransaction tx{session_->connection};
    const pqxx::result rows = tx.exec_params(
        "SELECT transactional_id, committed_seq FROM outbox.relay_lanes WHERE lane = $1",
        lane.value);
    LaneTransaction found;
    if (!rows.empty()) {
      if (!rows[0][0].is_null()) found.transactional_id = rows[0][0].as<std::string>();
      found.committed_seq = rows[0][1].as<std::int64_t>();
    }
    return found;
  });
}

void OutboxStore::take_lane(LaneId lane, const std::string& transactional_id,
                            std::int64_t committed_seq) {
  ensure_connected();
  run("take the lane for this producer", [&] {
    pqxx::nontransaction tx{session_->connection};
    tx.exec_params(
        "INSERT INTO outbox.relay_lanes (lane, transactional_id, committed_seq)"
        " VALUES ($1, $2, $3) ON CONFLICT (lane) DO UPDATE SET"
        "   transactional_id = EXCLUDED.transactional_id,"
        "   committed_seq = EXCLUDED.committed_seq, updated_at = clock_timestamp()",
        lane.value, transactional_id, committed_seq);
  });
}

void OutboxStore::release_lanes_of(const std::string& transactional_id) {
  ensure_connected();
  run("release the lanes of this producer", [&] {
    pqxx::nontransaction tx{session_->connection};
    tx.exec_params(
        "UPDATE outbox.relay_lanes SET transactional_id = NULL,"
        "   updated_at = clock_timestamp() WHERE transactional_id = $1",
        transactional_id);
  });
}

std::size_t OutboxStore::mark_recovered(std::span<const OutboxId> ids, bool delete_on_publish,
                                        const std::string& note) {
  ensure_connected();
  std::vector<std::int64_t> values;
  values.reserve(ids.size());
  for (OutboxId id : ids) values.push_back(id.value);
  return run("mark rows Kafka committed", [&] {
    pqxx::nontransaction tx{session_->connection};
    if (delete_on_publish) {
      return static_cast<std::size_t>(
          tx.exec_params("DELETE FROM outbox.messages WHERE id = ANY($1::bigint[])"
                         " AND state = 'pending'",
                         format_int_array(values))
              .affected_rows());
    }
    return static_cast<std::size_t>(
        tx.exec_params("UPDATE outbox.messages SET state = 'published', attempts = attempts + 1,"
                       "   published_at = clock_timestamp(), finished_at = clock_timestamp(),"
                       "   last_error = $2"
                       " WHERE id = ANY($1::bigint[]) AND state = 'pending'",
                       format_int_array(values), capped(note, kReasonBytes))
            .affected_rows());
  });
}

namespace {

/// Turns one claimed row into an OutboxRow. Never throws: whatever about the row cannot be used
/// becomes its defect, and the row is parked with it.
OutboxRow decode_row(const pqxx::row& row, const RoutingConfig& routing,
                     const ClaimLimits& limits) {
  OutboxRow outbox_row;
  outbox_row.id = OutboxId{row[0].as<std::int64_t>()};
  auto add_defect = [&](std::string why) {
    if (!outbox_row.defect) outbox_row.defect = std::move(why);
  };
  try {
    if (!row[2].is_null()) outbox_row.key = row[2].as<std::string>();
    outbox_row.size_bytes = row[6].as<std::int64_t>();
    if (row[1].is_null()) {
      add_defect("routing column " + routing.topic_column + " is null");
    } else {
      outbox_row.route = row[1].as<std::string>();
      outbox_row.topic = resolve_topic(routing.topic_pattern, *outbox_row.route);
      if (auto defect = topic_name_defect(outbox_row.topic)) add_defect(*defect);
    }
    if (outbox_row.size_bytes > limits.max_row_bytes) {
      add_defect("message too large: " + std::to_string(outbox_row.size_bytes) +
                 " bytes of payload and key, over the producer's message.max.bytes (" +
                 std::to_string(limits.max_row_bytes) + "); its payload was not read");
    } else if (!row[3].is_null()) {
      outbox_row.payload = pqxx::binarystring(row[3]).str();
    }
    try {
      outbox_row.headers = decode_headers(row[4].c_str());
      if (auto defect = reserved_header_defect(outbox_row.headers, routing.id_header)) {
        add_defect(*defect);
      }
    } catch (const std::invalid_argument& bad_headers) {
      add_defect(bad_headers.what());
    }
    if (!row[5].is_null()) outbox_row.created_at_ms = row[5].as<std::int64_t>();
    outbox_row.lane = row[7].as<std::int32_t>();
  } catch (const std::exception& error) {
    add_defect(capped(std::string("could not be decoded: ") + error.what(), kReasonBytes));
  }
  return outbox_row;
}

}  // namespace

void OutboxStore::end_expired_instances(pqxx::transaction_base& tx, LaneOwnership& ownership) {
  // An instance whose session is gone is dead: its row goes at once (its locks went with the
  // session). An instance whose heartbeat expired is frozen, cut off or dead without its session
  // having ended. Ending its backend releases its advisory locks, so its lanes can be taken; the
  // wait (up to 5 s) makes the locks free when this returns. backend_start guards against a pid
  // reused by a newer session.
  const pqxx::result expired = tx.exec(
      "SELECT i.instance, i.backend_pid, a.pid IS NOT NULL FROM outbox.relay_instances i"
      "  LEFT JOIN pg_stat_activity a ON a.pid = i.backend_pid"
      "        AND a.backend_start <= i.heartbeat_at AND a.datname = current_database()"
      " WHERE i.expires_at < clock_timestamp() OR a.pid IS NULL");
  for (const auto& row : expired) {
    const std::string instance = row[0].c_str();
    const int pid = row[1].as<int>();
    const bool alive = row[2].as<bool>();
    try {
      if (alive) tx.exec_params("SELECT pg_terminate_backend($1, 5000)", pid);
      tx.exec_params("DELETE FROM outbox.relay_instances WHERE instance = $1", instance);
      ownership.ended_instances.push_back(instance);
      store_log()->warn(
          "event=instance_expired instance=\"{}\" backend_pid={} session_ended={} "
          "effect=\"its lanes are free for the others\"",
          printable(instance, 300), pid, alive);
    } catch (const pqxx::sql_error& error) {
      if (std::find(terminate_refused_.begin(), terminate_refused_.end(), instance) ==
          terminate_refused_.end()) {
        terminate_refused_.push_back(instance);
        store_log()->error(
            "event=instance_expired_not_ended instance=\"{}\" backend_pid={} error=\"{}\" "
            "hint=\"the relay's role needs pg_signal_backend (or to be the other instance's "
            "role) to end an expired instance's session; until PostgreSQL notices the session "
            "is gone, its lanes stay with it\"",
            printable(instance, 300), pid, printable(error.what()));
      }
    }
  }
}

ClaimedBatch OutboxStore::claim_batch(std::span<const OutboxId> in_flight,
                                      std::span<const std::string> held_routes,
                                      const ClaimLimits& limits) {
  ensure_connected();
  ClaimedBatch batch;
  if (session_->owned_lanes.empty()) {
    batch.reached_end = true;
    return batch;
  }
  std::vector<std::int64_t> excluded = quarantined_ids_;
  excluded.reserve(excluded.size() + in_flight.size());
  for (OutboxId id : in_flight) excluded.push_back(id.value);
  const std::string excluded_param = format_int_array(excluded);
  const std::vector<std::string> held(held_routes.begin(), held_routes.end());
  const std::string held_param = format_text_array(held);

  if (session_->floor_enabled) {
    session_->floor.hold_routes(held);
    probe_floor(held, held_param);
  }
  const std::int64_t floor = session_->floor.floor();

  std::optional<pqxx::result> result;
  try {
    result = run("claim pending rows", [&] {
      pqxx::nontransaction tx{session_->connection};
      return tx.exec_prepared("claim", relay_.lanes - 1, session_->lanes_param, excluded_param,
                              limits.rows, limits.bytes, limits.max_row_bytes, held_param,
                              format_text_array(quarantined_keys_), floor);
    });
  } catch (const pqxx::sql_error& error) {
    // Retriable failures were turned into StoreUnavailable by run(); this one is about the data
    // (e.g. a value no expression of the claim can take): find the row instead of failing again.
    store_log()->error("event=claim_failed sqlstate={} error=\"{}\" action=read_rows_one_by_one",
                       error.sqlstate(), printable(error.what(), kReasonBytes));
    batch.problems = isolate_claim_failure(excluded_param, held_param, limits, floor, batch.rows);
    batch.reached_end = batch.rows.empty() && batch.problems.empty();
    return batch;
  }
  batch.rows.reserve(result->size());
  for (const auto& row : *result) batch.rows.push_back(decode_row(row, routing_, limits));
  // Fewer rows than asked for, and not because the byte budget ran out (the next row would have
  // started within it), means the backlog ends here. A claim cut by bytes exactly at the end says
  // "more" once: the next claim comes back empty.
  batch.reached_end = result->empty() || (result->size() < static_cast<std::size_t>(limits.rows) &&
                                          result->back()[8].as<std::int64_t>() < limits.bytes);
  return batch;
}

void OutboxStore::probe_floor(const std::vector<std::string>& held, const std::string& held_param) {
  // The rescan's answer, if one came, is taken before its next request: each is used once.
  // The rescanner paces its looks itself (floor_rescanner.hpp).
  std::optional<std::int64_t> rescanned = rescanner_->take_found();
  FloorRescanner::Request look{session_->lanes_param,
                               session_->floor.floor(),
                               format_int_array(quarantined_ids_),
                               held_param,
                               format_text_array(quarantined_keys_),
                               format_int_array(session_->floor.hold_starts(held))};
  const pqxx::row row = run("probe the claim floor", [&] {
    pqxx::nontransaction tx{session_->connection};
    return tx.exec_prepared1("floor_probe", look.lanes, look.floor, look.quarantined_ids,
                             look.held_routes, look.quarantined_keys);
  });
  rescanner_->request(std::move(look));
  auto optional_id = [&](int column) {
    return row[column].is_null() ? std::nullopt
                                 : std::optional<std::int64_t>(row[column].as<std::int64_t>());
  };
  std::optional<std::int64_t> lowered = optional_id(0);
  if (rescanned) lowered = std::min(lowered.value_or(*rescanned), *rescanned);
  session_->floor.observe(ClaimFloor::Probe{/*lowest_pending=*/optional_id(1),
                                            /*lowest_rewound=*/lowered, row[2].as<std::uint64_t>(),
                                            row[3].as<std::uint64_t>(), optional_id(4)});
}

std::vector<RowProblem> OutboxStore::isolate_claim_failure(const std::string& excluded_ids,
                                                           const std::string& held_routes,
                                                           const ClaimLimits& limits,
                                                           std::int64_t floor,
                                                           std::vector<OutboxRow>& rows) {
  const pqxx::result ids = run("list pending ids", [&] {
    pqxx::nontransaction tx{session_->connection};
    return tx.exec_prepared("claim_ids", relay_.lanes - 1, session_->lanes_param, excluded_ids,
                            limits.rows, limits.bytes, limits.max_row_bytes, held_routes,
                            format_text_array(quarantined_keys_), floor);
  });
  std::vector<RowProblem> problems;
  std::int64_t bytes = 0;
  for (const auto& id_row : ids) {
    const OutboxId id{id_row[0].as<std::int64_t>()};
    try {
      const pqxx::result one = run("read pending row", [&] {
        pqxx::nontransaction tx{session_->connection};
        return tx.exec_prepared("read_one", id.value, limits.max_row_bytes);
      });
      if (one.empty()) continue;  // no longer pending
      OutboxRow row = decode_row(one[0], routing_, limits);
      bytes += row.defect ? 0 : row.size_bytes;
      rows.push_back(std::move(row));
      if (bytes >= limits.bytes) break;
    } catch (const pqxx::sql_error& error) {
      RowProblem problem = park_as_dead(id, std::string("could not be read: ") + error.what());
      if (problem.quarantined) quarantine(problem);
      problems.push_back(std::move(problem));
    }
  }
  return problems;
}

RowProblem OutboxStore::park_as_dead(OutboxId id, std::string reason) {
  RowProblem problem = isolate_row(id, std::move(reason), [&](const std::string& why) {
    run("park a row as dead", [&] {
      pqxx::nontransaction tx{session_->connection};
      tx.exec_prepared("park_dead", id.value, why);
    });
  });
  if (!problem.quarantined) {
    store_log()->error("event=row_parked_dead id={} reason=\"{}\"", id.value,
                       printable(problem.reason));
  }
  return problem;
}

void OutboxStore::note_waiting(std::span<const OutboxId> ids, const std::string& reason) {
  if (ids.empty()) return;
  std::vector<std::int64_t> values;
  for (OutboxId id : ids) values.push_back(id.value);
  ensure_connected();
  run("note why rows wait", [&] {
    pqxx::nontransaction tx{session_->connection};
    tx.exec_params(
        "UPDATE outbox.messages SET last_error = $2 WHERE id = ANY($1::bigint[])"
        " AND state = 'pending'",
        format_int_array(values), reason);
  });
}

void OutboxStore::quarantine(const RowProblem& problem) {
  if (std::find(quarantined_ids_.begin(), quarantined_ids_.end(), problem.id.value) ==
      quarantined_ids_.end()) {
    quarantined_ids_.push_back(problem.id.value);
  }
  if (problem.key && relay_.dead_key_policy == DeadKeyPolicy::block &&
      std::find(quarantined_keys_.begin(), quarantined_keys_.end(), *problem.key) ==
          quarantined_keys_.end()) {
    quarantined_keys_.push_back(*problem.key);
  }
  store_log()->error(
      "event=row_quarantined id={} reason=\"{}\" effect=\"excluded from this relay's claims, with "
      "its key, until the relay restarts; fix or delete the row\"",
      problem.id.value, printable(problem.reason));
}

}  // namespace outbox
