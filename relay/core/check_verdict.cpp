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

std::string_view to_string(CheckFailure failure) {
  switch (failure) {
    case CheckFailure::none:
      return "none";
    case CheckFailure::http_status:
      return "http_status";
    case CheckFailure::invalid_answer:
      return "invalid_answer";
    case CheckFailure::unknown_status:
      return "unknown_status";
    case CheckFailure::timeout:
      return "timeout";
    case CheckFailure::connection:
      return "connection";
    case CheckFailure::tls:
      return "tls";
    case CheckFailure::too_large:
      return "too_large";
    case CheckFailure::no_endpoint:
      return "no_endpoint";
  }
  return "none";
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
    return {CheckVerdict::unknown, CheckFailure::http_status,
            "HTTP " + std::to_string(http_status)};
  }
  const nlohmann::json parsed = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded())
    return {CheckVerdict::unknown, CheckFailure::invalid_answer, "invalid JSON"};
  if (!parsed.is_object()) {
    return {CheckVerdict::unknown, CheckFailure::invalid_answer, "answer is not a JSON object"};
  }
  const auto status = parsed.find("status");
  if (status == parsed.end() || !status->is_string()) {
    return {CheckVerdict::unknown, CheckFailure::invalid_answer, "answer has no string \"status\""};
  }
  const std::string& text = status->get_ref<const std::string&>();
  if (text == "COMMIT" || text == "COMMIT_MESSAGE") {
    return {CheckVerdict::commit, CheckFailure::none, "COMMIT"};
  }
  if (text == "ROLLBACK" || text == "ROLLBACK_MESSAGE") {
    return {CheckVerdict::rollback, CheckFailure::none, "ROLLBACK"};
  }
  if (text == "UNKNOWN" || text == "UNKNOW") {
    return {CheckVerdict::unknown, CheckFailure::none, "UNKNOWN"};
  }
  return {CheckVerdict::unknown, CheckFailure::unknown_status,
          "unknown status " + quoted_excerpt(text)};
}

}  // namespace outbox
