// End-to-end specifications of the relay: real PostgreSQL, a real Kafka broker, the real binary.
#include <doctest/doctest.h>
#include <httplib.h>

#include <csignal>
#include <set>
#include <thread>

#include "tests/support/kafka_reader.hpp"
#include "tests/support/relay_process.hpp"
#include "tests/support/services.hpp"
#include "tests/support/test_database.hpp"
#include "tests/support/workload.hpp"

using namespace outbox::test;
using namespace std::chrono_literals;

namespace {

long long publish(pqxx::work& tx, const std::string& topic, const std::string& key,
                  const std::string& payload, const std::string& headers = "{}") {
  return tx
      .exec_params1("SELECT outbox.publish($1, $2, $3::text, $4::jsonb)", topic, key, payload,
                    headers)[0]
      .as<long long>();
}

}  // namespace

TEST_CASE("a committed row reaches Kafka intact and its partition and offset are written back") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string topic = unique_name("intact");
  long long id = 0;
  {
    pqxx::connection connection = database.connect();
    pqxx::work tx{connection};
    tx.exec("CREATE TABLE orders (id serial PRIMARY KEY, total numeric)");
    tx.exec("INSERT INTO orders (total) VALUES (42.50)");
    id = publish(tx, topic, "order-1", R"({"total": 42.50, "currency": "EUR"})",
                 R"({"type": "OrderPlaced", "trace": "abc-123"})");
    tx.exec_params(
        "INSERT INTO outbox.messages (topic, message_key, payload) VALUES ($1, 'bin', "
        "'\\x00ff10'::bytea)",
        topic);
    tx.commit();
  }
  RelayProcess relay(write_relay_config(database.url()));
  require_drained(database, relay);

  const auto messages = read_topic(topic);
  REQUIRE(messages.size() == 2);
  const auto& json = messages[0].key == "order-1" ? messages[0] : messages[1];
  const auto& binary = messages[0].key == "order-1" ? messages[1] : messages[0];
  CHECK(json.topic == topic);
  CHECK(json.payload == R"({"total": 42.50, "currency": "EUR"})");
  CHECK(json.headers.at("type") == "OrderPlaced");
  CHECK(json.headers.at("trace") == "abc-123");
  CHECK(json.outbox_id == id);
  CHECK(binary.payload == std::string("\x00\xff\x10", 3));
  CHECK(database.scalar(
            "SELECT kafka_partition || ':' || kafka_offset FROM outbox.messages WHERE id = " +
            std::to_string(id)) ==
        std::to_string(json.partition) + ":" + std::to_string(json.offset));
  CHECK(database.count("state = 'published' AND published_at IS NOT NULL AND attempts = 1") == 2);
  CHECK(relay.terminate() == 0);
}

TEST_CASE("a row whose transaction rolls back is never published") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string topic = unique_name("rollback");
  RelayProcess relay(write_relay_config(database.url()));
  pqxx::connection connection = database.connect();
  for (int round = 0; round < 50; ++round) {
    {
      pqxx::work tx{connection};
      publish(tx, topic, "k", "committed-" + std::to_string(round));
      tx.commit();
    }
    {
      pqxx::work tx{connection};
      publish(tx, topic, "k", "rolled-back-" + std::to_string(round));
      tx.abort();
    }
  }
  require_drained(database, relay);
  const auto messages = read_topic(topic);
  CHECK(messages.size() == 50);
  for (const auto& message : messages) CHECK(message.payload.starts_with("committed-"));
}

TEST_CASE("per-key order holds with 8 concurrent writers, 1,000 keys and 50,000 rows") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string topic = unique_name("order");
  RelayProcess relay(write_relay_config(database.url()));
  write_sequenced_rows(database, topic, 50'000, 1'000, /*writers=*/8);
  require_drained(database, relay);

  const auto messages = read_topic(topic);
  const OrderCheck check = check_per_key_order(messages);
  CHECK(check.distinct_ids == 50'000);
  CHECK_MESSAGE(check.out_of_order == 0, check.first_problem);
  CHECK(check.duplicates == 0);  // one healthy relay: no duplicates at all
}

TEST_CASE("after kill -9 mid-stream and a restart, every committed row arrives in per-key order") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string topic = unique_name("kill9");
  write_sequenced_rows(database, topic, 30'000, 300);
  const std::string config =
      write_relay_config(database.url(), {{"relay.batch_size", "200"}, {"kafka.linger_ms", "20"}});
  {
    RelayProcess relay(config);
    REQUIRE(eventually([&] { return database.count("state = 'published'") >= 3'000; }, 60s));
    relay.kill_hard();
  }
  const long long published_at_kill = database.count("state = 'published'");
  MESSAGE("published when killed: " << published_at_kill);
  REQUIRE(published_at_kill < 30'000);  // the kill really was mid-stream

  RelayProcess restarted(config);
  require_drained(database, restarted);
  const OrderCheck check = check_per_key_order(read_topic(topic));
  CHECK(check.distinct_ids == 30'000);
  CHECK_MESSAGE(check.out_of_order == 0, check.first_problem);
  MESSAGE("duplicates after kill -9: " << check.duplicates);
  CHECK(check.duplicates <= 200 * 4);  // at most the in-flight window: batch_size x max_in_flight
}

TEST_CASE("the broker stopped for ten seconds and restarted loses nothing") {
  REQUIRE_FAULTABLE_SERVICES();
  TestDatabase database;
  const std::string topic = unique_name("broker_down");
  RelayProcess relay(write_relay_config(database.url()));
  write_sequenced_rows(database, topic, 2'000, 50, /*writers=*/2);
  require_drained(database, relay);

  run_services_script("kafka-stop");
  write_sequenced_rows(database, topic, 3'000, 50, /*writers=*/2);
  std::this_thread::sleep_for(10s);
  const long long pending_while_down = database.count("state = 'pending'");
  run_services_script("kafka-start");
  CHECK(pending_while_down == 3'000);  // nothing was marked published while Kafka was away

  require_drained(database, relay, 180s);
  const OrderCheck check = check_per_key_order(read_topic(topic, 60s));
  CHECK(check.distinct_ids == 5'000);
  CHECK_MESSAGE(check.out_of_order == 0, check.first_problem);
  CHECK(database.count("state = 'published'") == 5'000);
}

TEST_CASE("an oversized payload is parked dead, other keys flow, and its own key waits behind it") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string topic = unique_name("oversized");
  long long oversized_id = 0, blocked_id = 0;
  {
    pqxx::connection connection = database.connect();
    pqxx::work tx{connection};
    publish(tx, topic, "big", "before");
    oversized_id = publish(tx, topic, "big", std::string(2'000'000, 'x'));
    blocked_id = publish(tx, topic, "big", "after");
    for (int i = 0; i < 100; ++i) publish(tx, topic, "other-" + std::to_string(i % 7), "fine");
    tx.commit();
  }
  RelayProcess relay(write_relay_config(database.url()));
  REQUIRE(eventually([&] { return database.count("state = 'published'") == 101; }, 60s));
  std::this_thread::sleep_for(1s);  // give a wrong relay the chance to publish the blocked row

  CHECK(database.scalar("SELECT state FROM outbox.messages WHERE id = " +
                        std::to_string(oversized_id)) == "dead");
  CHECK(database
            .scalar("SELECT last_error FROM outbox.messages WHERE id = " +
                    std::to_string(oversized_id))
            .find("too large") != std::string::npos);
  CHECK(database.scalar("SELECT state FROM outbox.messages WHERE id = " +
                        std::to_string(blocked_id)) == "pending");
  const auto messages = read_topic(topic);
  CHECK(messages.size() == 101);
  for (const auto& message : messages) CHECK(message.outbox_id != blocked_id);
}

TEST_CASE("malformed rows are parked dead with their reason and nothing else is disturbed") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string topic = unique_name("malformed");
  {
    pqxx::connection connection = database.connect();
    pqxx::work tx{connection};
    publish(tx, topic, "a", "1");
    tx.exec("INSERT INTO outbox.messages (topic, message_key, payload) VALUES (NULL, 'n', 'x')");
    tx.exec(
        "INSERT INTO outbox.messages (topic, message_key, payload) VALUES ('bad topic!', 'b', "
        "'x')");
    tx.exec_params(
        "INSERT INTO outbox.messages (topic, message_key, payload, headers) VALUES ($1, 'h', 'x', "
        "'{\"n\": 1}')",
        topic);
    tx.exec_params(
        "INSERT INTO outbox.messages (topic, message_key, payload, headers) VALUES ($1, 'j', 'x', "
        "'[1, 2]')",
        topic);
    publish(tx, topic, "a", "2");
    tx.commit();
  }
  RelayProcess relay(write_relay_config(database.url()));
  require_drained(database, relay);
  CHECK(database.count("state = 'published'") == 2);
  CHECK(database.count("state = 'dead'") == 4);
  CHECK(database.scalar("SELECT last_error FROM outbox.messages WHERE message_key = 'n'")
            .find("null") != std::string::npos);
  CHECK(database.scalar("SELECT last_error FROM outbox.messages WHERE message_key = 'b'")
            .find("character") != std::string::npos);
  CHECK(database.scalar("SELECT last_error FROM outbox.messages WHERE message_key = 'h'")
            .find("header 'n'") != std::string::npos);
  CHECK(database.scalar("SELECT last_error FROM outbox.messages WHERE message_key = 'j'")
            .find("object") != std::string::npos);
  CHECK(read_topic(topic).size() == 2);
}

TEST_CASE("a relay whose PostgreSQL connections are terminated reconnects and loses nothing") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string topic = unique_name("pg_terminate");
  // Small batches, so the duplicate bound below (faults x the in-flight window) says something.
  RelayProcess relay(write_relay_config(database.url(), {{"relay.batch_size", "100"}}));
  std::thread writer([&] { write_sequenced_rows(database, topic, 10'000, 100, /*writers=*/2, 5); });
  for (int round = 0; round < 5; ++round) {
    std::this_thread::sleep_for(700ms);
    database.scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE application_name = 'outbox-relay' AND datname = current_database()");
  }
  writer.join();
  require_drained(database, relay);
  const OrderCheck check = check_per_key_order(read_topic(topic));
  CHECK(check.distinct_ids == 10'000);
  CHECK_MESSAGE(check.out_of_order == 0, check.first_problem);
  MESSAGE("duplicates after 5 terminated sessions: " << check.duplicates);
  CHECK(check.duplicates <= 5 * 100 * 4);  // each fault re-sends at most the in-flight window
}

TEST_CASE(
    "two relay instances split the lanes, publish each row once, and one takes over when the other "
    "dies") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string topic = unique_name("two_instances");
  const std::string config = write_relay_config(database.url());
  auto lane_holders = [&] {
    return database.scalar(
        "SELECT string_agg(n::text, ',' ORDER BY n) FROM (SELECT count(*) n FROM pg_locks"
        " WHERE locktype = 'advisory' AND classid = 1868724273 AND granted"
        "   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " GROUP BY pid) per_instance");
  };
  RelayProcess first(config);
  auto second = std::make_unique<RelayProcess>(config);
  REQUIRE_MESSAGE(eventually([&] { return lane_holders() == "8,8"; }, 20s),
                  "lanes per instance: " << lane_holders());

  write_sequenced_rows(database, topic, 20'000, 500);
  require_drained(database, first);
  OrderCheck check = check_per_key_order(read_topic(topic));
  CHECK(check.distinct_ids == 20'000);
  CHECK(check.duplicates == 0);
  CHECK_MESSAGE(check.out_of_order == 0, check.first_problem);

  second->kill_hard();
  REQUIRE_MESSAGE(eventually([&] { return lane_holders() == "16"; }, 10s),
                  "lanes per instance: " << lane_holders());
  write_sequenced_rows(database, topic, 5'000, 500);
  require_drained(database, first);
  check = check_per_key_order(read_topic(topic));
  CHECK(check.distinct_ids == 25'000);
  CHECK_MESSAGE(check.out_of_order == 0, check.first_problem);
}

TEST_CASE("SIGTERM stops the relay cleanly with exit code 0") {
  REQUIRE_SERVICES();
  TestDatabase database;
  RelayProcess relay(write_relay_config(database.url()));
  std::this_thread::sleep_for(1s);
  REQUIRE(relay.running());
  CHECK(relay.terminate(15s) == 0);
}

TEST_CASE("a second SIGTERM exits at once, without waiting for the clean stop") {
  REQUIRE_SERVICES();
  TestDatabase database;
  // Kafka is unreachable, so the clean stop would wait its whole shutdown timeout (60 s) for the
  // batch in librdkafka's queue (kept in the chain: a stalled batch is not waited for).
  RelayProcess relay(
      write_relay_config(database.url(), {{"kafka.bootstrap_servers", "\"127.0.0.1:1\""},
                                          {"relay.shutdown_timeout_ms", "60000"},
                                          {"relay.topic_stall_timeout_ms", "600000"}}));
  database.execute("SELECT outbox.publish('t', 'k' || n, 'x'::text) FROM generate_series(1, 10) n");
  httplib::Client metrics("127.0.0.1", relay.metrics_port());
  REQUIRE_MESSAGE(eventually(
                      [&] {
                        const auto page = metrics.Get("/metrics");
                        return page && page->body.find("\noutbox_in_flight_batches 1\n") !=
                                           std::string::npos;
                      },
                      15s),
                  relay.log_tail());
  relay.send_signal(SIGTERM);
  REQUIRE(eventually([&] { return relay.log_tail().find("event=stopping") != std::string::npos; },
                     10s));
  CHECK_MESSAGE(relay.running(), relay.log_tail());  // the clean stop is waiting for Kafka
  CHECK(relay.terminate(3s) == 128 + SIGTERM);       // the second SIGTERM
  CHECK(relay.log_tail().find("action=exit_now") != std::string::npos);
  CHECK(database.count("state = 'pending'") == 10);  // nothing was marked: all published later
}

TEST_CASE("a fatal producer error recreates the producer and loses nothing, in per-key order") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string topic = unique_name("producer_fatal");
  write_sequenced_rows(database, topic, 5'000, 50, /*writers=*/2);
  const std::string config = write_relay_config(database.url(), {{"relay.batch_size", "200"}});
  setenv("RELAY_FAILPOINTS", "producer_fatal_after_batches=3", 1);
  RelayProcess relay(config);
  unsetenv("RELAY_FAILPOINTS");
  require_drained(database, relay);
  CHECK(relay.log_tail(1'000'000).find("event=producer_fatal") != std::string::npos);
  CHECK(relay.log_tail(1'000'000).find("event=producer_created") !=
        relay.log_tail(1'000'000).rfind("event=producer_created"));  // created twice
  const OrderCheck check = check_per_key_order(read_topic(topic));
  CHECK(check.distinct_ids == 5'000);
  CHECK_MESSAGE(check.out_of_order == 0, check.first_problem);
  MESSAGE("duplicates after a fatal producer error: " << check.duplicates);
  CHECK(check.duplicates <= 200 * 4);  // one fault: at most the in-flight window
}
