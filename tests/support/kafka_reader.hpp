// Reads back what the relay wrote to Kafka, with a real consumer.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace outbox::test {

struct ConsumedMessage {
  std::string topic;
  int partition = -1;
  long long offset = -1;
  std::optional<std::string> key;
  std::string payload;
  std::map<std::string, std::string> headers;
  long long outbox_id = 0;  ///< from the outbox-id header
};

/// Every message in `topic` right now, from the beginning of each partition up to its high
/// watermark, in partition then offset order. Waits up to `topic_timeout` for the topic to exist;
/// an absent topic yields no messages.
/// Throws std::runtime_error when Kafka cannot be read (doctest reports it as a failure).
std::vector<ConsumedMessage> read_topic(
    const std::string& bootstrap, const std::string& topic,
    std::chrono::milliseconds topic_timeout = std::chrono::seconds(10));
/// What a consumer with isolation.level=read_committed reads of `topic`: committed transactions'
/// records only, every partition read to its end (its last stable offset). With `committed` false,
/// read_uncommitted (aborted attempts included), to the end, which on a transactional topic is past
/// the last record (control records take offsets).
std::vector<ConsumedMessage> read_topic_to_end(
    const std::string& bootstrap, const std::string& topic, bool committed,
    std::chrono::milliseconds topic_timeout = std::chrono::seconds(10));
/// The same, from the broker the integration tests use (kafka_bootstrap()).
std::vector<ConsumedMessage> read_topic_to_end(
    const std::string& topic, bool committed,
    std::chrono::milliseconds topic_timeout = std::chrono::seconds(10));
/// The same, from the broker the integration tests use (kafka_bootstrap()).
std::vector<ConsumedMessage> read_topic(
    const std::string& topic, std::chrono::milliseconds topic_timeout = std::chrono::seconds(10));

}  // namespace outbox::test
