// Records delivery outcomes on a thread and a PostgreSQL session of its own, so that the relay loop
// claims and produces the next batches while the previous ones are being recorded. Batches are
// recorded one at a time, in the order they were submitted.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "relay/store/outcome_store.hpp"

namespace outbox {

class OutcomeRecorder {
 public:
  OutcomeRecorder(const PostgresConfig& postgres, PublishedRows published_rows);
  ~OutcomeRecorder();  ///< abandons what is not recorded yet: those rows stay pending
  OutcomeRecorder(const OutcomeRecorder&) = delete;
  OutcomeRecorder& operator=(const OutcomeRecorder&) = delete;

  /// Queues a batch's reports; `ticket` names the batch in what completed() returns. The reports
  /// must stay unchanged and alive until their completion has been taken.
  /// With `commit` (exactly_once), that transaction is recorded for its lanes with the batch.
  void submit(std::uint64_t ticket, std::span<const DeliveryReport> reports,
              std::optional<LaneCommit> commit = std::nullopt);

  /// What happened to submitted batches since the last call, oldest first. After a failure, every
  /// batch submitted until this call fails with it, so none is recorded out of order.
  struct Completion {
    std::uint64_t ticket = 0;
    /// Set when recording failed (PostgreSQL unavailable): this batch and every one submitted
    /// after it were not recorded and must be submitted again.
    std::optional<std::string> error;
    /// Rows of this batch that could not be recorded and were parked dead instead, or that must be
    /// quarantined (RowProblem::quarantined) because even parking failed.
    std::vector<RowProblem> problems;
  };
  std::vector<Completion> completed();

  /// Waits until nothing submitted is left unrecorded, or until `timeout`; returns whether idle.
  bool wait_idle(std::chrono::milliseconds timeout);

  /// Time spent executing record statements, since the last call.
  std::chrono::steady_clock::duration take_busy_time();

 private:
  struct Job {
    std::uint64_t ticket;
    std::span<const DeliveryReport> reports;
    std::optional<LaneCommit> commit;
  };
  void work(std::stop_token stop);

  OutcomeStore store_;
  std::mutex mutex_;
  std::condition_variable_any changed_;
  std::deque<Job> queue_;
  std::vector<Completion> completed_;
  bool recording_ = false;
  std::optional<std::string> failure_;  ///< set from a failed record until completed() is called
  std::chrono::steady_clock::duration busy_{};
  std::jthread thread_;  // last: stopped and joined before the members it uses are destroyed
};

}  // namespace outbox
