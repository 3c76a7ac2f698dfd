#include "tests/support/status_endpoint.hpp"

#include <httplib.h>

#include <doctest/doctest.h>

namespace outbox::test {

namespace {
std::unique_ptr<httplib::Server> make_server(const std::optional<EndpointTls>& tls) {
  if (!tls) return std::make_unique<httplib::Server>();
  auto server = std::make_unique<httplib::SSLServer>(
      tls->cert_file.c_str(), tls->key_file.c_str(),
      tls->client_ca_file.empty() ? nullptr : tls->client_ca_file.c_str());
  REQUIRE_MESSAGE(server->is_valid(), "the https endpoint could not load its certificate");
  return server;
}
}  // namespace

StatusEndpoint::StatusEndpoint(Handler handler, std::optional<EndpointTls> tls)
    : handler_(std::move(handler)), server_(make_server(tls)), https_(tls.has_value()) {
  server_->new_task_queue = [] { return new httplib::ThreadPool(64); };
  server_->Post("/check", [this](const httplib::Request& request, httplib::Response& response) {
    const int now = ++in_flight_;
    for (int seen = max_concurrent_.load();
         now > seen && !max_concurrent_.compare_exchange_weak(seen, now);) {
    }
    nlohmann::json body = nlohmann::json::parse(request.body, nullptr, false);
    {
      std::lock_guard lock(mutex_);
      const long long id = body.is_object() ? body.value("id", 0LL) : 0LL;
      requests_[id].push_back(body);
      arrivals_[id].push_back(std::chrono::steady_clock::now());
    }
    ++total_;
    const EndpointReply reply = handler_(body);
    if (reply.delay.count() > 0) std::this_thread::sleep_for(reply.delay);
    response.status = reply.status;
    if (!reply.location.empty()) response.set_header("Location", reply.location);
    response.set_content(reply.body, "application/json");
    --in_flight_;
  });
  port_ = server_->bind_to_any_port("127.0.0.1");
  REQUIRE(port_ > 0);
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  while (!server_->is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
}

StatusEndpoint::~StatusEndpoint() {
  server_->stop();
  thread_.join();
}

std::string StatusEndpoint::url() const {
  return std::string(https_ ? "https" : "http") + "://127.0.0.1:" + std::to_string(port_) +
         "/check";
}

int StatusEndpoint::requests_for(long long id) const {
  std::lock_guard lock(mutex_);
  const auto found = requests_.find(id);
  return found == requests_.end() ? 0 : static_cast<int>(found->second.size());
}

std::vector<nlohmann::json> StatusEndpoint::requests_of(long long id) const {
  std::lock_guard lock(mutex_);
  const auto found = requests_.find(id);
  return found == requests_.end() ? std::vector<nlohmann::json>{} : found->second;
}

std::chrono::milliseconds StatusEndpoint::shortest_gap_between_checks() const {
  std::lock_guard lock(mutex_);
  auto shortest = std::chrono::milliseconds::max();
  for (const auto& [id, times] : arrivals_) {
    for (std::size_t i = 1; i < times.size(); ++i) {
      shortest = std::min(
          shortest, std::chrono::duration_cast<std::chrono::milliseconds>(times[i] - times[i - 1]));
    }
  }
  return shortest;
}

}  // namespace outbox::test
