// Internal to relay/publisher: the producer configuration every producer of the relay starts from
// (the user's properties, then the relay's own), shared by the publisher and the short-lived
// clients of transactions.cpp.
#pragma once

#include <librdkafka/rdkafkacpp.h>

#include <memory>
#include <optional>
#include <string>

#include "relay/config/config.hpp"

namespace outbox {

/// Throws PublisherConfigError naming the property.
std::unique_ptr<RdKafka::Conf> producer_conf(const KafkaConfig& kafka,
                                             const std::optional<std::string>& transactional_id);

}  // namespace outbox
