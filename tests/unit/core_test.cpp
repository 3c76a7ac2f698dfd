// Specifications of the pure parts: state transitions, routing, header decoding, backoff, and the
// array literals the store sends to PostgreSQL.
#include <doctest/doctest.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "relay/config/config.hpp"
#include "relay/core/backoff.hpp"
#include "relay/core/periodic.hpp"
#include "relay/core/routing.hpp"
#include "relay/core/row_state.hpp"
#include "relay/store/store.hpp"

using namespace outbox;
using namespace std::chrono_literals;

TEST_CASE("row states round-trip through their names and match the SQL enum") {
  // The SQL enum is created in 001 and extended by later migrations; together they must name
  // exactly the C++ states, in order.
  std::string schema_text;
  for (const char* file : {"001_outbox.sql", "003_discarded_state.sql"}) {
    std::ifstream schema(std::string(RELAY_SOURCE_DIR) + "/schema/" + file);
    std::stringstream text;
    text << schema.rdbuf();
    schema_text += text.str();
  }
  std::string sql_enum = "CREATE TYPE outbox.row_state AS ENUM (";
  for (RowState state : kAllRowStates) {
    CHECK(parse_row_state(to_string(state)) == state);
    if (state == RowState::discarded) continue;
    sql_enum += std::string(state == kAllRowStates.front() ? "'" : ", '") +
                std::string(to_string(state)) + "'";
  }
  CHECK(schema_text.find(sql_enum + ");") != std::string::npos);
  CHECK(schema_text.find("ALTER TYPE outbox.row_state ADD VALUE IF NOT EXISTS 'discarded';") !=
        std::string::npos);
  CHECK_FALSE(parse_row_state("PENDING").has_value());
}

TEST_CASE("a topic pattern replaces every {value} with the routing column's value") {
  CHECK(resolve_topic("{value}", "orders") == "orders");
  CHECK(resolve_topic("outbox.event.{value}", "Order") == "outbox.event.Order");
  CHECK(resolve_topic("{value}.{value}", "a") == "a.a");
  CHECK(resolve_topic("fixed", "ignored") == "fixed");
}

TEST_CASE("topic names that Kafka would refuse are caught before producing") {
  CHECK_FALSE(topic_name_defect("orders.v1_EU-2").has_value());
  CHECK(topic_name_defect("").has_value());
  CHECK(topic_name_defect(".").has_value());
  CHECK(topic_name_defect("..").has_value());
  CHECK(topic_name_defect("has space").has_value());
  CHECK(topic_name_defect("ütf").has_value());
  CHECK(topic_name_defect(std::string(249, 'a')) == std::nullopt);
  CHECK(topic_name_defect(std::string(250, 'a')).has_value());
}

TEST_CASE("headers decode from a JSON object of strings, and anything else names the problem") {
  const MessageHeaders headers = decode_headers(R"({"type": "OrderPlaced", "v": "2"})");
  REQUIRE(headers.size() == 2);
  CHECK(decode_headers("{}").empty());
  CHECK_THROWS_WITH_AS(decode_headers(R"({"n": 1})"), "header 'n' must be a string, not number",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(decode_headers("[1]"), "headers must be a JSON object",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(decode_headers("{"), "headers are not valid JSON", std::invalid_argument);
}

TEST_CASE("backoff doubles from the initial delay up to the cap, with jitter in the upper half") {
  Backoff backoff(100ms, 1000ms, /*seed=*/42);
  const std::chrono::milliseconds ceilings[] = {100ms, 200ms, 400ms, 800ms, 1000ms, 1000ms};
  for (auto ceiling : ceilings) {
    const auto delay = backoff.next_delay();
    CHECK(delay >= ceiling / 2);
    CHECK(delay <= ceiling);
  }
  CHECK(backoff.failures() == 6);
  backoff.reset();
  CHECK(backoff.next_delay() <= 100ms);
}

TEST_CASE("backoff survives an outage of any length without overflowing") {
  Backoff backoff(1ms, 30'000ms, /*seed=*/7);
  std::chrono::milliseconds delay{0};
  for (int i = 0; i < 10'000; ++i) delay = backoff.next_delay();
  CHECK(delay >= 15'000ms);
  CHECK(delay <= 30'000ms);
}

TEST_CASE("a paced task that takes long waits long enough to keep to its share of the time") {
  using namespace std::chrono;
  using namespace std::chrono_literals;
  // Each call takes 40 ms; with a 25% share the wait after it must be at least 120 ms, although
  // the interval asks for 1 ms. Sleeps only ever run long, so the lower bound cannot flake.
  std::vector<steady_clock::time_point> starts, ends;
  std::stop_source never;
  outbox::run_paced(1ms, 0.25, never.get_token(), [&] {
    starts.push_back(steady_clock::now());
    std::this_thread::sleep_for(40ms);
    ends.push_back(steady_clock::now());
    return starts.size() < 3;
  });
  REQUIRE(starts.size() == 3);
  for (std::size_t i = 1; i < starts.size(); ++i) {
    const auto took = ends[i - 1] - starts[i - 1];
    CHECK(starts[i] - ends[i - 1] >= took * 3 - 1ms);
  }
}

TEST_CASE("a paced schedule runs every interval while runs are short, and keeps to its share") {
  // The claim floor's rescan under a held snapshot: each look steps over more dead entries.
  const PacedSchedule::Clock::time_point t0{};
  PacedSchedule schedule(10s, 0.05);
  CHECK(schedule.due(t0));  // the first run at once
  // A short run: the interval, counted from its start, decides.
  schedule.ran(t0, t0 + 100ms);
  CHECK_FALSE(schedule.due(t0 + 9'999ms));
  CHECK(schedule.due(t0 + 10s));
  // A run of 2 s at a 5% share: 19 times as long again after its end, past the interval.
  const auto t1 = t0 + 10s;
  schedule.ran(t1, t1 + 2s);
  CHECK_FALSE(schedule.due(t1 + 2s + 37'999ms));
  CHECK(schedule.due(t1 + 2s + 38s));
  // A run longer than the interval is not followed by another at once.
  const auto t2 = t1 + 40s;
  schedule.ran(t2, t2 + 15s);
  CHECK_FALSE(schedule.due(t2 + 15s));
  CHECK(schedule.next() > t2 + 15s + 284'999ms);  // 19 times 15 s, in floating point
  CHECK(schedule.next() <= t2 + 15s + 285s);
}

TEST_CASE("a task run every interval waits the interval after each call, not the call's time") {
  using namespace std::chrono;
  using namespace std::chrono_literals;
  std::vector<steady_clock::time_point> starts;
  std::stop_source never;
  outbox::run_every(30ms, never.get_token(), [&] {
    starts.push_back(steady_clock::now());
    return starts.size() < 3;
  });
  REQUIRE(starts.size() == 3);
  CHECK(starts[1] - starts[0] >= 30ms);
  CHECK(starts[2] - starts[1] >= 30ms);
}

TEST_CASE("array literals for PostgreSQL quote and escape every element") {
  const std::int64_t numbers[] = {1, -2, 3'000'000'000};
  CHECK(format_int_array(numbers) == "{1,-2,3000000000}");
  CHECK(format_int_array(std::span<const std::int64_t>{}) == "{}");
  const std::string texts[] = {"plain", "with \"quotes\"", "back\\slash", "", "a,b {c}"};
  CHECK(format_text_array(texts) == R"({"plain","with \"quotes\"","back\\slash","","a,b {c}"})");
}

TEST_CASE("the relay adds its session settings to both connection string forms") {
  const std::string deadlines =
      " keepalives='1' keepalives_idle='5' keepalives_interval='2' keepalives_count='3'"
      " tcp_user_timeout='10000'";
  const std::string options =
      "-c jit=off -c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2"
      " -c tcp_keepalives_count=3 -c tcp_user_timeout=10000 -c lock_timeout=10s"
      " -c statement_timeout=60s";
  PostgresConfig postgres;
  postgres.url = "postgresql://u@h:5432/db";
  CHECK(session_connection_string(postgres) ==
        "user='u' dbname='db' host='h' port='5432' connect_timeout='5'"
        " application_name='outbox-relay'" +
            deadlines + " options='" + options + "'");
  // What the user set wins; the user's own options come after the relay's.
  postgres.url =
      "postgresql://u:p%27w@h/db?sslmode=require&connect_timeout=2&options=-c%20work_mem%3D8MB";
  CHECK(session_connection_string(postgres) ==
        "user='u' password='p\\'w' connect_timeout='2' dbname='db' host='h' sslmode='require'"
        " application_name='outbox-relay'" +
            deadlines + " options='" + options + " -c work_mem=8MB'");
  postgres.url = "host=h dbname=db keepalives_idle=30";
  CHECK(session_connection_string(postgres) ==
        "dbname='db' host='h' keepalives_idle='30' connect_timeout='5'"
        " application_name='outbox-relay' keepalives='1' keepalives_interval='2'"
        " keepalives_count='3' tcp_user_timeout='10000' options='" +
            options + "'");
  // libpq's reason for a malformed URL quotes the password, so it is not passed on.
  postgres.url = "postgresql://u:secret%zz@h/db";
  CHECK_THROWS_WITH_AS(session_connection_string(postgres), doctest::Contains("libpq can parse"),
                       ConfigError);
  try {
    session_connection_string(postgres);
  } catch (const std::exception& error) {
    CHECK(std::string(error.what()).find("secret") == std::string::npos);
  }
}

TEST_CASE("the README's configuration reference is the one the code declares") {
  std::ifstream readme(std::string(RELAY_SOURCE_DIR) + "/README.md");
  std::stringstream text;
  text << readme.rdbuf();
  const std::string begin_marker = "<!-- reference:begin";
  const std::string end_marker = "<!-- reference:end -->";
  const std::string whole = text.str();
  const auto begin = whole.find('\n', whole.find(begin_marker)) + 1;
  const auto end = whole.find(end_marker);
  REQUIRE(end != std::string::npos);
  CHECK_MESSAGE(whole.substr(begin, end - begin) == render_reference_markdown(),
                "regenerate it: build/outbox-relay check-config --print-reference");
}
