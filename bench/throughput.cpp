// Backlog drain through the real relay, and the two ceilings it is compared with.
#include <deque>
#include <iostream>
#include <memory>
#include <optional>
#include <thread>

#include "bench/benchmarks.hpp"
#include "relay/config/config.hpp"
#include "relay/maintenance/maintenance.hpp"
#include "relay/pipeline/dead_key_holds.hpp"
#include "relay/publisher/publisher.hpp"
#include "relay/store/outcome_store.hpp"
#include "relay/store/store.hpp"

namespace outbox::bench {

namespace {
constexpr std::chrono::seconds kStallTimeout{60};
}  // namespace

int drain(const Options& options) {
  const std::string topic = "bench.drain." + std::to_string(getpid());
  create_topic(options, topic);
  BenchDatabase database(options);
  if (options.history > 0) database.load(topic, options.history, "published");
  const long highest_history_id = database.highest_id();
  database.load(topic, options.rows, "pending");
  const long highest_id = database.highest_id();
  // Issue 17 races on the database's CPU; the cluster's processes are read from the relay's start.
  // It includes this loop's own probe below (about 1% of it in a perf profile of a 1M drain).
  const ClusterCpu cluster(options.server);
  const double postgres_before = cluster.seconds();
  const auto start = Clock::now();
  BenchRelay relay(options, database.url());
  ProcessUsage usage;
  auto next_progress = start;
  // The steady rate, between 10% and 90% published, leaves out start-up and the last batches:
  // it is the figure to compare across backlog sizes. Sampled here every 100 ms; when the rows
  // are kept, it is taken afterwards from their published_at instead, which is exact.
  std::optional<std::pair<long, double>> at_10_percent, at_90_percent;
  long last_published = -1;
  auto last_change = start;
  for (long pending = options.rows; pending > 0;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    usage = relay.usage();  // read while it runs: /proc forgets a process once it is reaped
    // Not count(*): counting a backlog of millions scans it, and did so ten times a second,
    // taking from the relay under test a share of the machine that grew with the backlog, the
    // very thing the scaling runs compare. The relay claims in id order with a few batches in
    // flight, so the rows from the lowest pending id up are the backlog give or take those
    // batches, and exactly none at the end.
    const std::optional<long> lowest = database.lowest_id_where("state = 'pending'");
    pending = lowest ? highest_id - *lowest + 1 : 0;
    const long published = options.rows - pending;
    if (published != last_published) {
      last_published = published;
      last_change = Clock::now();
    } else if (Clock::now() - last_change > kStallTimeout) {
      throw std::runtime_error("nothing published for " + std::to_string(kStallTimeout.count()) +
                               " s; the relay's warnings are above, on stderr");
    }
    if (!at_10_percent && published >= options.rows / 10) {
      at_10_percent = {published, seconds_since(start)};
    }
    if (!at_90_percent && published >= options.rows * 9 / 10) {
      at_90_percent = {published, seconds_since(start)};
    }
    if (Clock::now() >= next_progress || pending == 0) {
      std::cerr << "bench: " << published << " published, " << seconds_since(start) << " s\n";
      next_progress += std::chrono::seconds(2);
    }
  }
  const std::optional<double> recorded_seconds =
      options.delete_on_publish ? std::nullopt
                                : database.seconds_between_published(
                                      "id > " + std::to_string(highest_history_id), 0.1, 0.9);
  const double steady_rate =
      recorded_seconds && *recorded_seconds > 0 ? options.rows * 0.8 / *recorded_seconds
      : at_90_percent->second > at_10_percent->second
          ? static_cast<double>(at_90_percent->first - at_10_percent->first) /
                (at_90_percent->second - at_10_percent->second)
          : 0;
  const double seconds = seconds_since(start);
  const double postgres_cpu = cluster.seconds() - postgres_before;
  usage = relay.usage();
  relay.stop();
  const double vacuum_after_seconds = database.vacuum_seconds();
  std::cout << "drain rows=" << options.rows << " history=" << options.history
            << " delete_on_publish=" << (options.delete_on_publish ? "on" : "off")
            << " exactly_once=" << (options.exactly_once ? "on" : "off")
            << " payload_bytes=" << options.payload_bytes << " keys=" << options.keys
            << " batch_size=" << options.batch_size << " seconds=" << seconds
            << " messages_per_second=" << options.rows / seconds
            << " steady_messages_per_second=" << steady_rate
            << " cpu_seconds_per_million=" << usage.cpu_seconds * 1e6 / options.rows
            << " peak_rss_mb=" << usage.peak_rss_kb / 1024.0
            << " postgres_cpu_us_per_row=" << postgres_cpu * 1e6 / options.rows
            << " vacuum_after_seconds=" << vacuum_after_seconds << "\n";
  return 0;
}

int sql_ceiling(const Options& options) {
  BenchDatabase database(options);
  database.load("bench.sql", options.rows, "pending");
  Config config;
  config.postgres.url = database.url();
  OutboxStore store(config.postgres, config.routing, config.relay);
  OutcomeStore outcomes(config.postgres, options.delete_on_publish ? PublishedRows::delete_at_once
                                                                   : PublishedRows::keep);
  store.ensure_connected();
  store.rebalance_lanes(/*may_release=*/true);
  // The relay's own VACUUM schedule runs beside the SQL, as in the relay: without it the claim
  // steps over ever more dead index entries and the ceiling would be one the relay never meets.
  Telemetry telemetry;
  std::jthread vacuumer(
      [&](std::stop_token stop) { vacuum_when_due(config, telemetry, std::move(stop)); });
  // The database's CPU is what issue 17 races on; this mode has no Kafka in it to add noise.
  const ClusterCpu cluster(options.server);
  const double postgres_before = cluster.seconds();
  const auto start = Clock::now();
  long done = 0;
  for (;;) {
    ClaimedBatch batch =
        store.claim_batch({}, {},
                          ClaimLimits{options.batch_size, config.relay.batch_max_bytes,
                                      producer_message_max_bytes(config.kafka)});
    if (batch.rows.empty()) break;
    std::vector<DeliveryReport> reports;
    reports.reserve(batch.rows.size());
    for (const auto& row : batch.rows) {
      reports.push_back({row.id, DeliveryOutcome::delivered, 0, done, ""});
      ++done;
    }
    outcomes.record_outcomes(reports);
  }
  const double seconds = seconds_since(start);
  const double postgres_cpu = cluster.seconds() - postgres_before;
  std::cout << "sql-ceiling rows=" << done
            << " delete_on_publish=" << (options.delete_on_publish ? "on" : "off")
            << " batch_size=" << options.batch_size << " seconds=" << seconds
            << " rows_per_second=" << done / seconds << " postgres_cpu_seconds=" << postgres_cpu
            << " postgres_cpu_us_per_row=" << postgres_cpu * 1e6 / std::max(done, 1L) << "\n";
  return 0;
}

int kafka_ceiling(const Options& options) {
  KafkaConfig kafka;
  kafka.bootstrap_servers = options.kafka;
  DeadKeyHolds dead_keys(DeadKeyPolicy::block);
  KafkaPublisher publisher(kafka, RoutingConfig{}, dead_keys);
  const std::string topic = "bench.kafka." + std::to_string(getpid());
  const std::string payload(options.payload_bytes, 'x');
  const RelayConfig relay;
  const auto start = Clock::now();
  std::deque<std::unique_ptr<PublishBatch>> in_flight;
  long produced = 0, delivered = 0;
  while (delivered < options.rows) {
    while (produced < options.rows &&
           in_flight.size() < static_cast<std::size_t>(relay.max_in_flight_batches)) {
      std::vector<OutboxRow> rows;
      for (int i = 0; i < options.batch_size && produced < options.rows; ++i, ++produced) {
        OutboxRow row;
        row.id = OutboxId{produced + 1};
        row.topic = topic;
        row.key = "key-" + std::to_string(produced % options.keys);
        row.payload = payload;
        rows.push_back(std::move(row));
      }
      in_flight.push_back(std::make_unique<PublishBatch>(std::move(rows)));
      publisher.produce(*in_flight.back(), [] { return true; });
    }
    publisher.poll(std::chrono::milliseconds(5));
    while (!in_flight.empty() && in_flight.front()->complete()) {
      delivered += static_cast<long>(in_flight.front()->rows().size());
      in_flight.pop_front();
    }
  }
  const double seconds = seconds_since(start);
  std::cout << "kafka-ceiling messages=" << options.rows
            << " payload_bytes=" << options.payload_bytes << " seconds=" << seconds
            << " messages_per_second=" << options.rows / seconds << "\n";
  return 0;
}

}  // namespace outbox::bench
