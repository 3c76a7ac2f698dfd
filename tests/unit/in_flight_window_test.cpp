// Specification of the in-flight window (relay/pipeline/in_flight_window.hpp) with batches whose
// deliveries the test decides: ids stay excluded until recorded, Kafka may complete batches in any
// order but they are recorded in produce order, a failed recording hands them out again, and a
// stalled batch leaves the chain so the batches behind it are recorded.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "relay/pipeline/in_flight_window.hpp"

using namespace outbox;
using namespace std::chrono_literals;

namespace {

/// A batch whose rows the test delivers one by one, as librdkafka's callbacks would.
class FakeBatch {
 public:
  FakeBatch(std::int64_t first_id, int count) {
    for (int i = 0; i < count; ++i) {
      OutboxRow row;
      row.id = OutboxId{first_id + i};
      row.key = "k" + std::to_string(i);
      row.size_bytes = 100;
      rows_.push_back(row);
      reports_.push_back({row.id, DeliveryOutcome::not_attempted, -1, -1, "", false});
    }
    final_.assign(rows_.size(), 0);
  }
  void deliver(std::size_t index, DeliveryOutcome outcome = DeliveryOutcome::delivered) {
    reports_[index].outcome = outcome;
    final_[index] = 1;
  }
  void deliver_all() {
    for (std::size_t i = 0; i < rows_.size(); ++i) deliver(i);
  }
  std::span<const OutboxRow> rows() const { return rows_; }
  std::span<const DeliveryReport> reports() const { return reports_; }
  bool complete() const {
    return std::all_of(final_.begin(), final_.end(), [](char f) { return f; });
  }
  bool row_final(std::size_t index) const { return final_[index] != 0; }

 private:
  std::vector<OutboxRow> rows_;
  std::vector<DeliveryReport> reports_;
  std::vector<char> final_;
};

using Window = InFlightWindow<FakeBatch>;
const auto kT0 = Window::Clock::time_point{} + 1h;

/// What the recorder was handed, in order: (ticket, first id of the reports).
struct Submitted {
  std::vector<std::pair<std::uint64_t, std::int64_t>> calls;
  void operator()(std::uint64_t ticket, std::span<const DeliveryReport> reports) {
    calls.emplace_back(ticket, reports.front().id.value);
  }
};

std::vector<std::int64_t> ids_of(const Window& window) {
  std::vector<OutboxId> ids;
  window.ids(ids);
  std::vector<std::int64_t> values;
  for (OutboxId id : ids) values.push_back(id.value);
  return values;
}

/// Adds a batch of `count` rows from `first_id` and returns it, for the test to deliver.
FakeBatch& add_batch(Window& window, std::int64_t first_id, int count,
                     Window::Clock::time_point produced_at = kT0) {
  auto batch = std::make_unique<FakeBatch>(first_id, count);
  FakeBatch& added = *batch;
  window.add(std::move(batch), produced_at);
  return added;
}

}  // namespace

TEST_CASE(
    "a batch completed by Kafka before an earlier one waits for it: recorded in produce order") {
  Window window;
  FakeBatch* a = &add_batch(window, 1, 2);
  FakeBatch* b = &add_batch(window, 3, 2);

  b->deliver_all();  // the later batch's partition answered first
  Submitted submitted;
  window.submit_ready(std::ref(submitted));
  CHECK(submitted.calls.empty());  // not before the earlier batch
  CHECK(ids_of(window) == std::vector<std::int64_t>{1, 2, 3, 4});

  a->deliver(1);
  window.submit_ready(std::ref(submitted));
  CHECK(submitted.calls.empty());  // the earlier batch is not complete yet
  a->deliver(0);
  window.submit_ready(std::ref(submitted));
  REQUIRE(submitted.calls.size() == 2);
  CHECK(submitted.calls[0].second == 1);  // the earlier batch first
  CHECK(submitted.calls[1].second == 3);

  // Recorded: each leaves the window (and its ids the exclusion) only then, in order.
  std::vector<std::int64_t> recorded;
  auto record = [&](const FakeBatch& batch, std::span<const DeliveryReport> reports,
                    std::span<const std::size_t> rows, bool whole) {
    CHECK(whole);  // the whole batch: every report, no row list
    CHECK(reports.size() == batch.rows().size());
    CHECK(rows.empty());
    recorded.push_back(batch.rows().front().id.value);
  };
  window.complete(submitted.calls[0].first, false, record);
  CHECK(ids_of(window) == std::vector<std::int64_t>{3, 4});
  window.complete(submitted.calls[1].first, false, record);
  CHECK(recorded == std::vector<std::int64_t>{1, 3});
  CHECK(window.empty());
  CHECK(ids_of(window).empty());
}

TEST_CASE("a failed recording hands the batch out again, and nothing behind it is recorded first") {
  Window window;
  add_batch(window, 10, 1).deliver_all();
  Submitted submitted;
  window.submit_ready(std::ref(submitted));
  REQUIRE(submitted.calls.size() == 1);
  window.submit_ready(std::ref(submitted));
  CHECK(submitted.calls.size() == 1);  // queued once while the recorder has it

  int recorded = 0;
  auto record = [&](const FakeBatch&, std::span<const DeliveryReport>, std::span<const std::size_t>,
                    bool) { ++recorded; };
  window.complete(submitted.calls[0].first, /*failed=*/true, record);
  CHECK(recorded == 0);
  CHECK(ids_of(window) == std::vector<std::int64_t>{10});  // still excluded from claims
  window.submit_ready(std::ref(submitted));
  REQUIRE(submitted.calls.size() == 2);  // handed out again
  window.complete(submitted.calls[1].first, false, record);
  CHECK(recorded == 1);
  CHECK(window.empty());
}

TEST_CASE(
    "a batch stalled past the timeout leaves the chain; its rows are recorded as they finish") {
  Window window;
  FakeBatch* s = &add_batch(window, 1, 3);
  FakeBatch* b = &add_batch(window, 4, 1, kT0 + 1s);
  s->deliver(0);
  b->deliver_all();

  CHECK(window.stall_overdue(kT0 + 4s, 5s).empty());  // not overdue yet
  const auto moved = window.stall_overdue(kT0 + 5s, 5s);
  REQUIRE(moved.size() == 1);
  CHECK(moved[0] == s);
  CHECK(window.chained() == 1);
  CHECK(window.stalled() == 1);
  CHECK(window.stalled_bytes() == 200);  // its two rows still in Kafka's hands
  CHECK(ids_of(window) == std::vector<std::int64_t>{4, 1, 2, 3});  // all still excluded

  Submitted submitted;
  window.submit_ready(std::ref(submitted));
  REQUIRE(submitted.calls.size() == 2);
  CHECK(submitted.calls[0].second == 1);  // the stalled batch's finished row, first
  CHECK(submitted.calls[1].second == 4);  // the batch behind it is no longer held back

  std::vector<std::vector<std::size_t>> recorded_rows;
  auto record = [&](const FakeBatch&, std::span<const DeliveryReport>,
                    std::span<const std::size_t> rows,
                    bool) { recorded_rows.emplace_back(rows.begin(), rows.end()); };
  window.complete(submitted.calls[0].first, false, record);
  window.complete(submitted.calls[1].first, false, record);
  CHECK(recorded_rows[0] == std::vector<std::size_t>{0});

  int released = 0;
  window.release_done_stalled([&](const FakeBatch&) { ++released; });
  CHECK(released == 0);  // two rows are not final
  s->deliver(1);
  s->deliver(2, DeliveryOutcome::retriable_failure);
  window.submit_ready(std::ref(submitted));
  REQUIRE(submitted.calls.size() == 3);
  window.complete(submitted.calls[2].first, false, record);
  CHECK(recorded_rows[2] == std::vector<std::size_t>{1, 2});
  window.release_done_stalled([&](const FakeBatch&) { ++released; });
  CHECK(released == 1);
  CHECK(window.empty());
}
