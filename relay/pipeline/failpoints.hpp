// Faults the relay loop injects on purpose, for fault-injection tests (README, "Failpoints"), and
// their parser. Off unless set; the app reads them from the RELAY_FAILPOINTS environment variable.
#pragma once

#include <optional>
#include <string>

namespace outbox {

/// Faults the loop injects on purpose, for fault-injection tests (README, "Failpoints"). Off unless
/// set; the app reads them from the RELAY_FAILPOINTS environment variable.
struct Failpoints {
  /// After this many batches, put the producer into librdkafka's fatal-error state, once.
  std::optional<int> producer_fatal_after_batches;
  /// exactly_once: SIGSTOP the whole process right before the Nth commit, after the lease check
  /// (a process frozen mid-commit, for the fencing test).
  std::optional<int> freeze_before_commit;
  /// exactly_once: SIGKILL the process right after the Nth commit, before it is recorded.
  std::optional<int> kill_after_commit;
};

/// Parses "name=value[,name=value]" (RELAY_FAILPOINTS); throws std::invalid_argument naming an
/// unknown failpoint or a bad value.
Failpoints parse_failpoints(const std::string& text);

}  // namespace outbox
