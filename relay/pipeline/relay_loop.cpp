#include "relay/pipeline/relay_loop.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <deque>
#include <memory>

#include "relay/core/assert.hpp"
#include "relay/core/backoff.hpp"
#include "relay/pipeline/outcome_recorder.hpp"
#include "relay/publisher/publisher.hpp"
#include "relay/store/store.hpp"

namespace outbox {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Upper bound on any single wait, so a stop request is noticed promptly.
constexpr milliseconds kStopCheckInterval{200};
// How long one wait for delivery reports may last while batches are in flight; it also bounds how
// late a NOTIFY that arrives meanwhile is noticed.
constexpr milliseconds kDeliveryPollInterval{1};
constexpr std::chrono::seconds kProgressLogInterval{10};
constexpr std::chrono::seconds kKafkaProbeInterval{5};
constexpr milliseconds kKafkaProbeTimeout{1000};

std::shared_ptr<spdlog::logger> pipeline_log() {
  auto logger = spdlog::get("pipeline");
  return logger ? logger : spdlog::default_logger();
}

/// The loop's metrics, looked up once: updating them is then a relaxed atomic add.
struct LoopMetrics {
  explicit LoopMetrics(MetricsRegistry& registry)
      : published(registry.counter("outbox_published_total",
                                   "Rows published to Kafka and recorded as published.")),
        retriable_errors(registry.counter("outbox_publish_errors_total",
                                          "Rows whose publish failed, by kind; retriable ones are "
                                          "re-sent, permanent ones are parked dead.",
                                          {{"kind", "retriable"}})),
        permanent_errors(registry.counter("outbox_publish_errors_total",
                                          "Rows whose publish failed, by kind; retriable ones are "
                                          "re-sent, permanent ones are parked dead.",
                                          {{"kind", "permanent"}})),
        batch_size(registry.histogram("outbox_batch_size_rows", "Rows per claimed batch.",
                                      exponential_buckets(1, 4, 9))),
        insert_to_ack(registry.histogram(
            "outbox_insert_to_ack_seconds",
            "Time from a row's insert (created_at) to Kafka's acknowledgement being recorded.",
            exponential_buckets(0.001, 2, 18))),
        lanes_owned(registry.gauge("outbox_lanes_owned", "Lanes this instance holds.")),
        in_flight_batches(
            registry.gauge("outbox_in_flight_batches", "Batches produced and not yet recorded.")),
        producer_queue(registry.gauge("outbox_producer_queue_messages",
                                      "Messages in librdkafka's queues or in flight.")) {}

  Counter& published;
  Counter& retriable_errors;
  Counter& permanent_errors;
  Histogram& batch_size;
  Histogram& insert_to_ack;
  Gauge& lanes_owned;
  Gauge& in_flight_batches;
  Gauge& producer_queue;
};

struct Totals {
  std::uint64_t published = 0;
  std::uint64_t dead = 0;
  std::uint64_t retried = 0;
};

/// Where the loop's thread spent its time since the last progress line (the recorder's thread
/// reports its own): the figures that show whether PostgreSQL, Kafka or the relay holds the
/// pipeline back.
struct StageTimes {
  Clock::duration claim{};
  Clock::duration produce{};
  Clock::duration await_kafka{};

  template <typename Work>
  static auto timed(Clock::duration& total, Work&& work) {
    const auto start = Clock::now();
    struct AddElapsed {
      Clock::duration& total;
      Clock::time_point start;
      ~AddElapsed() { total += Clock::now() - start; }
    } add_elapsed{total, start};
    return work();
  }
};

/// A batch handed to Kafka and not yet recorded. Its ids stay excluded from claims until the
/// recorder has committed its outcomes.
struct InFlightBatch {
  std::unique_ptr<PublishBatch> batch;
  std::uint64_t ticket = 0;
  bool submitted = false;  ///< complete, and queued at the recorder
};

PublishedRows published_rows_of(const Config& config) {
  return config.retention.delete_on_publish ? PublishedRows::delete_at_once : PublishedRows::keep;
}

/// One run of the loop; RelayLoop::run owns it. Split out so the loop's state has a home.
class LoopState {
 public:
  LoopState(const Config& config, Telemetry& telemetry, Failpoints failpoints, std::stop_token stop)
      : config_(config),
        failpoints_(failpoints),
        readiness_(telemetry.readiness),
        metrics_(telemetry.metrics),
        stop_(std::move(stop)),
        store_(config.postgres, config.routing, config.relay, published_rows_of(config)),
        publisher_(make_publisher()),
        recorder_(config.postgres, config.relay, published_rows_of(config)),
        store_backoff_(config.relay.backoff_initial, config.relay.backoff_max),
        kafka_backoff_(config.relay.backoff_initial, config.relay.backoff_max) {}

  void run() {
    while (!stop_.stop_requested()) {
      try {
        step();
        store_backoff_.reset();
      } catch (const StoreUnavailable& error) {
        readiness_.postgres = false;
        const milliseconds delay = store_backoff_.next_delay();
        pipeline_log()->warn(
            "event=postgres_unavailable retry_in_ms={} in_flight_batches={} error=\"{}\"",
            delay.count(), in_flight_.size(), error.what());
        serve_deliveries_for(delay);
      }
      log_progress_if_due();
      probe_kafka_if_due();
    }
    shut_down();
  }

 private:
  std::unique_ptr<KafkaPublisher> make_publisher() {
    return std::make_unique<KafkaPublisher>(config_.kafka, config_.routing,
                                            config_.relay.dead_key_policy);
  }

  void step() {
    if (!store_.connected()) {
      store_.ensure_connected();
      next_rebalance_ = Clock::now();  // leases died with the old session
      caught_up_ = false;
    }
    readiness_.postgres = true;
    if (Clock::now() >= next_rebalance_ || (releasing_lanes_ && in_flight_.empty())) rebalance();
    // Rows committed while batches are in flight are claimed now, not after those batches are
    // recorded: pipelining is what keeps commit-to-ack latency near one Kafka round trip.
    if (caught_up_ && !in_flight_.empty() && store_.wait_for_wakeup(milliseconds(0))) {
      caught_up_ = false;
    }
    claim_and_produce();
    StageTimes::timed(stage_times_.await_kafka, [&] {
      publisher_->poll(can_claim() ? milliseconds(0) : kDeliveryPollInterval);
    });
    record_completed_batches();
    if (publisher_->has_fatal_error()) replace_publisher();
    if (in_flight_.empty() && !can_claim()) wait_for_work();
  }

  bool can_claim() const {
    // After any retriable failure nothing more is claimed until every in-flight batch is recorded:
    // a later row of the failed row's key must not reach Kafka before it.
    const bool failure_in_flight =
        std::any_of(in_flight_.begin(), in_flight_.end(),
                    [](const auto& entry) { return entry.batch->had_retriable_failure(); });
    return !caught_up_ && !releasing_lanes_ && !failure_in_flight &&
           Clock::now() >= paused_until_ &&
           in_flight_.size() < static_cast<std::size_t>(config_.relay.max_in_flight_batches);
  }

  void rebalance() {
    const LaneOwnership ownership = store_.rebalance_lanes(/*may_release=*/in_flight_.empty());
    // Lanes are handed over only with nothing in flight, so the next owner never publishes a row
    // this instance has produced but not yet recorded (no duplicates in steady state).
    releasing_lanes_ = ownership.owned.size() > static_cast<std::size_t>(ownership.fair_share);
    if (ownership.owned.size() != owned_lanes_) caught_up_ = false;
    owned_lanes_ = ownership.owned.size();
    readiness_.lanes_owned = static_cast<int>(owned_lanes_);
    metrics_.lanes_owned.set(static_cast<double>(owned_lanes_));
    next_rebalance_ = Clock::now() + config_.relay.lane_rebalance_interval;
  }

  void claim_and_produce() {
    while (can_claim() && !stop_.stop_requested()) {
      in_flight_ids_.clear();
      for (const auto& entry : in_flight_) {
        for (const OutboxRow& row : entry.batch->rows()) in_flight_ids_.push_back(row.id);
      }
      ClaimedBatch claimed = StageTimes::timed(stage_times_.claim, [&] {
        return store_.claim_batch(in_flight_ids_, config_.relay.batch_size);
      });
      caught_up_ = claimed.reached_end;
      if (claimed.rows.empty()) return;
      found_rows_since_wait_ = true;
      metrics_.batch_size.observe(static_cast<double>(claimed.rows.size()));
      auto batch = std::make_unique<PublishBatch>(std::move(claimed.rows));
      StageTimes::timed(stage_times_.produce, [&] {
        publisher_->produce(*batch, [this] { return !stop_.stop_requested(); });
      });
      in_flight_.push_back({std::move(batch), next_ticket_++, false});
      if (failpoints_.producer_fatal_after_batches &&
          ++batches_produced_ == *failpoints_.producer_fatal_after_batches) {
        pipeline_log()->warn("event=failpoint name=producer_fatal_after_batches");
        publisher_->inject_fatal_error("failpoint producer_fatal_after_batches");
      }
    }
  }

  /// Hands every complete batch, in order, to the recorder, and finishes the ones it recorded.
  void record_completed_batches() {
    for (InFlightBatch& entry : in_flight_) {
      if (!entry.batch->complete()) break;
      if (entry.submitted) continue;
      recorder_.submit(entry.ticket, entry.batch->reports());
      entry.submitted = true;
    }
    finish_recorded_batches();
  }

  void finish_recorded_batches() {
    std::optional<std::string> failure;
    for (const OutcomeRecorder::Completion& completion : recorder_.completed()) {
      if (completion.error) {
        failure = completion.error;
        for (InFlightBatch& entry : in_flight_) {
          if (entry.ticket == completion.ticket) entry.submitted = false;
        }
        continue;
      }
      RELAY_ASSERT(!in_flight_.empty() && in_flight_.front().ticket == completion.ticket,
                   "batches are recorded in the order they were produced");
      const PublishBatch& batch = *in_flight_.front().batch;
      publisher_->release_held_keys(batch);
      count(batch);
      if (batch.had_retriable_failure()) {
        pause_after_failure(batch);
      } else {
        kafka_backoff_.reset();
      }
      in_flight_.pop_front();
    }
    if (failure) throw StoreUnavailable(*failure);
  }

  void count(const PublishBatch& batch) {
    const double now_ms =
        static_cast<double>(std::chrono::duration_cast<milliseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count());
    for (std::size_t i = 0; i < batch.reports().size(); ++i) {
      const DeliveryReport& report = batch.reports()[i];
      switch (report.outcome) {
        case DeliveryOutcome::delivered:
          ++totals_.published;
          metrics_.published.increment();
          metrics_.insert_to_ack.observe(
              std::max(0.0, (now_ms - static_cast<double>(batch.rows()[i].created_at_ms)) / 1000));
          break;
        case DeliveryOutcome::permanent_failure:
          ++totals_.dead;
          metrics_.permanent_errors.increment();
          pipeline_log()->warn("event=row_parked_dead id={} reason=\"{}\"", report.id.value,
                               report.error);
          break;
        case DeliveryOutcome::retriable_failure:
          ++totals_.retried;
          metrics_.retriable_errors.increment();
          break;
        case DeliveryOutcome::not_attempted:
          break;
      }
    }
  }

  void pause_after_failure(const PublishBatch& batch) {
    const auto failed = std::find_if(batch.reports().begin(), batch.reports().end(),
                                     [](const DeliveryReport& report) {
                                       return report.outcome == DeliveryOutcome::retriable_failure;
                                     });
    const milliseconds delay = kafka_backoff_.next_delay();
    paused_until_ = Clock::now() + delay;
    caught_up_ = false;  // resume from the oldest pending row once the pause is over
    pipeline_log()->warn(
        "event=kafka_retriable_failure retry_in_ms={} first_failed_id={} error=\"{}\"",
        delay.count(), failed->id.value, failed->error);
  }

  void replace_publisher() {
    pipeline_log()->error("event=producer_fatal error=\"{}\" action=recreate_producer",
                          publisher_->fatal_error());
    // Every message still queued is purged and reported as a retriable failure, so the rows stay
    // pending and are re-published by the new producer (with a new producer id) in id order.
    publisher_->drain(milliseconds(0));
    // Recorded before the new producer starts, so keys held for dead rows stay held until those
    // rows are dead in the database, where the claim sees them.
    while (!in_flight_.empty() && in_flight_.front().batch->complete()) {
      record_completed_batches();
      recorder_.wait_idle(kStopCheckInterval);
    }
    finish_recorded_batches();
    publisher_ = make_publisher();
  }

  void wait_for_work() {
    // Adaptive polling: soon again after finding rows, then doubling while nothing turns up.
    poll_wait_ = found_rows_since_wait_ ? config_.relay.poll_interval_min
                                        : std::min(poll_wait_ * 2, config_.relay.poll_interval);
    found_rows_since_wait_ = false;
    auto deadline = std::min(next_rebalance_, Clock::now() + poll_wait_);
    deadline = std::max(deadline, paused_until_);
    while (!stop_.stop_requested()) {
      const auto now = Clock::now();
      if (now >= deadline) break;
      const auto slice =
          std::min(kStopCheckInterval, std::chrono::duration_cast<milliseconds>(deadline - now));
      if (store_.wait_for_wakeup(slice) && now >= paused_until_) break;
    }
    caught_up_ = false;
  }

  void serve_deliveries_for(milliseconds duration) {
    const auto deadline = Clock::now() + duration;
    while (!stop_.stop_requested() && Clock::now() < deadline) {
      publisher_->poll(std::min(kStopCheckInterval, duration));
    }
  }

  void probe_kafka_if_due() {
    metrics_.in_flight_batches.set(static_cast<double>(in_flight_.size()));
    metrics_.producer_queue.set(publisher_->queue_length());
    const auto now = Clock::now();
    if (now < next_kafka_probe_) return;
    next_kafka_probe_ = now + kKafkaProbeInterval;
    readiness_.kafka = publisher_->broker_reachable(kKafkaProbeTimeout);
  }

  void log_progress_if_due() {
    const auto now = Clock::now();
    if (now < next_progress_log_) return;
    next_progress_log_ = now + kProgressLogInterval;
    auto ms = [](Clock::duration duration) {
      return std::chrono::duration_cast<milliseconds>(duration).count();
    };
    pipeline_log()->info(
        "event=progress published_total={} dead_total={} retried_total={} in_flight_batches={} "
        "lanes_owned={} producer_queue={} claim_ms={} produce_ms={} await_kafka_ms={} "
        "record_ms={}",
        totals_.published, totals_.dead, totals_.retried, in_flight_.size(), owned_lanes_,
        publisher_->queue_length(), ms(stage_times_.claim), ms(stage_times_.produce),
        ms(stage_times_.await_kafka), ms(recorder_.take_busy_time()));
    stage_times_ = {};
  }

  void shut_down() {
    pipeline_log()->info("event=stopping in_flight_batches={}", in_flight_.size());
    const auto deadline = Clock::now() + config_.relay.shutdown_timeout;
    auto record_until_deadline = [&] {
      try {
        record_completed_batches();
        recorder_.wait_idle(kDeliveryPollInterval);
        finish_recorded_batches();
        return true;
      } catch (const StoreUnavailable& error) {
        pipeline_log()->warn(
            "event=outcomes_not_recorded batches={} error=\"{}\" effect=delivered rows stay "
            "pending and are published again by the next run",
            in_flight_.size(), error.what());
        return false;
      }
    };
    while (!in_flight_.empty() && Clock::now() < deadline) {
      publisher_->poll(kDeliveryPollInterval);
      if (!record_until_deadline()) break;
    }
    publisher_->drain(milliseconds(0));  // what is still undelivered stays pending
    while (!in_flight_.empty() && Clock::now() < deadline && record_until_deadline()) {
    }
    pipeline_log()->info("event=stopped published_total={} dead_total={}", totals_.published,
                         totals_.dead);
  }

  const Config& config_;
  const Failpoints failpoints_;
  int batches_produced_ = 0;
  Readiness& readiness_;
  LoopMetrics metrics_;
  std::stop_token stop_;
  OutboxStore store_;
  // Batches are declared before the publisher so the publisher, whose callbacks point into them,
  // is destroyed first.
  std::deque<InFlightBatch> in_flight_;
  std::unique_ptr<KafkaPublisher> publisher_;
  // After the batches, so its thread, which reads their reports, stops first.
  OutcomeRecorder recorder_;
  std::uint64_t next_ticket_ = 0;
  Backoff store_backoff_;
  Backoff kafka_backoff_;
  std::vector<OutboxId> in_flight_ids_;
  bool caught_up_ = false;
  bool found_rows_since_wait_ = false;
  milliseconds poll_wait_ = config_.relay.poll_interval;
  bool releasing_lanes_ = false;
  std::size_t owned_lanes_ = 0;
  Clock::time_point next_rebalance_ = Clock::now();
  Clock::time_point paused_until_ = Clock::now();
  Clock::time_point next_progress_log_ = Clock::now() + kProgressLogInterval;
  Clock::time_point next_kafka_probe_ = Clock::now();
  Totals totals_;
  StageTimes stage_times_;
};

}  // namespace

Failpoints parse_failpoints(const std::string& text) {
  Failpoints failpoints;
  std::size_t start = 0;
  while (start < text.size()) {
    const std::size_t end = std::min(text.find(',', start), text.size());
    const std::string item = text.substr(start, end - start);
    start = end + 1;
    const auto equals = item.find('=');
    const std::string name = item.substr(0, equals);
    if (name == "producer_fatal_after_batches" && equals != std::string::npos) {
      failpoints.producer_fatal_after_batches = std::stoi(item.substr(equals + 1));
      continue;
    }
    throw std::invalid_argument("RELAY_FAILPOINTS: unknown failpoint or missing value: '" + item +
                                "' (known: producer_fatal_after_batches=N)");
  }
  return failpoints;
}

RelayLoop::RelayLoop(const Config& config, Telemetry& telemetry, Failpoints failpoints)
    : config_(config), telemetry_(telemetry), failpoints_(failpoints) {}

void RelayLoop::run(std::stop_token stop) {
  LoopState state(config_, telemetry_, failpoints_, std::move(stop));
  state.run();
}

}  // namespace outbox
