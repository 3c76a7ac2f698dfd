// The check-back protocol's pure parts: the request the sweeper sends about a half message, and how
// an endpoint's answer becomes a verdict. No I/O here (tests/unit and the fuzzer drive it).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "relay/core/ids.hpp"

namespace outbox {

/// A half message as the sweeper sees it: enough to ask its writer what became of it.
struct HalfMessage {
  OutboxId id;
  std::string producer_group;
  std::string transaction_id;
  std::optional<std::string> topic;
  std::optional<std::string> key;
  std::string headers_json = "{}";  ///< the row's headers column (a JSON object)
  int check_number = 1;             ///< this check's number: checks already sent + 1
  std::string created_at;           ///< ISO 8601, as PostgreSQL prints it
};

enum class CheckVerdict { commit, rollback, unknown };

/// Why a check gave no usable answer (the metrics' error kinds).
enum class CheckFailure {
  none,            ///< a usable answer (COMMIT, ROLLBACK or UNKNOWN)
  http_status,     ///< a non-2xx status, redirects included
  invalid_answer,  ///< not JSON, not an object, no string "status"
  unknown_status,  ///< a "status" outside the contract
  timeout,
  connection,   ///< could not connect or the transfer broke
  tls,          ///< the TLS handshake or a certificate failed (counts toward max_checks)
  too_large,    ///< over checkback.max_response_bytes
  no_endpoint,  ///< no endpoint configured for the producer group
};

std::string_view to_string(CheckFailure failure);

struct CheckAnswer {
  CheckVerdict verdict = CheckVerdict::unknown;
  CheckFailure failure = CheckFailure::none;
  /// What the endpoint said, for the row's last_check_answer and the logs: "COMMIT", or why the
  /// answer counts as UNKNOWN ("HTTP 500", "invalid JSON: ...", "unknown status 'MAYBE'").
  std::string description;
};

/// The JSON body POSTed to the status-check endpoint (documented in the README).
std::string make_check_request(const HalfMessage& message);

/// Interprets an HTTP answer. Only a 2xx answer whose JSON object carries a "status" of COMMIT or
/// ROLLBACK (or RocketMQ's COMMIT_MESSAGE / ROLLBACK_MESSAGE) decides; UNKNOWN, UNKNOW and every
/// malformed or failed answer are CheckVerdict::unknown with the reason. Never throws.
CheckAnswer interpret_check_response(long http_status, std::string_view body);

std::string_view to_string(CheckVerdict verdict);

}  // namespace outbox
