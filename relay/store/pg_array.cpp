#include <string>

#include "relay/store/store.hpp"

namespace outbox {

std::string format_int_array(std::span<const std::int64_t> values) {
  std::string text;
  text.reserve(values.size() * 8 + 2);
  text.push_back('{');
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i > 0) text.push_back(',');
    text.append(std::to_string(values[i]));
  }
  text.push_back('}');
  return text;
}

std::string format_text_array(std::span<const std::string> values) {
  // Every element is double-quoted, so only '"' and '\' need escaping; NULL is never produced
  // (callers map "no value" to an empty string and the SQL maps it back with nullif).
  std::string text;
  text.push_back('{');
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i > 0) text.push_back(',');
    text.push_back('"');
    for (char c : values[i]) {
      if (c == '"' || c == '\\') text.push_back('\\');
      text.push_back(c);
    }
    text.push_back('"');
  }
  text.push_back('}');
  return text;
}

}  // namespace outbox
