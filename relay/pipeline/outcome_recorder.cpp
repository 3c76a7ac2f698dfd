#include "relay/pipeline/outcome_recorder.hpp"

#include <pthread.h>

namespace outbox {

OutcomeRecorder::OutcomeRecorder(const PostgresConfig& postgres, PublishedRows published_rows)
    : store_(postgres, published_rows), thread_([this](std::stop_token stop) {
        pthread_setname_np(pthread_self(), "recorder");
        work(std::move(stop));
      }) {}

OutcomeRecorder::~OutcomeRecorder() {
  thread_.request_stop();
  changed_.notify_all();
}

void OutcomeRecorder::submit(std::uint64_t ticket, std::span<const DeliveryReport> reports,
                             std::optional<LaneCommit> commit) {
  {
    std::lock_guard lock(mutex_);
    if (failure_) {
      // Until the loop has seen the failure, nothing may be recorded ahead of the failed batch.
      completed_.push_back({ticket, failure_, {}});
      return;
    }
    queue_.push_back({ticket, reports, std::move(commit)});
  }
  changed_.notify_all();
}

std::vector<OutcomeRecorder::Completion> OutcomeRecorder::completed() {
  std::lock_guard lock(mutex_);
  failure_.reset();
  return std::exchange(completed_, {});
}

bool OutcomeRecorder::wait_idle(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [this] { return queue_.empty() && !recording_; });
}

std::chrono::steady_clock::duration OutcomeRecorder::take_busy_time() {
  std::lock_guard lock(mutex_);
  return std::exchange(busy_, {});
}

void OutcomeRecorder::work(std::stop_token stop) {
  std::unique_lock lock(mutex_);
  while (!stop.stop_requested()) {
    if (!changed_.wait(lock, stop, [this] { return !queue_.empty(); })) break;
    Job job = std::move(queue_.front());
    queue_.pop_front();
    recording_ = true;
    lock.unlock();
    std::optional<std::string> error;
    std::vector<RowProblem> problems;
    const auto start = std::chrono::steady_clock::now();
    try {
      problems = store_.record_outcomes(job.reports, job.commit);
    } catch (const StoreUnavailable& unavailable) {
      error = unavailable.what();
    } catch (const std::exception& unexpected) {
      // Not a row's data (the store isolates those) but the statement as a whole: a missing
      // table, a privilege. Retried like an outage, with the loop's backoff; never thrown out of
      // this thread.
      error = std::string("unexpected: ") + unexpected.what();
      store_.disconnect();
    }
    const auto elapsed = std::chrono::steady_clock::now() - start;
    lock.lock();
    busy_ += elapsed;
    recording_ = false;
    completed_.push_back({job.ticket, error, std::move(problems)});
    if (error) {
      // The loop resubmits from the failed batch on, in order, so nothing after it is recorded now.
      failure_ = error;
      for (const Job& abandoned : queue_) completed_.push_back({abandoned.ticket, error, {}});
      queue_.clear();
    }
    changed_.notify_all();
  }
}

}  // namespace outbox
