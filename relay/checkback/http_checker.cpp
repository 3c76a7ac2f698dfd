#include "relay/checkback/http_checker.hpp"

#include <curl/curl.h>

#include <stdexcept>

namespace outbox {

CurlGlobal::CurlGlobal() {
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    throw std::runtime_error("libcurl initialisation failed");
  }
}
CurlGlobal::~CurlGlobal() { curl_global_cleanup(); }

struct HttpChecker::Transfer {
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  HalfMessage message;
  std::string request_body;
  std::string response_body;
  std::int64_t max_response_bytes = 0;
  bool response_too_large = false;
  long timeout_ms = 0;
  char error_detail[CURL_ERROR_SIZE] = {};  // libcurl's own words, e.g. which certificate failed

  ~Transfer() {
    curl_slist_free_all(headers);
    if (easy) curl_easy_cleanup(easy);
  }

  static size_t write(char* data, size_t size, size_t count, void* self) {
    auto* transfer = static_cast<Transfer*>(self);
    const size_t bytes = size * count;
    if (static_cast<std::int64_t>(transfer->response_body.size() + bytes) >
        transfer->max_response_bytes) {
      transfer->response_too_large = true;
      return 0;  // makes libcurl stop with CURLE_WRITE_ERROR
    }
    transfer->response_body.append(data, bytes);
    return bytes;
  }
};

namespace {
/// The handshake or a certificate failed: wrong or missing CA, expired, wrong name, a client
/// certificate the endpoint refuses or the relay cannot load. It will not mend itself. Under TLS
/// 1.3 a refused client certificate arrives as an alert after the handshake, on the first read.
bool is_tls_failure(CURLcode code, std::string_view detail) {
  switch (code) {
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
      return detail.find("SSL routines") != std::string_view::npos;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CLIENTCERT:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
      return true;
    default:
      return false;
  }
}
}  // namespace

struct HttpChecker::Multi {
  CURLM* handle = curl_multi_init();
  ~Multi() { curl_multi_cleanup(handle); }
};

HttpChecker::HttpChecker(std::int64_t max_response_bytes, OnDone on_done)
    : max_response_bytes_(max_response_bytes),
      on_done_(std::move(on_done)),
      multi_(std::make_unique<Multi>()) {
  if (!multi_->handle) throw std::runtime_error("curl_multi_init failed");
}

HttpChecker::~HttpChecker() {
  // Transfers still running are abandoned; their rows' leases expire and they are checked again.
  for (auto& [easy, transfer] : transfers_) curl_multi_remove_handle(multi_->handle, easy);
  transfers_.clear();
}

void HttpChecker::wakeup() { curl_multi_wakeup(multi_->handle); }

void HttpChecker::fail_to_start(HalfMessage message, const std::string& why) {
  // Reported like any other failed check (nothing was sent), so the caller's count of checks in
  // flight comes back down: a throw here once leaked one of an endpoint's concurrency slots.
  CheckResult result;
  result.message = std::move(message);
  result.answer = {CheckVerdict::unknown, CheckFailure::connection,
                   "could not start the request: " + why};
  on_done_(std::move(result));
}

void HttpChecker::start(const CheckEndpointConfig& endpoint, HalfMessage message) {
  try {
    start_transfer(endpoint, message);
  } catch (const std::exception& error) {  // building the request, or out of memory
    fail_to_start(std::move(message), error.what());
  }
}

void HttpChecker::start_transfer(const CheckEndpointConfig& endpoint, HalfMessage& message) {
  auto transfer = std::make_unique<Transfer>();
  transfer->easy = curl_easy_init();
  if (!transfer->easy) {
    fail_to_start(std::move(message), "curl_easy_init failed");
    return;
  }
  transfer->request_body = make_check_request(message);
  transfer->max_response_bytes = max_response_bytes_;
  transfer->timeout_ms = static_cast<long>(endpoint.timeout.count());
  transfer->headers = curl_slist_append(transfer->headers, "Content-Type: application/json");
  transfer->headers = curl_slist_append(transfer->headers, "Accept: application/json");
  transfer->headers = curl_slist_append(transfer->headers, "Expect:");  // no 100-continue wait
  if (!endpoint.authorization.empty()) {
    transfer->headers =
        curl_slist_append(transfer->headers, ("Authorization: " + endpoint.authorization).c_str());
  }
  CURL* easy = transfer->easy;
  curl_easy_setopt(easy, CURLOPT_URL, endpoint.url.c_str());
  curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);  // a redirect is an answer, not a decision
  curl_easy_setopt(easy, CURLOPT_POST, 1L);
  curl_easy_setopt(easy, CURLOPT_POSTFIELDS, transfer->request_body.c_str());
  curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, static_cast<long>(transfer->request_body.size()));
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, transfer->headers);
  curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, transfer->timeout_ms);
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_USERAGENT, "outbox-relay");
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, transfer->error_detail);
  if (!endpoint.ca_file.empty()) curl_easy_setopt(easy, CURLOPT_CAINFO, endpoint.ca_file.c_str());
  if (!endpoint.cert_file.empty()) {
    curl_easy_setopt(easy, CURLOPT_SSLCERT, endpoint.cert_file.c_str());
  }
  if (!endpoint.key_file.empty()) curl_easy_setopt(easy, CURLOPT_SSLKEY, endpoint.key_file.c_str());
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &Transfer::write);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, transfer.get());
  if (curl_multi_add_handle(multi_->handle, easy) != CURLM_OK) {
    fail_to_start(std::move(message), "curl_multi_add_handle failed");
    return;
  }
  transfer->message = std::move(message);
  transfers_.emplace(easy, std::move(transfer));
}

void HttpChecker::perform(std::chrono::milliseconds timeout) {
  int running = 0;
  curl_multi_perform(multi_->handle, &running);
  // Waits even with no transfer running: curl_multi_poll (unlike curl_multi_wait) sleeps the whole
  // timeout when it has nothing to watch. Returning at once made the sweeper's waits, which are
  // loops over perform(), spin a core whenever nothing was in flight (2.4 s of CPU per 10 s idle).
  curl_multi_poll(multi_->handle, nullptr, 0, static_cast<int>(timeout.count()), nullptr);
  if (running > 0) curl_multi_perform(multi_->handle, &running);
  int queued = 0;
  while (CURLMsg* info = curl_multi_info_read(multi_->handle, &queued)) {
    if (info->msg != CURLMSG_DONE) continue;
    const auto found = transfers_.find(info->easy_handle);
    if (found == transfers_.end()) continue;
    std::unique_ptr<Transfer> transfer = std::move(found->second);
    transfers_.erase(found);
    const CURLcode code = info->data.result;
    curl_multi_remove_handle(multi_->handle, info->easy_handle);

    CheckResult result;
    long request_bytes = 0;
    curl_easy_getinfo(transfer->easy, CURLINFO_REQUEST_SIZE, &request_bytes);
    result.request_sent = request_bytes > 0;
    if (transfer->response_too_large) {
      result.answer = {CheckVerdict::unknown, CheckFailure::too_large,
                       "answer longer than " + std::to_string(max_response_bytes_) + " bytes"};
    } else if (code == CURLE_OPERATION_TIMEDOUT) {
      result.answer = {CheckVerdict::unknown, CheckFailure::timeout,
                       "no answer within " + std::to_string(transfer->timeout_ms) + " ms"};
    } else if (code != CURLE_OK) {
      std::string description = curl_easy_strerror(code);
      if (transfer->error_detail[0] != '\0')
        description += ": " + std::string(transfer->error_detail);
      if (is_tls_failure(code, transfer->error_detail)) {
        result.answer = {CheckVerdict::unknown, CheckFailure::tls, "TLS: " + description};
      } else {
        result.answer = {CheckVerdict::unknown, CheckFailure::connection,
                         "request failed: " + description};
      }
    } else {
      long status = 0;
      curl_easy_getinfo(transfer->easy, CURLINFO_RESPONSE_CODE, &status);
      result.answer = interpret_check_response(status, transfer->response_body);
    }
    result.message = std::move(transfer->message);
    on_done_(std::move(result));
  }
}

}  // namespace outbox
