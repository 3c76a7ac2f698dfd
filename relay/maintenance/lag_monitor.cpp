#include "relay/maintenance/maintenance.hpp"

#include <spdlog/spdlog.h>

#include <chrono>

#include "relay/core/periodic.hpp"
#include "relay/store/lag_reader.hpp"
#include "relay/store/store.hpp"

namespace outbox {

namespace {

void publish(const LagSnapshot& lag, MetricsRegistry& metrics) {
  // Per-topic series are rebuilt each time from the topics with pending, unknown, dead or recently
  // published rows: an active topic that is caught up reads 0 (not a gap), and a topic that went
  // quiet disappears instead of reporting its last value for ever.
  metrics.clear_gauge("outbox_backlog_rows");
  metrics.clear_gauge("outbox_oldest_pending_age_seconds");
  for (const TopicLag& topic : lag.topics) {
    metrics
        .gauge("outbox_backlog_rows", "Rows pending publication, per topic.",
               {{"topic", topic.topic}})
        .set(static_cast<double>(topic.backlog_rows));
    metrics
        .gauge("outbox_oldest_pending_age_seconds",
               "Age of the oldest pending row, per topic: the relay lag.", {{"topic", topic.topic}})
        .set(topic.oldest_pending_age_seconds);
  }
  metrics.gauge("outbox_unknown_rows", "Half messages waiting for a decision (state unknown).")
      .set(static_cast<double>(lag.unknown_rows));
  metrics.gauge("outbox_oldest_unknown_age_seconds", "Age of the oldest half message.")
      .set(lag.oldest_unknown_age_seconds);
  metrics.gauge("outbox_dead_rows", "Rows parked dead, waiting for an operator.")
      .set(static_cast<double>(lag.dead_rows));
  metrics
      .gauge("outbox_oldest_transaction_age_seconds",
             "Age of the oldest open transaction in the database; it holds back visibility of "
             "newer rows' ids and VACUUM.")
      .set(lag.oldest_transaction_age_seconds);
}

}  // namespace

void refresh_lag_gauges(const Config& config, Telemetry& telemetry, std::stop_token stop) {
  LagReader reader(config.postgres, config.routing);
  Gauge& refresh_failures_seen = telemetry.metrics.gauge(
      "outbox_lag_refresh_ok", "1 when the last read of the lag gauges from PostgreSQL worked.");
  Gauge& read_seconds = telemetry.metrics.gauge(
      "outbox_lag_read_seconds",
      "How long the last read of the lag gauges took; above 5% of metrics.refresh_interval_ms "
      "the relay reads them less often.");
  // Counting the backlog costs in proportion to it, and its snapshot holds back VACUUM and the
  // pruning of the pending index that the claim relies on: a backlog of 5,000,000 rows took
  // seconds to count, and reading it every 5 s cut the drain from 65,000 to 47,000 rows/s. Pacing
  // the reads to 5% of the time keeps that cost bounded; the gauges are then older, by at most 20
  // times a read.
  constexpr double kLagReadsBusyShare = 0.05;
  run_paced(config.metrics.refresh_interval, kLagReadsBusyShare, stop, [&] {
    try {
      const auto started = std::chrono::steady_clock::now();
      publish(reader.read(), telemetry.metrics);
      read_seconds.set(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
      refresh_failures_seen.set(1);
    } catch (const std::exception& error) {
      refresh_failures_seen.set(0);
      spdlog::warn("event=lag_refresh_failed error=\"{}\"", error.what());
    }
    return true;
  });
}

}  // namespace outbox
