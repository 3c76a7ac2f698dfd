#include "bench/bench_support.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <librdkafka/rdkafkacpp.h>
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>

#include <pqxx/pqxx>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "relay/config/config.hpp"
#include "relay/store/store.hpp"
#include "tests/support/kafka_admin.hpp"

namespace outbox::bench {

void require_kafka(const Options& options) {
  std::string error;
  std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
  conf->set("bootstrap.servers", options.kafka, error);
  std::unique_ptr<RdKafka::Producer> probe(RdKafka::Producer::create(conf.get(), error));
  RdKafka::Metadata* metadata = nullptr;
  if (!probe || probe->metadata(true, nullptr, &metadata, 5000) != RdKafka::ERR_NO_ERROR) {
    throw std::runtime_error("Kafka at " + options.kafka +
                             " does not answer; start it with scripts/services up");
  }
  delete metadata;
}

void create_topic(const Options& options, const std::string& topic, int partitions,
                  const std::map<std::string, std::string>& configs) {
  test::create_topic(options.kafka, topic, partitions, configs);
}

std::unique_ptr<RdKafka::Conf> client_conf(const std::string& bootstrap,
                                           const std::map<std::string, std::string>& settings) {
  std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
  std::string error;
  if (conf->set("bootstrap.servers", bootstrap, error) != RdKafka::Conf::CONF_OK) {
    throw std::runtime_error(error);
  }
  for (const auto& [name, value] : settings) {
    if (conf->set(name, value, error) != RdKafka::Conf::CONF_OK) throw std::runtime_error(error);
  }
  return conf;
}

std::unique_ptr<RdKafka::KafkaConsumer> subscribed_consumer(
    const std::string& bootstrap, const std::string& topic,
    const std::map<std::string, std::string>& settings) {
  std::map<std::string, std::string> all{
      {"group.id", topic}, {"auto.offset.reset", "earliest"}, {"enable.auto.commit", "false"}};
  for (const auto& [name, value] : settings) all[name] = value;
  const std::unique_ptr<RdKafka::Conf> conf = client_conf(bootstrap, all);
  std::string error;
  std::unique_ptr<RdKafka::KafkaConsumer> consumer(
      RdKafka::KafkaConsumer::create(conf.get(), error));
  if (!consumer) throw std::runtime_error("consumer: " + error);
  if (consumer->subscribe({topic}) != RdKafka::ERR_NO_ERROR) {
    throw std::runtime_error("consumer: cannot subscribe to " + topic);
  }
  return consumer;
}

long paced(double per_second, int seconds, const std::function<void(long)>& send) {
  const auto interval = std::chrono::duration<double>(1.0 / per_second);
  const auto start = Clock::now();
  const long total = static_cast<long>(per_second * seconds);
  for (long n = 0; n < total; ++n) {
    std::this_thread::sleep_until(
        start + std::chrono::duration_cast<Clock::duration>(interval * static_cast<double>(n)));
    send(n);
  }
  return total;
}

std::int64_t wall_clock_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

namespace {

void drop_database(const std::string& server, const std::string& name) {
  pqxx::connection admin{server + "/postgres"};
  pqxx::nontransaction tx{admin};
  tx.exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)");
}

/// Fields of /proc/PID/stat after "pid (comm)", numbered as in proc(5) (3 is the state).
std::vector<long> stat_fields(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  std::vector<long> fields(3, 0);
  if (text.empty()) return {};
  std::istringstream rest(text.substr(text.rfind(')') + 2));
  std::string field;
  rest >> field;  // the state letter
  fields.push_back(0);
  while (rest >> field) fields.push_back(std::atol(field.c_str()));
  return fields;
}

}  // namespace

struct BenchDatabase::Probe {
  explicit Probe(const std::string& url) : connection(url) {}
  pqxx::connection connection;
};

BenchDatabase::Probe& BenchDatabase::probe() const {
  if (!probe_) probe_ = std::make_unique<Probe>(url());
  return *probe_;
}

BenchDatabase::BenchDatabase(const Options& options, bool notify)
    : options_(options), name_("relay_bench_" + std::to_string(getpid())), server_(options.server) {
  drop_database(server_, name_);
  {
    pqxx::connection admin{server_ + "/postgres"};
    pqxx::nontransaction tx{admin};
    tx.exec("CREATE DATABASE " + name_);
  }
  PostgresConfig postgres;
  postgres.url = url();
  apply_migrations(postgres, notify, RelayConfig{}.lanes);
}

BenchDatabase::~BenchDatabase() {
  probe_.reset();
  try {
    drop_database(server_, name_);
  } catch (const std::exception& error) {
    std::cerr << "bench: could not drop database " << name_ << ": " << error.what() << "\n";
  }
}

void BenchDatabase::load(const std::string& topic, long count, const std::string& state,
                         long rows_per_transaction) {
  std::cerr << "bench: loading " << count << " " << state << " rows of " << options_.payload_bytes
            << " bytes over " << options_.keys << " keys\n";
  pqxx::connection connection{url()};
  auto next_progress = Clock::now();
  for (long loaded = 0; loaded < count;) {
    const long chunk = std::min(rows_per_transaction, count - loaded);
    pqxx::work tx{connection};
    // Unknown rows are due at once: the check-back benchmark times the sweeper, not its delay.
    // Published rows are history kept for audit, a day old: stamped with the load's time they
    // would all count as "published in the last minute", a query meant to touch only that.
    tx.exec_params(
        "INSERT INTO outbox.messages (topic, message_key, payload, state, created_at,"
        "                             published_at, producer_group, transaction_id,"
        "                             next_attempt_at)"
        " SELECT $1, 'key-' || (n % $2), convert_to(repeat('x', $3), 'UTF8'), $6::outbox.row_state,"
        "        CASE WHEN $6 = 'published' THEN now() - interval '1 day'"
        "             ELSE clock_timestamp() END,"
        "        CASE WHEN $6 = 'published' THEN now() - interval '1 day' END,"
        "        CASE WHEN $6 = 'unknown' THEN 'bench' END,"
        "        CASE WHEN $6 = 'unknown' THEN 'tx-' || n END,"
        "        CASE WHEN $6 = 'unknown' THEN now() - interval '1 hour' END"
        "   FROM generate_series($4::bigint, $5::bigint) n",
        topic, options_.keys, options_.payload_bytes, loaded, loaded + chunk - 1, state);
    tx.commit();
    loaded += chunk;
    if (Clock::now() >= next_progress || loaded == count) {
      std::cerr << "bench: loaded " << loaded << "\n";
      next_progress = Clock::now() + std::chrono::seconds(5);
    }
  }
  pqxx::nontransaction vacuum{connection};
  vacuum.exec("VACUUM ANALYZE outbox.messages");
  settle();
}

void BenchDatabase::settle() const {
  // Loading 10,000,000 rows, or the drain before this benchmark, leaves gigabytes of dirty pages:
  // without flushing them here the timed run that follows shares the disk and a core with the
  // checkpointer and the kernel writing them back, and every commit's WAL flush waits behind them.
  pqxx::nontransaction tx{probe().connection};
  tx.exec("CHECKPOINT");
  ::sync();
}

long BenchDatabase::count_where(const std::string& condition) const {
  pqxx::nontransaction tx{probe().connection};
  return tx.exec1("SELECT count(*) FROM outbox.messages WHERE " + condition)[0].as<long>();
}

std::optional<long> BenchDatabase::lowest_id_where(const std::string& condition) const {
  pqxx::nontransaction tx{probe().connection};
  const pqxx::field lowest = tx.exec1("SELECT min(id) FROM outbox.messages WHERE " + condition)[0];
  return lowest.is_null() ? std::nullopt : std::optional<long>(lowest.as<long>());
}

std::optional<double> BenchDatabase::seconds_between_published(const std::string& condition,
                                                               double from, double to) const {
  pqxx::nontransaction tx{probe().connection};
  const pqxx::field seconds = tx.exec_params1(
      "SELECT extract(epoch FROM"
      "         percentile_disc($2::float8) WITHIN GROUP (ORDER BY published_at)"
      "       - percentile_disc($1::float8) WITHIN GROUP (ORDER BY published_at))::float8"
      "  FROM outbox.messages WHERE state = 'published' AND " +
          condition,
      from, to)[0];
  return seconds.is_null() ? std::nullopt : std::optional<double>(seconds.as<double>());
}

long BenchDatabase::highest_id() const {
  pqxx::nontransaction tx{probe().connection};
  return tx.exec1("SELECT coalesce(max(id), 0) FROM outbox.messages")[0].as<long>();
}

double BenchDatabase::vacuum_seconds() const {
  pqxx::nontransaction tx{probe().connection};
  const auto start = Clock::now();
  tx.exec("VACUUM outbox.messages");
  return seconds_since(start);
}

ProcessUsage usage_of(pid_t pid) {
  ProcessUsage usage;
  const std::vector<long> fields = stat_fields(pid);
  if (fields.size() <= 15) return usage;
  usage.cpu_seconds =
      static_cast<double>(fields[14] + fields[15]) / static_cast<double>(sysconf(_SC_CLK_TCK));
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmHWM:", 0) == 0) usage.peak_rss_kb = std::stol(line.substr(6));
  }
  return usage;
}

std::map<pid_t, ThreadCpu> threads_cpu_of(pid_t pid) {
  std::map<pid_t, ThreadCpu> threads;
  const std::filesystem::path tasks = "/proc/" + std::to_string(pid) + "/task";
  std::error_code error;
  for (const auto& task : std::filesystem::directory_iterator(tasks, error)) {
    std::ifstream comm(task.path() / "comm");
    std::ifstream schedstat(task.path() / "schedstat");
    ThreadCpu thread;
    double on_cpu_ns = 0;
    if (!std::getline(comm, thread.name) || !(schedstat >> on_cpu_ns)) continue;  // it ended
    thread.cpu_ms = on_cpu_ns / 1e6;
    threads[static_cast<pid_t>(std::stol(task.path().filename().string()))] = thread;
  }
  return threads;
}

ChildProcess::ChildProcess(const std::vector<std::string>& argv, const std::string& log_path) {
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    if (!log_path.empty()) {
      const int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (log >= 0) {
        dup2(log, STDOUT_FILENO);
        dup2(log, STDERR_FILENO);
      }
    }
    execvp(args[0], args.data());
    _exit(127);
  }
}

bool ChildProcess::ended() {
  if (pid_ <= 0) return true;
  if (waitpid(pid_, nullptr, WNOHANG) != pid_) return false;
  pid_ = -1;
  return true;
}

void ChildProcess::stop(std::chrono::seconds grace) {
  if (pid_ <= 0) return;
  kill(pid_, SIGTERM);
  const auto deadline = Clock::now() + grace;
  while (!ended()) {
    if (Clock::now() > deadline) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

ChildProcess::~ChildProcess() { stop(); }

BenchRelay::BenchRelay(const Options& options, const std::string& database_url,
                       const RelaySettings& settings)
    : config_path_("/tmp/relay_bench_" + std::to_string(getpid()) + ".yaml") {
  std::ofstream(config_path_) << "postgres:\n  url: " << database_url
                              << "\nkafka:\n  bootstrap_servers: " << options.kafka
                              << "\n  exactly_once: " << (options.exactly_once ? "true" : "false")
                              << "\n  marker_topic: bench.markers." << getpid() << "\n"
                              << settings.kafka_lines
                              << "\nrelay:\n  batch_size: " << options.batch_size << "\n"
                              << settings.relay_lines
                              << "metrics:\n  listen: \"127.0.0.1:0\"\nretention:\n"
                              << "  enabled: false\n  delete_on_publish: "
                              << (options.delete_on_publish ? "true" : "false")
                              << "\nlogging:\n  level: warn\n"
                              << settings.extra_sections;
  // RELAY_BENCH_BINARY runs another build of the relay under the same benchmark: a change is
  // measured before and after by one command, alternating, on one machine.
  const char* binary = std::getenv("RELAY_BENCH_BINARY");
  process_ = std::make_unique<ChildProcess>(std::vector<std::string>{
      binary && *binary ? binary : RELAY_BINARY, "run", "--config", config_path_});
}

void BenchRelay::stop() {
  if (!process_) return;
  process_.reset();
  std::remove(config_path_.c_str());
}

BenchRelay::~BenchRelay() { stop(); }

ClusterCpu::ClusterCpu(const std::string& server) {
  pqxx::connection connection{server + "/postgres"};
  const auto backend =
      pqxx::nontransaction(connection).exec1("SELECT pg_backend_pid()")[0].as<int>();
  const std::vector<long> fields = stat_fields(backend);
  if (fields.size() <= 4) {
    throw std::runtime_error("PostgreSQL at " + server +
                             " runs on another machine: its CPU cannot be read from /proc");
  }
  postmaster_ = static_cast<pid_t>(fields[4]);
}

double ClusterCpu::seconds() const {
  long ticks = 0;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", error)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || !std::isdigit(static_cast<unsigned char>(name[0]))) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(name));
    const std::vector<long> fields = stat_fields(pid);
    if (fields.size() <= 17) continue;
    if (pid == postmaster_) {
      ticks += fields[14] + fields[15] + fields[16] + fields[17];
    } else if (fields[4] == postmaster_) {
      ticks += fields[14] + fields[15];
    }
  }
  return static_cast<double>(ticks) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

Percentiles::Percentiles(std::vector<double> samples) : samples_(std::move(samples)) {
  std::sort(samples_.begin(), samples_.end());
}

double Percentiles::at(double quantile) const {
  if (samples_.empty()) return 0;
  const auto rank =
      static_cast<std::size_t>(std::ceil(quantile * static_cast<double>(samples_.size())));
  return samples_[std::clamp<std::size_t>(rank, 1, samples_.size()) - 1];
}

}  // namespace outbox::bench
