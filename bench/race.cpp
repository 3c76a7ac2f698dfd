// The relay against the peer users would otherwise run: Debezium's PostgreSQL connector with its
// Outbox Event Router on a Kafka Connect standalone worker (scripts/peer fetches both and starts a
// wal_level=logical cluster). Both read the same outbox table design in a fresh database of the
// same cluster, publish to the same broker, and are timed by the same clients: the topic's end
// offsets for a drain, one consumer reading LogAppendTime for latency. Runs alternate sides.
#include <librdkafka/rdkafkacpp.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <mutex>
#include <pqxx/pqxx>
#include <sstream>
#include <thread>

#include "bench/benchmarks.hpp"
#include "tests/support/kafka_admin.hpp"

namespace outbox::bench {

namespace {

constexpr int kPartitions = 8;
constexpr int kWarmUpSeconds = 2;
constexpr std::chrono::seconds kStallTimeout{120};  // a JVM's start-up included
constexpr std::chrono::milliseconds kSample{100};
// The backlog is written as writers would, in transactions of 1,000 rows: one of 500,000 would
// make logical decoding spill it to disk first (logical_decoding_work_mem), a cost only Debezium
// pays and no outbox writer causes.
constexpr long kRowsPerLoadTransaction = 1000;

enum class Side { debezium, relay };
const char* side_name(Side side) { return side == Side::debezium ? "Debezium" : "outbox-relay"; }

/// How many messages a topic holds: the sum of its partitions' end offsets (a ListOffsets request
/// per partition, nothing read).
class TopicCounter {
 public:
  TopicCounter(const std::string& bootstrap, std::string topic) : topic_(std::move(topic)) {
    std::string error;
    producer_.reset(RdKafka::Producer::create(client_conf(bootstrap, {}).get(), error));
    if (!producer_) throw std::runtime_error("kafka client: " + error);
  }
  long messages() {
    long total = 0;
    for (int partition = 0; partition < kPartitions; ++partition) {
      std::int64_t low = 0, high = 0;
      if (producer_->query_watermark_offsets(topic_, partition, &low, &high, 5000) !=
          RdKafka::ERR_NO_ERROR) {
        return -1;
      }
      total += high;
    }
    return total;
  }

 private:
  std::string topic_;
  std::unique_ptr<RdKafka::Producer> producer_;
};

/// A publication and a logical replication slot for Debezium, made before the rows are written
/// (pgoutput decodes only what a publication covered when it was written); the slot is dropped
/// by the destructor, after the worker let go of it, so the database can be dropped.
class ReplicationSlot {
 public:
  ReplicationSlot(std::string url, std::string name)
      : url_(std::move(url)), name_(std::move(name)) {
    pqxx::connection connection{url_};
    pqxx::nontransaction tx{connection};
    tx.exec("CREATE PUBLICATION " + name_ + " FOR TABLE outbox.messages");
    tx.exec_params("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", name_);
  }
  ~ReplicationSlot() {
    // The walsender ends a moment after the worker: asked again until the slot is free.
    for (int attempt = 0; attempt < 100; ++attempt) {
      try {
        pqxx::connection connection{url_};
        pqxx::nontransaction(connection).exec_params("SELECT pg_drop_replication_slot($1)", name_);
        return;
      } catch (const std::exception&) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
    std::cerr << "bench: could not drop replication slot " << name_ << "\n";
  }
  ReplicationSlot(const ReplicationSlot&) = delete;
  ReplicationSlot& operator=(const ReplicationSlot&) = delete;
  const std::string& name() const { return name_; }

 private:
  std::string url_;
  std::string name_;
};

/// A Kafka Connect standalone worker running Debezium's PostgreSQL connector with the Outbox
/// Event Router on outbox.messages: key = message_key, value = payload (raw bytes), topic = the
/// row's topic column, as the relay does. Tuned as issue 17 measured it: producer acks=all,
/// idempotent, 5 in flight, batch.size 256 kB, linger.ms 10; connector batches of 20,480 in a
/// queue of 81,920, polled every 10 ms; for latency runs linger.ms and poll.interval.ms are 1.
class ConnectWorker {
 public:
  ConnectWorker(const Options& options, const RaceOptions& race, const std::string& database,
                const ReplicationSlot& slot, bool for_latency)
      : dir_(make_dir()) {
    const std::string linger = for_latency ? "1" : "10";
    std::ofstream(dir_ / "worker.properties")
        << "bootstrap.servers=" << options.kafka << "\n"
        << "key.converter=org.apache.kafka.connect.storage.StringConverter\n"
        << "value.converter=org.apache.kafka.connect.converters.ByteArrayConverter\n"
        << "offset.storage.file.filename=" << (dir_ / "offsets").string() << "\n"
        << "offset.flush.interval.ms=10000\n"
        << "plugin.path=" << race.plugin_path << "\n"
        << "listeners=http://127.0.0.1:0\n"
        << "producer.acks=all\nproducer.enable.idempotence=true\n"
        << "producer.max.in.flight.requests.per.connection=5\n"
        << "producer.batch.size=262144\nproducer.linger.ms=" << linger << "\n";
    std::ofstream(dir_ / "connector.properties")
        << "name=race-outbox\n"
        << "connector.class=io.debezium.connector.postgresql.PostgresConnector\n"
        << "tasks.max=1\n"
        << "database.hostname=" << race.postgres_host << "\n"
        << "database.port=" << race.postgres_port << "\n"
        << "database.user=postgres\n"
        << "database.dbname=" << database << "\n"
        << "topic.prefix=race\n"
        << "plugin.name=pgoutput\n"
        << "slot.name=" << slot.name() << "\n"
        << "publication.name=" << slot.name() << "\n"
        << "publication.autocreate.mode=disabled\n"
        << "snapshot.mode=no_data\n"
        << "table.include.list=outbox.messages\n"
        << "max.batch.size=20480\nmax.queue.size=81920\n"
        << "poll.interval.ms=" << (for_latency ? "1" : "10") << "\n"
        << "binary.handling.mode=bytes\n"
        << "extended.headers.enabled=false\n"
        << "transforms=outbox\n"
        << "transforms.outbox.type=io.debezium.transforms.outbox.EventRouter\n"
        << "transforms.outbox.table.field.event.id=id\n"
        << "transforms.outbox.table.field.event.key=message_key\n"
        << "transforms.outbox.table.field.event.payload=payload\n"
        << "transforms.outbox.route.by.field=topic\n"
        << "transforms.outbox.route.topic.replacement=${routedByValue}\n";
    std::ofstream(dir_ / "log4j.properties")
        << "log4j.rootLogger=WARN, stderr\n"
        << "log4j.appender.stderr=org.apache.log4j.ConsoleAppender\n"
        << "log4j.appender.stderr.Target=System.err\n"
        << "log4j.appender.stderr.layout=org.apache.log4j.PatternLayout\n"
        << "log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n\n";
    const char* java_home = std::getenv("JAVA_HOME");
    const std::string java = java_home ? std::string(java_home) + "/bin/java" : "java";
    // The JVM options of Kafka's own connect-standalone.sh (kafka-run-class.sh's defaults).
    process_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{
            java, "-Xms256M", "-Xmx2G", "-server", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent",
            "-Djava.awt.headless=true",
            "-Dlog4j.configuration=file:" + (dir_ / "log4j.properties").string(), "-cp",
            race.connect_libs + "/*", "org.apache.kafka.connect.cli.ConnectStandalone",
            (dir_ / "worker.properties").string(), (dir_ / "connector.properties").string()},
        log_path());
  }
  ~ConnectWorker() {
    process_.reset();
    std::error_code error;
    std::filesystem::remove_all(dir_, error);
  }
  ConnectWorker(const ConnectWorker&) = delete;
  ConnectWorker& operator=(const ConnectWorker&) = delete;

  ProcessUsage usage() const { return process_->usage(); }
  bool ended() { return process_->ended(); }
  /// The worker's last lines, for an error message.
  std::string log_tail() const {
    std::ifstream log(log_path());
    std::deque<std::string> lines;
    for (std::string line; std::getline(log, line);) {
      if (line.find("OUT_OF_ORDER") != std::string::npos) continue;
      lines.push_back(line);
      if (lines.size() > 15) lines.pop_front();
    }
    std::string tail;
    for (const auto& line : lines) tail += "  " + line + "\n";
    return tail;
  }

 private:
  static std::filesystem::path make_dir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "relay_race_XXXXXX").string();
    if (!mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
    return pattern;
  }
  std::string log_path() const { return (dir_ / "connect.log").string(); }

  std::filesystem::path dir_;
  std::unique_ptr<ChildProcess> process_;
};

/// The side under test, started on a database whose rows (if any) are written already.
class Publisher {
 public:
  Publisher(Side side, const Options& options, const RaceOptions& race, const std::string& url,
            const std::string& database, const ReplicationSlot* slot, bool for_latency) {
    if (side == Side::debezium) {
      worker_ = std::make_unique<ConnectWorker>(options, race, database, *slot, for_latency);
    } else {
      RelaySettings settings;
      // The relay's defaults, check-back on as it ships, with an endpoint configured as a user
      // with half messages would.
      settings.extra_sections =
          "checkback:\n  endpoints:\n    race:\n      url: http://127.0.0.1:9/check\n";
      relay_ = std::make_unique<BenchRelay>(options, url, settings);
    }
  }
  ProcessUsage usage() const { return worker_ ? worker_->usage() : relay_->usage(); }
  /// Throws with the worker's log when it ended on its own.
  void check_alive() {
    if (worker_ && worker_->ended()) {
      throw std::runtime_error("the Kafka Connect worker exited; its last lines:\n" +
                               worker_->log_tail());
    }
  }
  std::string diagnostics() const {
    return worker_ ? "the worker's last lines:\n" + worker_->log_tail()
                   : "the relay's warnings are above, on stderr";
  }

 private:
  std::unique_ptr<ConnectWorker> worker_;
  std::unique_ptr<BenchRelay> relay_;
};

/// Each race topic is made as issue 17 measured: 8 partitions, the broker's own append time.
std::string make_race_topic(const Options& options, const std::string& kind, int run) {
  const std::string topic =
      "race." + kind + "." + std::to_string(getpid()) + "." + std::to_string(run);
  create_topic(options, topic, kPartitions, {{"message.timestamp.type", "LogAppendTime"}});
  return topic;
}

/// One run's figures by name (the table lines' tags), so the log and the table take them alike.
using Figures = std::map<std::string, double>;

/// Debezium's slot in `database` for run `run`, made before any row is written; none for the relay.
std::unique_ptr<ReplicationSlot> slot_for(Side side, const BenchDatabase& database, int run) {
  if (side != Side::debezium) return nullptr;
  return std::make_unique<ReplicationSlot>(
      database.url(), "race_" + std::to_string(getpid()) + "_" + std::to_string(run));
}

/// Figures: seconds (from the publisher's start to every row in the topic), steady (messages per
/// second between 10% and 90% in the topic), cpu_per_million, peak_rss_mb, postgres_cpu (the
/// cluster's CPU seconds over the drain).
Figures drain_once(Side side, const Options& base, const RaceOptions& race, long rows, int run) {
  Options options = base;
  const std::string topic = make_race_topic(options, "drain", run);
  BenchDatabase database(options, /*notify=*/false);
  const std::unique_ptr<ReplicationSlot> slot = slot_for(side, database, run);
  database.load(topic, rows, "pending", kRowsPerLoadTransaction);
  TopicCounter counter(options.kafka, topic);
  const ClusterCpu cluster(options.server);
  const double postgres_before = cluster.seconds();
  const auto start = Clock::now();
  Publisher publisher(side, options, race, database.url(), database.name(), slot.get(), false);
  std::optional<double> at_10, at_90;
  long in_topic = 0, last = -1;
  auto last_change = start, next_progress = start;
  ProcessUsage usage;
  double postgres_cpu = 0;
  while (in_topic < rows) {
    std::this_thread::sleep_for(kSample);
    publisher.check_alive();
    usage = publisher.usage();  // while it runs: /proc forgets a process once it is reaped
    postgres_cpu = cluster.seconds() - postgres_before;
    in_topic = std::max(counter.messages(), 0L);
    const double now = seconds_since(start);
    if (!at_10 && in_topic >= rows / 10) at_10 = now;
    if (!at_90 && in_topic >= rows * 9 / 10) at_90 = now;
    if (in_topic != last) {
      last = in_topic;
      last_change = Clock::now();
    } else if (Clock::now() - last_change > kStallTimeout) {
      throw std::runtime_error(std::string(side_name(side)) + ": nothing reached the topic for " +
                               std::to_string(kStallTimeout.count()) + " s; " +
                               publisher.diagnostics());
    }
    if (Clock::now() >= next_progress) {
      std::cerr << "bench: " << side_name(side) << " " << in_topic << " in the topic, " << now
                << " s\n";
      next_progress += std::chrono::seconds(5);
    }
  }
  return {{"seconds", seconds_since(start)},
          {"steady", *at_90 > *at_10 ? rows * 0.8 / (*at_90 - *at_10) : 0},
          {"cpu_per_million", usage.cpu_seconds * 1e6 / static_cast<double>(rows)},
          {"peak_rss_mb", static_cast<double>(usage.peak_rss_kb) / 1024},
          {"postgres_cpu", postgres_cpu}};
}

/// Reads every message of a topic from the start and keeps, for each, the broker's append time
/// minus the insert time its payload starts with (microseconds since the epoch, as text).
class AppendClock {
 public:
  AppendClock(const std::string& bootstrap, const std::string& topic)
      : consumer_(subscribed_consumer(bootstrap, topic)) {
    thread_ = std::thread([this] { consume(); });
  }
  ~AppendClock() {
    stop_ = true;
    thread_.join();
    consumer_->close();
  }
  AppendClock(const AppendClock&) = delete;
  AppendClock& operator=(const AppendClock&) = delete;
  /// (insert time in µs, append minus insert in ms) of every message read so far.
  std::vector<std::pair<std::int64_t, double>> samples() const {
    std::lock_guard lock(mutex_);
    return samples_;
  }
  std::size_t count() const {
    std::lock_guard lock(mutex_);
    return samples_.size();
  }

 private:
  void consume() {
    while (!stop_) {
      std::unique_ptr<RdKafka::Message> message(consumer_->consume(50));
      if (message->err() != RdKafka::ERR_NO_ERROR) continue;
      const std::string payload(static_cast<const char*>(message->payload()), message->len());
      const std::int64_t inserted = std::atoll(payload.c_str());
      const double appended_us = static_cast<double>(message->timestamp().timestamp) * 1000;
      std::lock_guard lock(mutex_);
      samples_.emplace_back(inserted, (appended_us - static_cast<double>(inserted)) / 1000);
    }
  }

  std::unique_ptr<RdKafka::KafkaConsumer> consumer_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mutex_;
  std::vector<std::pair<std::int64_t, double>> samples_;
};

/// One writer connection committing single-row transactions on a fixed schedule (paced). The
/// payload starts with the insert's clock_timestamp() in µs. Returns how many it committed.
long write_paced(const std::string& url, const std::string& topic, int writer, double per_second,
                 int seconds, const Options& options) {
  pqxx::connection connection{url};
  connection.prepare("insert",
                     "INSERT INTO outbox.messages (topic, message_key, payload) VALUES ($1, $2,"
                     " convert_to(rpad((extract(epoch FROM clock_timestamp()) * 1000000)::bigint"
                     "::text || ' ', $3, 'x'), 'UTF8'))");
  return paced(per_second, seconds, [&](long n) {
    pqxx::nontransaction tx{connection};  // autocommit: one row per transaction
    tx.exec_prepared("insert", topic, "key-" + std::to_string((writer * 7919 + n) % options.keys),
                     options.payload_bytes);
  });
}

/// Figures: p50, p99, p999 (ms), writers_rate (rows per second the writers achieved),
/// postgres_cpu_per_1k (the cluster's CPU seconds per 1,000 rows written), cpu_per_1k (the
/// publisher's CPU seconds per 1,000 rows).
Figures latency_once(Side side, const Options& options, const RaceOptions& race, int rate,
                     int run) {
  const std::string topic = make_race_topic(options, "latency", run);
  BenchDatabase database(options, /*notify=*/false);
  const std::unique_ptr<ReplicationSlot> slot = slot_for(side, database, run);
  database.settle();
  Publisher publisher(side, options, race, database.url(), database.name(), slot.get(), true);
  AppendClock clock(options.kafka, topic);
  {
    // A first row: the publisher is streaming and the consumer has its partitions when the
    // timed part starts.
    pqxx::connection connection{database.url()};
    pqxx::nontransaction(connection)
        .exec_params(
            "INSERT INTO outbox.messages (topic, message_key, payload) VALUES ($1, 'warm-up',"
            " convert_to((extract(epoch FROM clock_timestamp()) * 1000000)::bigint::text,"
            " 'UTF8'))",
            topic);
    const auto deadline = Clock::now() + kStallTimeout;
    while (clock.count() == 0) {
      publisher.check_alive();
      if (Clock::now() > deadline) {
        throw std::runtime_error(std::string(side_name(side)) + ": the first row did not arrive; " +
                                 publisher.diagnostics());
      }
      std::this_thread::sleep_for(kSample);
    }
  }
  std::cerr << "bench: " << side_name(side) << ", " << race.writers << " writers at " << rate
            << " rows/s for " << race.seconds << " s\n";
  const ClusterCpu cluster(options.server);
  const double postgres_before = cluster.seconds();
  const double cpu_before = publisher.usage().cpu_seconds;
  const std::int64_t started_us = wall_clock_us();
  const auto started = Clock::now();
  std::atomic<long> committed{0};
  {
    std::vector<std::jthread> writers;
    for (int writer = 0; writer < race.writers; ++writer) {
      writers.emplace_back([&, writer] {
        committed +=
            write_paced(database.url(), topic, writer, static_cast<double>(rate) / race.writers,
                        kWarmUpSeconds + race.seconds, options);
      });
    }
  }
  const double writing_seconds = seconds_since(started);
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (clock.count() < static_cast<std::size_t>(committed + 1) && Clock::now() < deadline) {
    std::this_thread::sleep_for(kSample);
  }
  Figures figures{{"postgres_cpu_per_1k", (cluster.seconds() - postgres_before) * 1000 / committed},
                  {"cpu_per_1k", (publisher.usage().cpu_seconds - cpu_before) * 1000 / committed},
                  {"writers_rate", static_cast<double>(committed) / writing_seconds}};
  const std::int64_t counted_from = started_us + kWarmUpSeconds * 1'000'000;
  std::vector<double> latencies;
  for (const auto& [inserted, ms] : clock.samples()) {
    if (inserted >= counted_from) latencies.push_back(ms);
  }
  if (clock.count() < static_cast<std::size_t>(committed + 1)) {
    std::cerr << "bench: " << side_name(side) << ": only " << clock.count() - 1 << " of "
              << committed << " rows arrived within 60 s\n";
  }
  const Percentiles percentiles(latencies);
  figures["p50"] = percentiles.at(0.5);
  figures["p99"] = percentiles.at(0.99);
  figures["p999"] = percentiles.at(0.999);
  return figures;
}

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const std::size_t middle = values.size() / 2;
  return values.size() % 2 ? values[middle] : (values[middle - 1] + values[middle]) / 2;
}

std::string fixed(double value, int precision) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(precision) << value;
  return out.str();
}

/// One line of the table: each run's figure and the median, per side, and how far ahead the
/// relay is (the ratio oriented so that above 1 means the relay is better).
struct TableLine {
  std::string tag;  ///< the figure's name in Figures and in the log
  std::string figure;
  int precision = 1;
  bool lower_is_better = true;
  std::map<Side, std::vector<double>> runs;

  std::string markdown() const {
    auto cell = [&](Side side) {
      const auto found = runs.find(side);
      if (found == runs.end()) return std::string("");
      std::string text;
      for (double value : found->second)
        text += (text.empty() ? "" : ", ") + fixed(value, precision);
      return text + " (median **" + fixed(median(found->second), precision) + "**)";
    };
    const double peer =
        median(runs.count(Side::debezium) ? runs.at(Side::debezium) : std::vector<double>{});
    const double relay =
        median(runs.count(Side::relay) ? runs.at(Side::relay) : std::vector<double>{});
    const double ahead =
        lower_is_better ? (relay > 0 ? peer / relay : 0) : (peer > 0 ? relay / peer : 0);
    return "| " + figure + " | " + cell(Side::debezium) + " | " + cell(Side::relay) + " | " +
           fixed(ahead, 2) + "x |";
  }
};

double load_average() {
  double load = 0;
  std::ifstream("/proc/loadavg") >> load;
  return load;
}

std::string thousands(long value) {
  std::string digits = std::to_string(value);
  for (int at = static_cast<int>(digits.size()) - 3; at > 0; at -= 3) digits.insert(at, ",");
  return digits;
}

}  // namespace

int race(const Options& options, RaceOptions race) {
  if (race.connect_libs.empty() || race.plugin_path.empty()) {
    throw std::runtime_error(
        "--connect-libs and --plugin-path are needed (scripts/peer race sets them)");
  }
  {
    // The worker connects where the relay does: the server's own idea of its address, not a
    // second parse of the URL.
    pqxx::connection connection{options.server + "/postgres"};
    const pqxx::row server = pqxx::nontransaction(connection)
                                 .exec1(
                                     "SELECT current_setting('wal_level'), "
                                     "host(inet_server_addr()), inet_server_port()");
    if (server[0].as<std::string>() != "logical") {
      throw std::runtime_error(options.server + " has wal_level=" + server[0].as<std::string>() +
                               "; Debezium needs logical (scripts/peer up starts such a cluster)");
    }
    if (server[1].is_null()) {
      throw std::runtime_error(options.server + " is reached over a Unix socket; use TCP");
    }
    race.postgres_host = server[1].as<std::string>();
    race.postgres_port = server[2].as<int>();
  }
  const double load_before = load_average();
  const auto started = std::time(nullptr);
  std::vector<TableLine> lines;
  int run = 0;
  // Runs one case and adds its lines to the table, sides alternating which goes first so drift in
  // the machine's state over a case (a warming broker, a checkpoint) does not favour one side; each
  // run's figures are logged as they come.
  auto run_case = [&](const std::string& what, int runs, std::vector<TableLine> case_lines,
                      const auto& measure) {
    for (int round = 0; round < runs; ++round) {
      for (Side side : round % 2 == 0 ? std::vector<Side>{Side::debezium, Side::relay}
                                      : std::vector<Side>{Side::relay, Side::debezium}) {
        std::cerr << "bench: race " << what << ", " << side_name(side) << ", run " << round + 1
                  << " of " << runs << "\n";
        const Figures figures = measure(side, ++run);
        std::cerr << "race " << what << " side=" << side_name(side);
        for (TableLine& line : case_lines) {
          const double value = figures.at(line.tag);
          std::cerr << " " << line.tag << "=" << value;
          line.runs[side].push_back(value);
        }
        std::cerr << "\n";
      }
    }
    lines.insert(lines.end(), case_lines.begin(), case_lines.end());
  };
  for (const auto& [rows, runs] : race.drains) {
    const std::string n = thousands(rows);
    run_case(
        "drain rows=" + std::to_string(rows), runs,
        {{"seconds", "drain " + n + " rows: seconds until all are in the topic", 1, true, {}},
         {"steady", "drain " + n + ": msg/s between 10% and 90% in the topic", 0, false, {}},
         {"cpu_per_million", "drain " + n + ": process CPU s per million messages", 1, true, {}},
         {"peak_rss_mb", "drain " + n + ": peak RSS, MB", 0, true, {}},
         {"postgres_cpu", "drain " + n + ": PostgreSQL's CPU, s", 1, true, {}}},
        [&, rows = rows](Side side, int index) {
          return drain_once(side, options, race, rows, index);
        });
  }
  for (const auto& [per_second, runs] : race.rates) {
    const std::string n = "latency at " + thousands(per_second) + " rows/s: ";
    run_case("latency rate=" + std::to_string(per_second), runs,
             {{"p50", n + "p50, ms", 1, true, {}},
              {"p99", n + "p99, ms", 1, true, {}},
              {"p999", n + "p99.9, ms", 1, true, {}},
              {"writers_rate",
               n + "rows/s the " + std::to_string(race.writers) + " writers achieved",
               0,
               false,
               {}},
              {"postgres_cpu_per_1k", n + "PostgreSQL's CPU s per 1,000 rows", 3, true, {}},
              {"cpu_per_1k", n + "process CPU s per 1,000 rows", 3, true, {}}},
             [&, per_second = per_second](Side side, int index) {
               return latency_once(side, options, race, per_second, index);
             });
  }
  char date[64];
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", std::gmtime(&started));
  std::cout
      << "## " << date << ": the race against Debezium (`scripts/peer race" << race.command_line
      << "`)\n\n"
      << "Debezium 3.6.1.Final (PostgreSQL connector, pgoutput, Outbox Event Router) on Kafka "
         "Connect 3.9.1 standalone, against outbox-relay with its defaults (check-back on); "
         "the same PostgreSQL cluster (wal_level=logical, Debian's defaults otherwise), a "
         "fresh database per run; 8-partition topics with LogAppendTime; "
      << options.payload_bytes << "-byte payloads over " << thousands(options.keys)
      << " keys; sides alternate. Latency is the broker's append time minus the insert's "
         "clock_timestamp(), read by one consumer; the first "
      << kWarmUpSeconds << " s of each run are not counted. Load average " << fixed(load_before, 2)
      << " at the start, " << fixed(load_average(), 2) << " at the end.\n\n"
      << "| figure | Debezium | outbox-relay (defaults) | relay ahead by |\n"
      << "|---|---|---|---|\n";
  for (const TableLine& line : lines) std::cout << line.markdown() << "\n";
  return 0;
}

}  // namespace outbox::bench
