// Pure functions that turn an outbox row's columns into a Kafka destination and headers.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "relay/core/outbox_row.hpp"

namespace outbox {

/// Replaces every "{value}" in `pattern` with `value` (Debezium's route.topic.replacement with
/// ${routedByValue}; braces because ${...} is taken by environment substitution in the YAML).
std::string resolve_topic(std::string_view pattern, std::string_view value);

/// Why `topic` is not a legal Kafka topic name (1..249 chars of [a-zA-Z0-9._-], not "." or ".."),
/// or nullopt when it is. Checked before producing so a bad row is parked instead of retried.
std::optional<std::string> topic_name_defect(std::string_view topic);

/// Decodes the headers column: a JSON object whose values are strings. Throws std::invalid_argument
/// naming the offending header when the text is not such an object.
MessageHeaders decode_headers(std::string_view json_object);

/// Why a row's own headers cannot be sent: one of them has the name of the header the relay adds
/// (routing.id_header). Sending both would let a consumer's lastHeader() read the writer's forged
/// id instead of the row's, so such a row is parked instead.
std::optional<std::string> reserved_header_defect(const MessageHeaders& headers,
                                                  std::string_view id_header);

}  // namespace outbox
