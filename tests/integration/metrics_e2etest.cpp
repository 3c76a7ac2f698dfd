// Specifications of the monitoring surface: /metrics reports the right numbers for a database put
// in a known state, and the listener serves its three endpoints and nothing else.
#include <doctest/doctest.h>
#include <httplib.h>

#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <regex>
#include <thread>
#include <vector>

#include "relay/store/lag_reader.hpp"
#include "tests/support/relay_process.hpp"
#include "tests/support/services.hpp"
#include "tests/support/test_database.hpp"
#include "tests/support/workload.hpp"

using namespace outbox::test;
using namespace std::chrono_literals;

namespace {

double metric(const std::string& page, const std::string& series) {
  return metric_value(page, series);
}

/// A TCP connection to 127.0.0.1:port that this test holds open, closed on destruction.
class HeldConnection {
 public:
  explicit HeldConnection(int port) : fd_(socket(AF_INET, SOCK_STREAM, 0)) {
    REQUIRE(fd_ >= 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<std::uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  }
  ~HeldConnection() { close(fd_); }
  HeldConnection(const HeldConnection&) = delete;
  HeldConnection& operator=(const HeldConnection&) = delete;
  void send_text(std::string_view text) {
    CHECK(send(fd_, text.data(), text.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(text.size()));
  }

 private:
  int fd_;
};

}  // namespace

TEST_CASE("/metrics reports backlog, lag, unknown, dead and published rows of a known database") {
  REQUIRE_SERVICES();
  TestDatabase database;
  const std::string topic = unique_name("metrics");
  {
    pqxx::connection connection = database.connect();
    pqxx::work tx{connection};
    // A dead row blocks its key, so the three rows behind it stay pending while the relay runs.
    tx.exec_params(
        "INSERT INTO outbox.messages (topic, message_key, payload, state, created_at)"
        " VALUES ($1, 'blocked', 'x', 'dead', now() - interval '1 hour')",
        topic);
    tx.exec_params(
        "INSERT INTO outbox.messages (topic, message_key, payload, created_at)"
        " SELECT $1, 'blocked', 'x', now() - interval '90 seconds'"
        " FROM generate_series(1, 3)",
        topic);
    tx.exec_params(
        "SELECT outbox.prepare($1, 'h', 'x'::text, '{}'::jsonb, 'g', 'tx-' || n)"
        " FROM generate_series(1, 2) n",
        topic);
    tx.exec_params("SELECT outbox.publish($1, 'free', 'x'::text) FROM generate_series(1, 5)",
                   topic);
    tx.commit();
  }
  pqxx::connection holder = database.connect();
  pqxx::work open_transaction{holder};
  open_transaction.exec("SELECT txid_current()");  // an open transaction, 2+ s old at scrape time

  RelayProcess relay(write_relay_config(
      database.url(), {{"checkback.enabled", "false"}, {"metrics.refresh_interval_ms", "200"}}));
  httplib::Client client("127.0.0.1", relay.metrics_port());
  REQUIRE(eventually([&] { return database.count("state = 'published'") == 5; }, 20s));
  std::this_thread::sleep_for(2s);

  const auto response = client.Get("/metrics");
  REQUIRE(response);
  CHECK(response->status == 200);
  const std::string& page = response->body;
  CHECK(metric(page, "outbox_backlog_rows{topic=\"" + topic + "\"}") == 3);
  CHECK(metric(page, "outbox_oldest_pending_age_seconds{topic=\"" + topic + "\"}") >= 90);
  CHECK(metric(page, "outbox_oldest_pending_age_seconds{topic=\"" + topic + "\"}") < 200);
  CHECK(metric(page, "outbox_unknown_rows") == 2);
  CHECK(metric(page, "outbox_dead_rows") == 1);
  CHECK(metric(page, "outbox_published_total") == 5);
  CHECK(metric(page, "outbox_insert_to_ack_seconds_count") == 5);
  CHECK(metric(page, "outbox_lanes_owned") == 16);
  CHECK(metric(page, "outbox_oldest_transaction_age_seconds") >= 2);
  CHECK(metric(page, "outbox_publish_errors_total{kind=\"permanent\"}") == 0);
  CHECK(page.find("# TYPE outbox_batch_size_rows histogram") != std::string::npos);
  open_transaction.abort();
}

/// 100,000 rows published a day ago: the audit history a user keeps, which no gauge may read.
static void keep_published_history(const TestDatabase& database) {
  database.execute(
      "INSERT INTO outbox.messages (topic, payload, state, created_at, published_at)"
      " SELECT 'history', 'x', 'published', now() - interval '1 day', now() - interval '1 day'"
      "   FROM generate_series(1, 100000)");
}

TEST_CASE("the lag gauges' count of recently finished rows never reads the kept history") {
  REQUIRE_SERVICES();
  TestDatabase database;
  // 100,000 rows published a day ago (audit history) and 10 in the last minute. The query may
  // touch the index pages and rows of those 10; reading the history costs hundreds of pages or
  // more, whether through the index (as with clock_timestamp(), which cannot bound it) or not.
  keep_published_history(database);
  database.execute(
      "INSERT INTO outbox.messages (topic, payload, state, published_at)"
      " SELECT 'recent', 'x', 'published', now() FROM generate_series(1, 10)");
  database.execute("ANALYZE outbox.messages");
  pqxx::connection connection = database.connect();
  pqxx::nontransaction tx{connection};
  const std::string sql = outbox::finished_last_minute_sql(outbox::RoutingConfig{});
  const auto counted = tx.exec(sql);
  REQUIRE(counted.size() == 1);
  CHECK(counted[0][0].as<std::string>() == "recent");
  CHECK(counted[0][1].as<int>() == 10);
  const auto plan = nlohmann::json::parse(
      tx.exec1("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql)[0].as<std::string>());
  const auto& top = plan[0]["Plan"];
  const int pages = top["Shared Hit Blocks"].get<int>() + top["Shared Read Blocks"].get<int>();
  INFO("plan: " << plan.dump());
  CHECK(pages < 50);
}

TEST_CASE("a refresh of the lag gauges reads none of the kept history") {
  REQUIRE_SERVICES();
  TestDatabase database;
  // 100,000 rows published a day ago, and one row of each other state.
  keep_published_history(database);
  database.execute(
      "INSERT INTO outbox.messages (topic, payload, state, last_error, last_check_answer)"
      " SELECT 'now', 'x', s::outbox.row_state, 'why', 'UNKNOWN'"
      "   FROM unnest(ARRAY['pending', 'unknown', 'dead']) s");
  // With column statistics, and with only VACUUM's row count (autovacuum analyzes later): the
  // planner then guessed hundreds of unknown rows and read the primary key in id order for the
  // oldest one's answer, the whole table.
  SUBCASE("analyzed") { database.execute("ANALYZE outbox.messages"); }
  SUBCASE("vacuumed, not yet analyzed") {
    pqxx::connection connection = database.connect();
    pqxx::nontransaction{connection}.exec("VACUUM outbox.messages");
  }
  // Heap pages of the table read by sessions that have ended.
  const std::string pages_read_sql =
      "SELECT coalesce(heap_blks_hit, 0) + coalesce(heap_blks_read, 0)"
      " FROM pg_statio_user_tables WHERE relid = 'outbox.messages'::regclass";
  const long long before = database.settled_figure(pages_read_sql);
  {
    outbox::PostgresConfig postgres;
    postgres.url = database.url();
    outbox::LagReader reader(postgres, outbox::RoutingConfig{});
    const outbox::LagSnapshot lag = reader.read();
    CHECK(lag.dead_rows == 1);
    CHECK(lag.unknown_rows == 1);
  }  // its session ends here and reports what it read
  // The rows of interest share a page or two; without an index over dead rows, counting them read
  // the history too: 1,339 pages.
  const long long read = database.settled_figure(pages_read_sql) - before;
  CHECK(read > 0);
  CHECK(read < 50);
}

TEST_CASE("the metrics listener serves /metrics, /healthz and /readyz, and nothing else") {
  REQUIRE_SERVICES();
  TestDatabase database;
  RelayProcess relay(write_relay_config(database.url()));
  httplib::Client client("127.0.0.1", relay.metrics_port());
  const auto health = client.Get("/healthz");
  REQUIRE(health);
  CHECK(health->status == 200);
  REQUIRE(eventually(
      [&] {
        const auto ready = client.Get("/readyz");
        return ready && ready->status == 200;
      },
      15s));
  CHECK(client.Get("/readyz")->body.find("lanes_owned 16") != std::string::npos);
  CHECK(client.Get("/")->status == 404);
  CHECK(client.Get("/metrics/../etc/passwd")->status == 404);
  CHECK(client.Get("/admin")->status == 404);
  const auto post = client.Post("/metrics", "x", "text/plain");
  CHECK(post->status == 405);
  CHECK(post->get_header_value("Allow") == "GET, HEAD");
}

TEST_CASE("the listener answers probes within 1 s while 500 idle and 10 slow clients hang on") {
  REQUIRE_SERVICES();
  TestDatabase database;
  RelayProcess relay(write_relay_config(database.url()));
  std::vector<std::unique_ptr<HeldConnection>> idle, slow;
  for (int i = 0; i < 500; ++i)
    idle.push_back(std::make_unique<HeldConnection>(relay.metrics_port()));
  for (int i = 0; i < 10; ++i) {
    slow.push_back(std::make_unique<HeldConnection>(relay.metrics_port()));
    slow.back()->send_text("GET /metrics HTTP/1.1\r\nHo");  // and never the rest
  }
  // A request with 100 kB of headers is refused without harm to the listener.
  {
    httplib::Client client("127.0.0.1", relay.metrics_port());
    client.set_read_timeout(5s);
    const auto huge = client.Get("/healthz", {{"X-Filler", std::string(100000, 'x')}});
    CHECK((!huge || huge->status >= 400));
  }
  for (int round = 0; round < 5; ++round) {
    for (const char* path : {"/healthz", "/metrics"}) {
      httplib::Client client("127.0.0.1", relay.metrics_port());
      client.set_connection_timeout(1s);
      client.set_read_timeout(1s);
      client.set_write_timeout(1s);
      const auto start = std::chrono::steady_clock::now();
      const auto response = client.Get(path);
      INFO(std::string(path) << " after "
                             << (std::chrono::steady_clock::now() - start).count() / 1000000
                             << " ms, round " << round);
      REQUIRE(response);
      CHECK(response->status == 200);
    }
    for (auto& connection : slow) connection->send_text("s");  // one byte now and then
  }
  CHECK(relay.running());
}

TEST_CASE("/readyz follows Kafka: ready, not ready while the broker hangs, ready again") {
  REQUIRE_FAULTABLE_SERVICES();
  TestDatabase database;
  RelayProcess relay(write_relay_config(database.url()));
  httplib::Client client("127.0.0.1", relay.metrics_port());
  client.set_read_timeout(std::chrono::seconds(2));
  auto ready_status = [&] {
    const auto ready = client.Get("/readyz");
    return ready ? ready->status : -1;
  };
  // Ready first, so a readiness that is never updated (it starts false) cannot pass below.
  REQUIRE(eventually([&] { return ready_status() == 200; }, 20s));

  run_services_script("kafka-pause");
  struct Resume {
    ~Resume() {
      try {
        run_services_script("kafka-resume");
      } catch (...) {
      }
    }
  } resume_at_end;
  CHECK(eventually([&] { return ready_status() == 503; }, 30s));
  const auto body = client.Get("/readyz");
  REQUIRE(body);
  CHECK(body->body.find("kafka unreachable") != std::string::npos);
  CHECK(client.Get("/healthz")->status == 200);  // alive, only not ready

  run_services_script("kafka-resume");
  CHECK(eventually([&] { return ready_status() == 200; }, 30s));
}

TEST_CASE("/readyz says not ready when Kafka was never reachable") {
  REQUIRE_SERVICES();
  TestDatabase database;
  RelayProcess relay(
      write_relay_config(database.url(), {{"kafka.bootstrap_servers", "\"127.0.0.1:1\""}}));
  httplib::Client client("127.0.0.1", relay.metrics_port());
  // PostgreSQL answers and lanes are taken, so only Kafka can be what is missing.
  REQUIRE(eventually(
      [&] { return relay.log_tail().find("event=lanes_rebalanced") != std::string::npos; }, 20s));
  const auto ready = client.Get("/readyz");
  REQUIRE(ready);
  CHECK(ready->status == 503);
  CHECK(ready->body.find("kafka unreachable") != std::string::npos);
  CHECK(ready->body.find("postgres ok") != std::string::npos);
  CHECK(client.Get("/healthz")->status == 200);
}
