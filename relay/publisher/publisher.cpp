#include "relay/publisher/publisher.hpp"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafkacpp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>
#include <unordered_map>

#include "relay/core/assert.hpp"
#include "relay/publisher/kafka_errors.hpp"
#include "relay/publisher/producer_conf.hpp"

namespace outbox {

namespace {

std::shared_ptr<spdlog::logger> publisher_log() {
  auto logger = spdlog::get("publisher");
  return logger ? logger : spdlog::default_logger();
}

bool is_secret_property(const std::string& name) {
  return name.find("password") != std::string::npos || name.find("secret") != std::string::npos ||
         name.find(".key") != std::string::npos;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> owned_producer_properties(
    const KafkaConfig& kafka) {
  return {
      // The delivery guarantee: every in-sync replica has the message, and retries can neither
      // duplicate nor reorder within a partition (KIP-98). enable.idempotence implies acks=all,
      // but we say it ourselves so no default can change it.
      {"enable.idempotence", "true"},
      {"acks", "all"},
      // 0 = librdkafka retries until the broker answers. A finite timeout reports "possibly
      // persisted" failures that the relay re-sends; with idempotence a timed-out message can
      // leave a gap before later ones of the same partition, so 0 is the order-safe default.
      {"message.timeout.ms", std::to_string(kafka.delivery_timeout.count())},
      {"bootstrap.servers", kafka.bootstrap_servers},
  };
}

PublishBatch::PublishBatch(std::vector<OutboxRow> rows) : rows_(std::move(rows)) {
  reports_.resize(rows_.size());
  awaiting_rows_.assign(rows_.size(), 0);
  slots_.reserve(rows_.size());
  for (std::size_t i = 0; i < rows_.size(); ++i) {
    reports_[i].id = rows_[i].id;
    slots_.push_back(DeliverySlot{this, i});
  }
}

struct KafkaPublisher::Producer final : public RdKafka::DeliveryReportCb, public RdKafka::EventCb {
  std::unique_ptr<RdKafka::Producer> handle;
  KeyGate* gate = nullptr;
  std::vector<TopicFailure> topic_failures;
  bool transactional = false;
  std::string marker_error;  ///< the open transaction's first marker failure

  void topic_failed(const OutboxRow& row, RdKafka::ErrorCode error) {
    topic_failures.push_back({row.route.value_or(""), row.topic,
                              rd_kafka_err2name(static_cast<rd_kafka_resp_err_t>(error)),
                              RdKafka::err2str(error)});
  }

  void hold_key(const OutboxRow& row) { gate->failed_permanently(row); }
  bool is_held(const OutboxRow& row) const { return gate->held(row); }

  /// Once per code: a delivery error kafka_errors.cpp does not name is parked as permanent, and
  /// that decision should be a person's, so the code is named in the log.
  void warn_unclassified(RdKafka::ErrorCode code) {
    if (!unclassified_seen.insert(static_cast<int>(code)).second) return;
    publisher_log()->warn(
        "event=kafka_error_unclassified code={} name={} error=\"{}\" effect=\"its rows are "
        "parked dead as permanent failures; add the code to relay/publisher/kafka_errors.cpp\"",
        static_cast<int>(code), rd_kafka_err2name(static_cast<rd_kafka_resp_err_t>(code)),
        RdKafka::err2str(code));
  }
  std::set<int> unclassified_seen;

  void dr_cb(RdKafka::Message& message) override {
    auto* slot = static_cast<PublishBatch::DeliverySlot*>(message.msg_opaque());
    if (slot == nullptr) {  // a marker (exactly_once): its failure fails the transaction
      if (message.err() != RdKafka::ERR_NO_ERROR && marker_error.empty()) {
        marker_error = "marker: " + RdKafka::err2str(message.err());
      }
      return;
    }
    DeliveryReport& report = slot->batch->reports_[slot->index];
    report.outcome = classify_delivery_error(message.err());
    if (!is_classified_delivery_error(message.err())) warn_unclassified(message.err());
    if (report.outcome == DeliveryOutcome::delivered) {
      report.partition = message.partition();
      report.offset = message.offset();
    } else {
      if (report.outcome == DeliveryOutcome::retriable_failure) {
        topic_failed(slot->batch->rows_[slot->index], message.err());
      }
      if (report.outcome == DeliveryOutcome::permanent_failure) {
        // The broker refused it (e.g. its max.message.bytes is below ours). Later rows of the key
        // already produced cannot be called back; the README states this limit.
        hold_key(slot->batch->rows_[slot->index]);
      }
      report.error = "kafka: " + RdKafka::err2str(message.err());
      if (message.status() == RdKafka::Message::MSG_STATUS_POSSIBLY_PERSISTED) {
        report.possibly_persisted = true;
        report.error += " (possibly persisted; re-sent)";
      }
    }
    RELAY_ASSERT(slot->batch->awaiting_ > 0 && slot->batch->awaiting_rows_[slot->index] == 1,
                 "one report per produced message");
    slot->batch->awaiting_rows_[slot->index] = 0;
    --slot->batch->awaiting_;
  }

  void event_cb(RdKafka::Event& event) override {
    switch (event.type()) {
      case RdKafka::Event::EVENT_ERROR:
        // Broker-down and similar errors are informational: librdkafka keeps retrying.
        publisher_log()->warn("event=kafka_error fatal={} error=\"{}\"", event.fatal(),
                              event.str());
        break;
      case RdKafka::Event::EVENT_LOG:
        if (event.severity() <= RdKafka::Event::EVENT_SEVERITY_WARNING) {
          publisher_log()->warn("event=kafka_log facility={} message=\"{}\"", event.fac(),
                                event.str());
        }
        break;
      default:
        break;
    }
  }
};

/// The producer's configuration: the relay's defaults, the user's kafka.properties (which may not
/// touch what the relay owns), then what it owns. Throws PublisherConfigError naming the property.
std::unique_ptr<RdKafka::Conf> producer_conf(const KafkaConfig& kafka,
                                             const std::optional<std::string>& transactional_id) {
  std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
  std::string error;
  auto set = [&](const std::string& name, const std::string& value) {
    if (conf->set(name, value, error) != RdKafka::Conf::CONF_OK) {
      throw PublisherConfigError("kafka property " + name + "=" +
                                 (is_secret_property(name) ? "***" : value) + ": " + error);
    }
  };
  // Defaults that users may override through kafka.properties.
  set("client.id", "outbox-relay");
  // Java clients' partitioner, so a key lands on the same partition whichever client wrote it.
  set("partitioner", "murmur2_random");
  set("linger.ms", std::to_string(kafka.linger.count()));
  set("queue.buffering.max.kbytes", std::to_string(kafka.queue_max_kbytes));
  set("compression.type", kafka.compression);
  if (transactional_id) {
    // Right after a commit the coordinator is still writing its markers and answers the next
    // transaction's AddPartitionsToTxn with CONCURRENT_TRANSACTIONS; librdkafka retries that
    // after retry.backoff.ms, whose 100 ms default set the commit-to-visible p99 (measured at
    // 1,000 rows/s: p99 70 to 113 ms with 100, 34 to 46 with 10, 31 to 32 with 2). Kafka's Java
    // producer retries it after 20 ms for the same reason (KAFKA-5477). A user's setting wins.
    set("retry.backoff.ms", "5");
  }
  const auto owned = owned_producer_properties(kafka);
  for (const auto& [name, value] : kafka.properties) {
    const bool is_owned = std::any_of(owned.begin(), owned.end(),
                                      [&](const auto& property) { return property.first == name; });
    if (is_owned || name == "transactional.id" || name == "transaction.timeout.ms") {
      throw PublisherConfigError("kafka.properties." + name +
                                 ": set by the relay for its delivery guarantee; remove it" +
                                 (is_owned ? "" : " (kafka.exactly_once sets it)"));
    }
    set(name, value);
  }
  for (const auto& [name, value] : owned) set(name, value);
  if (transactional_id) {
    set("transactional.id", *transactional_id);
    set("transaction.timeout.ms", std::to_string(kafka.transaction_timeout.count()));
    // librdkafka requires message.timeout.ms <= transaction.timeout.ms; "retry forever" (0)
    // becomes the transaction's own limit: a transaction cannot outlive it anyway.
    if (kafka.delivery_timeout.count() == 0) {
      set("message.timeout.ms", std::to_string(kafka.transaction_timeout.count()));
    }
  }
  return conf;
}

void validate_producer_config(const KafkaConfig& kafka) {
  producer_conf(kafka,
                kafka.exactly_once ? std::optional<std::string>("validation") : std::nullopt);
}

KafkaPublisher::KafkaPublisher(const KafkaConfig& kafka, const RoutingConfig& routing,
                               KeyGate& gate, std::optional<std::string> transactional_id)
    : producer_(std::make_unique<Producer>()), routing_(routing) {
  producer_->gate = &gate;
  producer_->transactional = transactional_id.has_value();
  std::unique_ptr<RdKafka::Conf> conf = producer_conf(kafka, transactional_id);
  std::string error;
  if (conf->set("dr_cb", static_cast<RdKafka::DeliveryReportCb*>(producer_.get()), error) !=
          RdKafka::Conf::CONF_OK ||
      conf->set("event_cb", static_cast<RdKafka::EventCb*>(producer_.get()), error) !=
          RdKafka::Conf::CONF_OK) {
    throw PublisherConfigError("cannot install producer callbacks: " + error);
  }
  producer_->handle.reset(RdKafka::Producer::create(conf.get(), error));
  if (!producer_->handle) throw PublisherConfigError("cannot create Kafka producer: " + error);
  publisher_log()->info(
      "event=producer_created bootstrap={} idempotence=true acks=all transactional_id=\"{}\"",
      kafka.bootstrap_servers, transactional_id.value_or(""));
}

KafkaPublisher::~KafkaPublisher() {
  // Callers drain() first; whatever is left is purged so no callback can reach a dead batch.
  producer_->handle->purge(RdKafka::Producer::PURGE_QUEUE | RdKafka::Producer::PURGE_INFLIGHT);
  producer_->handle->poll(0);
}

void KafkaPublisher::produce(PublishBatch& batch, const std::function<bool()>& keep_going) {
  // Topics refused in this batch: their later rows wait, so none overtakes the refused one.
  std::vector<std::string> refused_routes;
  for (std::size_t i = 0; i < batch.rows_.size(); ++i) {
    const OutboxRow& row = batch.rows_[i];
    DeliveryReport& report = batch.reports_[i];
    if (producer_->is_held(row)) continue;  // stays not_attempted
    if (row.route && std::find(refused_routes.begin(), refused_routes.end(), *row.route) !=
                         refused_routes.end()) {
      continue;  // stays not_attempted
    }

    auto park = [&](std::string reason) {
      report.outcome = DeliveryOutcome::permanent_failure;
      report.error = std::move(reason);
      producer_->hold_key(row);
    };
    if (row.defect) {
      park(*row.defect);
      continue;
    }

    std::unique_ptr<RdKafka::Headers> headers(RdKafka::Headers::create());
    headers->add(routing_.id_header, std::to_string(row.id.value));
    for (const auto& [name, value] : row.headers) headers->add(name, value);

    RdKafka::ErrorCode error = RdKafka::ERR_NO_ERROR;
    for (;;) {
      // msgflags 0: librdkafka neither copies nor frees the payload; the batch owns the bytes
      // until its last report has arrived.
      error = producer_->handle->produce(
          row.topic, RdKafka::Topic::PARTITION_UA, 0, const_cast<char*>(row.payload.data()),
          row.payload.size(), row.key ? row.key->data() : nullptr, row.key ? row.key->size() : 0, 0,
          headers.get(), &batch.slots_[i]);
      if (error != RdKafka::ERR__QUEUE_FULL || !keep_going()) break;
      producer_->handle->poll(50);
    }
    if (error == RdKafka::ERR_NO_ERROR) {
      headers.release();  // librdkafka owns them now
      ++batch.awaiting_;
      batch.awaiting_rows_[i] = 1;
      continue;
    }
    const DeliveryOutcome outcome = classify_delivery_error(error);
    if (!is_classified_delivery_error(error)) producer_->warn_unclassified(error);
    if (outcome == DeliveryOutcome::permanent_failure) {
      park("kafka: " + RdKafka::err2str(error));
      continue;
    }
    report.outcome = DeliveryOutcome::retriable_failure;
    report.error = "kafka: " + RdKafka::err2str(error);
    if (error == RdKafka::ERR__QUEUE_FULL) {
      // Full while asked to stop: not the topic's fault. This and every later row wait for a
      // later claim, so nothing overtakes it.
      break;
    }
    // Refused for its topic (unknown topic): that topic waits, the others go on.
    producer_->topic_failed(row, error);
    if (row.route) refused_routes.push_back(*row.route);
  }
  producer_->handle->poll(0);
}

std::vector<TopicFailure> KafkaPublisher::take_topic_failures() {
  return std::exchange(producer_->topic_failures, {});
}

void KafkaPublisher::poll(std::chrono::milliseconds timeout) {
  producer_->handle->poll(static_cast<int>(timeout.count()));
}

bool KafkaPublisher::has_fatal_error() const {
  std::string reason;
  return producer_->handle->fatal_error(reason) != RdKafka::ERR_NO_ERROR;
}

std::string KafkaPublisher::fatal_error() const {
  std::string reason;
  const RdKafka::ErrorCode code = producer_->handle->fatal_error(reason);
  return code == RdKafka::ERR_NO_ERROR ? std::string{} : RdKafka::err2str(code) + ": " + reason;
}

void KafkaPublisher::drain(std::chrono::milliseconds timeout) {
  producer_->handle->flush(static_cast<int>(timeout.count()));
  producer_->handle->purge(RdKafka::Producer::PURGE_QUEUE | RdKafka::Producer::PURGE_INFLIGHT);
  // Purged messages report through the callback; serve them until none is left.
  for (int round = 0; round < 100 && producer_->handle->outq_len() > 0; ++round) {
    producer_->handle->poll(10);
  }
  producer_->handle->poll(0);
}

void KafkaPublisher::inject_fatal_error(const std::string& reason) {
  rd_kafka_test_fatal_error(producer_->handle->c_ptr(),
                            RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER, reason.c_str());
}

bool KafkaPublisher::broker_reachable(std::chrono::milliseconds timeout) {
  RdKafka::Metadata* metadata = nullptr;
  const RdKafka::ErrorCode error = producer_->handle->metadata(
      /*all_topics=*/false, nullptr, &metadata, static_cast<int>(timeout.count()));
  delete metadata;
  return error == RdKafka::ERR_NO_ERROR;
}

int KafkaPublisher::queue_length() const { return producer_->handle->outq_len(); }

namespace {

/// Takes ownership of librdkafka's error object and turns a failure into TransactionError.
void throw_if_failed(RdKafka::Error* raw, const char* what) {
  std::unique_ptr<RdKafka::Error> error(raw);
  if (!error) return;
  throw TransactionError(std::string(what) + ": " + error->str(), error->is_fatal());
}

}  // namespace

void KafkaPublisher::init_transactions(std::chrono::milliseconds timeout) {
  RELAY_ASSERT(producer_->transactional, "transactions need a transactional.id");
  throw_if_failed(producer_->handle->init_transactions(static_cast<int>(timeout.count())),
                  "init_transactions");
}

void KafkaPublisher::begin_transaction() {
  producer_->marker_error.clear();
  throw_if_failed(producer_->handle->begin_transaction(), "begin_transaction");
}

void KafkaPublisher::produce_marker(const std::string& topic, const std::string& key,
                                    const std::string& payload) {
  for (;;) {
    const RdKafka::ErrorCode error = producer_->handle->produce(
        topic, kMarkerPartition, RdKafka::Producer::RK_MSG_COPY, const_cast<char*>(payload.data()),
        payload.size(), key.data(), key.size(), 0, nullptr);
    if (error == RdKafka::ERR_NO_ERROR) break;
    if (error != RdKafka::ERR__QUEUE_FULL) {
      throw TransactionError("marker to " + topic + ": " + RdKafka::err2str(error), false);
    }
    producer_->handle->poll(10);
  }
}

bool KafkaPublisher::abort_transaction(std::chrono::milliseconds timeout) {
  std::unique_ptr<RdKafka::Error> error(
      producer_->handle->abort_transaction(static_cast<int>(timeout.count())));
  producer_->handle->poll(0);  // the purged messages' reports
  return !error;
}

KafkaPublisher::TransactionEnd KafkaPublisher::end_transaction(
    const std::vector<PublishBatch*>& batches, std::chrono::milliseconds timeout) {
  TransactionEnd end;
  // The commit flushes, serving delivery reports; a failed row or marker makes it abortable.
  std::unique_ptr<RdKafka::Error> error(
      producer_->handle->commit_transaction(static_cast<int>(timeout.count())));
  if (error && error->code() == RdKafka::ERR__TIMED_OUT && !error->is_fatal()) {
    // Not acknowledged in time (a topic without a leader, a broker away). A timed-out commit can
    // only be resumed, not aborted, so what is still unacknowledged is purged (those messages
    // fail, which makes the transaction abortable) and the commit resumed; it then fails and the
    // transaction is aborted below, unless everything was acknowledged meanwhile.
    end.timed_out = true;
    end.error = error->str();
    producer_->handle->purge(RdKafka::Producer::PURGE_QUEUE | RdKafka::Producer::PURGE_INFLIGHT);
    producer_->handle->poll(0);
    error.reset(producer_->handle->commit_transaction(static_cast<int>(timeout.count())));
  }
  if (!error && producer_->marker_error.empty()) {
    end.ending = Ending::committed;
  } else {
    const std::string why = error ? error->str() : producer_->marker_error;
    end.error = end.timed_out ? end.error + "; then: " + why : why;
    if (error && error->is_fatal()) {
      end.ending = Ending::fenced;
    } else {
      // Abortable, or a commit that could not finish in time: abort, so nothing of it becomes
      // visible and the partitions' last stable offset moves on for read_committed consumers.
      std::unique_ptr<RdKafka::Error> abort_error(
          producer_->handle->abort_transaction(static_cast<int>(timeout.count())));
      end.ending = abort_error && abort_error->is_fatal() ? Ending::fenced : Ending::aborted;
      if (abort_error && !abort_error->is_fatal()) {
        // Still open (the broker is away): a later init_transactions of this id, by whoever
        // recovers its lanes, aborts it. This producer can no longer be trusted to.
        end.ending = Ending::fenced;
        end.error += "; abort: " + abort_error->str();
      }
    }
  }
  if (end.ending != Ending::committed) {
    // A fenced producer's messages are purged here; an aborted one's were by the abort.
    producer_->handle->purge(RdKafka::Producer::PURGE_QUEUE | RdKafka::Producer::PURGE_INFLIGHT);
  }
  auto complete = [&] {
    return std::all_of(batches.begin(), batches.end(),
                       [](const PublishBatch* batch) { return batch->complete(); });
  };
  for (int round = 0; round < 6000 && !complete(); ++round) producer_->handle->poll(10);
  RELAY_ASSERT(complete(), "a finished transaction leaves no row in librdkafka");
  if (end.ending != Ending::committed) {
    for (PublishBatch* batch : batches) {
      for (DeliveryReport& report : batch->reports_) {
        if (report.outcome != DeliveryOutcome::delivered) continue;
        report.outcome = DeliveryOutcome::retriable_failure;
        report.error = "transaction aborted: " + end.error;
        report.partition = -1;
        report.offset = -1;
      }
    }
  }
  return end;
}

}  // namespace outbox
