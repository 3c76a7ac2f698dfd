// What the relay loop reports: its metrics (looked up once, then updated lock-free), its totals for
// the progress line, and where its thread spent its time. Private to relay/pipeline.
#pragma once

#include <chrono>
#include <cstdint>

#include "relay/observe/metrics.hpp"

namespace outbox {

/// The loop's metrics, looked up once: updating them is then a relaxed atomic add.
struct LoopMetrics {
  static Counter& publish_errors(MetricsRegistry& registry, const char* kind) {
    return registry.counter("outbox_publish_errors_total",
                            "Rows whose publish failed, by kind; retriable ones are re-sent, "
                            "permanent ones are parked dead.",
                            {{"kind", kind}});
  }

  static Counter& transactions(MetricsRegistry& registry, const char* outcome) {
    return registry.counter("outbox_transactions_total",
                            "Kafka transactions ended (kafka.exactly_once), by outcome: committed, "
                            "aborted (their rows are produced again), fenced (the producer was "
                            "replaced).",
                            {{"outcome", outcome}});
  }

  explicit LoopMetrics(MetricsRegistry& registry)
      : published(registry.counter("outbox_published_total",
                                   "Rows published to Kafka and recorded as published.")),
        retriable_errors(publish_errors(registry, "retriable")),
        permanent_errors(publish_errors(registry, "permanent")),
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
                                      "Messages in librdkafka's queues or in flight.")),
        topics_held(
            registry.gauge("outbox_topics_held", "Topics held back after a failure of their own.")),
        isolated_parked(rows_isolated_counter(registry, /*quarantined=*/false)),
        heartbeats(registry.counter("outbox_lease_heartbeats_total",
                                    "Heartbeats this instance renewed (one per rebalance).")),
        instances_ended(registry.counter(
            "outbox_lease_instances_ended_total",
            "Instances whose heartbeat expired and whose session this instance ended, so that "
            "their lanes could move.")),
        fenced(registry.counter("outbox_lease_fenced_total",
                                "Times this instance stopped producing for its lanes because its "
                                "heartbeat could not be renewed in time (self-fencing).")),
        fenced_unrecorded(registry.counter(
            "outbox_lease_fenced_unrecorded_deliveries_total",
            "Messages acknowledged by Kafka but not yet recorded when this instance fenced "
            "itself: the lanes' next owner publishes them again.")),
        fenced_in_doubt(registry.counter(
            "outbox_lease_fenced_in_doubt_messages_total",
            "Messages sent to Kafka but not acknowledged when this instance fenced itself: Kafka "
            "may still append them, after newer events of their key from the lanes' next owner "
            "(stale copies). With the previous counter, the bound on what a fenced instance can "
            "still deliver.")),
        quarantined(rows_isolated_counter(registry, /*quarantined=*/true)),
        transactions_committed(transactions(registry, "committed")),
        transactions_aborted(transactions(registry, "aborted")),
        transactions_fenced(transactions(registry, "fenced")),
        lanes_fenced(registry.counter(
            "outbox_lanes_fenced_total",
            "Lanes taken over from another transactional producer (kafka.exactly_once), which was "
            "fenced and whose last marker was read first.")),
        recovered_rows(registry.counter(
            "outbox_recovered_rows_total",
            "Rows a fenced producer had committed to Kafka but not recorded, marked published from "
            "its marker instead of being published again.")) {}

  Counter& published;
  Counter& retriable_errors;
  Counter& permanent_errors;
  Histogram& batch_size;
  Histogram& insert_to_ack;
  Gauge& lanes_owned;
  Gauge& in_flight_batches;
  Gauge& producer_queue;
  Gauge& topics_held;
  Counter& isolated_parked;
  Counter& heartbeats;
  Counter& instances_ended;
  Counter& fenced;
  Counter& fenced_unrecorded;
  Counter& fenced_in_doubt;
  Counter& quarantined;
  Counter& transactions_committed;
  Counter& transactions_aborted;
  Counter& transactions_fenced;
  Counter& lanes_fenced;
  Counter& recovered_rows;
};

struct Totals {
  std::uint64_t published = 0;
  std::uint64_t dead = 0;
  std::uint64_t retried = 0;
  std::uint64_t stalled_batches = 0;
};

/// Where the loop's thread spent its time since the last progress line (the recorder's thread
/// reports its own): the figures that show whether PostgreSQL, Kafka or the relay holds the
/// pipeline back.
struct StageTimes {
  using Clock = std::chrono::steady_clock;
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

}  // namespace outbox
