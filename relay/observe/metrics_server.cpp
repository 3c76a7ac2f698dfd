#include "relay/observe/metrics_server.hpp"

#include <microhttpd.h>
#include <netdb.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <stdexcept>

namespace outbox {

namespace {

// One event-driven thread serves every connection (epoll), so an idle or slow client costs a
// descriptor, not a thread: a liveness probe is answered while hundreds of others hang open.
// The bounds keep a flood from costing more than that.
constexpr unsigned kConnectionLimit = 1000;        // beyond it new connections are refused
constexpr unsigned kIdleTimeoutSeconds = 10;       // a connection silent this long is closed
constexpr std::size_t kRequestMemory = 32 * 1024;  // request line + headers; larger is refused

struct Reply {
  unsigned status;
  std::string body;
  const char* content_type = "text/plain; charset=utf-8";
};

Reply route(const Telemetry& telemetry, std::string_view method, std::string_view path) {
  const bool known = path == "/metrics" || path == "/healthz" || path == "/readyz";
  if (!known) return {404, "not found; this listener serves /metrics, /healthz and /readyz\n"};
  if (method != "GET" && method != "HEAD") return {405, "only GET and HEAD\n"};
  if (path == "/healthz") return {200, "ok\n"};
  if (path == "/readyz") {
    const Readiness& readiness = telemetry.readiness;
    return {readiness.ready() ? 200u : 503u,
            std::string("postgres ") + (readiness.postgres ? "ok" : "unreachable") + "\nkafka " +
                (readiness.kafka ? "ok" : "unreachable") + "\nlanes_owned " +
                std::to_string(readiness.lanes_owned) + "\n"};
  }
  return {200, telemetry.metrics.render(), "text/plain; version=0.0.4; charset=utf-8"};
}

MHD_Result answer(void* context, MHD_Connection* connection, const char* url, const char* method,
                  const char* /*version*/, const char* /*upload_data*/,
                  std::size_t* /*upload_data_size*/, void** /*request_state*/) noexcept {
  try {
    const Reply reply = route(*static_cast<const Telemetry*>(context), method, url);
    MHD_Response* response = MHD_create_response_from_buffer(
        reply.body.size(), const_cast<char*>(reply.body.data()), MHD_RESPMEM_MUST_COPY);
    if (response == nullptr) return MHD_NO;
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, reply.content_type);
    if (reply.status == 405) MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    const MHD_Result queued = MHD_queue_response(connection, reply.status, response);
    MHD_destroy_response(response);
    return queued;
  } catch (...) {
    return MHD_NO;  // closes this connection; the listener goes on
  }
}

void log_listener_error(void* /*context*/, const char* format, va_list arguments) {
  char text[512];
  std::vsnprintf(text, sizeof text, format, arguments);
  std::string message(text);
  while (!message.empty() && message.back() == '\n') message.pop_back();
  spdlog::debug("event=metrics_listener_error error=\"{}\"", message);
}

/// getaddrinfo's answer, freed on scope exit.
struct ResolvedAddress {
  addrinfo* list = nullptr;
  ~ResolvedAddress() {
    if (list != nullptr) freeaddrinfo(list);
  }
};

}  // namespace

MetricsServer::MetricsServer(const std::string& address, const Telemetry& telemetry) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos) throw std::runtime_error("metrics.listen: expected host:port");
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);  // [::1]:9187
  }
  const std::string port = address.substr(colon + 1);

  ResolvedAddress resolved;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  if (const int error = getaddrinfo(host.c_str(), port.c_str(), &hints, &resolved.list);
      error != 0) {
    throw std::runtime_error("metrics.listen: cannot resolve " + address + ": " +
                             gai_strerror(error));
  }
  const bool ipv6 = resolved.list->ai_family == AF_INET6;
  daemon_.reset(MHD_start_daemon(
      MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG |
          (ipv6 ? MHD_USE_IPv6 : 0),
      0, nullptr, nullptr, &answer, const_cast<Telemetry*>(&telemetry), MHD_OPTION_SOCK_ADDR,
      resolved.list->ai_addr, MHD_OPTION_CONNECTION_LIMIT, kConnectionLimit,
      MHD_OPTION_CONNECTION_TIMEOUT, kIdleTimeoutSeconds, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
      kRequestMemory, MHD_OPTION_EXTERNAL_LOGGER, &log_listener_error, nullptr, MHD_OPTION_END));
  if (!daemon_) {
    throw std::runtime_error("metrics.listen: cannot listen on " + address + ": " +
                             std::strerror(errno));
  }
  const MHD_DaemonInfo* bound = MHD_get_daemon_info(daemon_.get(), MHD_DAEMON_INFO_BIND_PORT);
  port_ = bound != nullptr ? bound->port : 0;
}

void MetricsServer::StopDaemon::operator()(MHD_Daemon* daemon) const { MHD_stop_daemon(daemon); }

}  // namespace outbox
