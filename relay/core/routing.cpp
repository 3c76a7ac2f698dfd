#include "relay/core/routing.hpp"

#include <nlohmann/json.hpp>
#include <stdexcept>

#include "relay/core/text.hpp"

namespace outbox {

namespace {
constexpr std::string_view kValuePlaceholder = "{value}";
constexpr std::size_t kMaxTopicLength = 249;  // Kafka's Topic.MAX_NAME_LENGTH
// How much of a writer's name a reason quotes: enough to find the row, not enough to flood a log
// line, a status page or the row's own last_error.
constexpr std::size_t kQuotedNameBytes = 100;
}  // namespace

std::string resolve_topic(std::string_view pattern, std::string_view value) {
  std::string topic;
  topic.reserve(pattern.size() + value.size());
  std::size_t start = 0;
  for (std::size_t at = pattern.find(kValuePlaceholder); at != std::string_view::npos;
       at = pattern.find(kValuePlaceholder, start)) {
    topic.append(pattern.substr(start, at - start)).append(value);
    start = at + kValuePlaceholder.size();
  }
  topic.append(pattern.substr(start));
  return topic;
}

std::optional<std::string> topic_name_defect(std::string_view topic) {
  if (topic.empty()) return "topic is empty";
  if (topic == "." || topic == "..") return "topic cannot be '.' or '..'";
  if (topic.size() > kMaxTopicLength) {
    return "topic is longer than " + std::to_string(kMaxTopicLength) + " characters";
  }
  for (char c : topic) {
    bool legal = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '_' || c == '-';
    if (!legal) {
      return "topic '" + printable(topic, kQuotedNameBytes) +
             "' has a character outside [a-zA-Z0-9._-]";
    }
  }
  return std::nullopt;
}

MessageHeaders decode_headers(std::string_view json_object) {
  nlohmann::json parsed = nlohmann::json::parse(json_object, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) throw std::invalid_argument("headers are not valid JSON");
  if (!parsed.is_object()) throw std::invalid_argument("headers must be a JSON object");
  MessageHeaders headers;
  headers.reserve(parsed.size());
  for (auto& [name, value] : parsed.items()) {
    if (!value.is_string()) {
      throw std::invalid_argument("header '" + printable(name, kQuotedNameBytes) +
                                  "' must be a string, not " + value.type_name());
    }
    headers.emplace_back(name, value.get<std::string>());
  }
  return headers;
}

}  // namespace outbox

namespace outbox {

std::optional<std::string> reserved_header_defect(const MessageHeaders& headers,
                                                  std::string_view id_header) {
  for (const auto& [name, value] : headers) {
    if (name == id_header) {
      return "header '" + std::string(id_header) +
             "' is the relay's row-id header (routing.id_header); a writer may not set it";
    }
  }
  return std::nullopt;
}

}  // namespace outbox
