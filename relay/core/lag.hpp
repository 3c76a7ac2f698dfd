// What "relay lag" means, as read from the outbox table: per topic, how many rows wait and how old
// the oldest is. Filled by relay/store (LagReader), shown by /metrics and `outbox-relay status`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace outbox {

struct TopicLag {
  std::string topic;  ///< the routing column's value ("" for rows with none)
  std::int64_t backlog_rows = 0;
  double oldest_pending_age_seconds = 0;
  std::int64_t unknown_rows = 0;
  std::int64_t dead_rows = 0;
  std::int64_t published_last_minute = 0;
  /// Why the topic's rows wait: the last_error of its oldest pending row that has one (a refusal
  /// by Kafka, a stall); empty when none has. Cut to a few hundred bytes.
  std::string oldest_pending_error;
};

struct LagSnapshot {
  std::vector<TopicLag> topics;  ///< every topic with pending, unknown, dead or recent rows
  std::int64_t unknown_rows = 0;
  double oldest_unknown_age_seconds = 0;
  /// What the endpoint last answered for the oldest half message that has been checked (a TLS
  /// failure, a timeout, UNKNOWN): why undecided rows wait. Cut to a few hundred bytes.
  std::string oldest_unknown_answer;
  std::int64_t dead_rows = 0;
  /// The oldest open transaction in the database: it holds back what the relay can see and what
  /// VACUUM can clean, so a long one is worth an alert.
  double oldest_transaction_age_seconds = 0;
};

}  // namespace outbox
