// Specification of the delivery-error decision: which librdkafka errors leave a row pending to be
// re-sent, which park it, and that a code nobody listed is parked and reported as unclassified.
#include <doctest/doctest.h>

#include "relay/publisher/kafka_errors.hpp"

using namespace outbox;

TEST_CASE("broker and network trouble is retried, a message Kafka will never take is parked") {
  for (const auto code : {RdKafka::ERR__MSG_TIMED_OUT, RdKafka::ERR__TRANSPORT,
                          RdKafka::ERR_NOT_ENOUGH_REPLICAS, RdKafka::ERR__UNKNOWN_TOPIC,
                          RdKafka::ERR_TOPIC_AUTHORIZATION_FAILED, RdKafka::ERR__PURGE_INFLIGHT}) {
    CAPTURE(RdKafka::err2str(code));
    CHECK(classify_delivery_error(code) == DeliveryOutcome::retriable_failure);
    CHECK(is_classified_delivery_error(code));
  }
  for (const auto code : {RdKafka::ERR_MSG_SIZE_TOO_LARGE, RdKafka::ERR_INVALID_RECORD,
                          RdKafka::ERR_POLICY_VIOLATION}) {
    CAPTURE(RdKafka::err2str(code));
    CHECK(classify_delivery_error(code) == DeliveryOutcome::permanent_failure);
    CHECK(is_classified_delivery_error(code));
  }
  CHECK(classify_delivery_error(RdKafka::ERR_NO_ERROR) == DeliveryOutcome::delivered);
}

TEST_CASE("a code the decision does not name is parked, and known to be unclassified") {
  // A consumer-group error no producer should see: not in the list, on purpose.
  const auto code = RdKafka::ERR_REBALANCE_IN_PROGRESS;
  CHECK(classify_delivery_error(code) == DeliveryOutcome::permanent_failure);
  CHECK_FALSE(is_classified_delivery_error(code));
}
