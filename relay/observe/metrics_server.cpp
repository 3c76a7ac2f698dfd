#include "relay/observe/metrics_server.hpp"

#include <httplib.h>

#include <stdexcept>

namespace outbox {

MetricsServer::MetricsServer(const std::string& address, const Telemetry& telemetry)
    : server_(std::make_unique<httplib::Server>()) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos) throw std::runtime_error("metrics.listen: expected host:port");
  const std::string host = address.substr(0, colon);
  const int wanted_port = std::stoi(address.substr(colon + 1));

  server_->new_task_queue = [] { return new httplib::ThreadPool(2); };
  server_->Get("/metrics", [&telemetry](const httplib::Request&, httplib::Response& response) {
    response.set_content(telemetry.metrics.render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  server_->Get("/healthz", [](const httplib::Request&, httplib::Response& response) {
    response.set_content("ok\n", "text/plain");
  });
  server_->Get("/readyz", [&telemetry](const httplib::Request&, httplib::Response& response) {
    const Readiness& readiness = telemetry.readiness;
    response.status = readiness.ready() ? 200 : 503;
    response.set_content(std::string("postgres ") + (readiness.postgres ? "ok" : "unreachable") +
                             "\nkafka " + (readiness.kafka ? "ok" : "unreachable") +
                             "\nlanes_owned " + std::to_string(readiness.lanes_owned) + "\n",
                         "text/plain");
  });
  port_ = wanted_port == 0 ? server_->bind_to_any_port(host)
                           : (server_->bind_to_port(host, wanted_port) ? wanted_port : -1);
  if (port_ <= 0) throw std::runtime_error("metrics.listen: cannot listen on " + address);
  thread_ = std::thread([this] { server_->listen_after_bind(); });
}

MetricsServer::~MetricsServer() {
  server_->stop();
  thread_.join();
}

}  // namespace outbox
