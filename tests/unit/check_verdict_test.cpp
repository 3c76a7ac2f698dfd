// Specifications of the check-back protocol's pure parts: the request, and answers to verdicts.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "relay/core/check_verdict.hpp"

using namespace outbox;

TEST_CASE("COMMIT and ROLLBACK decide, in our words and in RocketMQ's") {
  CHECK(interpret_check_response(200, R"({"status": "COMMIT"})").verdict == CheckVerdict::commit);
  CHECK(interpret_check_response(200, R"({"status": "COMMIT_MESSAGE"})").verdict ==
        CheckVerdict::commit);
  CHECK(interpret_check_response(204, R"({"status": "ROLLBACK"})").verdict ==
        CheckVerdict::rollback);
  CHECK(interpret_check_response(200, R"({"status": "ROLLBACK_MESSAGE", "x": 1})").verdict ==
        CheckVerdict::rollback);
}

TEST_CASE("UNKNOWN, UNKNOW and every bad answer are UNKNOWN, with the reason") {
  const auto unknown = [](long status, const std::string& body) {
    const CheckAnswer answer = interpret_check_response(status, body);
    CHECK(answer.verdict == CheckVerdict::unknown);
    return answer.description;
  };
  CHECK(unknown(200, R"({"status": "UNKNOWN"})") == "UNKNOWN");
  CHECK(unknown(200, R"({"status": "UNKNOW"})") == "UNKNOWN");
  CHECK(unknown(500, R"({"status": "COMMIT"})") == "HTTP 500");
  CHECK(unknown(302, "") == "HTTP 302");
  CHECK(unknown(200, R"({"status": "COMMIT")") == "invalid JSON");
  CHECK(unknown(200, R"(["COMMIT"])") == "answer is not a JSON object");
  CHECK(unknown(200, R"({"state": "COMMIT"})") == "answer has no string \"status\"");
  CHECK(unknown(200, R"({"status": 1})") == "answer has no string \"status\"");
  CHECK(unknown(200, R"({"status": "commit"})") == "unknown status 'commit'");
  CHECK(unknown(200, "") == "invalid JSON");
  CHECK(unknown(200, std::string(R"({"status": ")") + std::string(100, 'A') + "\"}").size() < 70);
}

TEST_CASE("the check request names the row, its transaction and the check number") {
  HalfMessage message;
  message.id = OutboxId{42};
  message.producer_group = "orders";
  message.transaction_id = "tx-7";
  message.topic = "orders.events";
  message.headers_json = R"({"type": "OrderPlaced"})";
  message.check_number = 3;
  message.created_at = "2026-11-24T10:00:00.000000Z";
  const auto request = nlohmann::json::parse(make_check_request(message));
  CHECK(request["id"] == 42);
  CHECK(request["producer_group"] == "orders");
  CHECK(request["transaction_id"] == "tx-7");
  CHECK(request["topic"] == "orders.events");
  CHECK(request["key"].is_null());
  CHECK(request["headers"]["type"] == "OrderPlaced");
  CHECK(request["check_number"] == 3);
  CHECK(request["created_at"] == "2026-11-24T10:00:00.000000Z");
}
