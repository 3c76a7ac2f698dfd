// Specifications of transactional half messages and the check-back sweeper: real PostgreSQL, real
// Kafka, the real relay binary, and a real HTTP status endpoint started by the test.
#include <doctest/doctest.h>
#include <httplib.h>

#include <unistd.h>

#include <thread>

#include "tests/support/kafka_reader.hpp"
#include "tests/support/relay_process.hpp"
#include "tests/support/services.hpp"
#include "tests/support/status_endpoint.hpp"
#include "tests/support/test_database.hpp"
#include "tests/support/test_pki.hpp"
#include "tests/support/workload.hpp"

using namespace outbox::test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

constexpr const char* kGroup = "orders-service";

/// A relay whose sweeper checks quickly: rows are due 200 ms after prepare, UNKNOWN is asked again
/// after 500 ms (then 1 s, 2 s, ...).
std::string checkback_config(const TestDatabase& database, const StatusEndpoint& endpoint,
                             std::map<std::string, std::string> overrides = {}) {
  overrides.emplace("checkback.check_delay_ms", "200");
  overrides.emplace("checkback.check_interval_ms", "500");
  overrides.emplace("checkback.sweep_interval_ms", "100");
  overrides.emplace("checkback.endpoints", "{" + std::string(kGroup) + ": {url: \"" +
                                               endpoint.url() +
                                               "\", timeout_ms: 300, max_concurrent_checks: 16, "
                                               "max_checks_per_second: 5000}}");
  return write_relay_config(database.url(), overrides);
}

long long prepare(const TestDatabase& database, const std::string& topic,
                  const std::string& transaction_id, const std::string& key = "k") {
  pqxx::connection connection = database.connect();
  pqxx::work tx{connection};
  const long long id =
      tx.exec_params1("SELECT outbox.prepare($1, $2, $3::text, '{\"h\": \"v\"}'::jsonb, $4, $5)",
                      topic, key, "payload-" + transaction_id, kGroup, transaction_id)[0]
          .as<long long>();
  tx.commit();
  return id;
}

std::string column(const TestDatabase& database, const std::string& name, long long id) {
  return database.scalar("SELECT " + name +
                         " FROM outbox.messages WHERE id = " + std::to_string(id));
}

std::string transaction_of(const json& request) {
  return request.value("transaction_id", std::string{});
}

}  // namespace

TEST_CASE("COMMIT publishes a half message once, ROLLBACK never, UNKNOWN asks again on schedule") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string topic = unique_name("verdicts");
  StatusEndpoint endpoint([](const json& request) {
    const std::string tx = transaction_of(request);
    return StatusEndpoint::status(tx == "tx-commit"     ? "COMMIT"
                                  : tx == "tx-rollback" ? "ROLLBACK_MESSAGE"
                                                        : "UNKNOWN");
  });
  const long long committed = prepare(database, topic, "tx-commit");
  const long long rolled_back = prepare(database, topic, "tx-rollback");
  const long long undecided = prepare(database, topic, "tx-unknown");
  RelayProcess relay(checkback_config(database, endpoint));

  REQUIRE_MESSAGE(
      eventually([&] { return column(database, "state", committed) == "published"; }, 20s),
      relay.log_tail());
  REQUIRE(eventually([&] { return endpoint.requests_for(undecided) >= 3; }, 20s));
  CHECK(column(database, "state", rolled_back) == "rolled_back");
  CHECK(column(database, "state", undecided) == "unknown");
  CHECK(endpoint.requests_for(committed) == 1);
  CHECK(endpoint.requests_for(rolled_back) == 1);

  // The request names the row; check numbers count up; the row's count is the requests sent.
  const auto requests = endpoint.requests_of(undecided);
  CHECK(requests[0]["producer_group"] == kGroup);
  CHECK(requests[0]["transaction_id"] == "tx-unknown");
  CHECK(requests[0]["topic"] == topic);
  CHECK(requests[0]["key"] == "k");
  CHECK(requests[0]["headers"]["h"] == "v");
  CHECK(requests[0]["created_at"].get<std::string>().size() > 10);
  for (std::size_t i = 0; i < requests.size(); ++i) CHECK(requests[i]["check_number"] == i + 1);
  CHECK(endpoint.shortest_gap_between_checks() >= 500ms);
  CHECK(std::stoi(column(database, "check_count", undecided)) >= 2);
  CHECK(column(database, "last_check_answer", undecided) == "UNKNOWN");

  const auto messages = read_topic(topic);
  REQUIRE(messages.size() == 1);
  CHECK(messages[0].outbox_id == committed);
  CHECK(messages[0].payload == "payload-tx-commit");
}

TEST_CASE("garbage from the endpoint changes nothing but the check count") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string topic = unique_name("garbage");
  StatusEndpoint endpoint([](const json& request) -> EndpointReply {
    const std::string tx = transaction_of(request);
    if (tx == "http-500") return {500, R"({"status": "COMMIT"})", "", 0ms};
    if (tx == "hang") return {200, R"({"status": "COMMIT"})", "", 1500ms};
    if (tx == "invalid-json") return {200, R"({"status": "COMMIT")", "", 0ms};
    if (tx == "unknown-status") return StatusEndpoint::status("MAYBE");
    if (tx == "huge")
      return {200, R"({"status": "COMMIT", "pad": ")" + std::string(200'000, 'x') + "\"}", "", 0ms};
    if (tx == "redirect") return {302, "", "http://127.0.0.1:1/commit-elsewhere", 0ms};
    return StatusEndpoint::status("COMMIT");
  });
  const std::map<std::string, std::string> expected_answer{
      {"http-500", "HTTP 500"},         {"hang", "no answer within 300 ms"},
      {"invalid-json", "invalid JSON"}, {"unknown-status", "unknown status 'MAYBE'"},
      {"huge", "answer longer than"},   {"redirect", "HTTP 302"}};
  std::map<std::string, long long> ids;
  for (const auto& [tx, answer] : expected_answer) ids[tx] = prepare(database, topic, tx, tx);
  RelayProcess relay(checkback_config(database, endpoint));

  REQUIRE_MESSAGE(eventually([&] { return database.count("check_count >= 2") == 6; }, 30s),
                  relay.log_tail());
  for (const auto& [tx, answer] : expected_answer) {
    CAPTURE(tx);
    CHECK(column(database, "state", ids[tx]) == "unknown");
    CHECK(column(database, "last_check_answer", ids[tx]).starts_with(answer));
    CHECK(std::stoi(column(database, "check_count", ids[tx])) <= endpoint.requests_for(ids[tx]));
  }
  CHECK(read_topic(topic, 2s).empty());

  // Each kind of bad answer is visible in the metrics.
  httplib::Client client("127.0.0.1", relay.metrics_port());
  const std::string page = client.Get("/metrics")->body;
  for (const char* kind :
       {"http_status", "timeout", "invalid_answer", "unknown_status", "too_large"}) {
    CAPTURE(kind);
    CHECK(page.find(std::string("outbox_checkback_errors_total{kind=\"") + kind + "\"}") !=
          std::string::npos);
  }
  CHECK(page.find("outbox_checkback_checks_total{outcome=\"failed\"}") != std::string::npos);
}

TEST_CASE("https endpoints: a private CA and a client certificate work; a TLS failure is seen") {
  REQUIRE_SERVICES();
  TestDatabase database;
  TestPki pki;
  // The endpoint's certificate is signed by the private CA, and it asks for a client certificate
  // signed by that CA too (mutual TLS).
  StatusEndpoint endpoint([](const json&) { return StatusEndpoint::status("COMMIT"); },
                          EndpointTls{pki.server_cert(), pki.server_key(), pki.ca_cert()});
  const std::string topic = unique_name("tls");
  const std::string trusted = ", ca_file: \"" + pki.ca_cert() + "\"";
  const std::string client_cert =
      ", cert_file: \"" + pki.client_cert() + "\", key_file: \"" + pki.client_key() + "\"";
  auto group = [&](const std::string& name, const std::string& files) {
    return name + ": {url: \"" + endpoint.url() + "\", timeout_ms: 3000" + files + "}";
  };
  const std::string endpoints =
      "{" + group("mutual", trusted + client_cert) + ", " + group("system-cas-only", client_cert) +
      ", " + group("other-ca", ", ca_file: \"" + pki.other_ca_cert() + "\"" + client_cert) + ", " +
      group("no-client-cert", trusted) + "}";
  auto prepare_in = [&](const std::string& producer_group) {
    return database
        .scalar("SELECT outbox.prepare('" + topic + "', 'k', 'p'::text, '{}'::jsonb, '" +
                producer_group + "', 'tx-" + producer_group + "')")
        .size();  // the id, as text; read back below by group
  };
  for (const char* name : {"mutual", "system-cas-only", "other-ca", "no-client-cert"}) {
    prepare_in(name);
  }
  auto of_group = [&](const std::string& what, const std::string& producer_group) {
    return database.scalar("SELECT " + what + " FROM outbox.messages WHERE producer_group = '" +
                           producer_group + "'");
  };
  const std::string config =
      write_relay_config(database.url(), {{"checkback.check_delay_ms", "200"},
                                          {"checkback.check_interval_ms", "4000"},
                                          {"checkback.sweep_interval_ms", "100"},
                                          {"checkback.max_checks", "2"},
                                          {"checkback.endpoints", endpoints}});
  RelayProcess relay(config);

  REQUIRE_MESSAGE(eventually([&] { return of_group("state::text", "mutual") == "published"; }, 20s),
                  relay.log_tail());
  CHECK(read_topic(topic).size() == 1);

  // The first failed check counts, and status says why the undecided rows wait.
  REQUIRE(eventually([&] { return of_group("check_count", "system-cas-only") == "1"; }, 10s));
  const CommandResult status = relay_command("status --config " + config);
  CHECK_MESSAGE(status.output.find("last answer: TLS: ") != std::string::npos, status.output);
  CHECK(relay.log_tail(std::string::npos).find("event=checkback_tls_failed") != std::string::npos);
  httplib::Client client("127.0.0.1", relay.metrics_port());
  CHECK(client.Get("/metrics")->body.find("outbox_checkback_errors_total{kind=\"tls\"}") !=
        std::string::npos);

  // Each failing row ends dead after max_checks, and `dead list` gives the failure as its reason:
  // none waits forever unseen, none reached the endpoint's handler.
  for (const std::string name : {"system-cas-only", "other-ca", "no-client-cert"}) {
    CAPTURE(name);
    REQUIRE_MESSAGE(eventually([&] { return of_group("state::text", name) == "dead"; }, 30s),
                    of_group("last_check_answer", name));
    CHECK(of_group("check_count", name) == "2");
  }
  const CommandResult dead = relay_command("dead list --json --config " + config);
  const json listed = json::parse(dead.output);
  REQUIRE(listed.size() == 3);
  for (const json& row : listed) {
    CHECK_MESSAGE(
        row["reason"].get<std::string>().starts_with("check-back exhausted; last answer: TLS: "),
        row.dump());
  }
  CHECK(endpoint.total_requests() == 1);
}

TEST_CASE("after the last allowed check a row is parked dead, and once requeued it is resolved") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string topic = unique_name("exhausted");
  std::atomic<bool> writer_knows{false};
  StatusEndpoint endpoint(
      [&](const json&) { return StatusEndpoint::status(writer_knows ? "COMMIT" : "UNKNOW"); });
  const long long id = prepare(database, topic, "tx-slow");
  RelayProcess relay(checkback_config(database, endpoint, {{"checkback.max_checks", "2"}}));

  REQUIRE_MESSAGE(eventually([&] { return column(database, "state", id) == "dead"; }, 20s),
                  relay.log_tail());
  CHECK(column(database, "last_error", id) == "check-back exhausted");
  CHECK(column(database, "check_count", id) == "2");
  CHECK(endpoint.requests_for(id) == 2);
  std::this_thread::sleep_for(1500ms);
  CHECK(endpoint.requests_for(id) == 2);  // a dead row is not asked again

  writer_knows = true;
  CHECK(database.scalar("SELECT outbox.requeue(" + std::to_string(id) + ")") == "unknown");
  REQUIRE(eventually([&] { return column(database, "state", id) == "published"; }, 20s));
  CHECK(endpoint.requests_for(id) == 3);
  CHECK(read_topic(topic).size() == 1);
}

TEST_CASE("when the writer decides while a check is in flight, the writer's decision stands") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string topic = unique_name("race");
  // The endpoint answers the opposite of what the writer decides while the request is open.
  StatusEndpoint endpoint([&](const json& request) {
    pqxx::connection connection = database.connect();
    pqxx::work tx{connection};
    const bool writer_rolls_back = transaction_of(request) == "writer-rolls-back";
    tx.exec_params(
        writer_rolls_back ? "SELECT outbox.rollback($1, $2)" : "SELECT outbox.commit($1, $2)",
        kGroup, transaction_of(request));
    tx.commit();
    return StatusEndpoint::status(writer_rolls_back ? "COMMIT" : "ROLLBACK");
  });
  const long long rolled_back = prepare(database, topic, "writer-rolls-back", "a");
  const long long committed = prepare(database, topic, "writer-commits", "b");
  RelayProcess relay(checkback_config(database, endpoint));

  REQUIRE_MESSAGE(
      eventually([&] { return column(database, "state", committed) == "published"; }, 20s),
      relay.log_tail());
  CHECK(column(database, "state", rolled_back) == "rolled_back");
  const auto messages = read_topic(topic);
  REQUIRE(messages.size() == 1);
  CHECK(messages[0].outbox_id == committed);
}

TEST_CASE("the SQL API is idempotent and refuses illegal transitions") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const long long id = prepare(database, "t", "tx-1");
  CHECK(database.scalar("SELECT outbox.commit(" + std::to_string(id) + ")") == "1");
  CHECK(database.scalar("SELECT outbox.commit('orders-service', 'tx-1')") == "0");  // again: no-op
  CHECK_THROWS_WITH_AS(database.scalar("SELECT outbox.rollback(" + std::to_string(id) + ")"),
                       doctest::Contains("cannot roll back message"), pqxx::sql_error);
  const long long other = prepare(database, "t", "tx-2");
  CHECK(database.scalar("SELECT outbox.rollback('orders-service', 'tx-2')") == "1");
  CHECK(database.scalar("SELECT outbox.rollback(" + std::to_string(other) + ")") == "0");
  CHECK_THROWS_WITH_AS(database.scalar("SELECT outbox.commit(" + std::to_string(other) + ")"),
                       doctest::Contains("cannot commit message"), pqxx::sql_error);
  CHECK(column(database, "state", other) == "rolled_back");
}

TEST_CASE("two relay instances never check one row twice within one interval") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string topic = unique_name("two_sweepers");
  StatusEndpoint endpoint([](const json&) { return StatusEndpoint::status("UNKNOWN"); });
  database.execute(
      "SELECT outbox.prepare($1, 'k' || n, 'x'::text, '{}'::jsonb, $2, 'tx-' || n)"
      "  FROM generate_series(1, 300) n",
      topic, kGroup);
  const std::string config =
      checkback_config(database, endpoint,
                       {{"checkback.check_interval_ms", "1000"}, {"checkback.batch_size", "20"}});
  RelayProcess first(config);
  RelayProcess second(config);
  // Until every row was checked at least twice (a deadline, not a fixed sleep): the gap between a
  // row's checks is then measured over both instances' work.
  REQUIRE_MESSAGE(eventually([&] { return database.count("check_count < 2") == 0; }, 60s),
                  database.count("check_count < 2") << " rows checked fewer than twice");
  CHECK(endpoint.total_requests() >= 600);
  CHECK(endpoint.shortest_gap_between_checks() >= 1000ms);
}

TEST_CASE("10,000 stale half messages resolve with bounded concurrency while publishing goes on") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string topic = unique_name("many_checks");
  StatusEndpoint endpoint([](const json& request) -> EndpointReply {
    const bool commit = request.value("id", 0LL) % 2 == 0;
    return {200, json{{"status", commit ? "COMMIT" : "ROLLBACK"}}.dump(), "", 20ms};
  });
  database.execute(
      "SELECT outbox.prepare($1, 'k' || (n % 100), 'x'::text, '{}'::jsonb, $2, 'tx-' || n)"
      "  FROM generate_series(1, 10000) n",
      topic, kGroup);
  RelayProcess relay(checkback_config(
      database, endpoint, {{"checkback.batch_size", "500"}, {"checkback.check_delay_ms", "0"}}));
  // Publishing of ordinary rows goes on while the checks run: they are all out long before the
  // last check, though the endpoint takes 20 ms a request.
  const std::string plain_topic = unique_name("plain");
  REQUIRE(eventually([&] { return endpoint.total_requests() > 100; }, 20s));
  write_sequenced_rows(database, plain_topic, 2'000, 50, /*writers=*/2);
  REQUIRE(eventually(
      [&] { return database.count("topic = '" + plain_topic + "' AND state = 'pending'") == 0; },
      20s));
  CHECK(database.count("state = 'unknown'") > 0);  // checks were still running meanwhile

  REQUIRE_MESSAGE(eventually([&] { return database.count("state = 'unknown'") == 0; }, 120s),
                  relay.log_tail());
  require_drained(database, relay);
  CHECK(endpoint.max_concurrent() <= 16);
  // One request a row, and one more for each check that got no usable answer (a timeout on a
  // loaded machine is an UNKNOWN, asked again later): never a row asked twice for nothing.
  const std::string metrics = relay.metrics_text();
  const double failed = metric_value(metrics, "outbox_checkback_checks_total{outcome=\"failed\"}");
  CHECK(metric_value(metrics, "outbox_checkback_checks_total{outcome=\"commit\"}") == 5'000);
  CHECK(metric_value(metrics, "outbox_checkback_checks_total{outcome=\"rollback\"}") == 5'000);
  CHECK(endpoint.total_requests() == 10'000 + std::max(0.0, failed));
  CHECK(database.count("topic = '" + topic + "' AND state = 'published'") == 5'000);
  CHECK(database.count("state = 'rolled_back'") == 5'000);
  CHECK(read_topic(topic).size() == 5'000);
}

TEST_CASE("the example writer's crashed payments are resolved through its own endpoint") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const int port = 20000 + static_cast<int>(getpid() % 20000);
  const std::string url = "http://127.0.0.1:" + std::to_string(port) + "/outbox/check";
  RelayProcess relay(write_relay_config(
      database.url(), {{"checkback.check_delay_ms", "300"},
                       {"checkback.sweep_interval_ms", "100"},
                       {"checkback.endpoints", "{example-writer: {url: \"" + url + "\"}}"}}));
  const std::string command = std::string(EXAMPLE_WRITER_BINARY) + " --database " + database.url() +
                              " --payments 60 --crash-rate 0.5 --port " + std::to_string(port) +
                              " --serve-seconds 6 > /dev/null";
  REQUIRE(std::system(command.c_str()) == 0);
  require_drained(database, relay);
  const auto mismatched = database.scalar(
      "SELECT count(*) FROM example_payments p JOIN outbox.messages m"
      "  ON m.transaction_id = p.transaction_id"
      " WHERE NOT ((p.status = 'charged' AND m.state = 'published')"
      "         OR (p.status = 'failed' AND m.state = 'rolled_back'))");
  CHECK(mismatched == "0");
  CHECK(database.count("transaction_id IS NOT NULL") == 60);
  CHECK(database.count("check_count > 0") > 0);  // some really were resolved by check-back
}

TEST_CASE("a half message that cannot be recorded holds back only itself: the sweeper goes on") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string topic = unique_name("cb_poison");
  // No UPDATE of 'cursed' works, so not even its lease for a check; 'stubborn' takes the lease
  // but cannot change state, so recording its answer fails, and so does parking it.
  database.execute(
      "CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS $$"
      " BEGIN RAISE EXCEPTION 'this row cannot change'; END $$");
  database.execute(
      "CREATE TRIGGER cursed BEFORE UPDATE ON outbox.messages FOR EACH ROW"
      " WHEN (OLD.transaction_id = 'cursed' OR"
      "       (OLD.transaction_id = 'stubborn' AND NEW.state <> OLD.state))"
      " EXECUTE FUNCTION public.refuse()");
  StatusEndpoint endpoint([](const json& request) {
    const std::string transaction = transaction_of(request);
    return StatusEndpoint::status(transaction.rfind("go-", 0) == 0 ? "COMMIT" : "UNKNOWN");
  });
  // Exhausted at its first UNKNOWN: parked dead with a 5 kB key (a btree entry's limit is ~2.7 kB).
  const long long long_key = prepare(database, topic, "long-key", std::string(5000, 'k'));
  const long long cursed = prepare(database, topic, "cursed", "cursed-key");
  const long long stubborn = prepare(database, topic, "stubborn", "stubborn-key");
  RelayProcess relay(checkback_config(database, endpoint, {{"checkback.max_checks", "1"}}));
  REQUIRE_MESSAGE(eventually([&] { return column(database, "state", long_key) == "dead"; }, 30s),
                  relay.log_tail());
  CHECK(column(database, "last_error", long_key) == "check-back exhausted");
  // Half messages written after the two poisons are still checked and published.
  for (int i = 0; i < 20; ++i) prepare(database, topic, "go-" + std::to_string(i));
  REQUIRE_MESSAGE(eventually([&] { return database.count("state = 'published'") == 20; }, 60s),
                  relay.log_tail());
  const std::string log = relay.log_tail(std::string::npos);
  for (const long long id : {cursed, stubborn}) {
    CHECK(column(database, "state", id) == "unknown");
    CHECK(log.find("event=half_message_quarantined id=" + std::to_string(id)) != std::string::npos);
  }
  // Quarantined: never asked, or asked once, not again and again.
  CHECK(endpoint.requests_for(cursed) == 0);
  CHECK(endpoint.requests_for(stubborn) == 1);
  CHECK(relay.starts_logged() == 1);
}
