#include "relay/publisher/kafka_errors.hpp"

#include <utility>

namespace outbox {

namespace {
/// The decision, and whether it was a named case or the default.
std::pair<DeliveryOutcome, bool> decide(RdKafka::ErrorCode error) {
  switch (error) {
    case RdKafka::ERR_NO_ERROR:
      return {DeliveryOutcome::delivered, true};

    // Not (or possibly not) persisted for reasons outside the message: the broker, the network,
    // the producer's own state, or our purge on shutdown / producer replacement.
    case RdKafka::ERR__MSG_TIMED_OUT:
    case RdKafka::ERR__TIMED_OUT:
    case RdKafka::ERR__TIMED_OUT_QUEUE:
    case RdKafka::ERR__TRANSPORT:
    case RdKafka::ERR__ALL_BROKERS_DOWN:
    case RdKafka::ERR__RESOLVE:
    case RdKafka::ERR__QUEUE_FULL:
    case RdKafka::ERR__PURGE_QUEUE:
    case RdKafka::ERR__PURGE_INFLIGHT:
    case RdKafka::ERR__FATAL:
    case RdKafka::ERR__DESTROY:
    case RdKafka::ERR__STATE:
    case RdKafka::ERR__INCONSISTENT:
    case RdKafka::ERR__GAPLESS_GUARANTEE:
    case RdKafka::ERR__ISR_INSUFF:
    case RdKafka::ERR__UNKNOWN_TOPIC:  // may be created (or auto-created) later
    case RdKafka::ERR__SSL:
    case RdKafka::ERR__AUTHENTICATION:
    case RdKafka::ERR_UNKNOWN_TOPIC_OR_PART:
    case RdKafka::ERR_LEADER_NOT_AVAILABLE:
    case RdKafka::ERR_NOT_LEADER_FOR_PARTITION:
    case RdKafka::ERR_REQUEST_TIMED_OUT:
    case RdKafka::ERR_BROKER_NOT_AVAILABLE:
    case RdKafka::ERR_REPLICA_NOT_AVAILABLE:
    case RdKafka::ERR_NETWORK_EXCEPTION:
    case RdKafka::ERR_NOT_ENOUGH_REPLICAS:
    case RdKafka::ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND:
    case RdKafka::ERR_KAFKA_STORAGE_ERROR:
    case RdKafka::ERR_OUT_OF_ORDER_SEQUENCE_NUMBER:
    case RdKafka::ERR_UNKNOWN_PRODUCER_ID:
    case RdKafka::ERR_INVALID_PRODUCER_EPOCH:
    case RdKafka::ERR_PRODUCER_FENCED:
    case RdKafka::ERR_FENCED_LEADER_EPOCH:
    case RdKafka::ERR_UNKNOWN_LEADER_EPOCH:
    case RdKafka::ERR_THROTTLING_QUOTA_EXCEEDED:
    case RdKafka::ERR_INVALID_MSG:  // Kafka's CORRUPT_MESSAGE: a CRC mismatch in transit
    // An operator can fix ACLs without touching the rows; they flow again once allowed.
    case RdKafka::ERR_TOPIC_AUTHORIZATION_FAILED:
    case RdKafka::ERR_CLUSTER_AUTHORIZATION_FAILED:
    case RdKafka::ERR_SASL_AUTHENTICATION_FAILED:
      return {DeliveryOutcome::retriable_failure, true};

    // The message itself will never be accepted as it is.
    case RdKafka::ERR_MSG_SIZE_TOO_LARGE:
    case RdKafka::ERR_INVALID_MSG_SIZE:
    case RdKafka::ERR_RECORD_LIST_TOO_LARGE:
    case RdKafka::ERR_INVALID_RECORD:
    case RdKafka::ERR_TOPIC_EXCEPTION:
    case RdKafka::ERR_INVALID_TIMESTAMP:
    case RdKafka::ERR_POLICY_VIOLATION:
    case RdKafka::ERR__BAD_MSG:
    case RdKafka::ERR__INVALID_ARG:
    case RdKafka::ERR__UNKNOWN_PARTITION:
      return {DeliveryOutcome::permanent_failure, true};

    default:
      return {DeliveryOutcome::permanent_failure, false};
  }
}
}  // namespace

DeliveryOutcome classify_delivery_error(RdKafka::ErrorCode error) { return decide(error).first; }

bool is_classified_delivery_error(RdKafka::ErrorCode error) { return decide(error).second; }

}  // namespace outbox
