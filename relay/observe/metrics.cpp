#include "relay/observe/metrics.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "relay/core/assert.hpp"
#include "relay/core/text.hpp"

namespace outbox {

namespace {

std::string escape_label_value(const std::string& value) {
  std::string escaped;
  for (char c : value) {
    if (c == '\\' || c == '"') escaped.push_back('\\');
    if (c == '\n') {
      escaped += "\\n";
      continue;
    }
    escaped.push_back(c);
  }
  return escaped;
}

// Label values often come from writers (a topic name): each is capped, and a family holds a
// bounded number of series, so a million distinct or megabyte-long topics cannot make /metrics
// grow without bound. Past the bound, new label sets share one series whose values read "_other".
constexpr std::size_t kMaxLabelValueBytes = 128;
constexpr std::size_t kMaxSeriesPerFamily = 256;
constexpr const char* kOverflowLabelValue = "_other";

template <typename SeriesMap>
MetricLabels bounded_labels(const SeriesMap& series, const MetricLabels& labels) {
  MetricLabels bounded;
  for (const auto& [name, value] : labels) bounded[name] = capped(value, kMaxLabelValueBytes);
  if (series.size() < kMaxSeriesPerFamily || series.contains(bounded)) return bounded;
  for (auto& [name, value] : bounded) value = kOverflowLabelValue;
  return bounded;
}

std::string format_labels(const MetricLabels& labels, const std::string& extra_name = "",
                          const std::string& extra_value = "") {
  if (labels.empty() && extra_name.empty()) return "";
  std::string text = "{";
  bool first = true;
  for (const auto& [name, value] : labels) {
    text += (first ? "" : ",") + name + "=\"" + escape_label_value(value) + "\"";
    first = false;
  }
  if (!extra_name.empty()) text += (first ? "" : ",") + extra_name + "=\"" + extra_value + "\"";
  return text + "}";
}

std::string format_number(double value) {
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (std::isnan(value)) return "NaN";
  std::ostringstream out;
  out.precision(12);
  out << value;
  return out.str();
}

void add_atomic(std::atomic<double>& target, double value) {
  double current = target.load(std::memory_order_relaxed);
  while (!target.compare_exchange_weak(current, current + value, std::memory_order_relaxed)) {
  }
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds)
    : upper_bounds_(std::move(upper_bounds)),
      bucket_counts_(new std::atomic<std::uint64_t>[upper_bounds_.size() + 1]) {
  RELAY_ASSERT(std::is_sorted(upper_bounds_.begin(), upper_bounds_.end()), "bounds ascend");
  for (std::size_t i = 0; i <= upper_bounds_.size(); ++i) bucket_counts_[i] = 0;
}

void Histogram::observe(double value) {
  const auto bucket =
      std::lower_bound(upper_bounds_.begin(), upper_bounds_.end(), value) - upper_bounds_.begin();
  bucket_counts_[bucket].fetch_add(1, std::memory_order_relaxed);
  add_atomic(sum_, value);
}

std::vector<std::uint64_t> Histogram::cumulative_counts() const {
  std::vector<std::uint64_t> counts(upper_bounds_.size() + 1);
  std::uint64_t running = 0;
  for (std::size_t i = 0; i <= upper_bounds_.size(); ++i) {
    running += bucket_counts_[i].load(std::memory_order_relaxed);
    counts[i] = running;
  }
  return counts;
}

double Histogram::sum() const { return sum_.load(std::memory_order_relaxed); }

MetricsRegistry::Family& MetricsRegistry::family(const std::string& name, Kind kind,
                                                 const std::string& help) {
  auto [found, inserted] = families_.try_emplace(name, Family{kind, help, {}, {}, {}});
  RELAY_ASSERT(found->second.kind == kind, "a metric family keeps its type");
  return found->second;
}

Counter& MetricsRegistry::counter(const std::string& name, const std::string& help,
                                  const MetricLabels& labels) {
  std::lock_guard lock(mutex_);
  auto& series_map = family(name, Kind::counter, help).counters;
  auto& series = series_map[bounded_labels(series_map, labels)];
  if (!series) series = std::make_unique<Counter>();
  return *series;
}

Gauge& MetricsRegistry::gauge(const std::string& name, const std::string& help,
                              const MetricLabels& labels) {
  std::lock_guard lock(mutex_);
  auto& series_map = family(name, Kind::gauge, help).gauges;
  auto& series = series_map[bounded_labels(series_map, labels)];
  if (!series) series = std::make_unique<Gauge>();
  return *series;
}

Histogram& MetricsRegistry::histogram(const std::string& name, const std::string& help,
                                      const std::vector<double>& upper_bounds,
                                      const MetricLabels& labels) {
  std::lock_guard lock(mutex_);
  auto& series_map = family(name, Kind::histogram, help).histograms;
  auto& series = series_map[bounded_labels(series_map, labels)];
  if (!series) series = std::make_unique<Histogram>(upper_bounds);
  return *series;
}

void MetricsRegistry::clear_gauge(const std::string& name) {
  std::lock_guard lock(mutex_);
  if (auto found = families_.find(name); found != families_.end()) found->second.gauges.clear();
}

std::string MetricsRegistry::render() const {
  std::lock_guard lock(mutex_);
  std::string text;
  for (const auto& [name, family] : families_) {
    static constexpr const char* kTypes[] = {"counter", "gauge", "histogram"};
    text += "# HELP " + name + " " + family.help + "\n";
    text += "# TYPE " + name + " " + kTypes[static_cast<int>(family.kind)] + "\n";
    for (const auto& [labels, counter] : family.counters) {
      text += name + format_labels(labels) + " " + std::to_string(counter->value()) + "\n";
    }
    for (const auto& [labels, gauge] : family.gauges) {
      text += name + format_labels(labels) + " " + format_number(gauge->value()) + "\n";
    }
    for (const auto& [labels, histogram] : family.histograms) {
      const auto counts = histogram->cumulative_counts();
      const auto& bounds = histogram->upper_bounds();
      for (std::size_t i = 0; i < counts.size(); ++i) {
        const std::string bound = i < bounds.size() ? format_number(bounds[i]) : "+Inf";
        text += name + "_bucket" + format_labels(labels, "le", bound) + " " +
                std::to_string(counts[i]) + "\n";
      }
      text += name + "_sum" + format_labels(labels) + " " + format_number(histogram->sum()) + "\n";
      text += name + "_count" + format_labels(labels) + " " + std::to_string(counts.back()) + "\n";
    }
  }
  return text;
}

std::vector<double> exponential_buckets(double start, double factor, int count) {
  std::vector<double> bounds;
  for (double bound = start; static_cast<int>(bounds.size()) < count; bound *= factor) {
    bounds.push_back(bound);
  }
  return bounds;
}

Counter& rows_isolated_counter(MetricsRegistry& registry, bool quarantined) {
  return registry.counter(
      "outbox_rows_isolated_total",
      "Rows a statement could not read or record, taken out of the way: parked dead with the "
      "reason, or quarantined (excluded until restart) when even parking failed.",
      {{"action", quarantined ? "quarantined" : "parked"}});
}

}  // namespace outbox
