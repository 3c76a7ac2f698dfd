#include "relay/core/check_verdict.hpp"

#include <nlohmann/json.hpp>

namespace outbox {

namespace {
constexpr std::size_t kMaxQuotedStatus = 40;  // keep junk out of logs and the row

std::string quoted_excerpt(std::string_view text) {
  std::string excerpt(text.substr(0, kMaxQuotedStatus));
  if (text.size() > kMaxQuotedStatus) excerpt += "...";
  return "'" + excerpt + "'";
}
}  // namespace

std::string_view to_string(CheckVerdict verdict) {
  switch (verdict) {
    case CheckVerdict::commit:
      return "COMMIT";
    case CheckVerdict::rollback:
      return "ROLLBACK";
    case CheckVerdict::unknown:
      return "UNKNOWN";
  }
  return "UNKNOWN";
}

std::string make_check_request(const HalfMessage& message) {
  nlohmann::json headers = nlohmann::json::parse(message.headers_json, nullptr,
                                                 /*allow_exceptions=*/false);
  if (headers.is_discarded()) headers = nlohmann::json::object();
  nlohmann::json request = {
      {"id", message.id.value},
      {"producer_group", message.producer_group},
      {"transaction_id", message.transaction_id},
      {"topic", message.topic ? nlohmann::json(*message.topic) : nlohmann::json(nullptr)},
      {"key", message.key ? nlohmann::json(*message.key) : nlohmann::json(nullptr)},
      {"headers", headers},
      {"check_number", message.check_number},
      {"created_at", message.created_at},
  };
  return request.dump();
}

CheckAnswer interpret_check_response(long http_status, std::string_view body) {
  if (http_status < 200 || http_status > 299) {
    return {CheckVerdict::unknown, "HTTP " + std::to_string(http_status)};
  }
  const nlohmann::json parsed = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) return {CheckVerdict::unknown, "invalid JSON"};
  if (!parsed.is_object()) return {CheckVerdict::unknown, "answer is not a JSON object"};
  const auto status = parsed.find("status");
  if (status == parsed.end() || !status->is_string()) {
    return {CheckVerdict::unknown, "answer has no string \"status\""};
  }
  const std::string& text = status->get_ref<const std::string&>();
  if (text == "COMMIT" || text == "COMMIT_MESSAGE") return {CheckVerdict::commit, "COMMIT"};
  if (text == "ROLLBACK" || text == "ROLLBACK_MESSAGE") return {CheckVerdict::rollback, "ROLLBACK"};
  if (text == "UNKNOWN" || text == "UNKNOW") return {CheckVerdict::unknown, "UNKNOWN"};
  return {CheckVerdict::unknown, "unknown status " + quoted_excerpt(text)};
}

}  // namespace outbox
