// fault-checker: writes events through the SQL API from concurrent writers while faults are
// injected around it (scripts/faults), then, once the faults have stopped, waits for the relay to
// drain and reads everything back from Kafka and the database. It counts lost events (committed,
// never in Kafka), unexpected ones (rolled back or never written, yet in Kafka), duplicates, keys
// out of order (by first occurrence) and stuck rows (not terminal after the drain), prints the
// counts and exits 1 on any lost, unexpected, out-of-order or stuck event.
//
// Each key belongs to one writer, which commits its events one after another, so the order of a
// key's commits is its sequence 1, 2, 3, ... Some transactions roll back; some are held open for
// seconds before committing (late committers, older ids than rows already published). A commit
// whose outcome is in doubt (the connection died during COMMIT) is resolved by looking the event
// up in the database once it answers again.
#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <iostream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>
#include <random>
#include <thread>

#include "tests/support/kafka_reader.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct Options {
  std::string database_url;
  std::string kafka = "127.0.0.1:9092";
  std::string topic;
  int seconds = 30;
  int writers = 8;
  int keys = 200;
  int rollback_percent = 10;
  int late_percent = 1;
  int late_seconds = 3;
  int drain_timeout_seconds = 180;
};

enum class Outcome { committed, rolled_back };

struct Event {
  std::string key;
  int sequence = 0;
  Outcome outcome = Outcome::rolled_back;
};

/// Every event any writer attempted, by id.
class Ledger {
 public:
  void record(const std::string& id, Event event) {
    std::lock_guard lock(mutex_);
    events_[id] = std::move(event);
  }
  std::map<std::string, Event> events() const {
    std::lock_guard lock(mutex_);
    return events_;
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::string, Event> events_;
};

struct WriterCounts {
  std::atomic<long> committed{0}, rolled_back{0}, late{0}, in_doubt{0}, connection_errors{0};
};

/// Connects, retrying while the database is down (a fault may be restarting it).
std::unique_ptr<pqxx::connection> connect(const std::string& url, WriterCounts& counts) {
  for (;;) {
    try {
      return std::make_unique<pqxx::connection>(url);
    } catch (const pqxx::broken_connection&) {
      ++counts.connection_errors;
      std::this_thread::sleep_for(200ms);
    }
  }
}

/// Whether the event's row exists, asked once the database answers again.
bool event_was_committed(const std::string& url, const std::string& topic, const std::string& id,
                         WriterCounts& counts) {
  for (;;) {
    try {
      auto connection = connect(url, counts);
      pqxx::nontransaction tx{*connection};
      return tx.exec_params1(
                   "SELECT count(*) FROM outbox.messages WHERE topic = $1 AND"
                   " headers->>'event-id' = $2",
                   topic, id)[0]
                 .as<long>() > 0;
    } catch (const pqxx::broken_connection&) {
      ++counts.connection_errors;
      std::this_thread::sleep_for(200ms);
    }
  }
}

void write_events(const Options& options, int writer, Ledger& ledger, WriterCounts& counts) {
  std::mt19937 random(static_cast<unsigned>(writer) * 7919u + 17u);
  std::uniform_int_distribution<int> percent(1, 100);
  std::vector<std::string> my_keys;
  for (int key = writer; key < options.keys; key += options.writers) {
    my_keys.push_back("k" + std::to_string(key));
  }
  std::map<std::string, int> next_sequence;
  auto connection = connect(options.database_url, counts);
  const auto deadline = Clock::now() + std::chrono::seconds(options.seconds);
  for (long n = 0; Clock::now() < deadline; ++n) {
    const std::string& key = my_keys[random() % my_keys.size()];
    const std::string id = "w" + std::to_string(writer) + "-" + std::to_string(n);
    const int sequence = next_sequence[key] + 1;
    const bool roll_back = percent(random) <= options.rollback_percent;
    const bool late = !roll_back && percent(random) <= options.late_percent;
    const nlohmann::json payload{{"event", id}, {"key", key}, {"seq", sequence}};
    const nlohmann::json headers{{"event-id", id}};
    bool committing = false;
    try {
      pqxx::work tx{*connection};
      tx.exec_params("SELECT outbox.publish($1, $2, $3::jsonb, $4::jsonb)", options.topic, key,
                     payload.dump(), headers.dump());
      if (late) {
        ++counts.late;
        std::this_thread::sleep_for(std::chrono::seconds(options.late_seconds));
      }
      if (roll_back) {
        tx.abort();
        ledger.record(id, {key, sequence, Outcome::rolled_back});
        ++counts.rolled_back;
        continue;
      }
      committing = true;
      tx.commit();
      ledger.record(id, {key, sequence, Outcome::committed});
      next_sequence[key] = sequence;
      ++counts.committed;
    } catch (const std::exception& error) {
      // The connection died, or the server refused the statement: before COMMIT the transaction is
      // gone; during COMMIT nobody knows until the database answers again.
      ++counts.connection_errors;
      bool committed = false;
      if (committing) {
        ++counts.in_doubt;
        committed = event_was_committed(options.database_url, options.topic, id, counts);
      }
      ledger.record(id, {key, sequence, committed ? Outcome::committed : Outcome::rolled_back});
      if (committed) {
        next_sequence[key] = sequence;
        ++counts.committed;
      } else {
        ++counts.rolled_back;
      }
      connection = connect(options.database_url, counts);
    }
  }
}

long unfinished_rows(const Options& options) {
  try {
    pqxx::connection connection{options.database_url};
    pqxx::nontransaction tx{connection};
    return tx
        .exec_params1(
            "SELECT count(*) FROM outbox.messages WHERE topic = $1 AND"
            " state IN ('pending', 'unknown')",
            options.topic)[0]
        .as<long>();
  } catch (const pqxx::broken_connection&) {
    return -1;
  }
}

struct Verdict {
  long lost = 0, unexpected = 0, duplicated = 0, out_of_order = 0, stuck = 0;
  std::string first_problem;
  void note(const std::string& problem) {
    if (first_problem.empty()) first_problem = problem;
  }
};

Verdict check(const Options& options, const std::map<std::string, Event>& events, long stuck) {
  Verdict verdict;
  verdict.stuck = stuck;
  if (stuck != 0) verdict.note(std::to_string(stuck) + " rows still pending or unknown");
  const auto messages = outbox::test::read_topic(options.kafka, options.topic, 30s);
  std::map<std::string, int> seen;
  std::map<std::string, int> last_sequence;  // per key, by first occurrence
  for (const auto& message : messages) {
    const auto payload = nlohmann::json::parse(message.payload, nullptr, false);
    const std::string id = payload.is_object() ? payload.value("event", "") : "";
    const auto event = events.find(id);
    if (event == events.end() || event->second.outcome != Outcome::committed) {
      ++verdict.unexpected;
      verdict.note("unexpected in Kafka: " + message.payload);
      continue;
    }
    if (seen[id]++ > 0) {
      ++verdict.duplicated;
      continue;
    }
    int& last = last_sequence[event->second.key];
    if (event->second.sequence <= last) {
      ++verdict.out_of_order;
      verdict.note("key " + event->second.key + ": sequence " +
                   std::to_string(event->second.sequence) + " after " + std::to_string(last));
    }
    last = std::max(last, event->second.sequence);
  }
  for (const auto& [id, event] : events) {
    if (event.outcome == Outcome::committed && !seen.contains(id)) {
      ++verdict.lost;
      verdict.note("lost: " + id);
    }
  }
  return verdict;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  CLI::App app{"Writes a workload while faults are injected, then checks what reached Kafka."};
  app.add_option("--database", options.database_url, "PostgreSQL URL of the relay's database")
      ->required();
  app.add_option("--topic", options.topic, "Topic the events go to (fresh per run)")->required();
  app.add_option("--kafka", options.kafka, "Kafka bootstrap servers")->capture_default_str();
  app.add_option("--seconds", options.seconds, "How long the writers write")->capture_default_str();
  app.add_option("--writers", options.writers, "Concurrent writers")->capture_default_str();
  app.add_option("--keys", options.keys, "Keys (each owned by one writer)")->capture_default_str();
  app.add_option("--rollback-percent", options.rollback_percent, "Transactions rolled back")
      ->capture_default_str();
  app.add_option("--late-percent", options.late_percent, "Transactions held open before commit")
      ->capture_default_str();
  app.add_option("--late-seconds", options.late_seconds, "How long a late one is held open")
      ->capture_default_str();
  app.add_option("--drain-timeout", options.drain_timeout_seconds,
                 "Seconds to wait for the relay to drain after writing")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  Ledger ledger;
  WriterCounts counts;
  std::cerr << "fault-checker: " << options.writers << " writers for " << options.seconds
            << " s on topic " << options.topic << "\n";
  {
    std::vector<std::jthread> writers;
    for (int writer = 0; writer < options.writers; ++writer) {
      writers.emplace_back([&, writer] { write_events(options, writer, ledger, counts); });
    }
  }
  std::cerr << "fault-checker: writing done (" << counts.committed << " committed, "
            << counts.rolled_back << " rolled back); waiting for the relay to drain\n";
  const auto drain_deadline = Clock::now() + std::chrono::seconds(options.drain_timeout_seconds);
  long unfinished = unfinished_rows(options);
  while (unfinished != 0 && Clock::now() < drain_deadline) {
    std::this_thread::sleep_for(500ms);
    unfinished = unfinished_rows(options);
  }
  try {
    const Verdict verdict = check(options, ledger.events(), std::max(0L, unfinished));
    std::cout << "committed=" << counts.committed << " rolled_back=" << counts.rolled_back
              << " late=" << counts.late << " in_doubt=" << counts.in_doubt
              << " connection_errors=" << counts.connection_errors << " lost=" << verdict.lost
              << " unexpected=" << verdict.unexpected << " duplicated=" << verdict.duplicated
              << " out_of_order=" << verdict.out_of_order << " stuck=" << verdict.stuck << "\n";
    if (verdict.lost + verdict.unexpected + verdict.out_of_order + verdict.stuck > 0) {
      std::cerr << "fault-checker: FAILED; first problem: " << verdict.first_problem << "\n";
      return 1;
    }
    return 0;
  } catch (const std::exception& error) {
    std::cerr << "fault-checker: " << error.what() << "\n";
    return 2;
  }
}
