// Specifications of the operator's commands: status (and its exit codes), dead list / requeue /
// discard, and the retention purge. They run the real binary against a real database.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <thread>

#include "tests/support/kafka_reader.hpp"
#include "tests/support/relay_process.hpp"
#include "tests/support/services.hpp"
#include "tests/support/test_database.hpp"
#include "tests/support/workload.hpp"

using namespace outbox::test;
using namespace std::chrono_literals;

namespace {

nlohmann::json status_json(const std::string& config, const std::string& extra = "") {
  const CommandResult result = relay_command("status --json --config " + config + " " + extra);
  return nlohmann::json::parse(result.output);
}

void insert_dead(const TestDatabase& database, const std::string& topic, const std::string& key,
                 const std::string& reason, int count) {
  database.execute(
      "INSERT INTO outbox.messages (topic, message_key, payload, state, last_error)"
      " SELECT $1, $2, 'x', 'dead', $3 FROM generate_series(1, $4)",
      topic, key, reason, count);
}

}  // namespace

TEST_CASE("status reports lag per topic from the database, and its exit code follows thresholds") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string config = write_relay_config(database.url());
  {
    pqxx::connection connection = database.connect();
    pqxx::work tx{connection};
    tx.exec(
        "INSERT INTO outbox.messages (topic, message_key, payload, created_at)"
        " SELECT 'orders', 'k', 'x', now() - interval '120 seconds' FROM generate_series(1, 4)");
    tx.exec(
        "INSERT INTO outbox.messages (topic, message_key, payload) VALUES ('payments', 'p', 'x')");
    tx.exec("SELECT outbox.prepare('orders', 'h', 'x'::text, '{}'::jsonb, 'g', 'tx')");
    tx.exec(
        "INSERT INTO outbox.messages (topic, payload, state, published_at)"
        " SELECT 'payments', 'x', 'published', now() - interval '10 seconds'"
        "   FROM generate_series(1, 7)");
    tx.commit();
  }
  insert_dead(database, "orders", "d", "too large", 2);

  const auto status = status_json(config);
  CHECK(status["backlog_rows"] == 5);
  CHECK(status["unknown_rows"] == 1);
  CHECK(status["dead_rows"] == 2);
  CHECK(status["oldest_pending_age_seconds"].get<double>() >= 120);
  REQUIRE(status["topics"].size() == 2);
  const auto& orders = status["topics"][0];
  CHECK(orders["topic"] == "orders");
  CHECK(orders["backlog_rows"] == 4);
  CHECK(orders["unknown_rows"] == 1);
  CHECK(orders["dead_rows"] == 2);
  CHECK(status["topics"][1]["published_last_minute"] == 7);

  const std::string base = "status --config " + config;
  CHECK(relay_command(base).exit_code == 0);
  CHECK(relay_command(base).output.find("orders") != std::string::npos);
  CHECK(relay_command(base + " --max-lag-seconds 600").exit_code == 0);
  CHECK(relay_command(base + " --max-lag-seconds 60").exit_code == 3);
  CHECK(relay_command(base + " --max-backlog 4").exit_code == 3);
  CHECK(relay_command(base + " --max-dead 2").exit_code == 0);
  CHECK(relay_command(base + " --max-dead 1").exit_code == 3);
  CHECK(relay_command("status --config /nonexistent.yaml").exit_code == 78);
  CHECK(relay_command("status").exit_code == 64);
}

TEST_CASE("lag rises while the relay is stopped and falls to zero when it runs") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string config = write_relay_config(database.url());
  const std::string topic = unique_name("lag");
  write_sequenced_rows(database, topic, 1'000, 10, /*writers=*/2);
  const auto before = status_json(config);
  std::this_thread::sleep_for(1500ms);
  const auto later = status_json(config);
  CHECK(before["backlog_rows"] == 1'000);
  CHECK(later["oldest_pending_age_seconds"].get<double>() >
        before["oldest_pending_age_seconds"].get<double>() + 1);

  RelayProcess relay(config);
  require_drained(database, relay);
  const auto after = status_json(config);
  CHECK(after["backlog_rows"] == 0);
  CHECK(after["oldest_pending_age_seconds"] == 0);
}

TEST_CASE("dead requeue republishes a row, dead discard never publishes it and unblocks its key") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string topic = unique_name("dead_ops");
  const std::string config = write_relay_config(database.url());
  insert_dead(database, topic, "requeue-me", "broker said no", 3);
  insert_dead(database, topic, "discard-me", "payload too large", 1);
  database.execute("SELECT outbox.publish($1, 'discard-me', 'behind the dead row'::text)", topic);
  // Written after the blocked row, on a key of its own: once it is published and recorded, the
  // relay has claimed past the blocked row, which must not have gone out (an in-flight row would
  // read pending too, so the topic is what proves it).
  database.execute("SELECT outbox.publish($1, 'free-key', 'written after it'::text)", topic);
  RelayProcess relay(config);
  REQUIRE(eventually(
      [&] { return database.count("state = 'published' AND message_key = 'free-key'") == 1; },
      20s));
  CHECK(database.count("state = 'pending' AND message_key = 'discard-me'") == 1);
  const auto before_ops = read_topic(topic);
  REQUIRE(before_ops.size() == 1);
  CHECK(before_ops[0].key == "free-key");  // the row behind the dead one never went out

  const auto listed = relay_command("dead list --json --config " + config + " --topic " + topic +
                                    " --reason 'BROKER'");
  CHECK(listed.exit_code == 0);
  CHECK(nlohmann::json::parse(listed.output).size() == 3);

  const auto requeued =
      relay_command("dead requeue --config " + config + " --reason broker --batch-size 2");
  CHECK(requeued.exit_code == 0);
  CHECK(requeued.output == "requeued 3 dead row(s)\n");
  const auto discarded = relay_command("dead discard --config " + config +
                                       " --reason 'too large' --why 'payload rebuilt as v2'");
  CHECK(discarded.exit_code == 0);
  CHECK(discarded.output == "discarded 1 dead row(s)\n");

  require_drained(database, relay);
  CHECK(database.count("state = 'published'") == 5);
  CHECK(database.count("state = 'discarded' AND last_error LIKE "
                       "'discarded: payload rebuilt as v2 (was: payload too large)'") == 1);
  const auto messages = read_topic(topic);
  CHECK(messages.size() == 5);
  int requeued_seen = 0, behind_seen = 0;
  for (const auto& message : messages) {
    requeued_seen += message.key == "requeue-me" ? 1 : 0;
    behind_seen += message.payload == "behind the dead row" ? 1 : 0;
  }
  CHECK(requeued_seen == 3);
  CHECK(behind_seen == 1);  // the discarded row itself never went out
}

TEST_CASE("the purge deletes only finished rows older than the limit") {
  REQUIRE_SERVICES();
  TestDatabase database;
  {
    pqxx::connection connection = database.connect();
    pqxx::work tx{connection};
    tx.exec(
        "INSERT INTO outbox.messages (topic, payload, state, published_at)"
        " SELECT 't', 'x', 'published', now() - interval '2 hours' FROM generate_series(1, 2500)");
    tx.exec(
        "INSERT INTO outbox.messages (topic, payload, state, published_at)"
        " SELECT 't', 'x', 'published', now() - interval '10 minutes' FROM generate_series(1, 5)");
    tx.exec(
        "INSERT INTO outbox.messages (topic, payload, state, created_at)"
        " SELECT 't', 'x', s::outbox.row_state, now() - interval '2 hours'"
        "   FROM unnest(ARRAY['rolled_back', 'discarded', 'pending', 'unknown', 'dead']) s");
    tx.commit();
  }
  const std::string config = write_relay_config(
      database.url(),
      {{"retention.keep_finished_ms", "3600000"}, {"retention.batch_size", "1000"}});
  const auto purged = relay_command("purge --config " + config);
  CHECK(purged.exit_code == 0);
  CHECK(purged.output.starts_with("purged 2502 finished row(s)"));
  CHECK(database.count("state = 'published'") == 5);
  CHECK(database.count("state IN ('pending', 'unknown', 'dead')") == 3);
  CHECK(database.count("state IN ('rolled_back', 'discarded')") == 0);
}

TEST_CASE("with delete_on_publish, delivered rows leave the table and failed ones stay") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string topic = unique_name("delete_on_publish");
  database.execute("SELECT outbox.publish($1, 'k' || n, 'x'::text) FROM generate_series(1, 100) n",
                   topic);
  database.execute(
      "INSERT INTO outbox.messages (topic, message_key, payload) VALUES (NULL, 'n', 'x')");
  RelayProcess relay(write_relay_config(database.url(), {{"retention.delete_on_publish", "true"}}));
  REQUIRE_MESSAGE(eventually([&] { return database.count("true") == 1; }, 30s), relay.log_tail());
  CHECK(database.count("state = 'dead'") == 1);
  CHECK(read_topic(topic).size() == 100);
}

TEST_CASE("the relay vacuums the outbox table once enough dead rows piled up, and only then") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string topic = unique_name("vacuum");
  // Manual VACUUMs only: autovacuum counts separately (autovacuum_count).
  auto vacuums = [&] {
    return std::stol(database.scalar(
        "SELECT vacuum_count FROM pg_stat_user_tables WHERE relid = 'outbox.messages'::regclass"));
  };
  RelayProcess relay(write_relay_config(database.url(), {{"retention.vacuum_dead_rows", "2000"}}));
  database.execute("SELECT outbox.publish($1, 'k' || n, 'x'::text) FROM generate_series(1, 1000) n",
                   topic);
  REQUIRE(eventually([&] { return database.count("state = 'published'") == 1000; }, 30s));
  std::this_thread::sleep_for(3s);  // statistics reach pg_stat within a second; checks every second
  CHECK(vacuums() == 0);            // 1,000 dead versions: below the threshold

  database.execute("SELECT outbox.publish($1, 'k' || n, 'x'::text) FROM generate_series(1, 2000) n",
                   topic);
  REQUIRE(eventually([&] { return database.count("state = 'published'") == 3000; }, 30s));
  CHECK_MESSAGE(eventually([&] { return vacuums() >= 1; }, 15s), relay.log_tail());
  // The statistics can show the VACUUM before the relay has logged its end.
  CHECK(eventually(
      [&] {
        return relay.log_tail(std::string::npos).find("event=table_vacuumed") != std::string::npos;
      },
      5s));
}

TEST_CASE("status answers (exit 1) instead of hanging while a migration holds the outbox locked") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string config = write_relay_config(database.url());
  pqxx::connection migration = database.connect();
  pqxx::work holding{migration};
  holding.exec("LOCK TABLE outbox.messages IN ACCESS EXCLUSIVE MODE");
  // lock_timeout 10 s on every relay session: the command gives up and says so.
  const auto result = relay_command("status --config " + config);
  CHECK(result.exit_code == 1);
  holding.abort();
  CHECK(relay_command("status --config " + config).exit_code == 0);
}

TEST_CASE("a row discarded today after a week dead keeps its audit trail for keep_finished_ms") {
  REQUIRE_SERVICES();
  TestDatabase database;
  database.execute(
      "INSERT INTO outbox.messages (topic, message_key, payload, state, last_error, created_at)"
      " VALUES ('t', 'old-dead', 'x', 'dead', 'broker said no', now() - interval '8 days')");
  database.execute(
      "INSERT INTO outbox.messages (topic, payload, state, published_at, created_at)"
      " VALUES ('t', 'x', 'published', now() - interval '8 days', now() - interval '8 days')");
  const std::string config = write_relay_config(database.url());  // keep_finished_ms: 7 days
  CHECK(relay_command("dead discard --config " + config + " --why 'given up'").exit_code == 0);
  CHECK(database.count("state = 'discarded' AND finished_at > now() - interval '1 minute'") == 1);
  const auto purged = relay_command("purge --config " + config);
  CHECK(purged.output.starts_with("purged 1 finished row(s)"));  // the one published 8 days ago
  CHECK(database.count("state = 'discarded'") == 1);
}
