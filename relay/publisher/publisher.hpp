// The only module that talks to Kafka: an idempotent librdkafka producer (acks=all) and the
// bookkeeping that turns its delivery reports into DeliveryReports. Nothing outside
// relay/publisher includes librdkafka.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "relay/config/config.hpp"
#include "relay/core/outbox_row.hpp"

namespace outbox {

/// The producer could not be created from the configuration (a bad librdkafka property, or a
/// property the relay must own, such as acks). Not retriable: the configuration must change.
class PublisherConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The rows of one claimed batch and what became of each. The publisher keeps pointers into it
/// until every produced row has its report, so the caller must keep it alive and in place
/// (hold it by unique_ptr) until complete() — or until KafkaPublisher::abandon_all() returned.
class PublishBatch {
 public:
  explicit PublishBatch(std::vector<OutboxRow> rows);
  PublishBatch(const PublishBatch&) = delete;
  PublishBatch& operator=(const PublishBatch&) = delete;

  std::span<const OutboxRow> rows() const { return rows_; }
  std::span<const DeliveryReport> reports() const { return reports_; }
  bool complete() const { return awaiting_ == 0; }
  /// Whether row `index` has its final report: it was never handed to librdkafka, or its delivery
  /// report arrived. A row that is not final is still in librdkafka's hands.
  bool row_final(std::size_t index) const { return awaiting_rows_[index] == 0; }

 private:
  friend class KafkaPublisher;
  /// What a produced message's opaque points at: the report to fill, and the batch to count down.
  struct DeliverySlot {
    PublishBatch* batch;
    std::size_t index;
  };
  std::vector<OutboxRow> rows_;
  std::vector<DeliveryReport> reports_;
  std::vector<DeliverySlot> slots_;
  std::vector<char> awaiting_rows_;  ///< 1 while librdkafka holds the row
  std::size_t awaiting_ = 0;
};

/// A failure that belongs to a row's topic rather than to the row: the topic is missing or not
/// authorised, a partition has no leader or too few in-sync replicas, the broker is away. The relay
/// holds the topic (relay/pipeline/topic_holds.hpp) instead of the whole pipeline.
struct TopicFailure {
  std::string route;       ///< the row's routing value
  std::string topic;       ///< the Kafka topic it resolved to
  std::string error_code;  ///< librdkafka's error name, e.g. NOT_ENOUGH_REPLICAS, _UNKNOWN_TOPIC
  std::string error;       ///< its text
};

/// Which keys may not be produced now. The publisher asks it before each row and tells it each
/// permanent failure (at produce time or in a delivery report); the rule itself (the dead-key
/// policy, when a hold ends) belongs to its owner, relay/pipeline/dead_key_holds.hpp. Called on the
/// publisher's thread only.
class KeyGate {
 public:
  virtual ~KeyGate() = default;
  virtual bool held(const OutboxRow& row) const = 0;
  virtual void failed_permanently(const OutboxRow& row) = 0;
};

/// Not thread-safe: one loop produces, polls and reads the batches. Delivery callbacks run inside
/// poll() on the calling thread.
class KafkaPublisher {
 public:
  /// Throws PublisherConfigError.
  /// `gate` must outlive the publisher.
  /// With `transactional_id` (kafka.exactly_once) the producer is transactional: call
  /// init_transactions() before the first begin_transaction().
  KafkaPublisher(const KafkaConfig& kafka, const RoutingConfig& routing, KeyGate& gate,
                 std::optional<std::string> transactional_id = std::nullopt);
  ~KafkaPublisher();
  KafkaPublisher(const KafkaPublisher&) = delete;
  KafkaPublisher& operator=(const KafkaPublisher&) = delete;

  /// Hands every row of the batch to librdkafka, in order. Rows with a defect, or that librdkafka
  /// refuses outright (too large), are permanent failures at once. A row that librdkafka refuses
  /// for a reason of its topic (unknown topic) is a retriable failure, reported by
  /// take_topic_failures(), and the later rows of that topic in this batch are not_attempted; the
  /// other topics' rows are produced. A row whose key the gate holds is not_attempted, and each
  /// permanent failure is told to the gate (which may then hold later rows of its key). When
  /// librdkafka's queue is full it serves delivery reports and tries again while `keep_going()`
  /// says so; rows left when it stops are not_attempted.
  void produce(PublishBatch& batch, const std::function<bool()>& keep_going);

  /// The retriable failures since the last call, at produce time or in delivery reports, one per
  /// row, in the order they happened.
  std::vector<TopicFailure> take_topic_failures();

  /// Serves delivery reports for up to `timeout`.
  void poll(std::chrono::milliseconds timeout);

  /// A fatal producer error (e.g. an idempotence sequence violation) stops this producer for good;
  /// the caller abandons in-flight batches and creates a new publisher.
  bool has_fatal_error() const;
  std::string fatal_error() const;

  /// Waits up to `timeout` for outstanding deliveries, then purges what is left; afterwards every
  /// batch produced by this publisher is complete (purged rows as retriable failures).
  void drain(std::chrono::milliseconds timeout);

  /// Failpoint for fault-injection tests: puts the producer into librdkafka's fatal-error state
  /// (as an idempotence sequence violation would), via rd_kafka_test_fatal_error().
  void inject_fatal_error(const std::string& reason);

  /// Asks a broker for cluster metadata (no topics): whether Kafka answers within `timeout`.
  bool broker_reachable(std::chrono::milliseconds timeout);

  /// Messages waiting in librdkafka's queues or in flight to the broker.
  int queue_length() const;

  // --- Kafka transactions (exactly_once only; the short-lived clients that fence a producer,
  // create the marker topic and read markers are in relay/publisher/transactions.cpp) --------
  /// Registers the transactional id with its coordinator, which fences every earlier producer of
  /// the same id (their open transaction is aborted). Throws TransactionError.
  void init_transactions(std::chrono::milliseconds timeout);
  /// Throws TransactionError.
  void begin_transaction();
  /// Produces `payload` under `key` to the marker partition of `topic` inside the open
  /// transaction (the transaction's marker); its delivery fails the transaction, not a row.
  /// Throws TransactionError.
  void produce_marker(const std::string& topic, const std::string& key, const std::string& payload);
  enum class Ending {
    committed,  ///< visible to read_committed consumers
    aborted,    ///< nothing of it is visible; the rows may be produced again
    fenced,     ///< another producer took the id (or a fatal error): replace this publisher;
                ///< nothing of the open transaction will become visible
  };
  struct TransactionEnd {
    Ending ending = Ending::aborted;
    bool timed_out = false;  ///< the commit did not finish within its timeout (then aborted)
    std::string error;
  };
  /// Commits the open transaction (flushing its messages) within `timeout`; when it cannot, aborts
  /// it. Afterwards every row of `batches` (those produced in it) has its report; with `aborted` or
  /// `fenced`, delivered reports are turned into retriable failures ("transaction aborted").
  TransactionEnd end_transaction(const std::vector<PublishBatch*>& batches,
                                 std::chrono::milliseconds timeout);
  /// Aborts the open transaction, if any, within `timeout`; returns whether that worked.
  bool abort_transaction(std::chrono::milliseconds timeout);

 private:
  struct Producer;
  std::unique_ptr<Producer> producer_;
  RoutingConfig routing_;
};

/// A Kafka transaction call failed; `fatal` when the producer can do nothing more (fenced).
class TransactionError : public std::runtime_error {
 public:
  TransactionError(const std::string& what, bool fatal) : std::runtime_error(what), fatal(fatal) {}
  bool fatal;
};

/// Ends every earlier producer of `transactional_id` (InitProducerId from a short-lived producer
/// of that id): its open transaction is aborted, and a commit it had begun completes first.
/// Throws TransactionError.
void fence_transactional_id(const KafkaConfig& kafka, const std::string& transactional_id,
                            std::chrono::milliseconds timeout);

/// Every marker goes to this partition of the marker topic: a transaction then touches one
/// marker partition whatever lanes its rows are in.
inline constexpr std::int32_t kMarkerPartition = 0;

/// Creates the marker topic (compacted, one partition) when it is missing, and waits until it is
/// in Kafka's metadata. Throws TransactionError (not fatal) when Kafka does not answer.
void ensure_marker_topic(const KafkaConfig& kafka, const std::string& topic,
                         std::chrono::milliseconds timeout);

/// For each of `keys`, the value of the last record under it that a read_committed consumer sees
/// in the marker partition of `topic`, up to the partition's end when called (keys without one
/// are absent); read with one consumer. Throws TransactionError (not fatal) when Kafka does not
/// answer within `timeout`.
std::map<std::string, std::string> read_last_committed(const KafkaConfig& kafka,
                                                       const std::string& topic,
                                                       const std::set<std::string>& keys,
                                                       std::chrono::milliseconds timeout);

/// Builds the producer's librdkafka configuration without creating a producer, as the relay would
/// at start: `check-config` runs it, so what `run` refuses, `check-config` refuses. Throws
/// PublisherConfigError naming the property (an unknown one, a bad value, or one the relay owns).
void validate_producer_config(const KafkaConfig& kafka);

/// The librdkafka properties the relay sets itself, in the order applied; user properties from
/// kafka.properties may not override these (guarantees hang on them).
std::vector<std::pair<std::string, std::string>> owned_producer_properties(
    const KafkaConfig& kafka);

}  // namespace outbox
