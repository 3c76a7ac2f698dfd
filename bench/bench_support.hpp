// What every benchmark shares: a fresh database loaded with rows, the real relay binary as a child
// process whose CPU time and peak RSS are read from /proc, and percentiles.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace RdKafka {
class Conf;
class KafkaConsumer;
}  // namespace RdKafka

namespace outbox::bench {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string server = "postgresql://postgres@127.0.0.1:5432";
  std::string kafka = "127.0.0.1:9092";
  long rows = 1'000'000;
  long history = 0;  ///< published rows kept in the table before the backlog
  int keys = 10'000;
  int payload_bytes = 256;
  int batch_size = 1000;
  bool delete_on_publish = false;  ///< retention.delete_on_publish for the relay under test
  bool exactly_once = false;       ///< kafka.exactly_once for the relay under test
};

/// Microseconds since the epoch on the system clock, comparable with other processes' clocks on
/// this machine (PostgreSQL's clock_timestamp(), the broker's LogAppendTime).
std::int64_t wall_clock_us();

double seconds_since(Clock::time_point start);

/// Throws, naming the fix, when the Kafka broker at options.kafka does not answer within 5 s: a
/// benchmark against a missing broker would otherwise wait for deliveries that never come.
void require_kafka(const Options& options);
/// Creates `topic` before a run, as a deployment's topics exist before the relay publishes to
/// them: creation is not part of what is measured. Three partitions is the broker's num.partitions
/// in scripts/services, which the figures in bench/RESULTS.md were measured with.
void create_topic(const Options& options, const std::string& topic, int partitions = 3,
                  const std::map<std::string, std::string>& configs = {});

/// A global client configuration: `bootstrap` and `settings`; throws with librdkafka's reason.
std::unique_ptr<RdKafka::Conf> client_conf(const std::string& bootstrap,
                                           const std::map<std::string, std::string>& settings);

/// A consumer of `topic` from its start (its own group, no offsets committed) with `settings`
/// added; throws with librdkafka's reason.
std::unique_ptr<RdKafka::KafkaConsumer> subscribed_consumer(
    const std::string& bootstrap, const std::string& topic,
    const std::map<std::string, std::string>& settings = {});

/// Calls `send(n)` for n = 0 .. per_second * seconds - 1 on a fixed schedule from now: open loop,
/// so a late call goes at once and the schedule does not slip (a writer that waited for its last
/// commit must not lower the offered rate). Returns how many calls it made.
long paced(double per_second, int seconds, const std::function<void(long)>& send);

/// A fresh migrated database, dropped by the destructor. Loading goes through plain INSERT ...
/// SELECT, then VACUUM ANALYZE and CHECKPOINT, so every benchmark starts from the same state.
class BenchDatabase {
 public:
  BenchDatabase(const Options& options, bool notify = true);
  ~BenchDatabase();
  BenchDatabase(const BenchDatabase&) = delete;
  BenchDatabase& operator=(const BenchDatabase&) = delete;

  std::string url() const { return server_ + "/" + name_; }
  const std::string& name() const { return name_; }
  /// Adds `count` rows in `state` ('pending', 'published', 'unknown') with the options' payload
  /// size and keys; unknown rows get producer group "bench" and are due for a check at once.
  /// `rows_per_transaction` bounds each INSERT's transaction: writers commit small ones, and
  /// logical decoding (the race's Debezium) spills a transaction beyond
  /// logical_decoding_work_mem to disk, which a bulk load of 500,000 rows would make it do.
  void load(const std::string& topic, long count, const std::string& state,
            long rows_per_transaction = 500'000);
  /// CHECKPOINT, then the kernel's writeback: the disk is quiet when the timed part starts.
  void settle() const;
  long count_where(const std::string& condition) const;
  /// The lowest id among rows matching `condition`, if any: one index probe where count_where
  /// scans every matching row (a cost that grows with the backlog being measured).
  std::optional<long> lowest_id_where(const std::string& condition) const;
  long highest_id() const;
  /// Seconds between the `from` and `to` quantiles of published_at over published rows matching
  /// `condition`; none when no row matches.
  std::optional<double> seconds_between_published(const std::string& condition, double from,
                                                  double to) const;
  /// Runs a VACUUM of the outbox table and returns how long it took: the cleaning a drain left
  /// behind for later (a drain shorter than the relay's VACUUM threshold leaves all of it).
  double vacuum_seconds() const;

 private:
  struct Probe;  // one connection for the questions above, opened on first use
  Probe& probe() const;

  const Options& options_;
  std::string name_;
  std::string server_;
  mutable std::unique_ptr<Probe> probe_;
};

/// utime + stime in seconds and peak RSS in kB of a live process, from /proc.
struct ProcessUsage {
  double cpu_seconds = 0;
  long peak_rss_kb = 0;
};
ProcessUsage usage_of(pid_t pid);

/// CPU time of each live thread of a process, by thread id, from /proc/PID/task/*/schedstat:
/// nanoseconds, where /proc/PID/stat counts 10 ms ticks and an idle relay spends a few ticks.
struct ThreadCpu {
  std::string name;  ///< the thread's comm ("relay-loop", "rdk:main", ...)
  double cpu_ms = 0;
};
std::map<pid_t, ThreadCpu> threads_cpu_of(pid_t pid);

/// Sections of the relay's YAML that a benchmark sets beyond the common ones: lines for the relay
/// section ("  notify: false\n") and whole top-level sections (the check-back's).
struct RelaySettings {
  std::string relay_lines;
  std::string kafka_lines;  ///< more of the kafka section, each line indented by two spaces
  std::string extra_sections = "checkback:\n  enabled: false\n";
};

/// A child process (its output appended to `log_path` when one is given), stopped with SIGTERM by
/// stop() or the destructor, and SIGKILL when it has not ended `grace` later.
class ChildProcess {
 public:
  explicit ChildProcess(const std::vector<std::string>& argv, const std::string& log_path = "");
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  ProcessUsage usage() const { return usage_of(pid_); }
  std::map<pid_t, ThreadCpu> threads_cpu() const { return threads_cpu_of(pid_); }
  /// Whether it has ended (reaped here); an ended process has no usage any more.
  bool ended();
  void stop(std::chrono::seconds grace = std::chrono::seconds(30));

 private:
  pid_t pid_ = -1;
};

/// `outbox-relay run` on a config written for the database. Stopped with SIGTERM by stop() or the
/// destructor.
class BenchRelay {
 public:
  BenchRelay(const Options& options, const std::string& database_url,
             const RelaySettings& settings = {});
  ~BenchRelay();
  BenchRelay(const BenchRelay&) = delete;
  BenchRelay& operator=(const BenchRelay&) = delete;

  ProcessUsage usage() const { return process_->usage(); }
  std::map<pid_t, ThreadCpu> threads_cpu() const { return process_->threads_cpu(); }
  void stop();

 private:
  std::string config_path_;
  std::unique_ptr<ChildProcess> process_;
};

/// CPU seconds spent by a PostgreSQL cluster: its postmaster and every process it started,
/// live (utime + stime) or ended (the postmaster's cutime + cstime, where the kernel adds a
/// child's time when it is reaped). Differences of two readings are the cluster's CPU between.
class ClusterCpu {
 public:
  /// `server` as in Options::server; the postmaster is the parent of a backend opened here.
  explicit ClusterCpu(const std::string& server);
  double seconds() const;

 private:
  pid_t postmaster_ = -1;
};

/// Sorted samples and their quantiles.
class Percentiles {
 public:
  explicit Percentiles(std::vector<double> samples);
  double at(double quantile) const;  ///< nearest rank; 0 when empty
  std::size_t size() const { return samples_.size(); }

 private:
  std::vector<double> samples_;
};

}  // namespace outbox::bench
