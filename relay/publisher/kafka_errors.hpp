// Which librdkafka errors are worth re-sending. Private to relay/publisher.
#pragma once

#include <librdkafka/rdkafkacpp.h>

#include "relay/core/outbox_row.hpp"

namespace outbox {

/// One exhaustive decision over librdkafka's error codes, defaulting to permanent (the row is
/// parked as dead with the error, where an operator sees it and can requeue it). Retriable means
/// "the same message may succeed later": the row stays pending and the lane backs off.
DeliveryOutcome classify_delivery_error(RdKafka::ErrorCode error);

/// False for a code the decision above does not name (a librdkafka newer than this code, or a
/// code nobody expected): the row is parked as permanent, and the caller logs the code as
/// unclassified so that someone adds it to the list.
bool is_classified_delivery_error(RdKafka::ErrorCode error);

}  // namespace outbox
