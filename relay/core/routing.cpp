#include "relay/core/routing.hpp"

#include <nlohmann/json.hpp>
#include <stdexcept>

namespace outbox {

namespace {
constexpr std::string_view kValuePlaceholder = "{value}";
constexpr std::size_t kMaxTopicLength = 249;  // Kafka's Topic.MAX_NAME_LENGTH
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
    if (!legal) return "topic '" + std::string(topic) + "' has a character outside [a-zA-Z0-9._-]";
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
      throw std::invalid_argument("header '" + name + "' must be a string, not " +
                                  value.type_name());
    }
    headers.emplace_back(name, value.get<std::string>());
  }
  return headers;
}

}  // namespace outbox
