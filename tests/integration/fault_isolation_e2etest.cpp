// Specifications of fault isolation: a row can only hurt itself, a topic only its own rows, and
// bytes a writer controls can neither forge a log line nor flood /metrics. Real PostgreSQL, a real
// broker (two for the in-sync-replica case), the real binary.
#include <doctest/doctest.h>

#include <algorithm>

#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "tests/support/kafka_admin.hpp"
#include "tests/support/kafka_reader.hpp"
#include "tests/support/relay_process.hpp"
#include "tests/support/services.hpp"
#include "tests/support/test_database.hpp"
#include "tests/support/workload.hpp"

using namespace outbox::test;
using namespace std::chrono_literals;

namespace {

/// Inserts `per_key` good rows for each of `keys` keys "<prefix>-<k>", payload "<k>:<sequence>".
void write_good_rows(const TestDatabase& database, const std::string& topic,
                     const std::string& prefix, int keys, int per_key, int first_sequence = 1) {
  pqxx::connection connection = database.connect();
  for (int sequence = first_sequence; sequence < first_sequence + per_key; ++sequence) {
    pqxx::work tx{connection};
    for (int key = 0; key < keys; ++key) {
      tx.exec_params("SELECT outbox.publish($1, $2, $3::text)", topic,
                     prefix + "-" + std::to_string(key),
                     std::to_string(key) + ":" + std::to_string(sequence));
    }
    tx.commit();
  }
}

/// Per key, the sequence numbers in Kafka must read first..last with no gap, no repeat.
void require_in_order(const std::vector<ConsumedMessage>& messages, int keys, int last) {
  std::map<std::string, std::vector<int>> sequences;
  for (const auto& message : messages) {
    sequences[*message.key].push_back(
        std::stoi(message.payload.substr(message.payload.find(':') + 1)));
  }
  REQUIRE(sequences.size() == static_cast<std::size_t>(keys));
  for (const auto& [key, seen] : sequences) {
    std::vector<int> expected;
    for (int i = 1; i <= last; ++i) expected.push_back(i);
    CHECK_MESSAGE(seen == expected, "key " << key);
  }
}

long long count_in(const std::string& text, const std::string& what) {
  long long count = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++count;
  return count;
}

long long pending_of(const TestDatabase& database, const std::string& topic) {
  return database.count("state = 'pending' AND topic = '" + topic + "'");
}

/// While another topic is held: two rounds of rows to `topic` (5 per key each, after the 5 written
/// before) are published within the timeouts, and the topic holds all 10 per key in order.
void require_flowing(const TestDatabase& database, RelayProcess& relay, const std::string& topic,
                     const std::string& prefix, int keys, std::chrono::milliseconds first_wait) {
  REQUIRE_MESSAGE(eventually([&] { return pending_of(database, topic) == 0; }, first_wait),
                  relay.log_tail());
  write_good_rows(database, topic, prefix, keys, 5, 6);
  REQUIRE_MESSAGE(eventually([&] { return pending_of(database, topic) == 0; }, 15s),
                  relay.log_tail());
  require_in_order(read_topic(topic), keys, 10);
}

}  // namespace

TEST_CASE("rows a writer can make bad are parked with their reason while every other key flows") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string topic = unique_name("poison");
  const std::string long_key(5000, 'k');  // longer than a btree index entry may be
  struct Poison {
    std::string key;
    std::optional<std::string> topic;
    std::string payload;
    std::string headers;
    std::string reason;
  };
  const std::vector<Poison> poisons = {
      {long_key, std::nullopt, "x", "{}", "routing column topic is null"},
      {"newline", "evil\nevent=forged_line", "x", "{}", "has a character outside"},
      {"huge-topic", std::string(1'000'000, 't'), "x", "{}", "longer than 249"},
      {"forged-id", topic, "x", R"({"outbox-id": "1"})", "row-id header"},
      {"not-an-object", topic, "x", "[1]", "must be a JSON object"},
      {"too-big", topic, std::string(300'000, 'p'), "{}", "message.max.bytes (200000)"},
  };
  write_good_rows(database, topic, "good", 10, 5);
  {
    pqxx::connection connection = database.connect();
    pqxx::work tx{connection};
    for (const Poison& poison : poisons) {
      tx.exec_params(
          "INSERT INTO outbox.messages (topic, message_key, payload, headers)"
          " VALUES ($1, $2, convert_to($3, 'UTF8'), $4::jsonb)",
          poison.topic, poison.key, poison.payload, poison.headers);
    }
    tx.commit();
  }
  write_good_rows(database, topic, "good", 10, 5, 6);

  RelayProcess relay(write_relay_config(
      database.url(),
      {{"kafka.properties", "{message.max.bytes: \"200000\"}"}, {"logging.format", "text"}}));
  require_drained(database, relay);
  require_in_order(read_topic(topic), 10, 10);
  for (const Poison& poison : poisons) {
    CHECK_MESSAGE(database.count("state = 'dead' AND message_key = '" + poison.key +
                                 "' AND last_error LIKE '%" + poison.reason + "%'") == 1,
                  poison.reason);
  }
  // Nothing was read of the oversized payload, and its reason says how big it was.
  CHECK(database.count("state = 'dead' AND last_error LIKE '%300007 bytes%not read'") == 1);
  // A quoted name is cut: the 1 MB topic does not become a 1 MB reason.
  CHECK(database.count("state = 'dead' AND octet_length(last_error) > 2000") == 0);

  const std::string log = relay.log_tail(std::string::npos);
  CHECK(log.find("\nevent=forged_line") == std::string::npos);
  CHECK(log.find("evil\\nevent=forged_line") != std::string::npos);
  const std::string metrics = relay.metrics_text();
  CHECK(!metrics.empty());
  CHECK(metrics.size() < 200'000);  // a label value is capped, whatever the topic's length
  CHECK(relay.running());
  CHECK(relay.starts_logged() == 1);
  CHECK(relay.terminate() == 0);
}

TEST_CASE(
    "an infinite created_at is refused at insert, and one written before the limit is "
    "published") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string topic = unique_name("infinity");
  CHECK_THROWS_WITH(
      database.execute("INSERT INTO outbox.messages (topic, message_key, payload, created_at)"
                       " VALUES ($1, 'k', 'x', 'infinity')",
                       topic),
      doctest::Contains("messages_created_at_finite"));
  // A database where such a row got in (the limit dropped by hand, or rows from before it).
  database.execute("ALTER TABLE outbox.messages DROP CONSTRAINT messages_created_at_finite");
  database.execute(
      "INSERT INTO outbox.messages (topic, message_key, payload, created_at)"
      " VALUES ($1, 'k', '1', 'infinity'), ($1, 'k', '2', '-infinity'), ($1, 'k', '3', now())",
      topic);
  const std::string config = write_relay_config(database.url());
  CHECK(relay_command("status --json --config " + config).exit_code == 0);
  RelayProcess relay(config);
  require_drained(database, relay);
  CHECK(read_topic(topic).size() == 3);
  CHECK(relay_command("status --json --config " + config).exit_code == 0);
  CHECK(relay.metrics_text().find("outbox_lag_refresh_ok 1") != std::string::npos);
  CHECK(relay.starts_logged() == 1);
}

TEST_CASE("a row whose outcome cannot be recorded is quarantined and holds back only its key") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string topic = unique_name("quarantine");
  // Any UPDATE of this key's rows fails: recording its outcome fails, and so does parking it.
  database.execute(
      "CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS $$"
      " BEGIN RAISE EXCEPTION 'this row cannot change'; END $$");
  database.execute(
      "CREATE TRIGGER cursed BEFORE UPDATE ON outbox.messages FOR EACH ROW"
      " WHEN (OLD.message_key = 'cursed') EXECUTE FUNCTION public.refuse()");
  write_good_rows(database, topic, "good", 10, 3);
  database.execute("SELECT outbox.publish($1, 'cursed', 'c:1'::text)", topic);

  RelayProcess relay(write_relay_config(database.url()));
  REQUIRE_MESSAGE(eventually(
                      [&] {
                        return relay.metrics_text().find(
                                   "outbox_rows_isolated_total{action=\"quarantined\"} 1") !=
                               std::string::npos;
                      },
                      30s),
                  relay.log_tail());
  // Later rows: of the quarantined row's key they wait behind it; of other keys they flow. c:2
  // comes first, so a claim that took the later good rows would have taken it too, had its key
  // not been held: by the time those are published, a wrongly claimed c:2 is in Kafka.
  database.execute("SELECT outbox.publish($1, 'cursed', 'c:2'::text)", topic);
  write_good_rows(database, topic, "good", 10, 3, 4);
  REQUIRE_MESSAGE(eventually([&] { return database.count("state = 'published'") == 60; }, 60s),
                  relay.log_tail());
  int cursed_copies = 0, cursed_later = 0;
  for (const auto& message : read_topic(topic)) {
    if (message.key != "cursed") continue;
    cursed_copies += message.payload == "c:1" ? 1 : 0;
    cursed_later += message.payload == "c:2" ? 1 : 0;
  }
  // Published once, not again and again: the quarantine keeps it out of later claims.
  CHECK(cursed_copies == 1);
  CHECK(cursed_later == 0);
  CHECK(database.count("state = 'pending'") == 2);
  CHECK(relay.log_tail(std::string::npos).find("event=row_quarantined") != std::string::npos);
  CHECK(relay.running());
  CHECK(relay.starts_logged() == 1);
}

TEST_CASE("a topic that does not exist holds back only its own rows, which flow once it exists") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string existing = unique_name("present");
  const std::string missing = unique_name("missing");
  create_topic(kafka_bootstrap(), existing, {{1}, {1}, {1}});
  const std::string config = write_relay_config(
      database.url(), {{"kafka.properties", "{allow.auto.create.topics: false}"}});
  RelayProcess relay(config);
  write_good_rows(database, missing, "m", 5, 4);
  write_good_rows(database, existing, "e", 10, 5);
  // Written after the missing topic's rows: they must not wait for them.
  require_flowing(database, relay, existing, "e", 10, 30s);
  CHECK(pending_of(database, missing) == 20);
  const std::string held_line = "event=topic_held topic=\"" + missing + "\"";
  REQUIRE(eventually(
      [&] { return relay.log_tail(std::string::npos).find(held_line) != std::string::npos; }, 10s));
  CHECK(relay.metrics_text().find("outbox_topic_held{error=") != std::string::npos);
  // status says why the oldest row of the missing topic waits.
  const auto status =
      nlohmann::json::parse(relay_command("status --json --config " + config).output);
  bool explained = false;
  for (const auto& topic : status["topics"]) {
    if (topic["topic"] == missing)
      explained = !topic["oldest_pending_error"].get<std::string>().empty();
  }
  CHECK(explained);

  create_topic(kafka_bootstrap(), missing, {{1}, {1}, {1}});
  REQUIRE_MESSAGE(eventually([&] { return pending_of(database, missing) == 0; }, 60s),
                  relay.log_tail());
  require_in_order(read_topic(missing), 5, 4);
  // Logged once per topic and error (and again only after a minute), not once per row or retry.
  CHECK(count_in(relay.log_tail(std::string::npos), held_line) <= 3);
  CHECK(relay.starts_logged() == 1);
}

TEST_CASE("a topic whose partitions lack in-sync replicas holds back only its own rows") {
  REQUIRE_FAULTABLE_SERVICES();
  run_services_script("broker2-start");
  // Killed at the end, and waited for until the cluster has fenced it: a topic auto-created by the
  // next test while broker 2 still counts as alive would get leaderless partitions on it.
  struct StopBroker2 {
    ~StopBroker2() {
      std::system((std::string(RELAY_SOURCE_DIR) + "/scripts/services broker2-kill").c_str());
      eventually(
          [] {
            const std::vector<int> ids = broker_ids(kafka_bootstrap());
            return std::find(ids.begin(), ids.end(), 2) == ids.end();
          },
          std::chrono::seconds(30));
    }
  } stop_broker2;
  TestDatabase database;
  const std::string replicated = unique_name("isr");
  const std::string single = unique_name("single");
  create_topic(kafka_bootstrap(), replicated, {{1, 2}, {1, 2}, {1, 2}},
               {{"min.insync.replicas", "2"}});
  create_topic(kafka_bootstrap(), single, {{1}, {1}, {1}});
  RelayProcess relay(write_relay_config(database.url()));
  write_good_rows(database, replicated, "r", 5, 2);
  write_good_rows(database, single, "s", 10, 2);
  REQUIRE_MESSAGE(eventually([&] { return database.count("state = 'pending'") == 0; }, 30s),
                  relay.log_tail());

  run_services_script("broker2-kill");
  // Broker 2 is fenced within the broker session timeout (4 s); from then on the replicated
  // topic's leader refuses writes with NOT_ENOUGH_REPLICAS.
  std::this_thread::sleep_for(6s);
  write_good_rows(database, replicated, "r", 5, 3, 3);
  write_good_rows(database, single, "s", 10, 3, 3);
  require_flowing(database, relay, single, "s", 10, 20s);
  CHECK(pending_of(database, replicated) == 15);
  CHECK(relay.metrics_text().find("outbox_topics_held 1") != std::string::npos);

  run_services_script("broker2-start");
  REQUIRE_MESSAGE(eventually([&] { return pending_of(database, replicated) == 0; }, 90s),
                  relay.log_tail());
  require_in_order(read_topic(replicated), 5, 5);
  CHECK(relay.starts_logged() == 1);
}

TEST_CASE("memory follows the byte budget, not rows times payload") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string topic = unique_name("big_rows");
  {
    pqxx::connection connection = database.connect();
    for (int chunk = 0; chunk < 10; ++chunk) {
      pqxx::work tx{connection};
      // 900 KB of random bytes each (incompressible, so TOAST keeps them at full size).
      tx.exec_params(
          "INSERT INTO outbox.messages (topic, message_key, payload)"
          " SELECT $1, 'k' || (g % 16), (SELECT string_agg(decode(md5(random()::text), 'hex'), '')"
          "                                FROM generate_series(1, 56250 + 0 * g))"
          "   FROM generate_series(1, 30) g",
          topic);
      tx.commit();
    }
  }
  REQUIRE(database.count("octet_length(payload) = 900000") == 300);
  RelayProcess relay(write_relay_config(database.url()));
  require_drained(database, relay, 180s);
  const long peak_kb = relay.peak_rss_kb();
  MESSAGE("peak RSS draining 300 rows of 900 KB: " << peak_kb / 1024 << " MB");
  CHECK(peak_kb > 0);
  CHECK(peak_kb < 128 * 1024);
  CHECK(read_topic(topic).size() == 300);
}

TEST_CASE("a row the claim cannot read is found, parked with its reason, and the rest flows") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string topic = unique_name("unreadable");
  // A routing column whose cast to text fails for one value: the claim's statement fails on that
  // row's data, which no expression of the relay can guard against.
  database.execute("CREATE TYPE public.route AS (name text)");
  database.execute(
      "CREATE FUNCTION public.route_text(r public.route) RETURNS text LANGUAGE plpgsql AS $$"
      " BEGIN IF r.name = 'unreadable' THEN RAISE EXCEPTION 'cannot read this route'; END IF;"
      " RETURN r.name; END $$");
  database.execute(
      "CREATE CAST (public.route AS text) WITH FUNCTION public.route_text(public.route)");
  database.execute("ALTER TABLE outbox.messages ADD COLUMN route public.route");
  auto insert = [&](const std::string& route, const std::string& key, const std::string& payload) {
    database.execute(
        "INSERT INTO outbox.messages (route, message_key, payload)"
        " VALUES (ROW($1)::public.route, $2, convert_to($3, 'UTF8'))",
        route, key, payload);
  };
  for (int i = 1; i <= 5; ++i) insert(topic, "good", "good:" + std::to_string(i));
  insert("unreadable", "bad", "bad:1");
  for (int i = 6; i <= 10; ++i) insert(topic, "good", "good:" + std::to_string(i));

  RelayProcess relay(write_relay_config(
      database.url(), {{"routing.topic_column", "route"}, {"metrics.enabled", "false"}}));
  REQUIRE_MESSAGE(eventually([&] { return database.count("state = 'published'") == 10; }, 30s),
                  relay.log_tail());
  CHECK(database.count("state = 'dead' AND message_key = 'bad'"
                       " AND last_error LIKE 'could not be read: %cannot read this route%'") == 1);
  require_in_order(read_topic(topic), 1, 10);
  const std::string log = relay.log_tail(std::string::npos);
  CHECK(log.find("event=claim_failed") != std::string::npos);
  CHECK(log.find("event=row_parked_dead id=6 ") != std::string::npos);
  CHECK(relay.running());
  CHECK(relay.starts_logged() == 1);
}
