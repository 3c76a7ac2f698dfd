// The real outbox-relay binary as a child process, so a test can SIGKILL it like an OOM killer
// would.
#pragma once

#include <sys/types.h>
#include <chrono>
#include <map>
#include <string>

namespace outbox::test {

/// A config file for a test: the test's database and the local broker, fast polling and rebalance
/// so tests do not wait, plus `overrides` ("relay.batch_size" -> "100") on top.
std::string write_relay_config(const std::string& database_url,
                               const std::map<std::string, std::string>& overrides = {});

class RelayProcess {
 public:
  /// Starts `outbox-relay run --config config_path`; its stderr goes to a log file whose tail is
  /// printed when a check fails.
  explicit RelayProcess(const std::string& config_path);
  ~RelayProcess();  ///< SIGKILLs the relay if it still runs
  RelayProcess(const RelayProcess&) = delete;
  RelayProcess& operator=(const RelayProcess&) = delete;

  void kill_hard();  ///< SIGKILL and reap
  void freeze();     ///< SIGSTOP: the process, its threads and librdkafka's, stop where they are
  void thaw();       ///< SIGCONT
  void send_signal(int signal_number);
  /// SIGTERM, then waits up to `timeout` for the exit; returns the exit code (-1 if killed/timed
  /// out). When the relay had already exited (seen by running()), returns its exit code.
  int terminate(std::chrono::milliseconds timeout = std::chrono::seconds(20));
  bool running();
  std::string log_tail(std::size_t bytes = 4000) const;
  /// The port of /metrics, /healthz and /readyz (test configs listen on port 0).
  int metrics_port() const;
  /// GET /metrics, the text exposition ("" when it does not answer).
  std::string metrics_text() const;
  /// The relay's peak resident memory so far (VmHWM), in kB; 0 when it no longer runs.
  long peak_rss_kb() const;
  /// How many times the log says the relay started: 1 unless it restarted (it never re-execs).
  int starts_logged() const;

 private:
  pid_t pid_ = -1;
  int exit_code_ = -1;
  std::string log_path_;
};

/// The value of one series ("name{label=\"v\"}") in a Prometheus text page, or -1 when absent.
double metric_value(const std::string& page, const std::string& series);

struct CommandResult {
  int exit_code = -1;
  std::string output;  ///< stdout
  std::string errors;  ///< stderr
};
/// Runs `outbox-relay <arguments>` (a shell word list) to completion.
CommandResult relay_command(const std::string& arguments);

/// Waits until `condition()` holds, up to `timeout`; returns whether it did.
template <typename Condition>
bool eventually(Condition condition, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    struct timespec pause {
      0, 100'000'000
    };
    nanosleep(&pause, nullptr);
  }
  return condition();
}

}  // namespace outbox::test
