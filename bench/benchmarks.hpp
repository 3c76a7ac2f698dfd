// The benchmarks relay_bench runs. Each prints one line of key=value figures on stdout (progress
// goes to stderr) and returns the process exit code.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "bench/bench_support.hpp"

namespace outbox::bench {

/// Backlog drain through the real relay: `rows` pending rows (after `history` published ones).
int drain(const Options& options);
/// The relay's claim + record statements alone, no Kafka, same batch size.
int sql_ceiling(const Options& options);
/// The relay's producer alone, same messages and settings, no database.
int kafka_ceiling(const Options& options);

struct LatencyOptions {
  int rate = 1000;  ///< messages per second, over all writers
  int seconds = 20;
  int writers = 8;
  bool notify = true;
  bool hold_snapshot = false;  ///< a REPEATABLE READ transaction open in the database throughout
  /// Rows waiting, before the writers start, in a topic Kafka refuses (it does not exist and the
  /// relay may not create it): a held topic's backlog below every row measured.
  long held_backlog = 0;
};
/// Commit → acknowledgement and commit → consumer latency under a steady write rate.
int latency(const Options& options, const LatencyOptions& latency);

/// Time for the sweeper to resolve `rows` stale unknown rows against a local status endpoint.
int checkback(const Options& options, int max_concurrent_checks);

/// Writers' transactions per second (pgbench): business row alone, + outbox row without and with
/// NOTIFY, and with the relay running.
int writer_overhead(const Options& options, int clients, int seconds);

/// The relay's CPU over `seconds` idle on an empty outbox, check-back on (the default) and off.
int idle(const Options& options, int seconds);

/// The race against Debezium (bench/race.cpp): each case runs on both sides, alternating.
struct RaceOptions {
  std::string connect_libs;  ///< Kafka Connect's jars (scripts/peer)
  std::string plugin_path;   ///< Connect's plugin.path, holding Debezium's plugin directory
  std::vector<std::pair<long, int>> drains{{1'000'000, 3}, {5'000'000, 1}};  ///< rows, runs
  std::vector<std::pair<int, int>> rates{{1000, 3}, {5000, 1}};              ///< rows/s, runs
  int seconds = 30;  ///< of each latency run, after 2 s not counted
  int writers = 16;
  std::string command_line;  ///< as given, for the table's heading
  // Filled in by race() from the server it reaches.
  std::string postgres_host;
  int postgres_port = 5432;
};
/// Runs every case on both sides and prints the markdown table of bench/RESULTS.md on stdout.
int race(const Options& options, RaceOptions race);

}  // namespace outbox::bench
