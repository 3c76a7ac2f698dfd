// Writers and checks shared by the integration tests: rows written the way applications write them
// (plain SQL inside their own transactions), and the ordering check run on what Kafka holds.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "tests/support/kafka_reader.hpp"
#include "tests/support/relay_process.hpp"
#include "tests/support/test_database.hpp"

namespace outbox::test {

/// What a writer does when its connection fails: give up (the test fails) or reconnect and retry
/// the transaction, as an application would across a database restart.
enum class OnConnectionLoss { fail, reconnect };

/// Writes `rows` outbox rows over `keys` keys from `writers` concurrent connections, `per_tx` rows
/// a transaction. Like an application updating an aggregate, each row increments its key's
/// sequence in a business table (which row-locks the key), and the payload is that sequence
/// number, so the order of commits per key is known. Keys are "key-<n>".
void write_sequenced_rows(const TestDatabase& database, const std::string& topic, int rows,
                          int keys, int writers = 8, int per_tx = 10,
                          OnConnectionLoss on_loss = OnConnectionLoss::fail);

/// Waits until no row is pending or unknown; on time-out fails the test with the relay's log tail.
void require_drained(const TestDatabase& database, RelayProcess& relay,
                     std::chrono::milliseconds timeout = std::chrono::seconds(120));

struct OrderCheck {
  std::size_t distinct_ids = 0;
  std::size_t duplicates = 0;
  std::size_t out_of_order = 0;  ///< keys whose sequence, by first occurrence, is not 1,2,3,...
  std::string first_problem;
};

/// Checks per-key order by first occurrence: for each key the payloads (sequence numbers), keeping
/// only the first time each outbox id was seen, must read 1, 2, 3, ... with no gap.
OrderCheck check_per_key_order(const std::vector<ConsumedMessage>& messages);

}  // namespace outbox::test
