// relay_bench: how fast the relay is, measured against real PostgreSQL and Kafka (scripts/services
// up) and against the ceilings of the same machine. scripts/bench runs every benchmark and writes
// bench/RESULTS.md.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "bench/benchmarks.hpp"

int main(int argc, char** argv) {
  using namespace outbox::bench;
  CLI::App app{"Benchmarks of outbox-relay against real PostgreSQL and Kafka."};
  Options options;
  app.add_option("--postgres", options.server, "PostgreSQL server URL (no database)")
      ->capture_default_str();
  app.add_option("--kafka", options.kafka, "Kafka bootstrap servers")->capture_default_str();
  app.add_option("--rows", options.rows, "Rows (messages)")->capture_default_str();
  app.add_option("--keys", options.keys, "Distinct keys")->capture_default_str();
  app.add_option("--payload-bytes", options.payload_bytes, "Payload size")->capture_default_str();
  app.add_option("--batch-size", options.batch_size, "relay.batch_size")->capture_default_str();
  app.add_flag("--exactly-once", options.exactly_once,
               "Run the relay with kafka.exactly_once (drain, latency, idle)");
  app.require_subcommand(1);

  auto* drain_command = app.add_subcommand("drain", "Backlog drain through the real relay");
  drain_command->add_option("--history", options.history, "Published rows kept in the table")
      ->capture_default_str();
  drain_command->add_flag("--delete-on-publish", options.delete_on_publish,
                          "Delete rows once published (retention.delete_on_publish)");
  auto* sql_command = app.add_subcommand("sql-ceiling", "Claim + record SQL alone");
  sql_command->add_flag("--delete-on-publish", options.delete_on_publish,
                        "Record deliveries as the relay does with retention.delete_on_publish");
  auto* kafka_command = app.add_subcommand("kafka-ceiling", "The producer alone");

  LatencyOptions latency_options;
  auto* latency_command =
      app.add_subcommand("latency", "Commit-to-ack latency under a steady write rate");
  latency_command->add_option("--rate", latency_options.rate, "Messages per second")
      ->capture_default_str();
  latency_command->add_option("--seconds", latency_options.seconds, "Duration")
      ->capture_default_str();
  latency_command->add_option("--writers", latency_options.writers, "Writer connections")
      ->capture_default_str();
  latency_command->add_flag(
      "--hold-snapshot", latency_options.hold_snapshot,
      "Hold a REPEATABLE READ snapshot in the database for the whole run (a long transaction)");
  latency_command
      ->add_option("--held-backlog", latency_options.held_backlog,
                   "Rows waiting in a topic Kafka refuses (missing, auto-creation off), loaded "
                   "before the writers start")
      ->capture_default_str();
  bool with_notify = false;
  latency_command->add_flag("--notify", with_notify,
                            "NOTIFY wake-up instead of the default adaptive polling");

  int max_concurrent_checks = 32;
  auto* checkback_command =
      app.add_subcommand("checkback", "Resolve --rows stale unknown rows via the sweeper");
  checkback_command
      ->add_option("--max-concurrent-checks", max_concurrent_checks, "Endpoint concurrency")
      ->capture_default_str();

  int clients = 8, seconds = 15;
  auto* writer_command =
      app.add_subcommand("writer-overhead", "Writers' TPS with and without outbox and NOTIFY");
  writer_command->add_option("--clients", clients, "pgbench clients")->capture_default_str();
  writer_command->add_option("--seconds", seconds, "pgbench duration per case")
      ->capture_default_str();

  int idle_seconds = 10;
  auto* idle_command =
      app.add_subcommand("idle", "The relay's CPU while nothing is to be done, defaults");
  idle_command->add_option("--seconds", idle_seconds, "How long to measure")->capture_default_str();

  RaceOptions race_options;
  std::vector<std::string> drain_cases, rate_cases;
  auto* race_command = app.add_subcommand(
      "race", "Debezium on Kafka Connect against the relay, alternating (scripts/peer race)");
  race_command->add_option("--connect-libs", race_options.connect_libs, "Kafka Connect's jars")
      ->required();
  race_command
      ->add_option("--plugin-path", race_options.plugin_path,
                   "Connect's plugin.path, holding Debezium's plugin directory")
      ->required();
  race_command->add_option("--drain", drain_cases,
                           "ROWS:RUNS, a drain case (repeatable; default 1000000:3 5000000:1)");
  race_command->add_option("--rate", rate_cases,
                           "ROWS_PER_SECOND:RUNS, a latency case (repeatable; default 1000:3 "
                           "5000:1)");
  race_command->add_option("--seconds", race_options.seconds, "Each latency run's duration")
      ->capture_default_str();
  race_command->add_option("--writers", race_options.writers, "Writer connections")
      ->capture_default_str();

  CLI11_PARSE(app, argc, argv);
  auto cases = [](const std::vector<std::string>& given, auto& into) {
    if (given.empty()) return;
    into.clear();
    for (const std::string& text : given) {
      const auto colon = text.find(':');
      into.emplace_back(std::stol(text.substr(0, colon)),
                        colon == std::string::npos ? 1 : std::stoi(text.substr(colon + 1)));
    }
  };
  try {
    cases(drain_cases, race_options.drains);
    cases(rate_cases, race_options.rates);
  } catch (const std::exception&) {
    std::cerr << "relay_bench: --drain and --rate take N:RUNS, e.g. 1000000:3\n";
    return 64;
  }
  for (const auto& text : drain_cases) race_options.command_line += " --drain " + text;
  for (const auto& text : rate_cases) race_options.command_line += " --rate " + text;
  if (race_options.seconds != RaceOptions{}.seconds) {
    race_options.command_line += " --seconds " + std::to_string(race_options.seconds);
  }
  // Standard output carries only the figures.
  spdlog::set_default_logger(spdlog::stderr_color_mt("bench"));
  latency_options.notify = with_notify;
  try {
    if (!*sql_command && !*writer_command) require_kafka(options);
    if (*drain_command) return drain(options);
    if (*sql_command) return sql_ceiling(options);
    if (*kafka_command) return kafka_ceiling(options);
    if (*latency_command) return latency(options, latency_options);
    if (*checkback_command) return checkback(options, max_concurrent_checks);
    if (*writer_command) return writer_overhead(options, clients, seconds);
    if (*idle_command) return idle(options, idle_seconds);
    if (*race_command) return race(options, race_options);
  } catch (const std::exception& error) {
    std::cerr << "relay_bench: " << error.what() << "\n";
    return 1;
  }
  return 0;
}
