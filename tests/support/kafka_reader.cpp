#include "tests/support/kafka_reader.hpp"

#include <librdkafka/rdkafkacpp.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <thread>

namespace outbox::test {

namespace {

void require(bool condition, const std::string& what) {
  if (!condition) throw std::runtime_error("reading from Kafka: " + what);
}

std::vector<int> partitions_of(RdKafka::Handle& handle, const std::string& topic) {
  RdKafka::Metadata* raw = nullptr;
  std::unique_ptr<RdKafka::Topic> topic_handle(
      RdKafka::Topic::create(&handle, topic, nullptr, *std::make_unique<std::string>()));
  if (handle.metadata(false, topic_handle.get(), &raw, 5000) != RdKafka::ERR_NO_ERROR) return {};
  std::unique_ptr<RdKafka::Metadata> metadata(raw);
  std::vector<int> partitions;
  for (const auto* topic_metadata : *metadata->topics()) {
    if (topic_metadata->topic() != topic || topic_metadata->err() != RdKafka::ERR_NO_ERROR)
      continue;
    for (const auto* partition : *topic_metadata->partitions())
      partitions.push_back(partition->id());
  }
  return partitions;
}
}  // namespace

namespace {

/// `to_end`: read until every partition reported its end (enable.partition.eof), with
/// `isolation`; otherwise up to each partition's high watermark (read_uncommitted).
std::vector<ConsumedMessage> read_partitions(const std::string& bootstrap, const std::string& topic,
                                             std::chrono::milliseconds topic_timeout, bool to_end,
                                             const std::string& isolation) {
  std::string error;
  std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
  conf->set("bootstrap.servers", bootstrap, error);
  // Partitions are assigned, not subscribed: the group id only has to be unique.
  conf->set("group.id",
            "reader-" + topic + "-" +
                std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()),
            error);
  conf->set("enable.auto.commit", "false", error);
  conf->set("allow.auto.create.topics", "false", error);
  conf->set("isolation.level", isolation, error);
  if (to_end) conf->set("enable.partition.eof", "true", error);
  std::unique_ptr<RdKafka::KafkaConsumer> consumer(
      RdKafka::KafkaConsumer::create(conf.get(), error));
  require(consumer != nullptr, error);

  std::vector<int> partitions;
  const auto deadline = std::chrono::steady_clock::now() + topic_timeout;
  while ((partitions = partitions_of(*consumer, topic)).empty() &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  std::vector<ConsumedMessage> messages;
  if (partitions.empty()) return messages;

  std::map<int, long long> high_watermarks;
  std::vector<RdKafka::TopicPartition*> assignment;
  for (int partition : partitions) {
    std::int64_t low = 0, high = 0;
    // Right after a broker fault (a SIGSTOP, a restart) leadership can still be settling: a
    // query may fail with a transient error while the next one answers.
    const auto watermark_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    RdKafka::ErrorCode watermark_error;
    while ((watermark_error = consumer->query_watermark_offsets(topic, partition, &low, &high,
                                                                5000)) != RdKafka::ERR_NO_ERROR &&
           std::chrono::steady_clock::now() < watermark_deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    require(watermark_error == RdKafka::ERR_NO_ERROR, "no watermarks for " + topic + " partition " +
                                                          std::to_string(partition) + ": " +
                                                          RdKafka::err2str(watermark_error));
    if (high > low) {
      high_watermarks[partition] = high;
      assignment.push_back(
          RdKafka::TopicPartition::create(topic, partition, RdKafka::Topic::OFFSET_BEGINNING));
    }
  }
  if (!assignment.empty()) {
    require(consumer->assign(assignment) == RdKafka::ERR_NO_ERROR, "cannot assign " + topic);
  }
  RdKafka::TopicPartition::destroy(assignment);

  std::map<int, long long> next_offset;
  std::map<int, bool> at_end;
  const auto read_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  auto done = [&] {
    for (const auto& [partition, high] : high_watermarks) {
      if (to_end ? !at_end[partition] : next_offset[partition] < high) return false;
    }
    return true;
  };
  while (!done()) {
    require(std::chrono::steady_clock::now() < read_deadline, "timed out reading " + topic);
    std::unique_ptr<RdKafka::Message> message(consumer->consume(500));
    if (message->err() == RdKafka::ERR__PARTITION_EOF) {
      at_end[message->partition()] = true;
      continue;
    }
    if (message->err() == RdKafka::ERR__TIMED_OUT) continue;
    require(message->err() == RdKafka::ERR_NO_ERROR, message->errstr());
    ConsumedMessage consumed;
    consumed.topic = message->topic_name();
    consumed.partition = message->partition();
    consumed.offset = message->offset();
    if (message->key()) consumed.key = *message->key();
    consumed.payload.assign(static_cast<const char*>(message->payload()), message->len());
    if (RdKafka::Headers* headers = message->headers()) {
      for (const auto& header : headers->get_all()) {
        consumed.headers[header.key()] =
            std::string(static_cast<const char*>(header.value()), header.value_size());
      }
    }
    if (auto id = consumed.headers.find("outbox-id"); id != consumed.headers.end()) {
      consumed.outbox_id = std::stoll(id->second);
    }
    next_offset[consumed.partition] = consumed.offset + 1;
    messages.push_back(std::move(consumed));
  }
  consumer->close();
  std::stable_sort(messages.begin(), messages.end(), [](const auto& a, const auto& b) {
    return a.partition < b.partition || (a.partition == b.partition && a.offset < b.offset);
  });
  return messages;
}

}  // namespace

std::vector<ConsumedMessage> read_topic(const std::string& bootstrap, const std::string& topic,
                                        std::chrono::milliseconds topic_timeout) {
  return read_partitions(bootstrap, topic, topic_timeout, false, "read_uncommitted");
}

std::vector<ConsumedMessage> read_topic_to_end(const std::string& bootstrap,
                                               const std::string& topic, bool committed,
                                               std::chrono::milliseconds topic_timeout) {
  return read_partitions(bootstrap, topic, topic_timeout, true,
                         committed ? "read_committed" : "read_uncommitted");
}

}  // namespace outbox::test
