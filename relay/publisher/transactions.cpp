// The short-lived Kafka clients of exactly-once delivery: the producer that fences an earlier
// owner's transactional id, the admin call that creates the marker topic, and the read_committed
// consumer that reads a producer's last marker.
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafkacpp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <thread>
#include <vector>

#include "relay/publisher/producer_conf.hpp"
#include "relay/publisher/publisher.hpp"

namespace outbox {

namespace {

int ms(std::chrono::milliseconds timeout) { return static_cast<int>(timeout.count()); }

std::unique_ptr<RdKafka::Producer> plain_producer(
    const KafkaConfig& kafka, const std::optional<std::string>& transactional_id) {
  std::unique_ptr<RdKafka::Conf> conf = producer_conf(kafka, transactional_id);
  std::string error;
  std::unique_ptr<RdKafka::Producer> producer(RdKafka::Producer::create(conf.get(), error));
  if (!producer) throw PublisherConfigError("cannot create Kafka producer: " + error);
  return producer;
}

/// A consumer of the marker topic that never joins a group (partitions are assigned).
std::unique_ptr<RdKafka::KafkaConsumer> marker_consumer(const KafkaConfig& kafka,
                                                        const std::string& isolation_level) {
  std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
  std::string error;
  auto set = [&](const std::string& name, const std::string& value) {
    if (conf->set(name, value, error) != RdKafka::Conf::CONF_OK) {
      throw PublisherConfigError("marker reader property " + name + ": " + error);
    }
  };
  // The user's properties carry the connection's security settings; producer-only ones are
  // ignored by a consumer (librdkafka logs that once).
  for (const auto& [name, value] : kafka.properties) set(name, value);
  set("bootstrap.servers", kafka.bootstrap_servers);
  set("group.id", "outbox-relay-marker-reader");
  set("enable.auto.commit", "false");
  set("enable.auto.offset.store", "false");
  set("isolation.level", isolation_level);
  set("enable.partition.eof", "true");
  // The end of a partition is known when a fetch comes back empty: not after the broker's
  // default 500 ms wait for data that will not come.
  set("fetch.wait.max.ms", "10");
  set("client.id", "outbox-relay-marker-reader");
  std::unique_ptr<RdKafka::KafkaConsumer> consumer(
      RdKafka::KafkaConsumer::create(conf.get(), error));
  if (!consumer) throw PublisherConfigError("cannot create the marker reader: " + error);
  return consumer;
}

}  // namespace

void fence_transactional_id(const KafkaConfig& kafka, const std::string& transactional_id,
                            std::chrono::milliseconds timeout) {
  auto producer = plain_producer(kafka, transactional_id);
  std::unique_ptr<RdKafka::Error> error(producer->init_transactions(ms(timeout)));
  if (error) {
    throw TransactionError("fencing " + transactional_id + ": " + error->str(), false);
  }
}

void ensure_marker_topic(const KafkaConfig& kafka, const std::string& topic,
                         std::chrono::milliseconds timeout) {
  const int partitions = 1;
  auto producer = plain_producer(kafka, std::nullopt);
  rd_kafka_t* rk = producer->c_ptr();
  char error_text[512] = {};
  // Replication factor -1: the broker's default.replication.factor (KIP-464).
  rd_kafka_NewTopic_t* new_topic =
      rd_kafka_NewTopic_new(topic.c_str(), partitions, -1, error_text, sizeof error_text);
  if (!new_topic) throw PublisherConfigError("kafka.marker_topic: " + std::string(error_text));
  std::unique_ptr<rd_kafka_NewTopic_t, decltype(&rd_kafka_NewTopic_destroy)> topic_guard(
      new_topic, &rd_kafka_NewTopic_destroy);
  // Compacted: the relay only ever reads a producer's last marker. Small segments, so compaction
  // (which leaves the active segment alone) keeps what a takeover reads back short.
  rd_kafka_NewTopic_set_config(new_topic, "cleanup.policy", "compact");
  rd_kafka_NewTopic_set_config(new_topic, "segment.bytes", "16777216");
  std::unique_ptr<rd_kafka_queue_t, decltype(&rd_kafka_queue_destroy)> queue(
      rd_kafka_queue_new(rk), &rd_kafka_queue_destroy);
  std::unique_ptr<rd_kafka_AdminOptions_t, decltype(&rd_kafka_AdminOptions_destroy)> options(
      rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS),
      &rd_kafka_AdminOptions_destroy);
  rd_kafka_AdminOptions_set_request_timeout(options.get(), ms(timeout), error_text,
                                            sizeof error_text);
  rd_kafka_CreateTopics(rk, &new_topic, 1, options.get(), queue.get());
  std::unique_ptr<rd_kafka_event_t, decltype(&rd_kafka_event_destroy)> event(
      rd_kafka_queue_poll(queue.get(), ms(timeout) + 1000), &rd_kafka_event_destroy);
  if (!event) throw TransactionError("creating " + topic + ": no answer from Kafka", false);
  if (rd_kafka_event_error(event.get()) != RD_KAFKA_RESP_ERR_NO_ERROR) {
    throw TransactionError(
        "creating " + topic + ": " + std::string(rd_kafka_event_error_string(event.get())), false);
  }
  std::size_t count = 0;
  const rd_kafka_topic_result_t** results =
      rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(event.get()), &count);
  for (std::size_t i = 0; i < count; ++i) {
    const rd_kafka_resp_err_t code = rd_kafka_topic_result_error(results[i]);
    if (code == RD_KAFKA_RESP_ERR_NO_ERROR) {
      spdlog::info("event=marker_topic_created topic=\"{}\" partitions={}", topic, partitions);
    } else if (code != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
      const char* text = rd_kafka_topic_result_error_string(results[i]);
      throw TransactionError("creating " + topic + ": " + (text ? text : rd_kafka_err2str(code)),
                             false);
    }
  }
  // A topic just created may not be in the metadata yet: asked again until it is.
  std::string error;
  std::unique_ptr<RdKafka::Topic> handle(
      RdKafka::Topic::create(producer.get(), topic, nullptr, error));
  if (!handle) throw PublisherConfigError("kafka.marker_topic: " + error);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    RdKafka::Metadata* raw = nullptr;
    const RdKafka::ErrorCode code = producer->metadata(false, handle.get(), &raw, ms(timeout));
    std::unique_ptr<RdKafka::Metadata> metadata(raw);
    std::size_t found = 0;
    if (code == RdKafka::ERR_NO_ERROR && !metadata->topics()->empty()) {
      const RdKafka::TopicMetadata* described = metadata->topics()->front();
      if (described->err() == RdKafka::ERR_NO_ERROR) found = described->partitions()->size();
    }
    if (found >= static_cast<std::size_t>(partitions)) return;
    if (std::chrono::steady_clock::now() >= deadline) {
      throw TransactionError("the marker topic " + topic + " is not in Kafka's metadata yet",
                             false);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

std::map<std::string, std::string> read_last_committed(const KafkaConfig& kafka,
                                                       const std::string& topic,
                                                       const std::set<std::string>& keys,
                                                       std::chrono::milliseconds timeout) {
  std::map<std::string, std::string> found;
  if (keys.empty()) return found;
  std::unique_ptr<RdKafka::KafkaConsumer> consumer = marker_consumer(kafka, "read_committed");
  struct Closer {
    RdKafka::KafkaConsumer* consumer;
    ~Closer() { consumer->close(); }
  } closer{consumer.get()};
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto left = [&] {
    return std::max<int>(1, static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                 deadline - std::chrono::steady_clock::now())
                                                 .count()));
  };
  auto failed = [&](const std::string& why) {
    return TransactionError("reading markers from " + topic + ": " + why, false);
  };
  // The end of everything written, not the last stable offset a read_committed consumer's query
  // answers: another producer's open transaction may hold that back, and the marker sought
  // (committed after that transaction began) lies beyond it.
  std::int64_t low = 0, end = 0;
  {
    std::unique_ptr<RdKafka::KafkaConsumer> ends = marker_consumer(kafka, "read_uncommitted");
    const RdKafka::ErrorCode code =
        ends->query_watermark_offsets(topic, kMarkerPartition, &low, &end, left());
    ends->close();
    if (code != RdKafka::ERR_NO_ERROR) throw failed(RdKafka::err2str(code));
  }
  // Searched backwards, window by window, newest first: a producer's last marker is near the end
  // (it wrote until it was fenced, and others only since), so a little is read, then more.
  std::int64_t span = 256;
  while (end > low && found.size() < keys.size()) {
    const std::int64_t start = std::max(low, end - span);
    std::unique_ptr<RdKafka::TopicPartition> position(
        RdKafka::TopicPartition::create(topic, kMarkerPartition, start));
    std::vector<RdKafka::TopicPartition*> assignment{position.get()};
    consumer->assign(assignment);
    std::map<std::string, std::string> newest;  // in this window
    // Up to `end` itself: an end of partition short of it is the last stable offset, held back by
    // another producer's open transaction, and what follows it may be the marker sought.
    for (bool done = false; !done;) {
      if (std::chrono::steady_clock::now() >= deadline) throw failed("timed out");
      std::unique_ptr<RdKafka::Message> message(consumer->consume(std::min(left(), 200)));
      if (message->err() == RdKafka::ERR__TIMED_OUT) continue;
      if (message->err() == RdKafka::ERR__PARTITION_EOF) {
        done = message->offset() >= end;
        continue;
      }
      if (message->err() != RdKafka::ERR_NO_ERROR) throw failed(message->errstr());
      if (message->offset() >= end) break;  // past this window: it has been read
      if (message->key() && keys.contains(*message->key()) && !found.contains(*message->key())) {
        newest[*message->key()] =
            std::string(static_cast<const char*>(message->payload()), message->len());
      }
      done = message->offset() + 1 >= end;
    }
    consumer->unassign();
    found.merge(newest);
    end = start;
    span *= 4;
  }
  return found;
}

}  // namespace outbox
