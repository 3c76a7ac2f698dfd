// The topic-hold rule: a failure that belongs to a topic (it does not exist, it is not authorised,
// a partition of it has too few in-sync replicas or no leader, Kafka never acknowledges it) holds
// back only that topic's rows. While a topic is held the claim skips its rows, so no later row of
// any of its keys can overtake the ones that failed; every other topic flows, and the claim floor
// rises past the held rows, so a held backlog costs the other topics' claims nothing
// (relay/store/claim_floor.hpp). A hold ends when its retry time has come and none of its rows is
// still in flight; then the claim starts again from the topic's oldest pending row. Retry delays
// double per consecutive failure of the topic (up to a cap) and reset when the topic delivers
// again.
//
// Held topics are named by their routing value (the column the claim filters on), with the Kafka
// topic it resolves to for logs and metrics. Not thread-safe: the relay loop owns it.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "relay/publisher/publisher.hpp"

namespace outbox {

class TopicHolds {
 public:
  using Clock = std::chrono::steady_clock;

  TopicHolds(std::chrono::milliseconds backoff_initial, std::chrono::milliseconds backoff_max,
             std::chrono::milliseconds log_repeat_interval = std::chrono::seconds(60));

  /// What hold() did, for the one log line per topic and error.
  struct HoldEvent {
    bool should_log = false;  ///< new hold, another error, or the same one last logged long ago
    std::chrono::milliseconds retry_in{0};
  };
  /// Holds `route` after a failure with `error_code` (a short stable name, e.g. a librdkafka error
  /// name) and `error` (its text). Holding a held route again counts one more failure.
  HoldEvent hold(const std::string& route, const std::string& topic, const std::string& error_code,
                 const std::string& error, Clock::time_point now);

  /// Holds the route of each failure once, however many failures name it: one broker answer or
  /// one stall fails many rows of a topic at once, and its backoff must grow per attempt, not per
  /// row. Returns the failures to log (the first of each route whose hold says so).
  struct Attempt {
    std::vector<std::pair<const TopicFailure*, HoldEvent>> to_log;
    bool newly_held = false;  ///< some route was not held before
  };
  Attempt hold_all(const std::vector<TopicFailure>& failures, Clock::time_point now);

  /// A row of `route` was delivered: its backoff starts from the beginning at the next failure.
  void delivered(const std::string& route);

  /// Ends the holds whose retry time has come and for which `has_rows_in_flight(route)` is false;
  /// returns the routes released.
  template <typename InFlight>
  std::vector<std::string> release_due(Clock::time_point now, InFlight&& has_rows_in_flight) {
    std::vector<std::string> released;
    for (auto hold = holds_.begin(); hold != holds_.end();) {
      if (now >= hold->second.retry_at && !has_rows_in_flight(hold->first)) {
        released.push_back(hold->first);
        hold = holds_.erase(hold);
      } else {
        ++hold;
      }
    }
    return released;
  }

  bool is_held(const std::string& route) const { return holds_.contains(route); }
  bool empty() const { return holds_.empty(); }
  /// The held routes, for the claim to skip.
  std::vector<std::string> routes() const;
  /// The earliest retry time of any hold, for the loop's wait.
  std::optional<Clock::time_point> next_retry() const;

  struct Held {
    std::string route;
    std::string topic;
    std::string error_code;
    std::string error;
    Clock::time_point since;
  };
  std::vector<Held> held() const;

 private:
  struct Hold {
    Held held;
    Clock::time_point retry_at;
    Clock::time_point logged_at;
  };
  std::chrono::milliseconds backoff_initial_;
  std::chrono::milliseconds backoff_max_;
  std::chrono::milliseconds log_repeat_interval_;
  std::map<std::string, Hold> holds_;
  std::map<std::string, int> failures_;  ///< consecutive failures per route, until a delivery
};

}  // namespace outbox
