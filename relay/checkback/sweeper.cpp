#include "relay/checkback/sweeper.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <deque>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "relay/checkback/http_checker.hpp"
#include "relay/core/backoff.hpp"
#include "relay/core/text.hpp"
#include "relay/store/half_message_store.hpp"
#include "relay/store/store.hpp"

namespace outbox {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr milliseconds kPollSlice{50};
constexpr std::size_t kRecordBatch = 100;
// Groups come from writers: warn once each, for a bounded number of them.
constexpr std::size_t kMaxWarnedGroups = 1000;

std::shared_ptr<spdlog::logger> checkback_log() {
  auto logger = spdlog::get("checkback");
  return logger ? logger : spdlog::default_logger();
}

/// Concurrency and rate limits of one producer group's endpoint (a token bucket for the rate).
struct GroupLane {
  const CheckEndpointConfig* endpoint = nullptr;
  std::deque<HalfMessage> waiting;
  int in_flight = 0;
  double tokens = 1;
  Clock::time_point refilled = Clock::now();

  bool may_start() {
    const auto now = Clock::now();
    const double rate = endpoint->max_checks_per_second;
    tokens = std::min(rate, tokens + std::chrono::duration<double>(now - refilled).count() * rate);
    refilled = now;
    return in_flight < endpoint->max_concurrent_checks && tokens >= 1;
  }
};

class SweepState {
 public:
  SweepState(const Config& config, Telemetry& telemetry, std::stop_token stop)
      : config_(config.checkback),
        metrics_(telemetry.metrics),
        stop_(std::move(stop)),
        store_(config.postgres),
        checker_(config_.max_response_bytes,
                 [this](CheckResult result) { finished(std::move(result)); }),
        store_backoff_(config.relay.backoff_initial,
                       std::min(config.relay.backoff_max, kReconnectBackoffMax)),
        random_(std::random_device{}()) {}

  void run() {
    checkback_log()->info("event=sweeper_started endpoints={} check_delay_ms={} max_checks={}",
                          config_.endpoints.size(), config_.check_delay.count(),
                          config_.max_checks);
    while (!stop_.stop_requested()) {
      try {
        step();
        store_backoff_.reset();
      } catch (const StoreUnavailable& error) {
        pause(store_backoff_.next_delay(), error.what());
      } catch (const std::exception& error) {
        // A schema problem or a bug: say so loudly, but keep the relay's publishing alive.
        pause(store_backoff_.next_delay(), error.what());
      }
    }
    try {
      flush();  // checks that finished are recorded; the rest are abandoned, their leases expire
    } catch (const std::exception& error) {
      checkback_log()->warn("event=checks_not_recorded rows={} error=\"{}\"", records_.size(),
                            error.what());
    }
  }

 private:
  void step() {
    if (waiting() == 0) claim();
    start_allowed_checks();
    checker_.perform(kPollSlice);
    if (records_.size() >= kRecordBatch || (waiting() == 0 && checker_.active() == 0)) flush();
    if (waiting() == 0 && checker_.active() == 0 && idle_) sleep_for(config_.sweep_interval);
  }

  std::size_t waiting() const {
    std::size_t count = 0;
    for (const auto& [group, lane] : lanes_) count += lane.waiting.size();
    return count;
  }

  void claim() {
    const std::vector<HalfMessage> due =
        store_.claim_due(config_.batch_size, config_.check_delay, lease());
    report_problems(store_.take_claim_problems());
    idle_ = due.empty();
    for (const HalfMessage& message : due) {
      const auto endpoint = config_.endpoints.find(message.producer_group);
      if (endpoint == config_.endpoints.end()) {
        if (warned_groups_.size() < kMaxWarnedGroups &&
            warned_groups_.insert(message.producer_group).second) {
          checkback_log()->warn(
              "event=no_endpoint producer_group=\"{}\" effect=rows stay unknown until "
              "checkback.endpoints has this group or the writer decides",
              printable(message.producer_group, 256));
        }
        record(message,
               {CheckVerdict::unknown, CheckFailure::no_endpoint,
                "no endpoint configured for producer group"},
               /*request_sent=*/false);
        continue;
      }
      GroupLane& lane = lanes_[message.producer_group];
      lane.endpoint = &endpoint->second;
      lane.waiting.push_back(message);
    }
  }

  /// Long enough for a whole claimed batch to be checked at the slowest group's limits; a row
  /// whose lease ran out may be checked by another instance, which is why it is generous.
  milliseconds lease() const {
    milliseconds longest{0};
    for (const auto& [group, endpoint] : config_.endpoints) {
      const auto rounds = (config_.batch_size + endpoint.max_concurrent_checks - 1) /
                              endpoint.max_concurrent_checks +
                          1;
      const auto rate_time =
          milliseconds(1000LL * config_.batch_size / endpoint.max_checks_per_second);
      longest = std::max(longest, endpoint.timeout * rounds + rate_time);
    }
    return longest + std::chrono::seconds(10);
  }

  void start_allowed_checks() {
    for (auto& [group, lane] : lanes_) {
      while (!lane.waiting.empty() && lane.may_start()) {
        lane.tokens -= 1;
        ++lane.in_flight;
        checker_.start(*lane.endpoint, std::move(lane.waiting.front()));
        lane.waiting.pop_front();
      }
    }
  }

  void finished(CheckResult result) {
    if (auto lane = lanes_.find(result.message.producer_group); lane != lanes_.end()) {
      --lane->second.in_flight;
    }
    record(result.message, result.answer, result.request_sent);
  }

  void record(const HalfMessage& message, const CheckAnswer& answer, bool request_sent) {
    CheckRecord record;
    record.id = message.id;
    record.verdict = answer.verdict;
    // A check counts toward max_checks when it reached the endpoint, and also when TLS failed: a
    // certificate problem does not mend itself, so the row ends dead with the TLS error as its
    // reason after max_checks instead of waiting unseen forever. An endpoint that is down (no
    // connection) is waited for without limit, as RocketMQ's broker waits for its producer.
    record.request_sent = request_sent || answer.failure == CheckFailure::tls;
    record.answer = answer.description;
    // The next check waits check_interval x 2^(checks so far), capped, plus up to 20% jitter,
    // never less: two instances then never check a row twice within one interval.
    const int exponent = std::min(std::max(message.check_number - 1, 0), 20);
    const auto ceiling =
        std::min<std::int64_t>(config_.check_interval.count() * (std::int64_t{1} << exponent),
                               config_.check_interval_max.count());
    std::uniform_int_distribution<std::int64_t> jitter(0, ceiling / 5);
    record.next_check_in = milliseconds(ceiling + jitter(random_));
    count(answer, request_sent, message);
    records_.push_back(std::move(record));
  }

  void count(const CheckAnswer& answer, bool request_sent, const HalfMessage& message) {
    std::string outcome = "not_sent";
    if (request_sent) {
      outcome = answer.failure != CheckFailure::none
                    ? "failed"
                    : (answer.verdict == CheckVerdict::commit     ? "commit"
                       : answer.verdict == CheckVerdict::rollback ? "rollback"
                                                                  : "unknown");
    }
    metrics_
        .counter("outbox_checkback_checks_total",
                 "Check-back attempts by outcome: commit, rollback, unknown (the endpoint's "
                 "answer), failed (no usable answer), not_sent (no request reached the endpoint).",
                 {{"outcome", outcome}})
        .increment();
    ++batch_outcomes_[outcome];
    if (answer.failure == CheckFailure::none) return;
    metrics_
        .counter("outbox_checkback_errors_total",
                 "Check-back attempts without a usable answer, by kind.",
                 {{"kind", std::string(to_string(answer.failure))}})
        .increment();
    if (answer.failure == CheckFailure::tls) warn_tls_failure(message, answer);
    if (first_failure_.empty()) {
      first_failure_ = "id=" + std::to_string(message.id.value) + " group=\"" +
                       printable(message.producer_group, 256) + "\" reason=\"" +
                       printable(answer.description, 512) + "\"";
    }
  }

  /// A TLS failure is an operator's problem: logged as a warning, once a minute per group.
  void warn_tls_failure(const HalfMessage& message, const CheckAnswer& answer) {
    const auto now = std::chrono::steady_clock::now();
    auto [last, first_time] = tls_warned_.try_emplace(message.producer_group, now);
    if (!first_time && now - last->second < std::chrono::minutes(1)) return;
    last->second = now;
    checkback_log()->warn(
        "event=checkback_tls_failed producer_group=\"{}\" error=\"{}\" effect=\"the check counts "
        "toward checkback.max_checks; set ca_file, cert_file or key_file of this endpoint\"",
        printable(message.producer_group, 256), printable(answer.description, 512));
  }

  void flush() {
    if (records_.empty()) return;
    report_problems(store_.record(records_, config_.max_checks));
    // One line per recorded batch, not per check: a failing endpoint must not flood the log.
    std::string outcomes;
    for (const auto& [outcome, count] : batch_outcomes_) {
      outcomes += " " + outcome + "=" + std::to_string(count);
    }
    checkback_log()->info("event=checks_recorded rows={}{}{}", records_.size(), outcomes,
                          first_failure_.empty() ? "" : " first_failure: " + first_failure_);
    records_.clear();
    batch_outcomes_.clear();
    first_failure_.clear();
  }

  void report_problems(const std::vector<RowProblem>& problems) {
    for (const RowProblem& problem : problems) {
      checkback_log()->error("event={} id={} reason=\"{}\"",
                             problem.quarantined ? "half_message_quarantined" : "row_parked_dead",
                             problem.id.value, printable(problem.reason));
      rows_isolated_counter(metrics_, problem.quarantined).increment();
    }
  }

  void pause(milliseconds delay, const char* why) {
    checkback_log()->warn("event=sweeper_retry retry_in_ms={} error=\"{}\"", delay.count(), why);
    sleep_for(delay);
  }

  /// Waits `duration`, serving live transfers; with none, one blocking wait that a stop request
  /// ends (wake_on_stop_), so an idle sweeper costs nothing between sweeps.
  void sleep_for(milliseconds duration) {
    const auto deadline = Clock::now() + duration;
    while (!stop_.stop_requested() && Clock::now() < deadline) {
      const auto left = std::chrono::ceil<milliseconds>(deadline - Clock::now());
      checker_.perform(checker_.active() > 0 ? std::min(kPollSlice * 4, left) : left);
    }
  }

  const CheckbackConfig& config_;
  MetricsRegistry& metrics_;
  std::stop_token stop_;
  HalfMessageStore store_;
  std::map<std::string, GroupLane> lanes_;
  HttpChecker checker_;
  std::stop_callback<std::function<void()>> wake_on_stop_{stop_, [this] { checker_.wakeup(); }};
  Backoff store_backoff_;
  std::mt19937_64 random_;
  std::vector<CheckRecord> records_;
  std::set<std::string> warned_groups_;
  std::map<std::string, std::chrono::steady_clock::time_point> tls_warned_;  // by group
  std::string first_failure_;
  std::map<std::string, int> batch_outcomes_;  // for the one log line per recorded batch
  bool idle_ = false;
};

}  // namespace

Sweeper::Sweeper(const Config& config, Telemetry& telemetry)
    : config_(config), telemetry_(telemetry) {}

void Sweeper::run(std::stop_token stop) {
  SweepState state(config_, telemetry_, std::move(stop));
  state.run();
}

}  // namespace outbox
