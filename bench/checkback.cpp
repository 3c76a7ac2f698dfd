// Check-back throughput: stale unknown rows resolved by the sweeper against a local status
// endpoint that answers COMMIT at once, then published.
#include <httplib.h>

#include <atomic>
#include <iostream>
#include <thread>

#include "bench/benchmarks.hpp"

namespace outbox::bench {

int checkback(const Options& options, int max_concurrent_checks) {
  const std::string topic = "bench.checkback." + std::to_string(getpid());
  BenchDatabase database(options);
  database.load(topic, options.rows, "unknown");

  httplib::Server endpoint;
  // One worker per kept-alive connection: with fewer, connections queue behind idle keep-alives
  // and the benchmark would measure the endpoint, not the sweeper.
  endpoint.new_task_queue = [max_concurrent_checks] {
    return new httplib::ThreadPool(static_cast<std::size_t>(max_concurrent_checks) + 4);
  };
  std::atomic<long> requests{0};
  endpoint.Post("/check", [&](const httplib::Request&, httplib::Response& response) {
    ++requests;
    response.set_content(R"({"status":"COMMIT"})", "application/json");
  });
  const int port = endpoint.bind_to_any_port("127.0.0.1");
  std::jthread server([&] { endpoint.listen_after_bind(); });

  RelaySettings settings;
  settings.extra_sections =
      "checkback:\n  sweep_interval_ms: 100\n  endpoints:\n    bench:\n"
      "      url: http://127.0.0.1:" +
      std::to_string(port) +
      "/check\n"
      "      max_concurrent_checks: " +
      std::to_string(max_concurrent_checks) + "\n      max_checks_per_second: 100000\n";
  const auto start = Clock::now();
  BenchRelay relay(options, database.url(), settings);
  double resolved_seconds = 0;
  for (int round = 1;; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const long unknown = database.count_where("state = 'unknown'");
    const long pending = database.count_where("state = 'pending'");
    if (round % 10 == 0) {
      std::cerr << "bench: " << options.rows - unknown << " resolved, "
                << options.rows - unknown - pending << " published, " << seconds_since(start)
                << " s\n";
    }
    if (unknown == 0 && resolved_seconds == 0) resolved_seconds = seconds_since(start);
    if (unknown == 0 && pending == 0) break;
  }
  const double published_seconds = seconds_since(start);
  relay.stop();
  endpoint.stop();
  std::cout << "checkback rows=" << options.rows
            << " max_concurrent_checks=" << max_concurrent_checks << " requests=" << requests.load()
            << " resolved_seconds=" << resolved_seconds
            << " checks_per_second=" << options.rows / resolved_seconds
            << " published_seconds=" << published_seconds << "\n";
  return 0;
}

}  // namespace outbox::bench
