// The relay's configuration: YAML -> a validated Config, or a ConfigError naming file, line and
// key.
//
// Every key is declared once (name, type, default, range, one sentence of meaning) in config.cpp;
// parsing, unknown-key rejection and the reference table in the README all come from that table.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "relay/config/env_substitution.hpp"

namespace outbox {

enum class LogFormat { text, json };
/// What happens to later rows of a key whose earlier row was parked as dead.
enum class DeadKeyPolicy {
  block,  ///< they wait until an operator requeues or discards the dead row (strict per-key order)
  skip,   ///< they are published; the dead row is out of the key's sequence
};

struct PostgresConfig {
  std::string url;  ///< libpq connection string or URI; may hold a password, never log it raw
  std::chrono::milliseconds connect_timeout{5000};

  bool operator==(const PostgresConfig&) const = default;
};

struct KafkaConfig {
  std::string bootstrap_servers;
  /// Any librdkafka property, passed through verbatim (security.protocol, sasl.*, ssl.*, ...).
  /// Values of keys that look secret (password, secret, key) are masked when printed.
  std::map<std::string, std::string> properties;
  std::chrono::milliseconds delivery_timeout{0};  ///< message.timeout.ms; 0 = retry forever
  std::chrono::milliseconds linger{1};            ///< linger.ms
  std::int64_t queue_max_kbytes = 65536;          ///< queue.buffering.max.kbytes
  std::string compression = "none";               ///< compression.type
  /// Publish through Kafka transactions of up to relay.max_in_flight_batches batches, with their
  /// ids in the marker topic (README, "Exactly-once delivery").
  bool exactly_once = false;
  std::string marker_topic = "outbox-relay.markers";
  /// "auto": "outbox-relay.<database system identifier>.<database name>", so relays of different
  /// databases sharing a cluster never fence each other.
  std::string transactional_id_prefix = "auto";
  std::chrono::milliseconds transaction_timeout{60000};  ///< transaction.timeout.ms

  bool operator==(const KafkaConfig&) const = default;
};

struct RelayConfig {
  std::int32_t batch_size = 1000;
  std::int64_t batch_max_bytes = 4 << 20;  ///< payload and key bytes one claim may read
  std::int32_t max_in_flight_batches = 4;
  std::chrono::milliseconds poll_interval{1000};   ///< longest wait between two looks
  std::chrono::milliseconds poll_interval_min{5};  ///< wait after a look that found rows
  bool notify = false;                             ///< LISTEN for the insert trigger's NOTIFY
  std::int32_t lanes = 16;                         ///< a power of two; the same on every instance
  std::chrono::milliseconds lane_rebalance_interval{1000};
  /// An instance that has not renewed its heartbeat for this long loses its lanes.
  std::chrono::milliseconds lease_timeout{15000};
  /// How often the claim looks for pending rows from the first id again (claim_floor.hpp).
  std::chrono::milliseconds claim_rescan_interval{10000};
  std::chrono::milliseconds backoff_initial{100};
  std::chrono::milliseconds backoff_max{30000};
  std::chrono::milliseconds shutdown_timeout{10000};
  DeadKeyPolicy dead_key_policy = DeadKeyPolicy::block;
  /// A batch not acknowledged within this long leaves the in-order chain and holds its topics.
  std::chrono::milliseconds topic_stall_timeout{5000};

  bool operator==(const RelayConfig&) const = default;
};

struct RoutingConfig {
  std::string topic_column = "topic";     ///< the outbox column whose value names the topic
  std::string topic_pattern = "{value}";  ///< "{value}" is replaced by that column's value
  std::string id_header = "outbox-id";    ///< header carrying the row id, for consumer dedup

  bool operator==(const RoutingConfig&) const = default;
};

/// One writer's status-check endpoint (checkback.endpoints.<producer group>).
struct CheckEndpointConfig {
  std::string url;                          ///< http:// or https://; redirects not followed
  std::chrono::milliseconds timeout{3000};  ///< whole request, connect to last byte
  std::string authorization;                ///< Authorization header value; never logged
  std::string ca_file;    ///< PEM CAs that verify an https endpoint, instead of the system's
  std::string cert_file;  ///< PEM client certificate, for mutual TLS
  std::string key_file;   ///< its PEM private key (omitted: cert_file holds both)
  std::int32_t max_concurrent_checks = 8;
  std::int32_t max_checks_per_second = 100;

  bool operator==(const CheckEndpointConfig&) const = default;
};

struct CheckbackConfig {
  bool enabled = true;
  std::chrono::milliseconds check_delay{6000};  ///< RocketMQ's transactionTimeout
  std::chrono::milliseconds check_interval{30000};
  std::chrono::milliseconds check_interval_max{300000};
  std::int32_t max_checks = 15;
  std::int32_t batch_size = 200;
  std::chrono::milliseconds sweep_interval{1000};
  std::int64_t max_response_bytes = 65536;
  std::map<std::string, CheckEndpointConfig> endpoints;  ///< by producer group

  bool operator==(const CheckbackConfig&) const = default;
};

/// How long finished rows (published, rolled back, discarded) stay for audit.
struct RetentionConfig {
  bool enabled = true;
  std::chrono::milliseconds keep_finished{std::chrono::hours(24 * 7)};
  std::int32_t batch_size = 1000;
  std::int64_t batch_max_bytes = 4 << 20;  ///< payload and key bytes one claim may read
  std::chrono::milliseconds interval{60000};
  bool delete_on_publish = false;          ///< delete rows once delivered instead of marking them
  std::int64_t vacuum_dead_rows = 200000;  ///< VACUUM after this many dead versions; 0 = never

  bool operator==(const RetentionConfig&) const = default;
};

struct MetricsConfig {
  bool enabled = true;
  std::string listen = "127.0.0.1:9187";             ///< host:port of /metrics, /healthz, /readyz
  std::chrono::milliseconds refresh_interval{5000};  ///< how often the SQL gauges are read

  bool operator==(const MetricsConfig&) const = default;
};

struct LoggingConfig {
  std::string level = "info";  ///< trace, debug, info, warn, error
  LogFormat format = LogFormat::text;

  bool operator==(const LoggingConfig&) const = default;
};

struct Config {
  std::string source_file;  ///< where it was read from, for messages
  PostgresConfig postgres;
  KafkaConfig kafka;
  RelayConfig relay;
  RoutingConfig routing;
  CheckbackConfig checkback;
  RetentionConfig retention;
  MetricsConfig metrics;
  LoggingConfig logging;

  bool operator==(const Config&) const = default;
};

/// A configuration problem a user can fix: `file:line: key: why` (line is 1-based; 0 if unknown).
class ConfigError : public std::runtime_error {
 public:
  ConfigError(std::string file, int line, std::string key, std::string why);
  const std::string& file() const { return file_; }
  int line() const { return line_; }
  const std::string& key() const { return key_; }
  const std::string& why() const { return why_; }

 private:
  std::string file_;
  int line_;
  std::string key_;
  std::string why_;
};

/// Reads and validates a YAML file. ${VAR} and ${VAR:-default} in scalar values are substituted
/// first; an undefined variable without a default is an error. Throws ConfigError.
Config load_config_file(const std::string& path, EnvLookup env = lookup_process_env);
/// Same, from text already in memory; `source_name` is used in error messages.
Config load_config_text(const std::string& yaml_text, const std::string& source_name,
                        EnvLookup env = lookup_process_env);

/// The producer's message.max.bytes (kafka.properties, librdkafka's default 1000000 when unset):
/// a row larger than this can never be produced, so it is parked from its size without being read.
std::int64_t producer_message_max_bytes(const KafkaConfig& kafka);

/// The connection URL with any password replaced by "***", safe for logs and errors.
std::string redact_postgres_url(const std::string& url);

/// Every secret value the configuration holds, for SecretRedactor: postgres.url's password (as
/// libpq parses it and as it is written, so a malformed URL's password is known too), the values
/// of kafka.properties whose names say password, secret, token or key material, and each
/// check-back endpoint's authorization value (and its credential after the scheme) and URL
/// password.
std::vector<std::string> configured_secrets(const Config& config);

/// A Markdown table of every key: name, type, default, range, meaning. The README embeds it and
/// tests/unit/config_test.cpp checks that the README and config/relay.yaml mention every key.
std::string render_reference_markdown();
/// Every declared key, dotted ("relay.batch_size"), in declaration order.
std::vector<std::string> declared_keys();
/// The declared default, as YAML text, of every scalar key that has one (not the required keys,
/// the maps or the endpoints' keys): what a test sets to prove the struct defaults agree.
std::vector<std::pair<std::string, std::string>> declared_scalar_defaults();

}  // namespace outbox
