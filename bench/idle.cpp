// What an idle relay costs: its CPU over a quiet spell on an empty outbox, with the default
// configuration (check-back on) and with check-back off, one after the other.
#include <chrono>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <thread>

#include "bench/bench_support.hpp"
#include "bench/benchmarks.hpp"

namespace outbox::bench {

int idle(const Options& options, int seconds) {
  BenchDatabase database(options);
  for (const bool checkback : {true, false}) {
    RelaySettings settings;
    // The defaults, but for the check-back switch: an endpoint is configured as a user would.
    settings.extra_sections = checkback ? "checkback:\n  endpoints:\n    bench:\n"
                                          "      url: http://127.0.0.1:9/check\n"
                                        : "checkback:\n  enabled: false\n";
    BenchRelay relay(options, database.url(), settings);
    std::this_thread::sleep_for(std::chrono::seconds(3));  // start-up: connect, lanes, producer
    const auto before = relay.threads_cpu();
    std::this_thread::sleep_for(std::chrono::seconds(seconds));
    const auto after = relay.threads_cpu();
    // Per thread, so the figure says where the cost is; a thread that started meanwhile counts
    // from zero.
    double cpu_ms = 0;
    std::ostringstream per_thread;
    per_thread << std::fixed << std::setprecision(1);
    for (const auto& [tid, thread] : after) {
      const auto earlier = before.find(tid);
      const double spent = thread.cpu_ms - (earlier == before.end() ? 0 : earlier->second.cpu_ms);
      cpu_ms += spent;
      if (spent * 10 / seconds >= 0.05)
        per_thread << " " << thread.name << "=" << spent * 10 / seconds;
    }
    std::cout << std::fixed << std::setprecision(1) << "idle seconds=" << seconds
              << " checkback=" << (checkback ? "on" : "off") << " cpu_ms=" << cpu_ms
              << " cpu_ms_per_10s=" << cpu_ms * 10 / seconds
              << "\n  per thread, ms per 10 s:" << per_thread.str() << "\n";
  }
  return 0;
}

}  // namespace outbox::bench
