#include "tests/support/workload.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <memory>
#include <random>
#include <set>
#include <thread>

namespace outbox::test {

void write_sequenced_rows(const TestDatabase& database, const std::string& topic, int rows,
                          int keys, int writers, int per_tx, OnConnectionLoss on_loss) {
  {
    pqxx::connection connection = database.connect();
    pqxx::work tx{connection};
    tx.exec(
        "CREATE TABLE IF NOT EXISTS key_sequences (key text PRIMARY KEY, seq int NOT NULL);"
        "INSERT INTO key_sequences SELECT 'key-' || n, 0 FROM generate_series(0, " +
        std::to_string(keys - 1) + ") n ON CONFLICT DO NOTHING");
    tx.commit();
  }
  std::vector<std::thread> threads;
  std::vector<std::string> failures(writers);
  for (int writer = 0; writer < writers; ++writer) {
    threads.emplace_back([&, writer] {
      auto connect = [&] {
        auto connection = std::make_unique<pqxx::connection>(database.url());
        connection->prepare("write",
                            "WITH next AS (UPDATE key_sequences SET seq = seq + 1 WHERE key = $1"
                            "              RETURNING seq)"
                            " SELECT outbox.publish($2, $1, (SELECT seq FROM next)::text)");
        return connection;
      };
      try {
        std::unique_ptr<pqxx::connection> connection = connect();
        std::mt19937 random(writer);
        std::uniform_int_distribution<int> pick_key(0, keys - 1);
        const int my_rows = rows / writers + (writer < rows % writers ? 1 : 0);
        for (int written = 0; written < my_rows;) {
          std::vector<int> chosen;
          for (int i = 0; i < per_tx && written + i < my_rows; ++i) {
            chosen.push_back(pick_key(random));
          }
          std::sort(chosen.begin(), chosen.end());  // a fixed lock order: no deadlocks
          try {
            pqxx::work tx{*connection};
            for (int key : chosen) tx.exec_prepared("write", "key-" + std::to_string(key), topic);
            tx.commit();
          } catch (const pqxx::failure&) {
            if (on_loss == OnConnectionLoss::fail) throw;
            // The server went away or is shutting down: reconnect and write the same rows again in
            // a new transaction. The sequences live in the database, so they stay exact.
            for (connection.reset(); !connection;) {
              std::this_thread::sleep_for(std::chrono::milliseconds(200));
              try {
                connection = connect();
              } catch (const pqxx::broken_connection&) {
              }
            }
            continue;
          }
          written += static_cast<int>(chosen.size());
        }
      } catch (const std::exception& error) {
        failures[writer] = error.what();
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (const auto& failure : failures) REQUIRE_MESSAGE(failure.empty(), failure);
}

void require_drained(const TestDatabase& database, RelayProcess& relay,
                     std::chrono::milliseconds timeout) {
  const auto drained = [&] { return database.count("state IN ('pending', 'unknown')") == 0; };
  REQUIRE_MESSAGE(eventually(drained, timeout),
                  "rows still pending: " << database.count("state = 'pending'") << "\n"
                                         << relay.log_tail());
}

OrderCheck check_per_key_order(const std::vector<ConsumedMessage>& messages) {
  OrderCheck check;
  std::set<long long> seen;
  std::map<std::string, int> last_sequence;
  // Kafka orders a key only within its partition, and one key lives in one partition, so reading
  // partition by partition in offset order is reading each key in order.
  for (const ConsumedMessage& message : messages) {
    if (!seen.insert(message.outbox_id).second) {
      ++check.duplicates;
      continue;
    }
    const std::string key = message.key.value_or("");
    const int sequence = std::stoi(message.payload);
    int& last = last_sequence[key];
    if (sequence != last + 1) {
      ++check.out_of_order;
      if (check.first_problem.empty()) {
        check.first_problem = "key " + key + ": sequence " + std::to_string(sequence) + " after " +
                              std::to_string(last);
      }
    }
    last = std::max(last, sequence);
  }
  check.distinct_ids = seen.size();
  return check;
}

}  // namespace outbox::test
