// Specifications of what the instances of one outbox share: the lane count lives in the database,
// and an instance comes back quickly after PostgreSQL does.
#include <doctest/doctest.h>

#include <chrono>
#include <thread>

#include "tests/support/kafka_reader.hpp"
#include "tests/support/relay_process.hpp"
#include "tests/support/services.hpp"
#include "tests/support/test_database.hpp"

using namespace outbox::test;
using namespace std::chrono_literals;

namespace {
/// How many lanes each instance holds, as PostgreSQL sees their advisory locks: "8,8".
std::string lane_holders(TestDatabase& database) {
  return database.scalar(
      "SELECT coalesce(string_agg(n::text, ',' ORDER BY n), '') FROM (SELECT count(*) n"
      " FROM pg_locks WHERE locktype = 'advisory' AND classid = 1868724273 AND granted"
      "   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
      " GROUP BY pid) per_instance");
}
}  // namespace

TEST_CASE("an instance configured with another lane count than the outbox's refuses to start") {
  REQUIRE_SERVICES();
  TestDatabase database;  // migrated with the default, 16 lanes
  const std::string sixteen = write_relay_config(database.url());
  const std::string thirty_two = write_relay_config(database.url(), {{"relay.lanes", "32"}});
  CHECK(relay_command("lanes show --config " + sixteen).output == "lanes 16\n");
  CHECK(relay_command("migrate --config " + thirty_two).exit_code == 78);

  RelayProcess relay(thirty_two);
  REQUIRE(eventually([&] { return !relay.running(); }, 20s));
  CHECK(relay.terminate() == 78);
  const std::string log = relay.log_tail();
  CHECK(log.find("relay.lanes is 32 but this outbox's instances share 16 lanes") !=
        std::string::npos);
  CHECK(relay_command("lanes show --config " + thirty_two).output ==
        "lanes 16 (relay.lanes in " + thirty_two + " is 32)\n");
}

TEST_CASE("the lane count changes only while no instance runs, and rows flow with the new one") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string topic = unique_name("lanes");
  const std::string sixteen = write_relay_config(database.url());
  const std::string four = write_relay_config(database.url(), {{"relay.lanes", "4"}});
  {
    RelayProcess relay(sixteen);
    REQUIRE(eventually(
        [&] { return relay.log_tail().find("lanes_rebalanced") != std::string::npos; }, 20s));
    CHECK(relay_command("lanes set 4 --config " + sixteen).exit_code == 1);
    CHECK(relay_command("lanes show --config " + sixteen).output == "lanes 16\n");
    CHECK(relay.terminate() == 0);
  }
  CHECK(relay_command("lanes set 3 --config " + four).exit_code == 64);
  const auto changed = relay_command("lanes set 4 --config " + four);
  CHECK(changed.exit_code == 0);
  CHECK(changed.output.find("lanes 16 -> 4") != std::string::npos);
  database.execute("SELECT outbox.publish($1, 'k' || n, 'x'::text) FROM generate_series(1, 100) n",
                   topic);
  RelayProcess first(four), second(four);
  REQUIRE_MESSAGE(eventually([&] { return database.count("state = 'pending'") == 0; }, 60s),
                  first.log_tail() << second.log_tail());
  CHECK(read_topic(topic).size() == 100);  // each row once: both instances hash with 4 lanes
}

TEST_CASE(
    "after a PostgreSQL restart every instance publishes again within seconds, not its backoff") {
  REQUIRE_FAULTABLE_SERVICES();
  TestDatabase database;
  const std::string topic = unique_name("pg_back");
  // The longest backoff these relays would use for anything: the PostgreSQL reconnect is capped
  // well below it.
  const std::string config =
      write_relay_config(database.url(), {{"relay.backoff_max_ms", "60000"}});
  RelayProcess first(config), second(config);
  REQUIRE_MESSAGE(eventually([&] { return lane_holders(database) == "8,8"; }, 20s),
                  lane_holders(database));
  database.execute("SELECT outbox.publish($1, 'k', 'before'::text)", topic);
  REQUIRE(eventually([&] { return database.count("state = 'published'") == 1; }, 30s));
  // Down long enough for the relays' attempts to fail several times and their backoff to grow.
  run_services_script("postgres-stop");
  std::this_thread::sleep_for(8s);
  run_services_script("postgres-start");
  // Rows on many keys, so both instances' lanes have work: all of it is done within seconds only
  // if both came back (the first one back may hold every lane for a moment).
  database.execute(
      "SELECT outbox.publish($1, 'k' || n, 'after'::text) FROM generate_series(1, 64) n", topic);
  CHECK_MESSAGE(eventually([&] { return database.count("state = 'published'") == 65; }, 3s),
                first.log_tail() << second.log_tail());
  // Both instances hold lanes again, a fair share each, within a few rebalance intervals.
  CHECK_MESSAGE(eventually([&] { return lane_holders(database) == "8,8"; }, 10s),
                lane_holders(database));
  CHECK(first.starts_logged() == 1);
  CHECK(second.starts_logged() == 1);
}

TEST_CASE(
    "a frozen instance loses its lanes within the lease timeout, and fences itself on waking") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string topic = unique_name("frozen");
  const std::string config = write_relay_config(database.url());  // lease_timeout_ms 15000
  RelayProcess first(config), second(config);
  REQUIRE_MESSAGE(eventually([&] { return lane_holders(database) == "8,8"; }, 20s),
                  lane_holders(database));

  second.freeze();
  const auto frozen_at = std::chrono::steady_clock::now();
  // Rows on every key, so the frozen instance's lanes have work: they wait until it is ended.
  database.execute("SELECT outbox.publish($1, 'k' || n, 'x'::text) FROM generate_series(1, 200) n",
                   topic);
  REQUIRE_MESSAGE(eventually([&] { return database.count("state = 'pending'") == 0; }, 30s),
                  first.log_tail());
  const auto took = std::chrono::steady_clock::now() - frozen_at;
  MESSAGE(
      "all rows published " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
                            << " ms after the freeze (lease_timeout_ms 15000)");
  CHECK(lane_holders(database) == "16");
  CHECK(first.log_tail(std::string::npos).find("event=instance_expired") != std::string::npos);

  second.thaw();
  REQUIRE_MESSAGE(
      eventually(
          [&] {
            return second.log_tail(std::string::npos).find("event=lease_lost_self_fenced") !=
                   std::string::npos;
          },
          20s),
      second.log_tail());
  CHECK(eventually([&] { return lane_holders(database) == "8,8"; }, 30s));
  CHECK(read_topic(topic).size() >= 200);
  CHECK(second.starts_logged() == 1);  // fenced and back, not restarted
}
