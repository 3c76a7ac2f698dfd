#include "relay/pipeline/lag_monitor.hpp"

#include <spdlog/spdlog.h>

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

LagMonitor::LagMonitor(const Config& config, Telemetry& telemetry)
    : config_(config), telemetry_(telemetry) {}

void LagMonitor::run(std::stop_token stop) {
  LagReader reader(config_.postgres, config_.routing);
  Gauge& refresh_failures_seen = telemetry_.metrics.gauge(
      "outbox_lag_refresh_ok", "1 when the last read of the lag gauges from PostgreSQL worked.");
  run_every(config_.metrics.refresh_interval, stop, [&] {
    try {
      publish(reader.read(), telemetry_.metrics);
      refresh_failures_seen.set(1);
    } catch (const std::exception& error) {
      refresh_failures_seen.set(0);
      spdlog::warn("event=lag_refresh_failed error=\"{}\"", error.what());
    }
    return true;
  });
}

}  // namespace outbox
