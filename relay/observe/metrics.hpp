// The relay's metrics: prometheus-cpp's registry and text exposition format (0.0.4), behind the
// small interface the modules use: a series named by family, help text and labels, created on
// first use. Added here: the bounds a registry fed by writers' bytes needs (label values capped,
// series per family bounded; see metrics.cpp).
//
// Thread-safety: creating a series and rendering take a mutex; updating a series is
// prometheus-cpp's (atomics for counters and gauges, a short lock for a histogram). Series live as
// long as the registry, except gauges dropped by clear_gauge; references to others stay valid.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace prometheus {
class Registry;
class Counter;
class Gauge;
class Histogram;
template <typename T>
class Family;
}  // namespace prometheus

namespace outbox {

using MetricLabels = std::map<std::string, std::string>;

class Counter {
 public:
  explicit Counter(prometheus::Counter& series) : series_(&series) {}
  void increment(std::uint64_t by = 1);

 private:
  prometheus::Counter* series_;
};

class Gauge {
 public:
  explicit Gauge(prometheus::Gauge& series) : series_(&series) {}
  void set(double value);

 private:
  prometheus::Gauge* series_;
};

class Histogram {
 public:
  explicit Histogram(prometheus::Histogram& series) : series_(&series) {}
  void observe(double value);

 private:
  prometheus::Histogram* series_;
};

class MetricsRegistry {
 public:
  MetricsRegistry();
  ~MetricsRegistry();
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  /// The series of family `name` with `labels`, created on first use. Asking for an existing
  /// family with another type is a programming error (aborts). `upper_bounds` ascend; +Inf is
  /// implied.
  Counter& counter(const std::string& name, const std::string& help,
                   const MetricLabels& labels = {});
  Gauge& gauge(const std::string& name, const std::string& help, const MetricLabels& labels = {});
  Histogram& histogram(const std::string& name, const std::string& help,
                       const std::vector<double>& upper_bounds, const MetricLabels& labels = {});
  /// Drops every series of a gauge family, for gauges whose label values come and go (per topic).
  void clear_gauge(const std::string& name);

  /// The Prometheus text format.
  std::string render() const;

 private:
  struct Families;
  mutable std::mutex mutex_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<Families> families_;
};

/// Bucket bounds growing by `factor` from `start`: {start, start*factor, ...} (`count` bounds).
std::vector<double> exponential_buckets(double start, double factor, int count);

/// outbox_rows_isolated_total{action="parked"|"quarantined"}: rows a statement could not read or
/// record (see RowProblem). The relay loop and the sweeper both count it, under one help text.
Counter& rows_isolated_counter(MetricsRegistry& registry, bool quarantined);

}  // namespace outbox
