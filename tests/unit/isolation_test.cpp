// Specifications of the small rules that keep one row or one topic from hurting the others: the
// topic-hold rule, the escaping of writer bytes, the reserved id header and the bounded labels.
#include <doctest/doctest.h>

#include <string>

#include "relay/core/routing.hpp"
#include "relay/core/text.hpp"
#include "relay/observe/metrics.hpp"
#include "relay/pipeline/dead_key_holds.hpp"
#include "relay/pipeline/topic_holds.hpp"

using namespace outbox;
using namespace std::chrono_literals;

namespace {
const auto kStart = TopicHolds::Clock::time_point{} + 1h;
auto nothing_in_flight = [](const std::string&) { return false; };
}  // namespace

TEST_CASE(
    "a held topic is skipped until its retry time has come and none of its rows is in flight") {
  TopicHolds holds(100ms, 1000ms);
  CHECK(holds.empty());
  const auto first =
      holds.hold("orders", "orders", "_UNKNOWN_TOPIC", "Local: Unknown topic", kStart);
  CHECK(first.should_log);
  CHECK(first.retry_in == 100ms);
  CHECK(holds.is_held("orders"));
  CHECK(holds.routes() == std::vector<std::string>{"orders"});
  CHECK(holds.next_retry() == kStart + 100ms);

  CHECK(holds.release_due(kStart + 99ms, nothing_in_flight).empty());
  // Its retry time has come, but a row of it is still in librdkafka's hands: still held, so no
  // later row of its keys can be claimed ahead of that one.
  CHECK(holds.release_due(kStart + 100ms, [](const std::string&) { return true; }).empty());
  CHECK(holds.release_due(kStart + 100ms, nothing_in_flight) == std::vector<std::string>{"orders"});
  CHECK_FALSE(holds.is_held("orders"));
  CHECK(holds.empty());
}

TEST_CASE("a topic's retry delay doubles per consecutive failure, capped, and resets on delivery") {
  TopicHolds holds(100ms, 350ms);
  CHECK(holds.hold("t", "t", "E", "e", kStart).retry_in == 100ms);
  CHECK(holds.hold("t", "t", "E", "e", kStart).retry_in == 200ms);
  CHECK(holds.hold("t", "t", "E", "e", kStart).retry_in == 350ms);
  CHECK(holds.hold("t", "t", "E", "e", kStart).retry_in == 350ms);
  holds.delivered("t");  // while held: the failures stand
  CHECK(holds.hold("t", "t", "E", "e", kStart).retry_in == 350ms);
  holds.release_due(kStart + 1h, nothing_in_flight);
  holds.delivered("t");
  CHECK(holds.hold("t", "t", "E", "e", kStart + 1h).retry_in == 100ms);
}

TEST_CASE("a hold is logged once per topic and error, and again only after the repeat interval") {
  TopicHolds holds(100ms, 1000ms, 60s);
  CHECK(holds.hold("t", "t", "NOT_ENOUGH_REPLICAS", "x", kStart).should_log);
  CHECK_FALSE(holds.hold("t", "t", "NOT_ENOUGH_REPLICAS", "x", kStart + 1s).should_log);
  CHECK(holds.hold("t", "t", "stalled", "y", kStart + 2s).should_log);  // another error
  CHECK_FALSE(holds.hold("t", "t", "stalled", "y", kStart + 30s).should_log);
  CHECK(holds.hold("t", "t", "stalled", "y", kStart + 63s).should_log);
  CHECK(holds.hold("u", "u", "stalled", "y", kStart + 63s).should_log);  // another topic
  REQUIRE(holds.held().size() == 2);
  CHECK(holds.held()[0].error_code == "stalled");
  CHECK(holds.held()[0].since == kStart);
}

TEST_CASE("many rows of a topic failing at once count one failure of that topic, not one per row") {
  TopicHolds holds(100ms, 30s);
  const std::vector<TopicFailure> answer(500, {"orders", "orders", "_MSG_TIMED_OUT", "timed out"});
  auto attempt = holds.hold_all(answer, kStart);
  CHECK(attempt.newly_held);
  REQUIRE(attempt.to_log.size() == 1);
  CHECK(attempt.to_log[0].second.retry_in == 100ms);
  CHECK(holds.next_retry() == kStart + 100ms);

  // The next attempt fails the same way: the delay doubles once.
  holds.release_due(kStart + 100ms, nothing_in_flight);
  std::vector<TopicFailure> mixed = answer;
  mixed.push_back({"audit", "audit", "_UNKNOWN_TOPIC", "unknown topic"});
  attempt = holds.hold_all(mixed, kStart + 100ms);
  CHECK(attempt.newly_held);
  CHECK(holds.next_retry() == kStart + 100ms + 100ms);  // audit's first failure
  REQUIRE(holds.held().size() == 2);
  holds.release_due(kStart + 250ms, [](const std::string& route) { return route == "orders"; });
  CHECK(holds.next_retry() == kStart + 100ms + 200ms);  // orders: second attempt, not 501st row
  CHECK_FALSE(holds.hold_all({}, kStart).newly_held);
}

TEST_CASE(
    "under block, a key with a dead row is held until that row is recorded; under skip never") {
  auto row = [](std::int64_t id, std::optional<std::string> key) {
    OutboxRow r;
    r.id = OutboxId{id};
    r.key = std::move(key);
    return r;
  };
  const std::vector<OutboxRow> batch{row(1, "a"), row(2, "a"), row(3, std::nullopt)};
  std::vector<DeliveryReport> reports(3);
  reports[0].outcome = DeliveryOutcome::permanent_failure;
  reports[1].outcome = DeliveryOutcome::not_attempted;
  reports[2].outcome = DeliveryOutcome::permanent_failure;

  DeadKeyHolds block(DeadKeyPolicy::block);
  block.failed_permanently(batch[0]);
  block.failed_permanently(batch[2]);  // no key: nothing to hold
  CHECK(block.held(row(9, "a")));      // any later row of the key
  CHECK_FALSE(block.held(row(9, "b")));
  CHECK_FALSE(block.held(row(9, std::nullopt)));
  block.failed_permanently(row(5, "a"));  // a second dead row of the key, in a later batch
  block.recorded(batch, reports);
  CHECK(block.held(row(9, "a")));  // the second one is not recorded yet
  const std::vector<OutboxRow> later{row(5, "a")};
  const std::vector<DeliveryReport> later_reports{
      {OutboxId{5}, DeliveryOutcome::permanent_failure, -1, -1, "", false}};
  block.recorded(later, later_reports);
  CHECK_FALSE(block.held(row(9, "a")));  // the claim sees both dead rows now, and skips the key

  DeadKeyHolds skip(DeadKeyPolicy::skip);
  skip.failed_permanently(batch[0]);
  CHECK_FALSE(skip.held(row(9, "a")));
}

TEST_CASE("holding one topic leaves the others claimable") {
  TopicHolds holds(100ms, 1000ms);
  holds.hold("a", "a", "E", "e", kStart);
  CHECK(holds.is_held("a"));
  CHECK_FALSE(holds.is_held("b"));
  CHECK(holds.routes() == std::vector<std::string>{"a"});
}

TEST_CASE("writer bytes are escaped and cut before they reach a log line") {
  CHECK(printable("plain text") == "plain text");
  CHECK(printable("evil\nevent=forged") == "evil\\nevent=forged");
  CHECK(printable(std::string("a\0b\r\t\x7f", 6)) == "a\\x00b\\r\\t\\x7f");
  CHECK(printable("grüße") == "grüße");
  CHECK(printable(printable("x\ny")) == printable("x\ny"));  // escaping twice changes nothing
  const std::string cut = printable(std::string(5000, 'a'), 100);
  CHECK(cut.size() <= 100 + 32);
  CHECK(cut.find("(4900 bytes cut)") != std::string::npos);
  // An escape is never split by the cut.
  CHECK(printable("abc\n", 4) == "abc...(1 bytes cut)");
  CHECK(capped("abcdef", 3) == "abc...(3 bytes cut)");
  CHECK(capped("abc", 3) == "abc");
}

TEST_CASE("a writer header with the relay's id-header name is a defect, not a second header") {
  CHECK(reserved_header_defect({{"type", "x"}}, "outbox-id") == std::nullopt);
  const auto defect = reserved_header_defect({{"type", "x"}, {"outbox-id", "1"}}, "outbox-id");
  REQUIRE(defect.has_value());
  CHECK(defect->find("routing.id_header") != std::string::npos);
  CHECK(reserved_header_defect({{"Outbox-Id", "1"}}, "outbox-id") == std::nullopt);
}

TEST_CASE("a cleared gauge family keeps only the series set after the clear") {
  MetricsRegistry registry;
  registry.gauge("outbox_topic_held", "help", {{"topic", "a"}}).set(1);
  registry.gauge("outbox_topic_held", "help", {{"topic", "b"}}).set(1);
  registry.clear_gauge("outbox_topic_held");
  registry.gauge("outbox_topic_held", "help", {{"topic", "b"}}).set(1);
  const std::string text = registry.render();
  CHECK(text.find("outbox_topic_held{topic=\"a\"}") == std::string::npos);
  CHECK(text.find("outbox_topic_held{topic=\"b\"} 1") != std::string::npos);
  registry.counter("c", "help").increment(3);
  CHECK(registry.render().find("\nc 3\n") != std::string::npos);  // integral, as Prometheus reads
}

TEST_CASE("label values are capped and a family's series are bounded") {
  MetricsRegistry registry;
  registry.gauge("g", "help", {{"topic", std::string(1'000'000, 't')}}).set(1);
  CHECK(registry.render().size() < 1000);
  for (int i = 0; i < 10'000; ++i) {
    registry.counter("c", "help", {{"topic", "topic-" + std::to_string(i)}}).increment();
  }
  const std::string text = registry.render();
  CHECK(text.size() < 64 * 1024);
  CHECK(text.find("c{topic=\"_other\"}") != std::string::npos);
  CHECK(text.find("c{topic=\"topic-0\"} 1") != std::string::npos);
}
