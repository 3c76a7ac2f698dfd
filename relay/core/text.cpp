#include "relay/core/text.hpp"

#include <algorithm>
#include <cstdio>

namespace outbox {

namespace {
std::string cut_marker(std::size_t cut) { return "...(" + std::to_string(cut) + " bytes cut)"; }
}  // namespace

std::string printable(std::string_view text, std::size_t max_bytes) {
  std::string out;
  out.reserve(std::min(text.size(), max_bytes) + 16);
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    char escaped[8] = {};
    switch (c) {
      case '\n':
        escaped[0] = '\\', escaped[1] = 'n';
        break;
      case '\r':
        escaped[0] = '\\', escaped[1] = 'r';
        break;
      case '\t':
        escaped[0] = '\\', escaped[1] = 't';
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          std::snprintf(escaped, sizeof escaped, "\\x%02x", c);
        } else {
          escaped[0] = static_cast<char>(c);
        }
    }
    const std::string_view piece(escaped);
    if (out.size() + piece.size() > max_bytes) {
      out += cut_marker(text.size() - i);
      return out;
    }
    out += piece;
  }
  return out;
}

std::string capped(std::string_view text, std::size_t max_bytes) {
  if (text.size() <= max_bytes) return std::string(text);
  return std::string(text.substr(0, max_bytes)) + cut_marker(text.size() - max_bytes);
}

}  // namespace outbox
