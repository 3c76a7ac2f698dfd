// A small Prometheus metrics registry: counters, gauges and histograms with fixed label sets,
// rendered in the text exposition format 0.0.4. Debian 12 ships no C++ Prometheus client, and
// this is all the relay needs.
//
// Thread-safety: creating a series and rendering take a mutex; updating a series is lock-free
// (atomics), so the hot path never waits. Series live as long as the registry; references to them
// stay valid.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace outbox {

using MetricLabels = std::map<std::string, std::string>;

class Counter {
 public:
  void increment(std::uint64_t by = 1) { value_.fetch_add(by, std::memory_order_relaxed); }
  std::uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> value_{0};
};

class Gauge {
 public:
  void set(double value) { value_.store(value, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class Histogram {
 public:
  /// `upper_bounds` ascending; +Inf is implied.
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double value);
  std::vector<std::uint64_t> cumulative_counts() const;  ///< one per bound, then +Inf
  double sum() const;
  const std::vector<double>& upper_bounds() const { return upper_bounds_; }

 private:
  std::vector<double> upper_bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> bucket_counts_;  // per bucket, not cumulative
  std::atomic<double> sum_{0};
};

class MetricsRegistry {
 public:
  /// The series of family `name` with `labels`, created on first use. Asking for an existing
  /// family with another type or help text is a programming error (aborts).
  Counter& counter(const std::string& name, const std::string& help,
                   const MetricLabels& labels = {});
  Gauge& gauge(const std::string& name, const std::string& help, const MetricLabels& labels = {});
  Histogram& histogram(const std::string& name, const std::string& help,
                       const std::vector<double>& upper_bounds, const MetricLabels& labels = {});
  /// Drops every series of a gauge family, for gauges whose label values come and go (per topic).
  void clear_gauge(const std::string& name);

  /// The Prometheus text format, families in name order.
  std::string render() const;

 private:
  enum class Kind { counter, gauge, histogram };
  struct Family {
    Kind kind;
    std::string help;
    std::map<MetricLabels, std::unique_ptr<Counter>> counters;
    std::map<MetricLabels, std::unique_ptr<Gauge>> gauges;
    std::map<MetricLabels, std::unique_ptr<Histogram>> histograms;
  };
  Family& family(const std::string& name, Kind kind, const std::string& help);

  mutable std::mutex mutex_;
  std::map<std::string, Family> families_;
};

/// Bucket bounds growing by `factor` from `start`: {start, start*factor, ...} (`count` bounds).
std::vector<double> exponential_buckets(double start, double factor, int count);

/// outbox_rows_isolated_total{action="parked"|"quarantined"}: rows a statement could not read or
/// record (see RowProblem). The relay loop and the sweeper both count it, under one help text.
Counter& rows_isolated_counter(MetricsRegistry& registry, bool quarantined);

}  // namespace outbox
