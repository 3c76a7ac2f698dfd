#include "relay/pipeline/topic_holds.hpp"

#include <algorithm>
#include <set>

namespace outbox {

TopicHolds::TopicHolds(std::chrono::milliseconds backoff_initial,
                       std::chrono::milliseconds backoff_max,
                       std::chrono::milliseconds log_repeat_interval)
    : backoff_initial_(backoff_initial),
      backoff_max_(backoff_max),
      log_repeat_interval_(log_repeat_interval) {}

TopicHolds::HoldEvent TopicHolds::hold(const std::string& route, const std::string& topic,
                                       const std::string& error_code, const std::string& error,
                                       Clock::time_point now) {
  const int failures = ++failures_[route];
  // initial * 2^(failures-1), capped; no jitter: a topic's retry meets no other instance's.
  auto delay = backoff_initial_;
  for (int i = 1; i < failures && delay < backoff_max_; ++i) delay *= 2;
  delay = std::min(delay, backoff_max_);

  HoldEvent event;
  event.retry_in = delay;
  auto [found, inserted] = holds_.try_emplace(route);
  Hold& hold = found->second;
  if (inserted) {
    hold.held = {route, topic, error_code, error, now};
    event.should_log = true;
  } else if (hold.held.error_code != error_code) {
    hold.held.error_code = error_code;
    hold.held.error = error;
    event.should_log = true;
  } else if (now - hold.logged_at >= log_repeat_interval_) {
    event.should_log = true;
  }
  if (event.should_log) hold.logged_at = now;
  hold.retry_at = std::max(hold.retry_at, now + delay);
  return event;
}

TopicHolds::Attempt TopicHolds::hold_all(const std::vector<TopicFailure>& failures,
                                         Clock::time_point now) {
  Attempt attempt;
  std::set<std::string> seen;
  for (const TopicFailure& failure : failures) {
    if (!seen.insert(failure.route).second) continue;
    attempt.newly_held = attempt.newly_held || !is_held(failure.route);
    const HoldEvent event =
        hold(failure.route, failure.topic, failure.error_code, failure.error, now);
    if (event.should_log) attempt.to_log.emplace_back(&failure, event);
  }
  return attempt;
}

void TopicHolds::delivered(const std::string& route) {
  if (!holds_.contains(route)) failures_.erase(route);
}

std::vector<std::string> TopicHolds::routes() const {
  std::vector<std::string> routes;
  routes.reserve(holds_.size());
  for (const auto& [route, hold] : holds_) routes.push_back(route);
  return routes;
}

std::optional<TopicHolds::Clock::time_point> TopicHolds::next_retry() const {
  std::optional<Clock::time_point> earliest;
  for (const auto& [route, hold] : holds_) {
    if (!earliest || hold.retry_at < *earliest) earliest = hold.retry_at;
  }
  return earliest;
}

std::vector<TopicHolds::Held> TopicHolds::held() const {
  std::vector<Held> held;
  for (const auto& [route, hold] : holds_) held.push_back(hold.held);
  return held;
}

}  // namespace outbox
