// The in-flight window: the batches produced to Kafka and not yet recorded in PostgreSQL, and the
// guarantees they carry.
//
//  - No duplicate from one instance: every row of a batch in the window stays excluded from
//    claims (ids()) until the recorder has committed its outcome.
//  - Recorded in produce order: the chain's batches go to the recorder only as a complete prefix
//    of produce order; a complete batch waits behind an incomplete earlier one. Kafka completes
//    batches in any order (their partitions may be led by different brokers), but what PostgreSQL
//    records as finished is then always a prefix of what was produced, so after a crash no key's
//    earlier row is re-sent behind a later row of the same key that was already recorded.
//  - A batch incomplete past the stall timeout leaves the chain (stall_overdue) so that the
//    batches behind it are recorded; its own rows are recorded as each one finishes (per partition
//    that is produce order, so per key too). Stalled batches are bounded by their bytes.
//
// Generic over the batch (rows(), reports(), complete(), row_final(i)) so that its rules are unit
// tested without Kafka (tests/unit/in_flight_window_test.cpp); the relay uses PublishBatch. Not
// thread-safe: the relay loop owns it.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <span>
#include <vector>

#include "relay/core/assert.hpp"
#include "relay/core/outbox_row.hpp"

namespace outbox {

template <typename Batch>
class InFlightWindow {
 public:
  using Clock = std::chrono::steady_clock;

  /// A produced batch enters the chain, behind every batch produced before it.
  void add(std::unique_ptr<Batch> batch, Clock::time_point produced_at) {
    chain_.push_back({std::move(batch), next_ticket_++, false, produced_at});
  }

  std::size_t chained() const { return chain_.size(); }
  std::size_t stalled() const { return stalled_.size(); }
  std::size_t size() const { return chain_.size() + stalled_.size(); }
  bool empty() const { return chain_.empty() && stalled_.empty(); }

  /// True at the first batch, chained or stalled, for which `pred(batch)` is.
  template <typename Pred>
  bool any_batch(Pred&& pred) const {
    return std::any_of(chain_.begin(), chain_.end(),
                       [&](const Chained& entry) { return pred(*entry.batch); }) ||
           std::any_of(stalled_.begin(), stalled_.end(),
                       [&](const Stalled& entry) { return pred(*entry.batch); });
  }

  /// Every id the claim must skip: each row of each batch in the window.
  void ids(std::vector<OutboxId>& out) const {
    out.clear();
    any_batch([&](const Batch& batch) {
      for (const OutboxRow& row : batch.rows()) out.push_back(row.id);
      return false;
    });
  }

  /// Bytes of the stalled batches' rows still in librdkafka's hands.
  std::int64_t stalled_bytes() const {
    std::int64_t bytes = 0;
    for (const Stalled& stalled : stalled_) {
      for (std::size_t i = 0; i < stalled.batch->rows().size(); ++i) {
        if (!stalled.batch->row_final(i)) bytes += stalled.batch->rows()[i].size_bytes;
      }
    }
    return bytes;
  }

  /// Moves the chain's front batches that are still incomplete `timeout` after they were
  /// produced out of the chain; returns them, for the caller to hold their topics.
  std::vector<const Batch*> stall_overdue(Clock::time_point now, Clock::duration timeout) {
    std::vector<const Batch*> moved;
    while (!chain_.empty() && !chain_.front().submitted && !chain_.front().batch->complete() &&
           now - chain_.front().produced_at >= timeout) {
      Stalled stalled{std::move(chain_.front().batch), {}, {}};
      chain_.pop_front();
      stalled.submitted.assign(stalled.batch->rows().size(), 0);
      moved.push_back(stalled.batch.get());
      stalled_.push_back(std::move(stalled));
    }
    return moved;
  }

  /// Hands what has finished to `submit(ticket, reports)`: first the stalled batches' finished
  /// rows (older than anything in the chain), then the chain's complete batches, in produce order,
  /// stopping at the first incomplete one. The reports stay alive until complete(ticket).
  template <typename Submit>
  void submit_ready(Submit&& submit) {
    for (Stalled& stalled : stalled_) {
      Job job;
      for (std::size_t i = 0; i < stalled.submitted.size(); ++i) {
        if (stalled.submitted[i] || !stalled.batch->row_final(i)) continue;
        const DeliveryReport& report = stalled.batch->reports()[i];
        if (report.outcome == DeliveryOutcome::not_attempted) continue;
        stalled.submitted[i] = 1;
        job.rows.push_back(i);
        job.reports.push_back(report);
      }
      if (job.rows.empty()) continue;
      const std::uint64_t ticket = next_ticket_++;
      const Job& queued = stalled.jobs.emplace(ticket, std::move(job)).first->second;
      stalled_tickets_[ticket] = &stalled;
      submit(ticket, std::span<const DeliveryReport>(queued.reports));
    }
    for (Chained& entry : chain_) {
      if (!entry.batch->complete()) break;
      if (entry.submitted) continue;
      entry.submitted = true;
      submit(entry.ticket, entry.batch->reports());
    }
  }

  /// The recorder finished `ticket`. When it failed, its rows are handed out again by the next
  /// submit_ready(). When it succeeded, `recorded(batch, reports, rows, whole)` is called and the
  /// chain's batch leaves the window: `whole` (a chain batch, leaving after the call) with every
  /// report and no `rows`, or a stalled batch's finished rows (indexes into the batch) with the
  /// copies of their reports. Chain tickets complete in the order they were submitted.
  template <typename Recorded>
  void complete(std::uint64_t ticket, bool failed, Recorded&& recorded) {
    if (auto found = stalled_tickets_.find(ticket); found != stalled_tickets_.end()) {
      Stalled& stalled = *found->second;
      stalled_tickets_.erase(found);
      const auto job = stalled.jobs.find(ticket);
      RELAY_ASSERT(job != stalled.jobs.end(), "a stalled batch's job completes once");
      if (failed) {
        for (std::size_t row : job->second.rows) stalled.submitted[row] = 0;
      } else {
        recorded(*stalled.batch, std::span<const DeliveryReport>(job->second.reports),
                 std::span<const std::size_t>(job->second.rows), false);
      }
      stalled.jobs.erase(job);
      return;
    }
    if (failed) {
      for (Chained& entry : chain_) {
        if (entry.ticket == ticket) entry.submitted = false;
      }
      return;
    }
    RELAY_ASSERT(!chain_.empty() && chain_.front().ticket == ticket,
                 "batches are recorded in the order they were produced");
    const Batch& batch = *chain_.front().batch;
    recorded(batch, batch.reports(), std::span<const std::size_t>{}, true);
    chain_.pop_front();
  }

  /// Drops the stalled batches whose every row is final and recorded, calling `released(batch)`
  /// for each first.
  template <typename Released>
  void release_done_stalled(Released&& released) {
    for (auto entry = stalled_.begin(); entry != stalled_.end();) {
      if (!entry->done()) {
        ++entry;
        continue;
      }
      released(*entry->batch);
      entry = stalled_.erase(entry);
    }
  }

 private:
  struct Chained {
    std::unique_ptr<Batch> batch;
    std::uint64_t ticket = 0;
    bool submitted = false;  ///< complete, and queued at the recorder
    Clock::time_point produced_at;
  };
  struct Job {
    std::vector<std::size_t> rows;
    std::vector<DeliveryReport> reports;  ///< copies, alive until the recorder completes the job
  };
  struct Stalled {
    std::unique_ptr<Batch> batch;
    std::vector<char> submitted;  ///< per row: its report is queued at (or done by) the recorder
    std::map<std::uint64_t, Job> jobs;  ///< by ticket, not yet completed

    bool done() const {
      if (!jobs.empty()) return false;
      for (std::size_t i = 0; i < submitted.size(); ++i) {
        if (!batch->row_final(i)) return false;
        if (!submitted[i] && batch->reports()[i].outcome != DeliveryOutcome::not_attempted) {
          return false;
        }
      }
      return true;
    }
  };

  std::deque<Chained> chain_;
  std::list<Stalled> stalled_;  // a list: the tickets below point at its elements
  std::map<std::uint64_t, Stalled*> stalled_tickets_;
  std::uint64_t next_ticket_ = 0;
};

}  // namespace outbox
