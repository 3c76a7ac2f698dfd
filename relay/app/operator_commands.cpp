#include "relay/app/operator_commands.hpp"

#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "relay/app/commands.hpp"
#include "relay/core/text.hpp"
#include "relay/store/lag_reader.hpp"

namespace outbox {

namespace {

/// Progress for long commands: one line on stderr per batch, so stdout stays the result.
ProgressCallback report_progress(const char* verb) {
  return [verb](std::int64_t done) { std::cerr << verb << ' ' << done << " rows so far\n"; };
}

}  // namespace

int print_status(const Config& config, bool json, const StatusThresholds& thresholds) {
  const LagSnapshot lag = LagReader(config.postgres, config.routing).read();
  std::vector<std::string> exceeded;
  long long backlog = 0;
  double oldest = 0;
  for (const TopicLag& topic : lag.topics) {
    backlog += topic.backlog_rows;
    oldest = std::max(oldest, topic.oldest_pending_age_seconds);
  }
  if (thresholds.max_lag_seconds && oldest > *thresholds.max_lag_seconds) {
    exceeded.push_back("oldest pending row is " + std::to_string(oldest) + " s old (limit " +
                       std::to_string(*thresholds.max_lag_seconds) + ")");
  }
  if (thresholds.max_backlog && backlog > *thresholds.max_backlog) {
    exceeded.push_back("backlog " + std::to_string(backlog) + " rows (limit " +
                       std::to_string(*thresholds.max_backlog) + ")");
  }
  if (thresholds.max_dead && lag.dead_rows > *thresholds.max_dead) {
    exceeded.push_back(std::to_string(lag.dead_rows) + " dead rows (limit " +
                       std::to_string(*thresholds.max_dead) + ")");
  }

  if (json) {
    nlohmann::json out = {{"backlog_rows", backlog},
                          {"oldest_pending_age_seconds", oldest},
                          {"unknown_rows", lag.unknown_rows},
                          {"oldest_unknown_age_seconds", lag.oldest_unknown_age_seconds},
                          {"oldest_unknown_answer", lag.oldest_unknown_answer},
                          {"dead_rows", lag.dead_rows},
                          {"oldest_transaction_age_seconds", lag.oldest_transaction_age_seconds},
                          {"thresholds_exceeded", exceeded},
                          {"topics", nlohmann::json::array()}};
    for (const TopicLag& topic : lag.topics) {
      out["topics"].push_back({{"topic", topic.topic},
                               {"backlog_rows", topic.backlog_rows},
                               {"oldest_pending_age_seconds", topic.oldest_pending_age_seconds},
                               {"unknown_rows", topic.unknown_rows},
                               {"dead_rows", topic.dead_rows},
                               {"published_last_minute", topic.published_last_minute},
                               {"oldest_pending_error", topic.oldest_pending_error}});
    }
    std::cout << out.dump(2) << '\n';
  } else {
    std::printf("%-32s %10s %18s %8s %8s %16s  %s\n", "TOPIC", "BACKLOG", "OLDEST_PENDING_S",
                "UNKNOWN", "DEAD", "PUBLISHED_1MIN", "WAITING_BECAUSE");
    for (const TopicLag& topic : lag.topics) {
      // Topics and errors are a writer's bytes: escaped and cut before they reach a terminal.
      std::printf("%-32s %10lld %18.1f %8lld %8lld %16lld  %s\n",
                  printable(topic.topic, 128).c_str(), static_cast<long long>(topic.backlog_rows),
                  topic.oldest_pending_age_seconds, static_cast<long long>(topic.unknown_rows),
                  static_cast<long long>(topic.dead_rows),
                  static_cast<long long>(topic.published_last_minute),
                  printable(topic.oldest_pending_error, 200).c_str());
    }
    std::printf(
        "total: backlog %lld, oldest pending %.1f s, unknown %lld, dead %lld; "
        "oldest open transaction %.1f s\n",
        backlog, oldest, static_cast<long long>(lag.unknown_rows),
        static_cast<long long>(lag.dead_rows), lag.oldest_transaction_age_seconds);
    if (!lag.oldest_unknown_answer.empty()) {
      std::printf("undecided rows: the oldest checked one's last answer: %s\n",
                  printable(lag.oldest_unknown_answer, 300).c_str());
    }
  }
  for (const std::string& reason : exceeded) std::cerr << "outbox-relay status: " << reason << '\n';
  return exceeded.empty() ? kExitOk : kExitThreshold;
}

int list_dead(const Config& config, const DeadRowFilter& filter, int limit, bool json) {
  const auto rows = list_dead_rows(config.postgres, config.routing, filter, limit);
  if (json) {
    nlohmann::json out = nlohmann::json::array();
    for (const DeadRow& row : rows) {
      out.push_back({{"id", row.id},
                     {"topic", row.topic},
                     {"key", row.key ? nlohmann::json(*row.key) : nlohmann::json(nullptr)},
                     {"created_at", row.created_at},
                     {"reason", row.reason},
                     {"attempts", row.attempts},
                     {"check_count", row.check_count}});
    }
    std::cout << out.dump(2) << '\n';
    return kExitOk;
  }
  std::printf("%-12s %-24s %-20s %-19s %s\n", "ID", "TOPIC", "KEY", "CREATED_AT", "REASON");
  for (const DeadRow& row : rows) {
    std::printf("%-12lld %-24s %-20s %-19s %s\n", static_cast<long long>(row.id),
                printable(row.topic, 128).c_str(), printable(row.key.value_or(""), 128).c_str(),
                row.created_at.c_str(), printable(row.reason, 1000).c_str());
  }
  std::fprintf(stderr, "%zu dead row(s) shown (--limit %d)\n", rows.size(), limit);
  return kExitOk;
}

int requeue_dead(const Config& config, const DeadRowFilter& filter, int batch_size) {
  const std::int64_t done = requeue_dead_rows(config.postgres, config.routing, filter, batch_size,
                                              report_progress("requeued"));
  std::cout << "requeued " << done << " dead row(s)\n";
  return kExitOk;
}

int discard_dead(const Config& config, const DeadRowFilter& filter, const std::string& why,
                 int batch_size) {
  const std::int64_t done = discard_dead_rows(config.postgres, config.routing, filter, why,
                                              batch_size, report_progress("discarded"));
  std::cout << "discarded " << done << " dead row(s)\n";
  return kExitOk;
}

int purge(const Config& config) {
  const std::int64_t done =
      purge_finished_rows(config.postgres, config.retention.keep_finished,
                          config.retention.batch_size, report_progress("purged"));
  std::cout << "purged " << done << " finished row(s) older than "
            << config.retention.keep_finished.count() << " ms\n";
  return kExitOk;
}

}  // namespace outbox
