// The relay's HTTP listener for monitoring: /metrics (Prometheus text), /healthz (the process
// answers) and /readyz (PostgreSQL and Kafka reachable, lanes owned). Nothing else is served.
// It stays up under idle and slow clients: one event-driven thread (libmicrohttpd, epoll) for all
// connections, at most 1000 of them, each closed after 10 s of silence, requests up to 32 kB.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "relay/observe/metrics.hpp"

struct MHD_Daemon;

namespace outbox {

/// What /readyz reports; the relay loop writes it, the listener reads it.
struct Readiness {
  std::atomic<bool> postgres{false};
  std::atomic<bool> kafka{false};
  std::atomic<int> lanes_owned{0};
  bool ready() const { return postgres && kafka && lanes_owned > 0; }
};

/// The registry and readiness shared by every module of one relay process.
struct Telemetry {
  MetricsRegistry metrics;
  Readiness readiness;
};

class MetricsServer {
 public:
  /// Listens on `address` ("host:port"; port 0 picks a free one) until destroyed. Throws
  /// std::runtime_error naming the address when it cannot listen.
  MetricsServer(const std::string& address, const Telemetry& telemetry);
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  int port() const { return port_; }

 private:
  struct StopDaemon {
    void operator()(MHD_Daemon* daemon) const;
  };
  std::unique_ptr<MHD_Daemon, StopDaemon> daemon_;
  int port_ = 0;
};

}  // namespace outbox
