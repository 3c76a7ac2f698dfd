// Specifications of kafka.exactly_once against the real broker: every committed row appears once
// among the committed Kafka records (a read_committed consumer), whatever is aborted, fenced or
// killed between Kafka's commit and PostgreSQL's mark.
#include <doctest/doctest.h>

#include <chrono>
#include <set>
#include <string>

#include "tests/support/kafka_admin.hpp"
#include "tests/support/kafka_reader.hpp"
#include "tests/support/relay_process.hpp"
#include "tests/support/services.hpp"
#include "tests/support/test_database.hpp"
#include "tests/support/workload.hpp"

using namespace outbox::test;
using namespace std::chrono_literals;

namespace {

std::map<std::string, std::string> exactly_once(std::map<std::string, std::string> more = {}) {
  more["kafka.exactly_once"] = "true";
  // Each test its own marker topic, so one test's lanes never read another's markers.
  more["kafka.marker_topic"] = unique_name("markers");
  return more;
}

double metric(const RelayProcess& relay, const std::string& series) {
  return metric_value(relay.metrics_text(), series);
}

/// What a read_committed consumer sees: every id once, each key in commit order.
void require_exactly_once(const std::string& topic, std::size_t rows) {
  const OrderCheck check = check_per_key_order(read_topic_to_end(topic, /*committed=*/true));
  CHECK(check.distinct_ids == rows);
  CHECK_MESSAGE(check.duplicates == 0, "duplicates among committed records: " << check.duplicates);
  CHECK_MESSAGE(check.out_of_order == 0, check.first_problem);
}

/// Every message of `committed` is another row, and there are `rows` of them.
void require_each_row_once(const std::vector<ConsumedMessage>& committed, std::size_t rows) {
  std::set<long long> ids;
  for (const ConsumedMessage& message : committed) ids.insert(message.outbox_id);
  CHECK(ids.size() == rows);
  CHECK(committed.size() == rows);
}

}  // namespace

TEST_CASE("exactly_once publishes each row once among committed records, in per-key order") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string topic = unique_name("eos_once");
  write_sequenced_rows(database, topic, 3'000, 60, /*writers=*/2);
  const std::string config =
      write_relay_config(database.url(), exactly_once({{"relay.batch_size", "200"}}));
  RelayProcess relay(config);
  require_drained(database, relay);
  require_exactly_once(topic, 3'000);
  // 3,000 rows, at most max_in_flight_batches (4) batches of 200 per transaction.
  CHECK(metric(relay, "outbox_transactions_total{outcome=\"committed\"}") >= 4);
  CHECK(metric(relay, "outbox_transactions_total{outcome=\"aborted\"}") == 0);
  // Every lane that carried rows names this producer, with its transactions recorded.
  CHECK(std::stoll(database.scalar("SELECT count(*) FROM outbox.relay_lanes"
                                   " WHERE transactional_id LIKE 'outbox-relay.%.1'")) == 16);
  CHECK(relay.terminate() == 0);
  // A clean stop with everything recorded leaves no producer for the next owner to fence.
  CHECK(database.scalar(
            "SELECT count(*) FROM outbox.relay_lanes WHERE transactional_id IS NOT NULL") == "0");
}

TEST_CASE(
    "exactly_once: a row the broker refuses aborts its transaction; the other topic's rows are "
    "published once, the refused rows are parked dead") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string good = unique_name("eos_good");
  const std::string compacted = unique_name("eos_compacted");
  // A compacted topic refuses records without a key (INVALID_RECORD) when the broker appends
  // them: after the producer sent them inside the transaction, with the good topic's rows in it,
  // so the whole transaction must be aborted.
  create_topic(kafka_bootstrap(), good, {{1}, {1}});
  create_topic(kafka_bootstrap(), compacted, {{1}}, {{"cleanup.policy", "compact"}});
  database.execute(
      "SELECT CASE WHEN n % 10 = 0 THEN outbox.publish($2, NULL, n::text)"
      "            ELSE outbox.publish($1, 'k' || n, n::text) END"
      " FROM generate_series(1, 300) n",
      good, compacted);
  const std::string config = write_relay_config(database.url(), exactly_once());
  RelayProcess relay(config);
  require_drained(database, relay);
  CHECK(database.count("state = 'published'") == 270);
  CHECK(database.count("state = 'dead' AND message_key IS NULL") == 30);
  CHECK(metric(relay, "outbox_transactions_total{outcome=\"aborted\"}") >= 1);
  require_each_row_once(read_topic_to_end(good, /*committed=*/true), 270);
  // The aborted attempt is in the log, invisible to read_committed only.
  CHECK(read_topic_to_end(good, /*committed=*/false).size() >= 270);
  CHECK(read_topic_to_end(compacted, /*committed=*/true).empty());
}

TEST_CASE(
    "exactly_once: the instance that takes a lane fences the frozen owner, whose commit "
    "fails when it wakes") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string topic = unique_name("eos_fence");
  const std::string config = write_relay_config(database.url(), exactly_once());
  database.execute("SELECT outbox.publish($1, 'k' || n, 'x'::text) FROM generate_series(1, 400) n",
                   topic);
  // The first instance freezes (SIGSTOP, all its threads) right before its first commit, after
  // its lease check: its transaction is open, its messages sent. Only Kafka's fencing can stop
  // that commit from landing after the second instance republished the rows.
  setenv("RELAY_FAILPOINTS", "freeze_before_commit=1", 1);
  RelayProcess first(config);
  unsetenv("RELAY_FAILPOINTS");
  REQUIRE_MESSAGE(
      eventually([&] { return first.log_tail().find("freeze_before_commit") != std::string::npos; },
                 30s),
      first.log_tail());
  RelayProcess second(config);
  require_drained(database, second, 60s);  // after the first's lease ran out (15 s)
  CHECK(second.log_tail(std::string::npos).find("event=lane_taken_over") != std::string::npos);
  first.thaw();
  CHECK_MESSAGE(eventually(
                    [&] {
                      return first.log_tail(std::string::npos).find("event=transaction_aborted") !=
                             std::string::npos;
                    },
                    30s),
                first.log_tail());
  // Its commit failed (fenced): nothing of that transaction can become visible any more. The
  // topic then holds each row once, from the second instance.
  require_each_row_once(read_topic_to_end(topic, /*committed=*/true), 400);
}

TEST_CASE(
    "exactly_once: killed between Kafka's commit and the mark, the next owner marks the rows "
    "from the marker topic and publishes none twice") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string topic = unique_name("eos_kill");
  write_sequenced_rows(database, topic, 2'000, 40, /*writers=*/2);
  const std::string config =
      write_relay_config(database.url(), exactly_once({{"relay.batch_size", "250"}}));
  setenv("RELAY_FAILPOINTS", "kill_after_commit=2", 1);
  RelayProcess first(config);
  unsetenv("RELAY_FAILPOINTS");
  REQUIRE_MESSAGE(eventually([&] { return !first.running(); }, 60s), first.log_tail());
  // Its first two transactions are committed in Kafka; PostgreSQL has recorded some of that, or
  // none (the recorder runs beside the next transaction).
  const long recorded = database.count("state = 'published'");
  const auto committed = static_cast<long>(read_topic_to_end(topic, /*committed=*/true).size());
  MESSAGE("committed in Kafka " << committed << ", recorded " << recorded);
  REQUIRE(committed > recorded);
  RelayProcess second(config);
  require_drained(database, second);
  const std::string log = second.log_tail(std::string::npos);
  CHECK(log.find("event=lane_taken_over") != std::string::npos);
  CHECK(metric(second, "outbox_recovered_rows_total") == committed - recorded);
  CHECK(database.count("last_error LIKE '%recorded from the marker topic%'") ==
        committed - recorded);
  require_exactly_once(topic, 2'000);
}
