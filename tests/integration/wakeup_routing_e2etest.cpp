// Specifications of schema migration, wake-up, routing and PostgreSQL restarts.
#include <doctest/doctest.h>

#include <cstdlib>
#include <future>
#include <thread>

#include "tests/support/kafka_reader.hpp"
#include "tests/support/relay_process.hpp"
#include "tests/support/services.hpp"
#include "tests/support/test_database.hpp"
#include "tests/support/workload.hpp"

using namespace outbox::test;
using namespace std::chrono_literals;

TEST_CASE("two migrate processes at once both succeed and apply each migration once") {
  REQUIRE_SERVICES();
  const std::string name = unique_name("relay_migrate");
  {
    pqxx::connection admin{postgres_server_url() + "/postgres"};
    pqxx::nontransaction tx{admin};
    tx.exec("CREATE DATABASE " + name);
  }
  const std::string config = write_relay_config(postgres_server_url() + "/" + name);
  const std::string command =
      std::string(RELAY_BINARY) + " migrate --config " + config + " > /dev/null 2>&1";
  auto first = std::async(std::launch::async, [&] { return std::system(command.c_str()); });
  auto second = std::async(std::launch::async, [&] { return std::system(command.c_str()); });
  CHECK(first.get() == 0);
  CHECK(second.get() == 0);
  CHECK(std::system(command.c_str()) == 0);  // and once more, with nothing to do
  {
    pqxx::connection connection{postgres_server_url() + "/" + name};
    pqxx::work tx{connection};
    CHECK(tx.exec1("SELECT count(*) FROM outbox.schema_migrations")[0].as<int>() >= 1);
    CHECK(tx.exec1("SELECT count(*) = count(DISTINCT version) FROM outbox.schema_migrations")[0]
              .as<bool>());
  }
  pqxx::connection admin{postgres_server_url() + "/postgres"};
  pqxx::nontransaction tx{admin};
  tx.exec("DROP DATABASE " + name + " WITH (FORCE)");
}

TEST_CASE("without NOTIFY the relay still finds every row by polling") {
  REQUIRE_SERVICES();
  TestDatabase database(/*notify=*/false);
  CHECK(database.scalar(
            "SELECT tgenabled FROM pg_trigger WHERE tgname = 'messages_notify_relay'") == "D");
  const std::string topic = unique_name("polling");
  RelayProcess relay(write_relay_config(
      database.url(), {{"relay.notify", "false"}, {"relay.poll_interval_ms", "300"}}));
  std::this_thread::sleep_for(1s);  // the relay is idle, waiting for its next poll
  write_sequenced_rows(database, topic, 500, 10, /*writers=*/1);
  require_drained(database, relay, 10s);
  CHECK(read_topic(topic).size() == 500);
}

TEST_CASE("with NOTIFY on, an idle relay publishes a new row long before its next poll") {
  REQUIRE_SERVICES();
  TestDatabase database(/*notify=*/true);
  const std::string topic = unique_name("notify");
  RelayProcess relay(write_relay_config(database.url(), {{"relay.notify", "true"},
                                                         {"relay.poll_interval_min_ms", "30000"},
                                                         {"relay.poll_interval_ms", "30000"}}));
  std::this_thread::sleep_for(1s);  // the relay is idle: its next poll is 30 s away
  database.execute("SELECT outbox.publish($1, 'k', 'woken'::text)", topic);
  CHECK(eventually([&] { return database.count("state = 'published'") == 1; }, 5s));
}

TEST_CASE("Debezium-style routing sends a row to the topic its aggregate type names") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string aggregate = unique_name("Order");
  database.execute(
      "INSERT INTO outbox.messages (aggregate_type, message_key, payload)"
      " VALUES ($1, 'order-7', 'created')",
      aggregate);
  RelayProcess relay(
      write_relay_config(database.url(), {{"routing.topic_column", "aggregate_type"},
                                          {"routing.topic_pattern", "outbox.event.{value}"}}));
  REQUIRE(eventually([&] { return database.count("state = 'published'") == 1; }, 30s));
  const auto messages = read_topic("outbox.event." + aggregate);
  REQUIRE(messages.size() == 1);
  CHECK(messages[0].key == "order-7");
  CHECK(messages[0].payload == "created");
}

TEST_CASE("a PostgreSQL restart under load loses nothing and keeps per-key order") {
  REQUIRE_FAULTABLE_SERVICES();
  TestDatabase database;
  const std::string topic = unique_name("pg_restart");
  RelayProcess relay(write_relay_config(database.url(), {{"relay.batch_size", "100"}}));
  write_sequenced_rows(database, topic, 5'000, 100, /*writers=*/2);
  std::thread writer([&] {
    write_sequenced_rows(database, topic, 10'000, 100, /*writers=*/2, /*per_tx=*/5,
                         OnConnectionLoss::reconnect);
  });
  std::this_thread::sleep_for(300ms);
  run_services_script("postgres-restart");
  writer.join();
  require_drained(database, relay);
  const OrderCheck check = check_per_key_order(read_topic(topic));
  const long long committed = database.count("true");
  CHECK(check.distinct_ids == static_cast<std::size_t>(committed));
  CHECK_MESSAGE(check.out_of_order == 0, check.first_problem);
  MESSAGE("rows committed: " << committed
                             << ", duplicates after the restart: " << check.duplicates);
  CHECK(check.duplicates <= 100 * 4);  // one fault: at most the in-flight window
}
