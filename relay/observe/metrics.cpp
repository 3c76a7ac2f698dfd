#include "relay/observe/metrics.hpp"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <algorithm>

#include "relay/core/assert.hpp"
#include "relay/core/text.hpp"

namespace outbox {

namespace {

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

/// One prometheus-cpp family and the wrappers of its series, by (bounded) labels.
template <typename Prometheus, typename Wrapper>
struct FamilyOf {
  prometheus::Family<Prometheus>* family = nullptr;
  std::map<MetricLabels, std::unique_ptr<Wrapper>> series;
};

}  // namespace

void Counter::increment(std::uint64_t by) { series_->Increment(static_cast<double>(by)); }
void Gauge::set(double value) { series_->Set(value); }
void Histogram::observe(double value) { series_->Observe(value); }

struct MetricsRegistry::Families {
  std::map<std::string, FamilyOf<prometheus::Counter, Counter>> counters;
  std::map<std::string, FamilyOf<prometheus::Gauge, Gauge>> gauges;
  std::map<std::string, FamilyOf<prometheus::Histogram, Histogram>> histograms;

  /// A name belongs to one type only (Prometheus's rule, and a programming error otherwise).
  bool taken_by_another(const std::string& name, const void* own_map) const {
    return (own_map != &counters && counters.contains(name)) ||
           (own_map != &gauges && gauges.contains(name)) ||
           (own_map != &histograms && histograms.contains(name));
  }
};

MetricsRegistry::MetricsRegistry()
    : registry_(std::make_shared<prometheus::Registry>()),
      families_(std::make_unique<Families>()) {}
MetricsRegistry::~MetricsRegistry() = default;

namespace {
/// The wrapper of `labels`' series in the family `name`, made with `build` and `add` on first use.
template <typename Map, typename Build, typename Add>
auto& series_of(Map& families, const std::string& name, const MetricLabels& labels, Build&& build,
                Add&& add) {
  auto& entry = families[name];
  if (entry.family == nullptr) entry.family = &build();
  const MetricLabels bounded = bounded_labels(entry.series, labels);
  auto& wrapper = entry.series[bounded];
  if (!wrapper) {
    const prometheus::Labels prometheus_labels(bounded.begin(), bounded.end());
    wrapper = std::make_unique<std::remove_reference_t<decltype(*wrapper)>>(
        add(*entry.family, prometheus_labels));
  }
  return *wrapper;
}
}  // namespace

Counter& MetricsRegistry::counter(const std::string& name, const std::string& help,
                                  const MetricLabels& labels) {
  std::lock_guard lock(mutex_);
  RELAY_ASSERT(!families_->taken_by_another(name, &families_->counters),
               "a metric family keeps its type");
  return series_of(
      families_->counters, name, labels,
      [&]() -> auto& {
        return prometheus::BuildCounter().Name(name).Help(help).Register(*registry_);
      },
      [](auto& family, const prometheus::Labels& l) -> auto& { return family.Add(l); });
}

Gauge& MetricsRegistry::gauge(const std::string& name, const std::string& help,
                              const MetricLabels& labels) {
  std::lock_guard lock(mutex_);
  RELAY_ASSERT(!families_->taken_by_another(name, &families_->gauges),
               "a metric family keeps its type");
  return series_of(
      families_->gauges, name, labels,
      [&]() -> auto& {
        return prometheus::BuildGauge().Name(name).Help(help).Register(*registry_);
      },
      [](auto& family, const prometheus::Labels& l) -> auto& { return family.Add(l); });
}

Histogram& MetricsRegistry::histogram(const std::string& name, const std::string& help,
                                      const std::vector<double>& upper_bounds,
                                      const MetricLabels& labels) {
  std::lock_guard lock(mutex_);
  RELAY_ASSERT(!families_->taken_by_another(name, &families_->histograms),
               "a metric family keeps its type");
  RELAY_ASSERT(std::is_sorted(upper_bounds.begin(), upper_bounds.end()), "bounds ascend");
  return series_of(
      families_->histograms, name, labels,
      [&]() -> auto& {
        return prometheus::BuildHistogram().Name(name).Help(help).Register(*registry_);
      },
      [&](auto& family, const prometheus::Labels& l) -> auto& {
        return family.Add(l, prometheus::Histogram::BucketBoundaries(upper_bounds));
      });
}

void MetricsRegistry::clear_gauge(const std::string& name) {
  std::lock_guard lock(mutex_);
  const auto found = families_->gauges.find(name);
  if (found == families_->gauges.end()) return;
  auto& entry = found->second;
  for (const auto& [labels, wrapper] : entry.series) {
    const prometheus::Labels prometheus_labels(labels.begin(), labels.end());
    // The wrapper's series is the family's series of these labels: Add returns the existing one.
    entry.family->Remove(&entry.family->Add(prometheus_labels));
  }
  entry.series.clear();
}

std::string MetricsRegistry::render() const {
  std::lock_guard lock(mutex_);
  return prometheus::TextSerializer().Serialize(registry_->Collect());
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
