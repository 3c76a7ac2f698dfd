// A real HTTP or HTTPS status-check endpoint for the check-back tests (cpp-httplib on 127.0.0.1),
// whose answers the test scripts and whose requests it counts.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

namespace httplib {
class Server;
}

namespace outbox::test {

struct EndpointReply {
  int status = 200;
  std::string body;
  std::string location;                ///< sets a Location header (for redirects)
  std::chrono::milliseconds delay{0};  ///< wait before answering
};

/// An https endpoint's own certificate and key and, for mutual TLS, the CA its clients'
/// certificates must chain to (empty: no client certificate asked for).
struct EndpointTls {
  std::string cert_file;
  std::string key_file;
  std::string client_ca_file;
};

class StatusEndpoint {
 public:
  using Handler = std::function<EndpointReply(const nlohmann::json& request)>;
  explicit StatusEndpoint(Handler handler, std::optional<EndpointTls> tls = std::nullopt);
  ~StatusEndpoint();
  StatusEndpoint(const StatusEndpoint&) = delete;
  StatusEndpoint& operator=(const StatusEndpoint&) = delete;

  std::string url() const;
  /// Requests received for one outbox id.
  int requests_for(long long id) const;
  int total_requests() const { return total_.load(); }
  int max_concurrent() const { return max_concurrent_.load(); }
  /// Every request body received for `id`, in order.
  std::vector<nlohmann::json> requests_of(long long id) const;
  /// The shortest time between two requests for one id, over all ids (max() if none repeated).
  std::chrono::milliseconds shortest_gap_between_checks() const;

  static EndpointReply status(const std::string& status) {
    return {200, nlohmann::json{{"status", status}}.dump(), "", std::chrono::milliseconds(0)};
  }

 private:
  Handler handler_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
  bool https_ = false;
  mutable std::mutex mutex_;
  std::map<long long, std::vector<nlohmann::json>> requests_;
  std::map<long long, std::vector<std::chrono::steady_clock::time_point>> arrivals_;
  std::atomic<int> total_{0};
  std::atomic<int> in_flight_{0};
  std::atomic<int> max_concurrent_{0};
};

}  // namespace outbox::test
