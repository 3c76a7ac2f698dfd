// Specifications of the claim (relay/store/store.hpp, OutboxStore::claim_batch) against the real
// PostgreSQL: which rows one claim takes under its row and byte budgets, and when it says the
// backlog has ended. A claim that says "ended" too early leaves the relay waiting a poll interval
// with rows to publish; one that takes more than its budget breaks the memory bound.
#include <doctest/doctest.h>

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <pqxx/pqxx>

#include "relay/store/half_message_store.hpp"
#include "relay/store/outcome_store.hpp"
#include "relay/store/store.hpp"
#include "tests/support/relay_process.hpp"
#include "tests/support/services.hpp"
#include "tests/support/test_database.hpp"

using namespace outbox;
using namespace outbox::test;

namespace {

struct Claimer {
  explicit Claimer(const TestDatabase& database,
                   std::optional<std::chrono::milliseconds> rescan_interval = std::nullopt) {
    config.postgres.url = database.url();
    if (rescan_interval) config.relay.claim_rescan_interval = *rescan_interval;
    store = std::make_unique<OutboxStore>(config.postgres, config.routing, config.relay);
    store->ensure_connected();
    store->rebalance_lanes(/*may_release=*/true);
  }
  ClaimedBatch claim(int rows, std::int64_t bytes, std::int64_t max_row_bytes = 1000000) {
    return store->claim_batch({}, {}, ClaimLimits{rows, bytes, max_row_bytes});
  }
  /// A claim while the topics (routes) `held` are held back, as the relay loop makes it.
  ClaimedBatch claim_holding(const std::vector<std::string>& held) {
    return store->claim_batch({}, held, ClaimLimits{100, 1 << 20, 1000000});
  }
  /// Claims, with `held` held, until the floor is above `bound`: at most ten claims, since each
  /// probe moves it at most one step. Whether it got there.
  bool floor_rises_above(std::int64_t bound, const std::vector<std::string>& held = {}) {
    for (int i = 0; i < 10 && store->claim_floor() <= bound; ++i) claim_holding(held);
    return store->claim_floor() > bound;
  }
  Config config;
  std::unique_ptr<OutboxStore> store;
};

/// Inserts `count` pending rows of `payload_bytes` each (keys of 4 bytes: "k-00"...).
void insert_rows(const TestDatabase& database, int count, int payload_bytes) {
  database.execute(
      "INSERT INTO outbox.messages (topic, message_key, payload)"
      " SELECT 'claim.test', 'k-' || lpad((n % 100)::text, 2, '0'),"
      "        convert_to(repeat('x', $2), 'UTF8') FROM generate_series(1, $1) n",
      count, payload_bytes);
}

std::vector<std::int64_t> ids_of(const ClaimedBatch& batch) {
  std::vector<std::int64_t> ids;
  for (const OutboxRow& row : batch.rows) ids.push_back(row.id.value);
  return ids;
}

}  // namespace

TEST_CASE("a claim takes rows in id order up to its row budget, and says when the backlog ended") {
  REQUIRE_SERVICES();
  TestDatabase database;
  insert_rows(database, 25, 10);
  Claimer claimer(database);

  const ClaimedBatch full = claimer.claim(10, 1 << 20);
  CHECK(full.rows.size() == 10);
  CHECK_FALSE(full.reached_end);  // exactly the row budget: there may be more
  const std::vector<std::int64_t> ids = ids_of(full);
  for (std::size_t i = 1; i < ids.size(); ++i) CHECK(ids[i - 1] < ids[i]);

  const ClaimedBatch all = claimer.claim(100, 1 << 20);
  CHECK(all.rows.size() == 25);
  CHECK(all.reached_end);

  database.execute("UPDATE outbox.messages SET state = 'published'");
  const ClaimedBatch none = claimer.claim(100, 1 << 20);
  CHECK(none.rows.empty());
  CHECK(none.reached_end);
}

TEST_CASE("a claim cut by its byte budget keeps the rows that start within it and does not end") {
  REQUIRE_SERVICES();
  TestDatabase database;
  insert_rows(database, 20, 96);  // 100 bytes a row with its 4-byte key
  Claimer claimer(database);

  // Rows start at 0, 100, 200, ...: those starting below 350 are taken, four of them.
  const ClaimedBatch cut = claimer.claim(1000, 350);
  CHECK(cut.rows.size() == 4);
  CHECK_FALSE(cut.reached_end);  // cut by bytes, with 16 rows behind it

  // The first row always comes, whatever its size.
  const ClaimedBatch first = claimer.claim(1000, 1);
  CHECK(first.rows.size() == 1);
  CHECK_FALSE(first.reached_end);

  // A budget that holds all of them: the backlog ended.
  const ClaimedBatch all = claimer.claim(1000, 100 * 20 + 1);
  CHECK(all.rows.size() == 20);
  CHECK(all.reached_end);
}

TEST_CASE("an oversized row does not count against the byte budget and its payload is not read") {
  REQUIRE_SERVICES();
  TestDatabase database;
  insert_rows(database, 1, 5000);  // over max_row_bytes below: parked by the caller, not sent
  insert_rows(database, 5, 96);
  Claimer claimer(database);

  const ClaimedBatch batch = claimer.claim(1000, 350, /*max_row_bytes=*/1000);
  REQUIRE(batch.rows.size() == 5);  // the oversized row and four that start within 350 bytes
  CHECK(batch.rows[0].defect.has_value());
  CHECK(batch.rows[0].payload.empty());
  CHECK_FALSE(batch.rows[1].defect.has_value());
  CHECK_FALSE(batch.reached_end);
}

// The claim floor (relay/store/claim_floor.hpp): claims start at the lowest pending id, so the dead
// index entries of published rows are not stepped over again; these say when it may not be there.

TEST_CASE(
    "the claim floor rises to the lowest pending row, but not past a row an open "
    "transaction may still commit") {
  REQUIRE_SERVICES();
  TestDatabase database;
  insert_rows(database, 10, 10);
  Claimer claimer(database);
  CHECK(claimer.claim(100, 1 << 20).rows.size() == 10);
  database.execute("UPDATE outbox.messages SET state = 'published'");

  // A writer's transaction that has written before (it has an xid) takes id 11 and stays open
  // while rows 12..21 commit.
  pqxx::connection writer_connection = database.connect();
  pqxx::work writer{writer_connection};
  writer.exec("SELECT pg_current_xact_id()");
  const auto late_id = writer
                           .exec1(
                               "INSERT INTO outbox.messages (topic, message_key, payload)"
                               " VALUES ('claim.test', 'late', 'x') RETURNING id")[0]
                           .as<std::int64_t>();
  insert_rows(database, 10, 10);
  for (int i = 0; i < 5; ++i) {
    CHECK(claimer.claim(100, 1 << 20).rows.size() == 10);
    CHECK(claimer.store->claim_floor() <= late_id);
  }
  writer.commit();
  const ClaimedBatch after_commit = claimer.claim(100, 1 << 20);
  REQUIRE(after_commit.rows.size() == 11);
  CHECK(after_commit.rows.front().id.value == late_id);
  // Rows claimed and not yet recorded are still pending: the floor never passes them.
  for (int i = 0; i < 5; ++i) CHECK(claimer.claim(100, 1 << 20).rows.size() == 11);
  CHECK(claimer.store->claim_floor() == late_id);

  // Everything published, nothing open: within a few probes the floor passes every row.
  database.execute("UPDATE outbox.messages SET state = 'published'");
  const auto next_id = std::stoll(database.scalar("SELECT max(id) + 1 FROM outbox.messages"));
  for (int i = 0; i < 10 && claimer.store->claim_floor() < next_id; ++i) {
    CHECK(claimer.claim(100, 1 << 20).rows.empty());
  }
  CHECK(claimer.store->claim_floor() == next_id);
}

TEST_CASE("a row made pending again below the floor is claimed at once, without a rescan") {
  REQUIRE_SERVICES();
  TestDatabase database;
  insert_rows(database, 10, 10);
  Claimer claimer(database);  // rescans every 10 s: far longer than this test
  database.execute(
      "UPDATE outbox.messages SET state = 'dead', last_error = 'test'"
      " WHERE id = (SELECT min(id) FROM outbox.messages)");
  database.execute("UPDATE outbox.messages SET state = 'published' WHERE state = 'pending'");
  const auto dead_id = std::stoll(database.scalar("SELECT min(id) FROM outbox.messages"));
  REQUIRE(claimer.floor_rises_above(dead_id));

  // The operator requeues the dead row (the sweeper's COMMIT and a writer's commit of a half
  // message are the same UPDATE to pending).
  database.execute("SELECT outbox.requeue($1)", dead_id);
  const ClaimedBatch batch = claimer.claim(100, 1 << 20);
  REQUIRE(batch.rows.size() == 1);
  CHECK(batch.rows[0].id.value == dead_id);
  CHECK(database.scalar("SELECT count(*) FROM outbox.claim_rewinds") == "0");  // note taken
}

TEST_CASE(
    "a dead row requeued between a claim's floor probe and the claim itself comes before the rows "
    "of its key that it blocked") {
  REQUIRE_SERVICES();
  TestDatabase database;
  database.execute(
      "INSERT INTO outbox.messages (topic, message_key, payload)"
      " SELECT 'claim.test', 'blocked', 'x' FROM generate_series(1, 3)");
  const auto dead_id = std::stoll(database.scalar("SELECT min(id) FROM outbox.messages"));
  database.execute("UPDATE outbox.messages SET state = 'dead', last_error = 'test' WHERE id = $1",
                   dead_id);
  Claimer claimer(database);  // dead_key_policy block: the two later rows wait behind the dead one
  for (int i = 0; i < 10 && claimer.store->claim_floor() <= dead_id; ++i) {
    CHECK(claimer.claim(100, 1 << 20).rows.empty());
  }
  REQUIRE(claimer.store->claim_floor() > dead_id);

  // The probe deletes the rewinds of its lanes; one it must delete is locked here, so it waits
  // mid-statement, with a snapshot taken before the requeue. The note's id is above every row, so
  // it moves no floor.
  database.execute(
      "INSERT INTO outbox.claim_rewinds (id, key_hash)"
      " VALUES (9223372036854775807, hashtext('blocked'))");
  pqxx::connection locker = database.connect();
  pqxx::work lock{locker};
  lock.exec("SELECT 1 FROM outbox.claim_rewinds WHERE id = 9223372036854775807 FOR UPDATE");
  auto claim = std::async(std::launch::async, [&] { return claimer.claim(100, 1 << 20); });
  REQUIRE(eventually(
      [&] {
        return database.scalar(
                   "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                   " AND wait_event_type = 'Lock' AND query LIKE '%claim_rewinds%'") == "1";
      },
      std::chrono::seconds(10)));
  database.execute("SELECT outbox.requeue($1)", dead_id);
  lock.commit();

  // The claim's own snapshot sees the requeued row and its rewind: it starts from there.
  const std::vector<std::int64_t> ids = ids_of(claim.get());
  CHECK(ids == std::vector<std::int64_t>{dead_id, dead_id + 1, dead_id + 2});
}

/// Stops one PostgreSQL backend (SIGSTOP) until destroyed: a session that hangs mid-statement.
class FrozenBackend {
 public:
  explicit FrozenBackend(int pid) : pid_(pid) { frozen_ = ::kill(pid_, SIGSTOP) == 0; }
  ~FrozenBackend() { thaw(); }
  FrozenBackend(const FrozenBackend&) = delete;
  FrozenBackend& operator=(const FrozenBackend&) = delete;
  bool frozen() const { return frozen_; }
  void thaw() {
    if (frozen_) ::kill(pid_, SIGCONT);
    frozen_ = false;
  }

 private:
  int pid_;
  bool frozen_ = false;
};

TEST_CASE(
    "lanes taken over from an instance that left are claimed from their oldest row, below the "
    "floor the taking instance had reached, without waiting for a rescan") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const auto no_rescan = std::chrono::milliseconds(3'600'000);  // after each Claimer's first look
  Claimer taker(database, no_rescan);
  auto leaver = std::make_unique<Claimer>(database, no_rescan);
  LaneOwnership taker_lanes, leaver_lanes;
  for (int round = 0; round < 3; ++round) {  // the first joiner gives back half on the way
    taker_lanes = taker.store->rebalance_lanes(/*may_release=*/true);
    leaver_lanes = leaver->store->rebalance_lanes(/*may_release=*/true);
  }
  REQUIRE(taker_lanes.owned.size() == 8);
  REQUIRE(leaver_lanes.owned.size() == 8);
  std::vector<std::int64_t> taker_lane_numbers;
  for (const LaneId lane : taker_lanes.owned) taker_lane_numbers.push_back(lane.value);

  // 100 rows over 100 keys, in both instances' lanes. The taker's are published, so its floor
  // rises past every id; the leaver's stay pending, below that floor.
  insert_rows(database, 100, 10);
  database.execute(
      "UPDATE outbox.messages m SET state = 'published'"
      " WHERE (hashtext(coalesce(m.message_key, '')) & 15) = ANY($1::int[])",
      format_int_array(taker_lane_numbers));
  for (int i = 0; i < 10 && taker.store->claim_floor() <= 100; ++i) {
    CHECK(taker.claim(100, 1 << 20).rows.empty());
  }
  REQUIRE(taker.store->claim_floor() > 100);
  const long long left_pending = database.count("state = 'pending'");
  REQUIRE(left_pending > 0);

  // The leaver stops cleanly (its heartbeat row and its lane locks go); the taker's next
  // rebalance takes its lanes, and the next claim reads their rows from the oldest.
  leaver.reset();
  // The leaver's backend may hold its lane locks a moment after its session closed.
  REQUIRE(eventually(
      [&] { return taker.store->rebalance_lanes(/*may_release=*/true).owned.size() == 16; },
      std::chrono::seconds(10)));
  const ClaimedBatch batch = taker.claim(100, 1 << 20);
  CHECK(batch.rows.size() == static_cast<std::size_t>(left_pending));
  CHECK(taker.store->claim_floor() <= 100);
}

TEST_CASE(
    "a row given an id below the floor by hand is found by the periodic rescan, which never holds "
    "claims up, even when its session hangs, and keeps to its share of the time") {
  REQUIRE_FAULTABLE_SERVICES();
  TestDatabase database;
  database.execute("SELECT setval(pg_get_serial_sequence('outbox.messages', 'id'), 100)");
  insert_rows(database, 10, 10);
  Claimer claimer(database, std::chrono::milliseconds(300));
  database.execute("UPDATE outbox.messages SET state = 'published'");
  REQUIRE(claimer.floor_rises_above(100));

  // The rescan looks on a session of its own (named in its statement), not the claims' one: under
  // a held snapshot its look steps over every dead index entry below the floor.
  const std::string rescan_backend_sql =
      "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
      " AND state = 'idle' AND query LIKE '%claim floor rescan%' AND pid <> pg_backend_pid()";
  std::string rescan_pid;
  REQUIRE(eventually(
      [&] {
        claimer.claim(100, 1000);  // a claim's probe asks for the rescan when it is due
        pqxx::connection connection = database.connect();
        pqxx::nontransaction tx{connection};
        const auto pids = tx.exec(rescan_backend_sql);
        if (!pids.empty()) rescan_pid = pids[0][0].c_str();
        return !rescan_pid.empty();
      },
      std::chrono::seconds(10)));

  // Its session hangs: claims go on (each returns, with the rows above the floor) for several
  // rescan intervals, and the row written by hand below the floor waits for the rescan.
  FrozenBackend frozen(std::stoi(rescan_pid));
  REQUIRE(frozen.frozen());
  database.execute(
      "INSERT INTO outbox.messages (id, topic, message_key, payload) OVERRIDING SYSTEM VALUE"
      " VALUES (50, 'claim.test', 'by-hand', 'x')");
  insert_rows(database, 5, 10);
  std::vector<std::int64_t> claimed;
  const auto stuck_until = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
  while (std::chrono::steady_clock::now() < stuck_until) {
    auto claim = std::async(std::launch::async, [&] { return claimer.claim(100, 1 << 20); });
    if (claim.wait_for(std::chrono::seconds(5)) != std::future_status::ready) {
      frozen.thaw();  // so the claim, and the test, can end
      FAIL("a claim waited for the hung rescan");
    }
    claimed = ids_of(claim.get());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  CHECK(claimed.size() == 5);
  CHECK(std::find(claimed.begin(), claimed.end(), 50) == claimed.end());

  // Back: within a few rescan intervals the floor comes down to the row and a claim takes it.
  frozen.thaw();
  CHECK(eventually(
      [&] {
        const ClaimedBatch batch = claimer.claim(100, 1 << 20);
        return !batch.rows.empty() && batch.rows[0].id.value == 50;
      },
      std::chrono::seconds(10)));

  // That look took the whole freeze (1.5 s or more), so the next waits 19 times as long: the
  // rescan keeps to 5% of the time (floor_rescanner.hpp). A row written by hand below the floor
  // now is not found for ten rescan intervals; unpaced, the next interval's look would find it.
  database.execute(
      "INSERT INTO outbox.messages (id, topic, message_key, payload) OVERRIDING SYSTEM VALUE"
      " VALUES (40, 'claim.test', 'by-hand', 'x')");
  const auto paced_until = std::chrono::steady_clock::now() + std::chrono::milliseconds(3000);
  bool found_early = false;
  while (std::chrono::steady_clock::now() < paced_until && !found_early) {
    const std::vector<std::int64_t> ids = ids_of(claimer.claim(100, 1 << 20));
    found_early = std::find(ids.begin(), ids.end(), 40) != ids.end();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  CHECK_FALSE(found_early);
}

TEST_CASE(
    "a held topic's backlog is risen past by the floor instead of being read by every claim, "
    "and its release claims it again from its oldest row") {
  REQUIRE_SERVICES();
  TestDatabase database;
  // 1,000 rows of a topic Kafka refuses (ids 1-1,000), then 10 of one that flows.
  database.execute(
      "INSERT INTO outbox.messages (topic, message_key, payload)"
      " SELECT 'claim.held', 'h-' || n, 'x' FROM generate_series(1, 1000) n");
  insert_rows(database, 10, 10);
  Claimer claimer(database, std::chrono::milliseconds(3'600'000));  // the rescan: a test of its own
  const std::vector<std::string> held{"claim.held"};
  std::vector<std::int64_t> ids = ids_of(claimer.claim_holding(held));
  REQUIRE(ids.size() == 10);
  CHECK(ids.front() == 1001);
  database.execute("UPDATE outbox.messages SET state = 'published' WHERE topic = 'claim.test'");
  insert_rows(database, 5, 10);  // 1,011-1,015

  // Every claim used to start at row 1 and read the held rows again: the floor stayed at them.
  for (int i = 0; i < 10 && claimer.store->claim_floor() <= 1000; ++i) {
    claimer.claim_holding(held);
  }
  REQUIRE(claimer.store->claim_floor() > 1000);
  CHECK(claimer.claim_holding(held).rows.size() == 5);

  // Released: the next claim starts from the topic's oldest row.
  ids = ids_of(claimer.claim_holding({}));
  REQUIRE_FALSE(ids.empty());
  CHECK(ids.front() == 1);
  // The retry failed and the topic is held again: at once, the claims start past its rows again.
  ids = ids_of(claimer.claim_holding(held));
  CHECK(claimer.store->claim_floor() > 1000);
  CHECK(ids.size() == 5);
}

TEST_CASE(
    "the rescan below the floor skips the rows claims skip: a held topic's, a quarantined key's, "
    "those a dead row blocks") {
  REQUIRE_SERVICES();
  TestDatabase database;
  // Rows 1-100 of one key; 101-110 flow.
  database.execute(
      "INSERT INTO outbox.messages (topic, message_key, payload)"
      " SELECT 'claim.skipped', 'skipped', 'x' FROM generate_series(1, 100)");
  insert_rows(database, 10, 10);
  Claimer claimer(database, std::chrono::milliseconds(300));
  std::vector<std::string> held;
  SUBCASE("held topic") { held = {"claim.skipped"}; }
  SUBCASE("quarantined key") {
    claimer.store->quarantine(RowProblem{OutboxId{1}, std::string("skipped"), "test", true});
  }
  SUBCASE("blocked by a dead row") {
    database.execute("UPDATE outbox.messages SET state = 'dead', last_error = 'test' WHERE id = 1");
  }
  CHECK(ids_of(claimer.claim_holding(held)).front() == 101);
  database.execute("UPDATE outbox.messages SET state = 'published' WHERE id > 100");
  REQUIRE(claimer.floor_rises_above(100, held));

  // The rescan has its session (so it is looking), then five rescan intervals: a rescan that
  // looked at those rows would bring the floor back to 1.
  REQUIRE(eventually(
      [&] {
        claimer.claim_holding(held);  // a claim's probe asks for the rescan when it is due
        return database.scalar(
                   "SELECT count(*) FROM pg_stat_activity WHERE datname ="
                   " current_database() AND query LIKE '%claim floor rescan%'"
                   " AND pid <> pg_backend_pid()") != "0";
      },
      std::chrono::seconds(10)));
  bool lowered = false;
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
  while (std::chrono::steady_clock::now() < until && !lowered) {
    CHECK(claimer.claim_holding(held).rows.empty());
    lowered = claimer.store->claim_floor() <= 100;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  CHECK_FALSE(lowered);
}

TEST_CASE(
    "a row made pending below a held topic's rows while it is held is claimed first at its "
    "release, although the floor had risen past it again") {
  REQUIRE_SERVICES();
  TestDatabase database;
  // Row 1 of the held topic is dead; rows 2-11 of it wait for the topic; 12-21 flow.
  database.execute(
      "INSERT INTO outbox.messages (topic, message_key, payload)"
      " SELECT 'claim.held', 'h-' || n, 'x' FROM generate_series(1, 11) n");
  database.execute("UPDATE outbox.messages SET state = 'dead', last_error = 'test' WHERE id = 1");
  insert_rows(database, 10, 10);
  Claimer claimer(database, std::chrono::milliseconds(3'600'000));  // no rescan to help
  database.execute("UPDATE outbox.messages SET state = 'published' WHERE id >= 12");
  // The floor reaches 2 (the held topic's oldest pending row) before the hold begins there.
  REQUIRE(claimer.floor_rises_above(1));
  REQUIRE(claimer.store->claim_floor() == 2);
  const std::vector<std::string> held{"claim.held"};
  insert_rows(database, 5, 10);  // 22-26
  REQUIRE(claimer.floor_rises_above(11, held));

  // Row 1 is requeued under the hold: the floor comes down to it, and rises past it again, since
  // it is the held topic's.
  database.execute("SELECT outbox.requeue(1)");
  for (int i = 0; i < 10 && claimer.store->claim_floor() > 1; ++i) claimer.claim_holding(held);
  REQUIRE(claimer.store->claim_floor() == 1);
  database.execute("UPDATE outbox.messages SET state = 'published' WHERE id >= 22");
  REQUIRE(claimer.floor_rises_above(11, held));

  // Released: its claims start from row 1, not from 2, where the hold began.
  const std::vector<std::int64_t> ids = ids_of(claimer.claim_holding({}));
  REQUIRE_FALSE(ids.empty());
  CHECK(ids.front() == 1);
}

TEST_CASE(
    "a held topic's row given an id below where its hold began, by hand, is found by the rescan "
    "and claimed first at the release, whatever other topic is held from lower down") {
  REQUIRE_SERVICES();
  TestDatabase database;
  database.execute("SELECT setval(pg_get_serial_sequence('outbox.messages', 'id'), 100)");
  database.execute(
      "INSERT INTO outbox.messages (topic, message_key, payload) VALUES ('claim.early', 'e', 'x')");
  database.execute(
      "INSERT INTO outbox.messages (topic, message_key, payload)"
      " SELECT 'claim.held', 'h', 'x' FROM generate_series(1, 10)");  // 102-111
  Claimer claimer(database, std::chrono::milliseconds(300));
  // "claim.early" is held from the start (0); the floor rises to 102, where "claim.held"'s hold
  // begins.
  const std::vector<std::string> early{"claim.early"};
  REQUIRE(claimer.floor_rises_above(101, early));
  REQUIRE(claimer.store->claim_floor() == 102);
  const std::vector<std::string> both{"claim.early", "claim.held"};
  REQUIRE(claimer.floor_rises_above(111, both));

  // Below "claim.held"'s start, where the floor's rule cannot see it: the rescan finds it (the
  // floor comes down to it, then rises past it again, since it is a held topic's).
  database.execute(
      "INSERT INTO outbox.messages (id, topic, message_key, payload) OVERRIDING SYSTEM VALUE"
      " VALUES (50, 'claim.held', 'h', 'x')");
  REQUIRE(eventually(
      [&] {
        CHECK(claimer.claim_holding(both).rows.empty());
        return claimer.store->claim_floor() <= 50;
      },
      std::chrono::seconds(10)));

  // "claim.held" released: its claims start from that row, before the rest of its key.
  const std::vector<std::int64_t> ids = ids_of(claimer.claim_holding(early));
  REQUIRE_FALSE(ids.empty());
  CHECK(ids.front() == 50);
}

TEST_CASE(
    "a held topic's rows moved to a topic that flows are claimed at once, although the floor had "
    "risen past them") {
  REQUIRE_SERVICES();
  TestDatabase database;
  database.execute(
      "INSERT INTO outbox.messages (topic, message_key, payload)"
      " SELECT 'claim.missing', 'h-' || n, 'x' FROM generate_series(1, 10) n");
  insert_rows(database, 10, 10);                                    // 11-20
  Claimer claimer(database, std::chrono::milliseconds(3'600'000));  // no rescan to help
  const std::vector<std::string> held{"claim.missing"};
  CHECK(ids_of(claimer.claim_holding(held)).front() == 11);
  database.execute("UPDATE outbox.messages SET state = 'published' WHERE id > 10");
  REQUIRE(claimer.floor_rises_above(10, held));

  // The operator re-routes the missing topic's backlog; the topic itself stays held.
  database.execute("UPDATE outbox.messages SET topic = 'claim.test' WHERE topic = 'claim.missing'");
  const std::vector<std::int64_t> ids = ids_of(claimer.claim_holding(held));
  CHECK(ids == std::vector<std::int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
}

TEST_CASE(
    "rows a dead row blocked are claimed as soon as it is discarded or deleted, although the "
    "floor had risen past them") {
  REQUIRE_SERVICES();
  TestDatabase database;
  // Row 1 is dead; rows 2-11 of its key wait behind it (dead_key_policy block); 12-21 flow.
  database.execute(
      "INSERT INTO outbox.messages (topic, message_key, payload)"
      " SELECT 'claim.test', 'blocked', 'x' FROM generate_series(1, 11)");
  database.execute("UPDATE outbox.messages SET state = 'dead', last_error = 'test' WHERE id = 1");
  insert_rows(database, 10, 10);
  Claimer claimer(database, std::chrono::milliseconds(3'600'000));  // no rescan to help
  std::vector<std::int64_t> ids = ids_of(claimer.claim(100, 1 << 20));
  REQUIRE(ids.size() == 10);
  CHECK(ids.front() == 12);
  database.execute("UPDATE outbox.messages SET state = 'published' WHERE id >= 12");
  insert_rows(database, 5, 10);  // 22-26
  REQUIRE(claimer.floor_rises_above(11));

  SUBCASE("discarded") { database.execute("SELECT outbox.discard(1, 'test')"); }
  SUBCASE("deleted") { database.execute("DELETE FROM outbox.messages WHERE id = 1"); }
  SUBCASE("given another key") {
    database.execute("UPDATE outbox.messages SET message_key = 'elsewhere' WHERE id = 1");
  }
  ids = ids_of(claimer.claim(100, 1 << 20));
  REQUIRE_FALSE(ids.empty());
  CHECK(ids.front() == 2);
}

TEST_CASE(
    "a keyless dead row, which blocks nothing, leaves no rewind when it is discarded or deleted") {
  REQUIRE_SERVICES();
  TestDatabase database;
  database.execute(
      "INSERT INTO outbox.messages (topic, message_key, payload)"
      " SELECT 'claim.test', NULL, 'x' FROM generate_series(1, 2)");
  database.execute("UPDATE outbox.messages SET state = 'dead', last_error = 'test'");
  database.execute("SELECT outbox.discard(1, 'test')");
  database.execute("DELETE FROM outbox.messages WHERE id = 2");
  CHECK(database.scalar("SELECT count(*) FROM outbox.claim_rewinds") == "0");
}

TEST_CASE("a quarantined key's rows are risen past by the floor, and its other rows stay out") {
  REQUIRE_SERVICES();
  TestDatabase database;
  database.execute(
      "INSERT INTO outbox.messages (topic, message_key, payload)"
      " SELECT 'claim.test', 'poison', 'x' FROM generate_series(1, 100)");
  insert_rows(database, 10, 10);  // 101-110
  Claimer claimer(database, std::chrono::milliseconds(300));
  claimer.store->quarantine(RowProblem{OutboxId{1}, std::string("poison"), "test", true});
  std::vector<std::int64_t> ids = ids_of(claimer.claim(100, 1 << 20));
  REQUIRE(ids.size() == 10);
  CHECK(ids.front() == 101);
  database.execute("UPDATE outbox.messages SET state = 'published' WHERE id > 100");
  insert_rows(database, 5, 10);
  CHECK(claimer.floor_rises_above(100));
  ids = ids_of(claimer.claim(100, 1 << 20));
  CHECK(ids.size() == 5);
  CHECK(std::all_of(ids.begin(), ids.end(), [](std::int64_t id) { return id > 110; }));
}

TEST_CASE(
    "with an id sequence that caches values the floor stays off and claims still find "
    "every row") {
  REQUIRE_SERVICES();
  TestDatabase database;
  database.execute(
      "DO $$ BEGIN EXECUTE format('ALTER SEQUENCE %s CACHE 20',"
      " pg_get_serial_sequence('outbox.messages', 'id')); END $$");
  insert_rows(database, 10, 10);
  Claimer claimer(database);
  database.execute("UPDATE outbox.messages SET state = 'published'");
  for (int i = 0; i < 5; ++i) CHECK(claimer.claim(100, 1000).rows.empty());
  CHECK(claimer.store->claim_floor() == 0);
  insert_rows(database, 3, 10);
  CHECK(claimer.claim(100, 1 << 20).rows.size() == 3);
}

TEST_CASE(
    "recording outcomes reads only the recorded ids, never a whole partial index whose dead "
    "entries a held snapshot keeps, whatever plan PostgreSQL picks") {
  REQUIRE_SERVICES();
  // The relay's delivery outcomes (pending rows) and the sweeper's check-back verdicts (unknown
  // rows): each statement's state has its own partial index.
  bool checkback = false;
  // retention.delete_on_publish: the delivered rows are deleted, the others updated.
  bool deleting = false;
  // Each session plans as these libpq options say: generic and custom plans, and a hash join
  // (the plan that read the whole index) where the planner would not pick one. A table as small
  // as this one would also be read sequentially, which a large one is not.
  std::string planner = "-c enable_seqscan=off ";
  const std::string generic = "-c plan_cache_mode=force_generic_plan";
  const std::string custom = "-c plan_cache_mode=force_custom_plan";
  const std::string hash_join = "-c enable_nestloop=off -c enable_mergejoin=off";
  SUBCASE("delivery outcomes, generic plan") { planner += generic; }
  SUBCASE("delivery outcomes, custom plan") { planner += custom; }
  SUBCASE("delivery outcomes, hash join") { planner += hash_join; }
  SUBCASE("delivered rows deleted, generic plan") { planner += generic, deleting = true; }
  SUBCASE("delivered rows deleted, custom plan") { planner += custom, deleting = true; }
  SUBCASE("delivered rows deleted, hash join") { planner += hash_join, deleting = true; }
  SUBCASE("check-back verdicts, generic plan") { planner += generic, checkback = true; }
  SUBCASE("check-back verdicts, custom plan") { planner += custom, checkback = true; }
  SUBCASE("check-back verdicts, hash join") { planner += hash_join, checkback = true; }
  CAPTURE(planner);
  CAPTURE(checkback);
  CAPTURE(deleting);
  std::string options;  // percent-encoded for the URL's query
  for (const char c : planner) options += c == ' ' ? "%20" : c == '=' ? "%3D" : std::string(1, c);
  const std::string state = checkback ? "unknown" : "pending";

  TestDatabase database;
  insert_rows(database, 30'000, 10);
  if (checkback) database.execute("UPDATE outbox.messages SET state = 'unknown'");
  pqxx::connection holder_connection = database.connect();
  pqxx::transaction<pqxx::isolation_level::repeatable_read> held{holder_connection};
  held.exec("SELECT count(*) FROM outbox.relay_settings");  // takes the snapshot
  const auto first_id = std::stoll(database.scalar("SELECT min(id) FROM outbox.messages"));
  database.execute(
      "UPDATE outbox.messages SET state = CASE WHEN state = 'unknown' THEN 'rolled_back'"
      "   ELSE 'published' END::outbox.row_state WHERE id < $1",
      first_id + 25'000);
  database.execute("ANALYZE outbox.messages");  // the statistics now say few rows are left

  // Index entries returned by the table's indexes (idx_tup_read counts them whether or not the
  // row version they point to is visible: a walk over dead entries counts in full) and rows read
  // sequentially.
  const std::string index_reads_sql =
      "SELECT coalesce((SELECT sum(idx_tup_read) FROM pg_stat_user_indexes"
      "                  WHERE relid = 'outbox.messages'::regclass), 0)"
      "     + coalesce((SELECT seq_tup_read FROM pg_stat_user_tables"
      "                  WHERE relid = 'outbox.messages'::regclass), 0)";
  auto index_reads = [&] { return std::stoll(database.scalar(index_reads_sql)); };
  // The setup's own reads, once they have reached the statistics, do not count against the
  // recorder.
  const long long before = database.settled_figure(index_reads_sql);
  PostgresConfig postgres;
  postgres.url = database.url() + "?options=" + options;
  OutcomeStore recorder(postgres, deleting ? PublishedRows::delete_at_once : PublishedRows::keep);
  HalfMessageStore sweeper(postgres);
  for (int batch = 0; batch < 5; ++batch) {
    std::vector<DeliveryReport> reports;
    std::vector<CheckRecord> checks;
    for (int i = 0; i < 1'000; ++i) {
      const OutboxId id{first_id + 25'000 + batch * 1'000 + i};
      reports.push_back({id, DeliveryOutcome::delivered, 0, batch * 1'000 + i, "", false});
      checks.push_back({id, CheckVerdict::rollback, true, "ROLLBACK", {}});
    }
    CHECK((checkback ? sweeper.record(checks, 5) : recorder.record_outcomes(reports)).empty());
  }
  // A session reports its index reads when it goes idle, within seconds; 5,000 lookups read
  // about 5,000 entries, a scan of the index 30,000 for each of the 5 batches.
  long long reads = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while ((reads = index_reads() - before) < 5'000 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(reads >= 5'000);
  CHECK(reads < 30'000);
  // Read last: this count steps over every entry of the partial index.
  CHECK(database.count("state = '" + state + "'") == 0);
}
