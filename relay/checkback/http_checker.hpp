// Concurrent status-check requests over libcurl's multi interface, on the caller's thread.
// Private to relay/checkback.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>

#include "relay/checkback/sweeper.hpp"
#include "relay/config/config.hpp"
#include "relay/core/check_verdict.hpp"

namespace outbox {

/// What one check came to.
struct CheckResult {
  HalfMessage message;
  CheckAnswer answer;
  bool request_sent = false;  ///< bytes of the request reached the network
};

/// Runs checks concurrently: start() queues a transfer, perform() drives all of them for up to a
/// timeout and hands finished ones to the callback. Not thread-safe. Redirects are never followed,
/// only http and https are allowed, and an answer over `max_response_bytes` is cut off.
class HttpChecker {
 public:
  using OnDone = std::function<void(CheckResult)>;
  HttpChecker(std::int64_t max_response_bytes, OnDone on_done);
  ~HttpChecker();  ///< abandons transfers still running (their rows' leases simply expire)
  HttpChecker(const HttpChecker&) = delete;
  HttpChecker& operator=(const HttpChecker&) = delete;

  /// Never throws: a transfer that cannot even start is reported through on_done, at once, as a
  /// failed check that sent nothing.
  void start(const CheckEndpointConfig& endpoint, HalfMessage message);
  /// Drives transfers, waiting up to `timeout` for activity (the whole timeout when none runs, so a
  /// loop over perform() never spins); calls on_done for each that finished.
  void perform(std::chrono::milliseconds timeout);
  int active() const { return static_cast<int>(transfers_.size()); }
  /// Ends a perform() that is waiting, from any thread (curl_multi_wakeup): how a stop request
  /// reaches an idle sweeper at once.
  void wakeup();

 private:
  struct Transfer;
  struct Multi;
  void start_transfer(const CheckEndpointConfig& endpoint, HalfMessage& message);
  void fail_to_start(HalfMessage message, const std::string& why);
  std::int64_t max_response_bytes_;
  OnDone on_done_;
  std::unique_ptr<Multi> multi_;
  // Declared after multi_: transfers are detached from it (in ~HttpChecker) before it goes.
  std::unordered_map<void*, std::unique_ptr<Transfer>> transfers_;  // by CURL easy handle
};

}  // namespace outbox
