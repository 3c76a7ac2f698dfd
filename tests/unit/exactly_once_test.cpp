// The rules of exactly-once delivery that decide what a lane's new owner marks published
// (relay/pipeline/exactly_once.hpp): a wrong answer here is a lost row (marking what Kafka never
// committed) or a duplicate (not marking what it did).
#include <doctest/doctest.h>

#include "relay/pipeline/exactly_once.hpp"

namespace outbox {

namespace {

TransactionMarker marker(const std::string& id, std::int64_t seq, std::vector<std::int64_t> ids) {
  TransactionMarker result{id, seq, {}};
  for (std::int64_t value : ids) result.ids.push_back(OutboxId{value});
  return result;
}

}  // namespace

TEST_CASE("a marker survives its encoding, and what is not a marker decodes to nothing") {
  const TransactionMarker written = marker("outbox-relay.7.db.host-1-abc.2", 41, {5, 9, 1 << 30});
  CHECK(decode_marker(encode_marker(written)) == written);
  CHECK(decode_marker(encode_marker(marker("x", 1, {}))) == marker("x", 1, {}));
  CHECK_FALSE(decode_marker(""));
  CHECK_FALSE(decode_marker("not json"));
  CHECK_FALSE(decode_marker(R"({"transactional_id":"x","seq":1})"));
  CHECK_FALSE(decode_marker(R"({"transactional_id":"x","seq":"1","ids":[]})"));
  CHECK_FALSE(decode_marker(R"({"transactional_id":"x","seq":1,"ids":["5"]})"));
  CHECK_FALSE(decode_marker(R"([1,2,3])"));
}

TEST_CASE("transactional ids name the database, the instance and the generation") {
  CHECK(transactional_id_for("auto", "7301.shop", "host-12-ab", 1) ==
        "outbox-relay.7301.shop.host-12-ab.1");
  CHECK(transactional_id_for("billing", "7301.shop", "host-12-ab", 3) == "billing.host-12-ab.3");
  CHECK(transactional_id_for("auto", "7301.shop", "i", 1) !=
        transactional_id_for("auto", "7301.shop", "i", 2));
}

TEST_CASE("a lane's new owner marks the last marker's rows only when they may be unrecorded") {
  const std::string previous = "p.1";
  const auto last = marker(previous, 8, {100, 101});
  SUBCASE("the previous producer's newest transaction is not recorded: its rows are marked") {
    CHECK(ids_to_recover(previous, 7, last) == last.ids);
    CHECK(ids_to_recover(previous, 0, last) == last.ids);
  }
  SUBCASE("recorded already: nothing (a requeued row stays pending)") {
    CHECK(ids_to_recover(previous, 8, last).empty());
    CHECK(ids_to_recover(previous, 9, last).empty());
  }
  SUBCASE("the lane was released cleanly: nothing") {
    CHECK(ids_to_recover(std::nullopt, 0, last).empty());
  }
  SUBCASE("a record under the producer's key that it did not write: nothing") {
    CHECK(ids_to_recover("q.1", 0, last).empty());
  }
  SUBCASE("no committed marker of the producer: nothing to mark") {
    CHECK(ids_to_recover(previous, 0, std::nullopt).empty());
  }
}

}  // namespace outbox
