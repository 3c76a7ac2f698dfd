#include "relay/app/commands.hpp"

#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <iostream>
#include <thread>

#include <pthread.h>

#include "relay/app/operator_commands.hpp"
#include "relay/app/signals.hpp"
#include "relay/app/version.hpp"
#include "relay/checkback/sweeper.hpp"
#include "relay/config/config.hpp"
#include "relay/core/periodic.hpp"
#include "relay/core/redaction.hpp"
#include "relay/core/text.hpp"
#include "relay/observe/logging.hpp"
#include "relay/observe/metrics_server.hpp"
#include "relay/maintenance/maintenance.hpp"
#include "relay/pipeline/relay_loop.hpp"
#include "relay/publisher/publisher.hpp"
#include "relay/store/store.hpp"

namespace outbox {

namespace {

constexpr const char* kExitCodesHelp =
    "Exit codes: 0 success, 1 runtime failure, 3 a status threshold passed, 64 bad command line,\n"
    "78 invalid configuration.\n"
    "Documentation: README.md; every configuration key: config/relay.yaml.";

/// A worker thread's body: nothing escapes it (an escaping exception would std::terminate the whole
/// relay). A body that throws is logged and started again after a pause, until the relay stops.
template <typename Body>
auto guarded(const char* name, std::stop_token stop, Body body) {
  return [name, stop, body = std::move(body)]() mutable {
    // Named for top -H, ps -L and a debugger: at most 15 bytes, the kernel's limit.
    pthread_setname_np(pthread_self(), std::string(name).substr(0, 15).c_str());
    std::chrono::milliseconds pause{1000};
    while (!stop.stop_requested()) {
      try {
        body(stop);
        return;
      } catch (const std::exception& error) {
        spdlog::error("event=worker_failed worker={} error=\"{}\" retry_in_ms={}", name,
                      printable(error.what()), pause.count());
      } catch (...) {
        spdlog::error("event=worker_failed worker={} error=unknown retry_in_ms={}", name,
                      pause.count());
      }
      wait_unless_stopped(stop, pause);
      pause = std::min(pause * 2, std::chrono::milliseconds(60000));
    }
  };
}

/// What the command line prints and logs passes through these, once a configuration is loaded.
using Secrets = std::shared_ptr<SecretRedactor>;

Config load_and_set_up(const std::string& config_path, const Secrets& secrets) {
  Config config = load_config_file(config_path);
  *secrets = SecretRedactor(configured_secrets(config));
  configure_logging(config.logging, secrets);
  return config;
}

int run_relay(const std::string& config_path, const Secrets& secrets) {
  const Config config = load_and_set_up(config_path, secrets);
  // Both before any other thread starts: the signal mask is inherited, and libcurl's global
  // initialisation is not thread-safe.
  StopOnSignals stop_on_signals;
  CurlGlobal curl;
  spdlog::info("event=starting config={} postgres={} kafka={} lanes={} batch_size={} checkback={}",
               config_path, redact_postgres_url(config.postgres.url),
               config.kafka.bootstrap_servers, config.relay.lanes, config.relay.batch_size,
               config.checkback.enabled ? "on" : "off");
  Telemetry telemetry;
  std::unique_ptr<MetricsServer> metrics_server;
  if (config.metrics.enabled) {
    metrics_server = std::make_unique<MetricsServer>(config.metrics.listen, telemetry);
    spdlog::info("event=metrics_listening address={} port={}", config.metrics.listen,
                 metrics_server->port());
  }
  // One stop for every loop: a signal, or the relay loop failing for good, ends them all.
  std::stop_source stop;
  std::stop_callback on_signal(stop_on_signals.token(), [&] { stop.request_stop(); });
  std::jthread sweeper, lag_monitor, purger, vacuumer;
  const std::stop_token token = stop.get_token();
  if (config.checkback.enabled) {
    sweeper = std::jthread(guarded("sweeper", token, [&](std::stop_token t) {
      Sweeper(config, telemetry).run(std::move(t));
    }));
  }
  if (config.metrics.enabled) {
    lag_monitor = std::jthread(guarded("lag_monitor", token, [&](std::stop_token t) {
      refresh_lag_gauges(config, telemetry, std::move(t));
    }));
  }
  if (config.retention.enabled) {
    purger = std::jthread(guarded("retention_purger", token, [&](std::stop_token t) {
      run_retention_purge(config, telemetry, std::move(t));
    }));
  }
  if (config.retention.vacuum_dead_rows > 0) {
    vacuumer = std::jthread(guarded("vacuumer", token, [&](std::stop_token t) {
      vacuum_when_due(config, telemetry, std::move(t));
    }));
  }
  try {
    const char* failpoints = std::getenv("RELAY_FAILPOINTS");
    RelayLoop(config, telemetry, parse_failpoints(failpoints ? failpoints : ""))
        .run(stop.get_token());
  } catch (...) {
    stop.request_stop();
    throw;
  }
  return kExitOk;
}

int migrate(const std::string& config_path, const Secrets& secrets) {
  const Config config = load_and_set_up(config_path, secrets);
  const std::vector<int> applied =
      apply_migrations(config.postgres, config.relay.notify, config.relay.lanes);
  std::cout << (applied.empty() ? "schema is up to date"
                                : "applied " + std::to_string(applied.size()) + " migration(s)")
            << "; NOTIFY wake-up " << (config.relay.notify ? "on" : "off") << '\n';
  return kExitOk;
}

int show_lanes(const std::string& config_path, const Secrets& secrets) {
  const Config config = load_and_set_up(config_path, secrets);
  const std::optional<int> stored = stored_lane_count(config.postgres);
  if (!stored) {
    std::cout << "no lane count stored yet; the first migrate or run stores relay.lanes ("
              << config.relay.lanes << ")\n";
    return kExitOk;
  }
  std::cout << "lanes " << *stored << (*stored == config.relay.lanes ? "" : " (relay.lanes in ")
            << (*stored == config.relay.lanes
                    ? ""
                    : config_path + " is " + std::to_string(config.relay.lanes) + ")")
            << '\n';
  return kExitOk;
}

int set_lanes(const std::string& config_path, int lanes, const Secrets& secrets) {
  if (lanes < 1 || lanes > 1024 || (lanes & (lanes - 1)) != 0) {
    std::cerr << "outbox-relay lanes set: the lane count must be a power of two from 1 to 1024 "
                 "(got "
              << lanes << ")\n";
    return kExitUsage;
  }
  const Config config = load_and_set_up(config_path, secrets);
  const int old = change_lane_count(config.postgres, lanes);
  std::cout << "lanes " << old << " -> " << lanes << "; set relay.lanes: " << lanes
            << " in every instance's configuration\n";
  return kExitOk;
}

int check_config(const std::string& config_path, bool print_reference, const Secrets& secrets) {
  if (print_reference) {
    std::cout << render_reference_markdown();
    return kExitOk;
  }
  const Config config = load_config_file(config_path);
  *secrets = SecretRedactor(configured_secrets(config));
  // Everything `run` checks before it connects anywhere, so what run refuses, this refuses too.
  session_connection_string(config.postgres);  // ConfigError when libpq cannot parse it
  validate_producer_config(config.kafka);      // PublisherConfigError
  std::cout << config_path << ": valid (postgres " << redact_postgres_url(config.postgres.url)
            << ", kafka " << config.kafka.bootstrap_servers << ")\n";
  return kExitOk;
}

}  // namespace

/// Counts, thresholds and ids: a negative one is a typo, refused with a message people can read
/// (CLI11's own NonNegativeNumber prints the range up to DBL_MAX).
const CLI::Validator kNotNegative(
    [](std::string& value) -> std::string {
      try {
        if (std::stod(value) >= 0) return {};
      } catch (const std::exception&) {
        return "must be a number (got " + value + ")";
      }
      return "must be 0 or more (got " + value + ")";
    },
    ">= 0");

int run_command_line(int argc, char** argv) {
  CLI::App app{
      "outbox-relay: publishes PostgreSQL outbox rows to Apache Kafka, at least once, "
      "in per-key order.",
      "outbox-relay"};
  app.footer(kExitCodesHelp);
  app.set_version_flag(
      "--version", [] { return version_text(); },
      "Print the version, the git revision and the libraries' versions");
  app.require_subcommand(1);
  std::string config_path;
  auto add_config_option = [&](CLI::App* command) {
    return command->add_option("-c,--config", config_path, "YAML configuration file")
        ->envname("RELAY_CONFIG");
  };

  CLI::App* run = app.add_subcommand("run", "Relay outbox rows to Kafka until SIGINT/SIGTERM");
  add_config_option(run)->required();
  CLI::App* migrate_command =
      app.add_subcommand("migrate", "Create or upgrade the outbox schema (safe to repeat)");
  add_config_option(migrate_command)->required();
  CLI::App* check = app.add_subcommand("check-config", "Validate a configuration file and exit");
  bool print_reference = false;
  add_config_option(check);
  check->add_flag("--print-reference", print_reference,
                  "Print the Markdown reference of every configuration key");

  CLI::App* status = app.add_subcommand(
      "status", "Lag per topic, read from the database (works without a running relay)");
  add_config_option(status)->required();
  bool json = false;
  StatusThresholds thresholds;
  status->add_flag("--json", json, "Print JSON instead of a table");
  status
      ->add_option("--max-lag-seconds", thresholds.max_lag_seconds,
                   "Exit 3 when the oldest pending row is older than this")
      ->check(kNotNegative);
  status
      ->add_option("--max-backlog", thresholds.max_backlog,
                   "Exit 3 when more rows than this are pending")
      ->check(kNotNegative);
  status->add_option("--max-dead", thresholds.max_dead, "Exit 3 when more rows than this are dead")
      ->check(kNotNegative);

  CLI::App* dead = app.add_subcommand("dead", "Inspect, requeue or discard dead rows");
  dead->require_subcommand(1);
  DeadRowFilter filter;
  int limit = 100;
  int batch_size = 1000;
  std::string why;
  auto add_filters = [&](CLI::App* command) {
    add_config_option(command)->required();
    command->add_option("--topic", filter.topic, "Only rows of this topic");
    command->add_option("--from-id", filter.from_id, "Only rows with id >= this")
        ->check(kNotNegative);
    command->add_option("--to-id", filter.to_id, "Only rows with id <= this")->check(kNotNegative);
    command->add_option("--reason", filter.reason_contains,
                        "Only rows whose reason contains this (case-insensitive)");
  };
  CLI::App* dead_list = dead->add_subcommand("list", "List dead rows, oldest first");
  add_filters(dead_list);
  dead_list->add_option("--limit", limit, "At most this many rows")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  dead_list->add_flag("--json", json, "Print JSON instead of a table");
  CLI::App* dead_requeue = dead->add_subcommand(
      "requeue", "Put dead rows back: to pending, or to unknown after an exhausted check-back");
  add_filters(dead_requeue);
  dead_requeue->add_option("--batch-size", batch_size, "Rows per transaction")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  CLI::App* dead_discard =
      dead->add_subcommand("discard", "Give up on dead rows: never published, reason recorded");
  add_filters(dead_discard);
  dead_discard->add_option("--why", why, "The reason, recorded on each row")->required();
  dead_discard->add_option("--batch-size", batch_size, "Rows per transaction")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();

  CLI::App* lanes_command =
      app.add_subcommand("lanes", "Show or change the lane count all instances share");
  lanes_command->require_subcommand(1);
  CLI::App* lanes_show = lanes_command->add_subcommand("show", "Print the stored lane count");
  add_config_option(lanes_show)->required();
  CLI::App* lanes_set = lanes_command->add_subcommand(
      "set", "Store a new lane count (a power of two); refused while any instance runs");
  add_config_option(lanes_set)->required();
  int new_lanes = 0;
  lanes_set->add_option("LANES", new_lanes, "The new count")->required();

  CLI::App* purge_command = app.add_subcommand(
      "purge", "Delete finished rows older than retention.keep_finished_ms, in batches");
  add_config_option(purge_command)->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    const int code = app.exit(error);  // prints help or the error to the right stream
    return code == 0 ? kExitOk : kExitUsage;
  }

  const Secrets secrets = std::make_shared<SecretRedactor>();
  auto safe = [&](const std::exception& error) { return secrets->redact(error.what()); };
  try {
    if (*run) return run_relay(config_path, secrets);
    if (*migrate_command) return migrate(config_path, secrets);
    if (*status) return print_status(load_and_set_up(config_path, secrets), json, thresholds);
    if (*dead_list) return list_dead(load_and_set_up(config_path, secrets), filter, limit, json);
    if (*dead_requeue) {
      return requeue_dead(load_and_set_up(config_path, secrets), filter, batch_size);
    }
    if (*dead_discard) {
      return discard_dead(load_and_set_up(config_path, secrets), filter, why, batch_size);
    }
    if (*purge_command) return purge(load_and_set_up(config_path, secrets));
    if (*lanes_show) return show_lanes(config_path, secrets);
    if (*lanes_set) return set_lanes(config_path, new_lanes, secrets);
    if (check->parsed() && !print_reference && config_path.empty()) {
      std::cerr << "outbox-relay check-config: --config is required\n";
      return kExitUsage;
    }
    return check_config(config_path, print_reference, secrets);
  } catch (const ConfigError& error) {
    std::cerr << "outbox-relay: invalid configuration: " << safe(error) << '\n';
    return kExitConfig;
  } catch (const LaneCountMismatch& error) {
    std::cerr << "outbox-relay: invalid configuration: " << safe(error) << '\n';
    return kExitConfig;
  } catch (const PublisherConfigError& error) {
    std::cerr << "outbox-relay: invalid Kafka configuration: " << safe(error) << '\n';
    return kExitConfig;
  } catch (const std::exception& error) {
    std::cerr << "outbox-relay: " << safe(error) << '\n';
    return kExitFailure;
  }
}

}  // namespace outbox
