// Specifications of the claim (relay/store/store.hpp, OutboxStore::claim_batch) against the real
// PostgreSQL: which rows one claim takes under its row and byte budgets, and when it says the
// backlog has ended. A claim that says "ended" too early leaves the relay waiting a poll interval
// with rows to publish; one that takes more than its budget breaks the memory bound.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "relay/store/store.hpp"
#include "tests/support/services.hpp"
#include "tests/support/test_database.hpp"

using namespace outbox;
using namespace outbox::test;

namespace {

struct Claimer {
  explicit Claimer(const TestDatabase& database) {
    config.postgres.url = database.url();
    store = std::make_unique<OutboxStore>(config.postgres, config.routing, config.relay);
    store->ensure_connected();
    store->rebalance_lanes(/*may_release=*/true);
  }
  ClaimedBatch claim(int rows, std::int64_t bytes, std::int64_t max_row_bytes = 1000000) {
    return store->claim_batch({}, {}, ClaimLimits{rows, bytes, max_row_bytes});
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
