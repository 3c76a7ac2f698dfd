// What an idle relay costs: its CPU over a quiet spell on an empty outbox, with the default
// configuration (check-back on) and with check-back off, one after the other.
#include <chrono>
#include <iostream>
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
    const double before = relay.usage().cpu_seconds;
    std::this_thread::sleep_for(std::chrono::seconds(seconds));
    const double cpu_ms = (relay.usage().cpu_seconds - before) * 1000;
    std::cout << "idle seconds=" << seconds << " checkback=" << (checkback ? "on" : "off")
              << " cpu_ms=" << cpu_ms << " cpu_ms_per_10s=" << cpu_ms * 10 / seconds << "\n";
  }
  return 0;
}

}  // namespace outbox::bench
