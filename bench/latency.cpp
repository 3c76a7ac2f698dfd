// Latency under a steady write rate: writers commit rows at a fixed pace through outbox.publish;
// the time from each commit's return to the relay recording Kafka's acknowledgement (published_at)
// and to a consumer receiving the message.
#include <librdkafka/rdkafkacpp.h>

#include <atomic>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <pqxx/pqxx>
#include <set>
#include <thread>

#include "bench/benchmarks.hpp"

namespace outbox::bench {

namespace {

constexpr int kWarmUpSeconds = 2;
// The p99 target at 1,000 messages/s (README, "Performance"). Rows slower than this are also
// counted by the 100 ms window of their commit: a few dense windows mean the whole machine stalled
// (a GC pause, a checkpoint's writeback, a noisy neighbour), rows spread over many windows mean the
// relay's own pace.
constexpr double kSlowAckMs = 20;
constexpr std::int64_t kStallWindowUs = 100'000;

/// Receives every message of one topic and notes, per outbox id, when it arrived. Fetches are
/// long polls that the broker answers as soon as data arrives, so the default fetch.wait.max.ms
/// costs no latency (a short one would only make the broker spin, on the cores being measured).
class ReceiptClock {
 public:
  ReceiptClock(const std::string& bootstrap, const std::string& topic)
      // What exactly-once consumers must use; for at-least-once it changes nothing.
      : consumer_(subscribed_consumer(bootstrap, topic, {{"isolation.level", "read_committed"}})) {
    thread_ = std::thread([this] { consume(); });
  }
  ~ReceiptClock() {
    stop_ = true;
    thread_.join();
    consumer_->close();
  }
  std::map<std::int64_t, std::int64_t> receipts() const {
    std::lock_guard lock(mutex_);
    return receipts_;
  }

 private:
  void consume() {
    while (!stop_) {
      std::unique_ptr<RdKafka::Message> message(consumer_->consume(50));
      if (message->err() != RdKafka::ERR_NO_ERROR) continue;
      const std::int64_t now = wall_clock_us();
      const RdKafka::Headers* headers = message->headers();
      if (headers == nullptr) continue;
      for (const auto& header : headers->get("outbox-id")) {
        const std::string id(static_cast<const char*>(header.value()), header.value_size());
        std::lock_guard lock(mutex_);
        receipts_.emplace(std::stoll(id), now);
      }
    }
  }

  std::unique_ptr<RdKafka::KafkaConsumer> consumer_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mutex_;
  std::map<std::int64_t, std::int64_t> receipts_;
};

/// One writer connection committing single-row transactions on a fixed schedule (paced).
/// Returns id -> commit time.
std::map<std::int64_t, std::int64_t> write_at_rate(const std::string& url, const std::string& topic,
                                                   int writer, double per_second, int seconds,
                                                   int keys) {
  pqxx::connection connection{url};
  connection.prepare("publish", "SELECT outbox.publish($1, $2, $3::text)");
  std::map<std::int64_t, std::int64_t> committed;
  paced(per_second, seconds, [&](long n) {
    pqxx::nontransaction tx{connection};  // autocommit: the statement's return is the commit
    const auto id =
        tx.exec_prepared1("publish", topic, "key-" + std::to_string((writer * 7919 + n) % keys),
                          R"({"writer":)" + std::to_string(writer) + "}")[0]
            .as<std::int64_t>();
    committed.emplace(id, wall_clock_us());
  });
  return committed;
}

std::string milliseconds_figures(const std::string& name, const Percentiles& samples) {
  std::ostringstream out;
  out.precision(3);
  out << std::fixed << " " << name << "_p50_ms=" << samples.at(0.5) << " " << name
      << "_p99_ms=" << samples.at(0.99) << " " << name << "_p999_ms=" << samples.at(0.999);
  return out.str();
}

}  // namespace

int latency(const Options& options, const LatencyOptions& latency) {
  const std::string topic = "bench.latency." + std::to_string(getpid());
  BenchDatabase database(options, latency.notify);
  RelaySettings settings;
  settings.relay_lines = latency.notify ? "  notify: true\n" : "";  // default: adaptive polling
  // The rows measured are counted from above the held backlog: the pending index read from that
  // id on, not from the backlog's first row.
  std::string measured_pending = "state = 'pending'";
  if (latency.held_backlog > 0) {
    create_topic(options, topic);  // the relay may not create topics in this case
    database.load("bench.held." + std::to_string(getpid()), latency.held_backlog, "pending");
    settings.kafka_lines = "  properties: {allow.auto.create.topics: false}\n";
    measured_pending += " AND id > " + std::to_string(database.highest_id());
  }
  database.settle();
  BenchRelay relay(options, database.url(), settings);

  // A first message creates the topic, so the consumer and the producer are warm when timing
  // starts.
  pqxx::connection connection{database.url()};
  pqxx::nontransaction(connection)
      .exec_params("SELECT outbox.publish($1, 'warm-up', 'x'::text)", topic);
  ReceiptClock receipts(options.kafka, topic);
  while (database.count_where(measured_pending) > 0 || receipts.receipts().empty()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }

  // A long transaction in the same database (an analytics query, pg_dump, a replica's
  // hot_standby_feedback): its snapshot keeps every row version the relay's marks leave dead, for
  // VACUUM and for the claim's index scan alike.
  std::optional<pqxx::connection> holder;
  std::optional<pqxx::work> held;
  if (latency.hold_snapshot) {
    holder.emplace(database.url());
    held.emplace(*holder);
    held->exec("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ");
    held->exec("SELECT count(*) FROM outbox.relay_instances");  // takes the snapshot
  }
  std::cerr << "bench: " << latency.writers << " writers at " << latency.rate << " messages/s for "
            << latency.seconds << " s, NOTIFY " << (latency.notify ? "on" : "off")
            << (latency.hold_snapshot ? ", a REPEATABLE READ snapshot held throughout" : "")
            << "\n";
  std::vector<std::map<std::int64_t, std::int64_t>> per_writer(latency.writers);
  const std::int64_t writing_started_us = wall_clock_us();
  {
    std::vector<std::jthread> writers;
    for (int writer = 0; writer < latency.writers; ++writer) {
      writers.emplace_back([&, writer] {
        per_writer[writer] = write_at_rate(database.url(), topic, writer,
                                           static_cast<double>(latency.rate) / latency.writers,
                                           kWarmUpSeconds + latency.seconds, options.keys);
      });
    }
  }
  std::map<std::int64_t, std::int64_t> committed;
  for (auto& writer : per_writer) committed.merge(writer);
  // Steady load only: rows committed in the first kWarmUp seconds (when an idle relay is still
  // backing its polling off, and caches are cold) are published but not counted.
  const std::int64_t counted_from = writing_started_us + kWarmUpSeconds * 1'000'000;

  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (Clock::now() < deadline && (database.count_where(measured_pending) > 0 ||
                                     receipts.receipts().size() < committed.size() + 1)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (held) held->abort();
  const auto received = receipts.receipts();
  std::vector<double> to_ack, to_consumer;
  // The first and the last fifth of the counted rows, by commit time: a lag that grows while a
  // snapshot is held shows as a late fifth slower than the early one.
  std::vector<double> early, late;
  const std::int64_t counted_us = static_cast<std::int64_t>(latency.seconds) * 1'000'000;
  long slow_acks = 0;
  std::set<std::int64_t> slow_windows;
  pqxx::nontransaction tx{connection};
  for (const auto& row : tx.exec(
           "SELECT id, (extract(epoch FROM published_at) * 1000000)::bigint FROM outbox.messages"
           " WHERE state = 'published' AND message_key <> 'warm-up'")) {
    const auto id = row[0].as<std::int64_t>();
    const auto commit = committed.find(id);
    if (commit == committed.end() || commit->second < counted_from) continue;
    to_ack.push_back(static_cast<double>(row[1].as<std::int64_t>() - commit->second) / 1000);
    if (commit->second < counted_from + counted_us / 5) early.push_back(to_ack.back());
    if (commit->second >= counted_from + counted_us * 4 / 5) late.push_back(to_ack.back());
    if (to_ack.back() > kSlowAckMs) {
      ++slow_acks;
      slow_windows.insert(commit->second / kStallWindowUs);
    }
    if (const auto receipt = received.find(id); receipt != received.end()) {
      to_consumer.push_back(static_cast<double>(receipt->second - commit->second) / 1000);
    }
  }
  relay.stop();
  std::cout << "latency rate=" << latency.rate << " seconds=" << latency.seconds
            << " writers=" << latency.writers
            << " wakeup=" << (latency.notify ? "notify" : "polling")
            << " exactly_once=" << (options.exactly_once ? "on" : "off")
            << " committed=" << committed.size() << " counted=" << to_ack.size()
            << " consumed=" << to_consumer.size()
            << milliseconds_figures("ack", Percentiles(to_ack)) << " ack_over_20ms=" << slow_acks
            << " ack_over_20ms_windows=" << slow_windows.size()
            << milliseconds_figures("consumer", Percentiles(to_consumer))
            << " snapshot_held=" << (latency.hold_snapshot ? "on" : "off")
            << " held_backlog=" << latency.held_backlog
            << milliseconds_figures("early_ack", Percentiles(early))
            << milliseconds_figures("late_ack", Percentiles(late)) << "\n";
  return 0;
}

}  // namespace outbox::bench
