#include "relay/config/config.hpp"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <regex>
#include <sstream>

namespace outbox {

namespace {

using std::chrono::milliseconds;

enum class ValueKind { string, integer, boolean, choice, map, endpoints };

/// One configuration key, declared once: everything else (parsing, unknown-key rejection, the
/// README table) is derived from this table.
struct Property {
  std::string_view name;  ///< dotted: section.key
  ValueKind kind;
  std::string_view default_text;  ///< as shown in the reference; empty = required
  std::string_view range;         ///< for integers "min..max"; for choices "a|b|c"
  std::string_view doc;
  std::int64_t min = 0;
  std::int64_t max = 0;
  /// Stores the already-validated scalar text (or, for maps, is unused).
  std::function<void(Config&, const std::string&)> store;
};

std::int64_t to_int(const std::string& text) { return std::stoll(text); }

const std::vector<Property>& properties() {
  static const std::vector<Property> table = {
      {"postgres.url", ValueKind::string, "", "",
       "libpq connection string or URI of the database holding the outbox.", 0, 0,
       [](Config& c, const std::string& v) { c.postgres.url = v; }},
      {"postgres.connect_timeout_ms", ValueKind::integer, "5000", "100..600000",
       "Give up a connection attempt after this long (then back off and retry).", 100, 600000,
       [](Config& c, const std::string& v) {
         c.postgres.connect_timeout = milliseconds(to_int(v));
       }},
      {"kafka.bootstrap_servers", ValueKind::string, "", "",
       "Comma-separated host:port list of Kafka brokers.", 0, 0,
       [](Config& c, const std::string& v) { c.kafka.bootstrap_servers = v; }},
      {"kafka.properties", ValueKind::map, "{}", "",
       "librdkafka properties passed through verbatim (security.protocol, sasl.*, ssl.*, ...).", 0,
       0, nullptr},
      {"kafka.delivery_timeout_ms", ValueKind::integer, "0", "0..2147483647",
       "librdkafka message.timeout.ms; 0 retries until the broker answers (the order-safe choice).",
       0, 2147483647,
       [](Config& c, const std::string& v) { c.kafka.delivery_timeout = milliseconds(to_int(v)); }},
      {"kafka.linger_ms", ValueKind::integer, "1", "0..900000",
       "How long the producer waits to fill a Kafka batch (latency against throughput).", 0, 900000,
       [](Config& c, const std::string& v) { c.kafka.linger = milliseconds(to_int(v)); }},
      {"kafka.queue_max_kbytes", ValueKind::integer, "65536", "1..2097151",
       "Bound on the producer's memory for queued messages (queue.buffering.max.kbytes).", 1,
       2097151, [](Config& c, const std::string& v) { c.kafka.queue_max_kbytes = to_int(v); }},
      {"kafka.compression", ValueKind::choice, "none", "none|gzip|snappy|lz4|zstd",
       "Compression of produced batches (compression.type).", 0, 0,
       [](Config& c, const std::string& v) { c.kafka.compression = v; }},
      {"kafka.exactly_once", ValueKind::boolean, "false", "true|false",
       "Publish through Kafka transactions that write their ids to the marker topic: each row "
       "once among committed records (consumers read with isolation.level=read_committed).",
       0, 0, [](Config& c, const std::string& v) { c.kafka.exactly_once = v == "true"; }},
      {"kafka.marker_topic", ValueKind::string, "outbox-relay.markers", "",
       "exactly_once: the relay's own compacted topic of transaction markers (partition 0), "
       "created at start.",
       0, 0, [](Config& c, const std::string& v) { c.kafka.marker_topic = v; }},
      {"kafka.transactional_id_prefix", ValueKind::string, "auto", "",
       "exactly_once: prefix of the producers' transactional.id; auto derives it from the "
       "database's system identifier and name.",
       0, 0, [](Config& c, const std::string& v) { c.kafka.transactional_id_prefix = v; }},
      {"kafka.transaction_timeout_ms", ValueKind::integer, "60000", "1000..900000",
       "exactly_once: transaction.timeout.ms; a transaction not committed by then is aborted by "
       "the broker.",
       1000, 900000,
       [](Config& c, const std::string& v) {
         c.kafka.transaction_timeout = milliseconds(to_int(v));
       }},
      {"relay.batch_size", ValueKind::integer, "1000", "1..100000",
       "Rows claimed, produced and recorded together.", 1, 100000,
       [](Config& c, const std::string& v) { c.relay.batch_size = static_cast<int>(to_int(v)); }},
      {"relay.batch_max_bytes", ValueKind::integer, "4194304", "1024..1073741824",
       "Payload and key bytes one claim reads at most (the first row always comes); with "
       "max_in_flight_batches it bounds the relay's memory for rows.",
       1024, 1073741824,
       [](Config& c, const std::string& v) { c.relay.batch_max_bytes = to_int(v); }},
      {"relay.max_in_flight_batches", ValueKind::integer, "4", "1..64",
       "Batches between claim and record at once; bounds memory and duplicates after a crash.", 1,
       64,
       [](Config& c, const std::string& v) {
         c.relay.max_in_flight_batches = static_cast<int>(to_int(v));
       }},
      {"relay.poll_interval_ms", ValueKind::integer, "1000", "10..3600000",
       "Longest wait between two looks for pending rows, NOTIFY or not.", 10, 3600000,
       [](Config& c, const std::string& v) { c.relay.poll_interval = milliseconds(to_int(v)); }},
      {"relay.poll_interval_min_ms", ValueKind::integer, "5", "1..3600000",
       "Wait after a look that found rows; each empty look doubles it up to poll_interval_ms.", 1,
       3600000,
       [](Config& c, const std::string& v) {
         c.relay.poll_interval_min = milliseconds(to_int(v));
       }},
      {"relay.notify", ValueKind::boolean, "false", "true|false",
       "LISTEN for the insert trigger's NOTIFY; migrate turns the trigger on or off to match.", 0,
       0, [](Config& c, const std::string& v) { c.relay.notify = v == "true"; }},
      {"relay.lanes", ValueKind::integer, "16", "1..1024, a power of two",
       "Slices of the key space that relay instances divide among them; stored in the database on "
       "first use, and an instance with another count refuses to start (outbox-relay lanes set).",
       1, 1024,
       [](Config& c, const std::string& v) { c.relay.lanes = static_cast<int>(to_int(v)); }},
      {"relay.lane_rebalance_interval_ms", ValueKind::integer, "1000", "100..600000",
       "How often an instance takes free lanes or gives up extra ones.", 100, 600000,
       [](Config& c, const std::string& v) {
         c.relay.lane_rebalance_interval = milliseconds(to_int(v));
       }},
      {"relay.lease_timeout_ms", ValueKind::integer, "15000", "1000..600000",
       "An instance that has not renewed its heartbeat (every lane_rebalance_interval_ms) for this "
       "long is ended by the others and its lanes move; it stops producing before that.",
       1000, 600000,
       [](Config& c, const std::string& v) { c.relay.lease_timeout = milliseconds(to_int(v)); }},
      {"relay.claim_rescan_interval_ms", ValueKind::integer, "10000", "100..3600000",
       "Claims start at the lowest id still pending; this often (or, for a look that took t, "
       "19t after it) a session of its own looks below that, for rows given an id by hand or "
       "long before their transaction wrote.",
       100, 3600000,
       [](Config& c, const std::string& v) {
         c.relay.claim_rescan_interval = milliseconds(to_int(v));
       }},
      {"relay.backoff_initial_ms", ValueKind::integer, "100", "1..600000",
       "First retry delay after a PostgreSQL or Kafka failure; doubles per failure, with jitter.",
       1, 600000,
       [](Config& c, const std::string& v) { c.relay.backoff_initial = milliseconds(to_int(v)); }},
      {"relay.backoff_max_ms", ValueKind::integer, "30000", "1..3600000",
       "Longest retry delay; at least backoff_initial_ms.", 1, 3600000,
       [](Config& c, const std::string& v) { c.relay.backoff_max = milliseconds(to_int(v)); }},
      {"relay.shutdown_timeout_ms", ValueKind::integer, "10000", "0..600000",
       "On SIGTERM, wait this long for in-flight deliveries before exiting.", 0, 600000,
       [](Config& c, const std::string& v) { c.relay.shutdown_timeout = milliseconds(to_int(v)); }},
      {"relay.dead_key_policy", ValueKind::choice, "block", "block|skip",
       "Whether later rows of a key wait behind its dead row (block) or go past it (skip).", 0, 0,
       [](Config& c, const std::string& v) {
         c.relay.dead_key_policy = v == "skip" ? DeadKeyPolicy::skip : DeadKeyPolicy::block;
       }},
      {"relay.topic_stall_timeout_ms", ValueKind::integer, "5000", "100..3600000",
       "Rows Kafka has not acknowledged after this long hold back their topic only (no leader, "
       "too few in-sync replicas, a broker away); other topics flow past them.",
       100, 3600000,
       [](Config& c, const std::string& v) {
         c.relay.topic_stall_timeout = milliseconds(to_int(v));
       }},
      {"routing.topic_column", ValueKind::string, "topic", "a SQL identifier",
       "The outbox column whose value routes the row (e.g. aggregate_type, Debezium style).", 0, 0,
       [](Config& c, const std::string& v) { c.routing.topic_column = v; }},
      {"routing.topic_pattern", ValueKind::string, "{value}", "",
       "Topic name; {value} is replaced by the routing column's value.", 0, 0,
       [](Config& c, const std::string& v) { c.routing.topic_pattern = v; }},
      {"routing.id_header", ValueKind::string, "outbox-id", "",
       "Kafka header carrying the row id, for consumers' deduplication.", 0, 0,
       [](Config& c, const std::string& v) { c.routing.id_header = v; }},
      {"checkback.enabled", ValueKind::boolean, "true", "true|false",
       "Run the sweeper that asks writers about half messages left unknown.", 0, 0,
       [](Config& c, const std::string& v) { c.checkback.enabled = v == "true"; }},
      {"checkback.check_delay_ms", ValueKind::integer, "6000", "0..86400000",
       "Age at which an unknown row is first checked (outbox.prepare can override per row).", 0,
       86400000,
       [](Config& c, const std::string& v) { c.checkback.check_delay = milliseconds(to_int(v)); }},
      {"checkback.check_interval_ms", ValueKind::integer, "30000", "100..86400000",
       "Wait before asking again after UNKNOWN or a failed check; grows with each check.", 100,
       86400000,
       [](Config& c, const std::string& v) {
         c.checkback.check_interval = milliseconds(to_int(v));
       }},
      {"checkback.check_interval_max_ms", ValueKind::integer, "300000", "100..86400000",
       "Cap on the growing wait between checks; at least check_interval_ms.", 100, 86400000,
       [](Config& c, const std::string& v) {
         c.checkback.check_interval_max = milliseconds(to_int(v));
       }},
      {"checkback.max_checks", ValueKind::integer, "15", "1..1000",
       "Checks sent before an undecided row is parked dead as \"check-back exhausted\".", 1, 1000,
       [](Config& c, const std::string& v) {
         c.checkback.max_checks = static_cast<int>(to_int(v));
       }},
      {"checkback.batch_size", ValueKind::integer, "200", "1..10000", "Due rows claimed per sweep.",
       1, 10000,
       [](Config& c, const std::string& v) {
         c.checkback.batch_size = static_cast<int>(to_int(v));
       }},
      {"checkback.sweep_interval_ms", ValueKind::integer, "1000", "10..3600000",
       "How often the sweeper looks for due rows when it found none.", 10, 3600000,
       [](Config& c, const std::string& v) {
         c.checkback.sweep_interval = milliseconds(to_int(v));
       }},
      {"checkback.max_response_bytes", ValueKind::integer, "65536", "64..16777216",
       "A longer answer is cut off and counts as UNKNOWN.", 64, 16777216,
       [](Config& c, const std::string& v) { c.checkback.max_response_bytes = to_int(v); }},
      {"checkback.endpoints", ValueKind::endpoints, "{}", "",
       "Status-check endpoint per producer group; keys below, under each group's name.", 0, 0,
       nullptr},
      {"retention.enabled", ValueKind::boolean, "true", "true|false",
       "Delete finished rows (published, rolled back, discarded) once older than keep_finished_ms.",
       0, 0, [](Config& c, const std::string& v) { c.retention.enabled = v == "true"; }},
      {"retention.keep_finished_ms", ValueKind::integer, "604800000", "0..31536000000",
       "How long finished rows stay for audit (default 7 days).", 0, 31536000000LL,
       [](Config& c, const std::string& v) {
         c.retention.keep_finished = milliseconds(to_int(v));
       }},
      {"retention.batch_size", ValueKind::integer, "1000", "1..100000",
       "Rows deleted per short transaction, so the purge never holds locks for long.", 1, 100000,
       [](Config& c, const std::string& v) {
         c.retention.batch_size = static_cast<int>(to_int(v));
       }},
      {"retention.interval_ms", ValueKind::integer, "60000", "1000..86400000",
       "How often the purge runs.", 1000, 86400000,
       [](Config& c, const std::string& v) { c.retention.interval = milliseconds(to_int(v)); }},
      {"retention.delete_on_publish", ValueKind::boolean, "false", "true|false",
       "Delete each row once Kafka acknowledged it, instead of marking it published (no audit "
       "trail: partition and offset are not kept).",
       0, 0, [](Config& c, const std::string& v) { c.retention.delete_on_publish = v == "true"; }},
      {"retention.vacuum_dead_rows", ValueKind::integer, "200000", "0..1000000000",
       "VACUUM the outbox table once this many dead row versions piled up since the last one, so "
       "claims do not step over them (0: leave it to autovacuum; needs the table's owner).",
       0, 1000000000,
       [](Config& c, const std::string& v) { c.retention.vacuum_dead_rows = to_int(v); }},
      {"metrics.enabled", ValueKind::boolean, "true", "true|false",
       "Serve /metrics, /healthz and /readyz.", 0, 0,
       [](Config& c, const std::string& v) { c.metrics.enabled = v == "true"; }},
      {"metrics.listen", ValueKind::string, "127.0.0.1:9187", "host:port",
       "Where the monitoring listener binds; loopback by default.", 0, 0,
       [](Config& c, const std::string& v) { c.metrics.listen = v; }},
      {"metrics.refresh_interval_ms", ValueKind::integer, "5000", "100..3600000",
       "How often the gauges read from PostgreSQL (backlog, lag, unknown, dead) are refreshed.",
       100, 3600000,
       [](Config& c,
          const std::string& v) { c.metrics.refresh_interval = milliseconds(to_int(v)); }},
      {"logging.level", ValueKind::choice, "info", "trace|debug|info|warn|error",
       "Least severe log level written (to stderr).", 0, 0,
       [](Config& c, const std::string& v) { c.logging.level = v; }},
      {"logging.format", ValueKind::choice, "text", "text|json",
       "One key=value line per event, or one JSON object per line.", 0, 0,
       [](Config& c, const std::string& v) {
         c.logging.format = v == "json" ? LogFormat::json : LogFormat::text;
       }},
  };
  return table;
}

/// The keys of one endpoint, checkback.endpoints.<group>.<key>; declared once, like the others.
struct EndpointProperty {
  Property spec;  // name is the leaf key; store is unused
  std::function<void(CheckEndpointConfig&, const std::string&)> store;
};

const std::vector<EndpointProperty>& endpoint_properties() {
  static const std::vector<EndpointProperty> table = {
      {{"url", ValueKind::string, "", "http(s)://...",
        "The writer's status-check URL; redirects are not followed.", 0, 0, nullptr},
       [](CheckEndpointConfig& e, const std::string& v) { e.url = v; }},
      {{"timeout_ms", ValueKind::integer, "3000", "10..600000",
        "Whole-request timeout; a slower answer counts as UNKNOWN.", 10, 600000, nullptr},
       [](CheckEndpointConfig& e, const std::string& v) { e.timeout = milliseconds(to_int(v)); }},
      {{"authorization", ValueKind::string, "\"\"", "",
        "Value of the Authorization header sent with each check (never logged).", 0, 0, nullptr},
       [](CheckEndpointConfig& e, const std::string& v) { e.authorization = v; }},
      {{"ca_file", ValueKind::string, "\"\"", "path",
        "PEM file of the CAs that verify this https endpoint (a private CA), instead of the "
        "system's.",
        0, 0, nullptr},
       [](CheckEndpointConfig& e, const std::string& v) { e.ca_file = v; }},
      {{"cert_file", ValueKind::string, "\"\"", "path",
        "PEM client certificate the relay presents to this https endpoint (mutual TLS).", 0, 0,
        nullptr},
       [](CheckEndpointConfig& e, const std::string& v) { e.cert_file = v; }},
      {{"key_file", ValueKind::string, "\"\"", "path",
        "PEM private key of cert_file (omit it when cert_file holds the key too).", 0, 0, nullptr},
       [](CheckEndpointConfig& e, const std::string& v) { e.key_file = v; }},
      {{"max_concurrent_checks", ValueKind::integer, "8", "1..1024",
        "Checks in flight at once to this endpoint.", 1, 1024, nullptr},
       [](CheckEndpointConfig& e, const std::string& v) {
         e.max_concurrent_checks = static_cast<int>(to_int(v));
       }},
      {{"max_checks_per_second", ValueKind::integer, "100", "1..100000",
        "Checks started per second at most, to this endpoint.", 1, 100000, nullptr},
       [](CheckEndpointConfig& e, const std::string& v) {
         e.max_checks_per_second = static_cast<int>(to_int(v));
       }},
  };
  return table;
}

int line_of(const YAML::Node& node) { return node.Mark().is_null() ? 0 : node.Mark().line + 1; }

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

/// `dotted` is a full key (relay.batchsize) or a section (kafak); it is compared with both.
std::string unknown_key_hint(const std::string& dotted) {
  std::string best;
  std::size_t best_distance = 3;
  for (const Property& property : properties()) {
    for (const std::string_view candidate :
         {property.name, property.name.substr(0, property.name.find('.'))}) {
      const std::size_t distance = edit_distance(dotted, candidate);
      if (distance < best_distance) {
        best_distance = distance;
        best = std::string(candidate);
      }
    }
  }
  return best.empty() ? "unknown key" : "unknown key; did you mean " + best + "?";
}

/// Refuses YAML aliases before anything walks the document: yaml-cpp expands an alias into the
/// node it names, so 739 bytes of nested aliases made 10^8 leaves (a "billion laughs") and the
/// relay hung on its own configuration. No setting needs one; the parse of events is linear.
class AliasRefuser final : public YAML::EventHandler {
 public:
  explicit AliasRefuser(const std::string& source) : source_(source) {}
  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override {
    throw ConfigError(source_, mark.line + 1, "",
                      "YAML aliases (*name) are not supported; write the value out");
  }
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}

 private:
  const std::string& source_;
};

// A configuration is a page of settings; anything far larger is a mistake or an attack, and
// yaml-cpp holds the whole document (a 50 MB file took 885 MB and 44 s).
constexpr std::uintmax_t kMaxConfigBytes = 1 << 20;

/// Parses the text of one file with the state that every error needs.
class Parser {
 public:
  Parser(std::string source, EnvLookup env) : source_(std::move(source)), env_(env) {}

  Config parse(const std::string& text) {
    if (text.size() > kMaxConfigBytes) {
      throw ConfigError(source_, 0, "",
                        "is " + std::to_string(text.size()) +
                            " bytes; a configuration is at most " +
                            std::to_string(kMaxConfigBytes) + " bytes");
    }
    YAML::Node root;
    try {
      std::istringstream events(text);
      YAML::Parser parser(events);
      AliasRefuser refuser(source_);
      // The first document only, as YAML::Load reads: on some invalid input yaml-cpp's parser
      // reports empty documents for ever (the fuzzer found one).
      parser.HandleNextDocument(refuser);
      root = YAML::Load(text);
    } catch (const YAML::ParserException& error) {
      throw ConfigError(source_, error.mark.line + 1, "", "invalid YAML: " + error.msg);
    }
    Config config;
    config.source_file = source_;
    if (root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
    if (!root.IsMap()) throw ConfigError(source_, line_of(root), "", "the document must be a map");
    reject_bad_keys(root, "");

    std::vector<bool> seen(properties().size(), false);
    for (const auto& section : root) {
      const std::string section_name = section.first.as<std::string>();
      const bool known_section =
          std::any_of(properties().begin(), properties().end(), [&](const Property& property) {
            return property.name.substr(0, property.name.find('.')) == section_name;
          });
      if (!known_section) {
        throw ConfigError(source_, line_of(section.first), section_name,
                          unknown_key_hint(section_name));
      }
      if (section.second.IsNull()) continue;
      if (!section.second.IsMap()) {
        throw ConfigError(source_, line_of(section.second), section_name, "must be a map of keys");
      }
      for (const auto& entry : section.second) {
        const std::string dotted = section_name + "." + entry.first.as<std::string>();
        const auto found = std::find_if(properties().begin(), properties().end(),
                                        [&](const Property& p) { return p.name == dotted; });
        if (found == properties().end()) {
          throw ConfigError(source_, line_of(entry.first), dotted, unknown_key_hint(dotted));
        }
        seen[found - properties().begin()] = true;
        apply(*found, entry.second, config);
      }
    }
    for (std::size_t i = 0; i < properties().size(); ++i) {
      const Property& property = properties()[i];
      if (seen[i]) continue;
      if (property.default_text.empty()) {
        throw ConfigError(source_, 0, std::string(property.name), "is required");
      }
    }
    check_cross_field_rules(config, root);
    return config;
  }

 private:
  /// Every key must be a plain name: YAML also allows a map, a list or nothing as a key (`? `),
  /// which no setting has. yaml-cpp keeps every copy of a repeated key and the parser would apply
  /// the last; a repeated key is nearly always an edit gone wrong, so it is refused, naming both
  /// lines. Checked over the whole document first, so the rest of the parser reads keys as text.
  void reject_bad_keys(const YAML::Node& node, const std::string& path) {
    if (node.IsSequence()) {
      for (const auto& item : node) reject_bad_keys(item, path);
      return;
    }
    if (!node.IsMap()) return;
    std::map<std::string, int> first_lines;
    for (const auto& entry : node) {
      if (!entry.first.IsScalar()) {
        throw ConfigError(source_, line_of(entry.first), path,
                          "every key must be a plain name, not a map, a list or empty");
      }
      const std::string key =
          path.empty() ? entry.first.Scalar() : path + "." + entry.first.Scalar();
      const auto [first, inserted] =
          first_lines.emplace(entry.first.Scalar(), line_of(entry.first));
      if (!inserted) {
        throw ConfigError(source_, line_of(entry.first), key,
                          "given twice (first on line " + std::to_string(first->second) + ")");
      }
      reject_bad_keys(entry.second, key);
    }
  }

  void apply(const Property& property, const YAML::Node& node, Config& config) {
    const std::string key(property.name);
    if (property.kind == ValueKind::map) {
      if (node.IsNull()) return;
      if (!node.IsMap()) throw ConfigError(source_, line_of(node), key, "must be a map");
      for (const auto& entry : node) {
        const std::string name = entry.first.as<std::string>();
        if (!entry.second.IsScalar()) {
          throw ConfigError(source_, line_of(entry.second), key + "." + name, "must be a scalar");
        }
        config.kafka.properties[name] =
            substitute(entry.second.Scalar(), key + "." + name, line_of(entry.second));
      }
      return;
    }
    if (property.kind == ValueKind::endpoints) {
      apply_endpoints(node, config);
      return;
    }
    property.store(config, checked_scalar(property, node, key));
    lines_[key] = line_of(node);
  }

  /// The TLS files of an endpoint are read when the relay starts checking; a missing one is a
  /// configuration error now, not a check failure on every row later.
  void check_tls_files(const CheckEndpointConfig& endpoint, const std::string& group_key,
                       int line) const {
    const std::pair<const char*, const std::string*> files[] = {{"ca_file", &endpoint.ca_file},
                                                                {"cert_file", &endpoint.cert_file},
                                                                {"key_file", &endpoint.key_file}};
    for (const auto& [leaf, path] : files) {
      if (path->empty()) continue;
      const std::string key = group_key + "." + leaf;
      if (!endpoint.url.starts_with("https://")) {
        throw ConfigError(source_, line, key, "applies to https:// URLs only");
      }
      std::error_code error;
      if (!std::filesystem::is_regular_file(*path, error) || !std::ifstream(*path)) {
        throw ConfigError(source_, line, key, "cannot read '" + *path + "' (a readable file)");
      }
    }
    if (!endpoint.key_file.empty() && endpoint.cert_file.empty()) {
      throw ConfigError(source_, line, group_key + ".key_file", "needs cert_file");
    }
  }

  /// checkback.endpoints: producer group -> the keys of endpoint_properties().
  void apply_endpoints(const YAML::Node& node, Config& config) {
    const std::string base = "checkback.endpoints";
    if (node.IsNull()) return;
    if (!node.IsMap()) throw ConfigError(source_, line_of(node), base, "must be a map of groups");
    for (const auto& group_entry : node) {
      const std::string group = group_entry.first.as<std::string>();
      const std::string group_key = base + "." + group;
      if (!group_entry.second.IsMap()) {
        throw ConfigError(source_, line_of(group_entry.second), group_key,
                          "must be a map with at least url");
      }
      CheckEndpointConfig endpoint;
      for (const auto& entry : group_entry.second) {
        const std::string leaf = entry.first.as<std::string>();
        const std::string key = group_key + "." + leaf;
        const auto found =
            std::find_if(endpoint_properties().begin(), endpoint_properties().end(),
                         [&](const EndpointProperty& p) { return p.spec.name == leaf; });
        if (found == endpoint_properties().end()) {
          std::string known;
          for (const EndpointProperty& property : endpoint_properties()) {
            known += (known.empty() ? "" : ", ") + std::string(property.spec.name);
          }
          throw ConfigError(source_, line_of(entry.first), key,
                            "unknown key; an endpoint takes " + known);
        }
        found->store(endpoint, checked_scalar(found->spec, entry.second, key));
      }
      if (endpoint.url.empty()) {
        throw ConfigError(source_, line_of(group_entry.first), group_key + ".url", "is required");
      }
      if (!endpoint.url.starts_with("http://") && !endpoint.url.starts_with("https://")) {
        throw ConfigError(source_, line_of(group_entry.second), group_key + ".url",
                          "must start with http:// or https://");
      }
      check_tls_files(endpoint, group_key, line_of(group_entry.second));
      config.checkback.endpoints[group] = std::move(endpoint);
    }
  }

  /// The scalar at `node`, env-substituted and checked against `property`'s type and range.
  std::string checked_scalar(const Property& property, const YAML::Node& node,
                             const std::string& key) {
    if (!node.IsScalar()) {
      throw ConfigError(source_, line_of(node), key, "must be a single value, not a list or map");
    }
    const int line = line_of(node);
    const std::string value = substitute(node.Scalar(), key, line);
    switch (property.kind) {
      case ValueKind::string:
        // Only a key whose default is the empty string may be set to it.
        if (value.empty() && property.default_text != "\"\"") {
          throw ConfigError(source_, line, key, "must not be empty");
        }
        break;
      case ValueKind::integer: {
        static const std::regex integer("-?[0-9]+");
        if (!std::regex_match(value, integer) || value.size() > 18) {
          throw ConfigError(source_, line, key, "must be a whole number (got '" + value + "')");
        }
        const std::int64_t number = to_int(value);
        if (number < property.min || number > property.max) {
          throw ConfigError(source_, line, key,
                            "must be between " + std::to_string(property.min) + " and " +
                                std::to_string(property.max) + " (got " + value + ")");
        }
        break;
      }
      case ValueKind::boolean:
        if (value != "true" && value != "false") {
          throw ConfigError(source_, line, key, "must be true or false (got '" + value + "')");
        }
        break;
      case ValueKind::choice: {
        const std::string choices = "|" + std::string(property.range) + "|";
        if (value.empty() || value.find('|') != std::string::npos ||
            choices.find("|" + value + "|") == std::string::npos) {
          throw ConfigError(
              source_, line, key,
              "must be one of " + std::string(property.range) + " (got '" + value + "')");
        }
        break;
      }
      case ValueKind::map:
      case ValueKind::endpoints:
        break;
    }
    return value;
  }

  std::string substitute(const std::string& text, const std::string& key, int line) {
    try {
      return substitute_env(text, env_);
    } catch (const SubstitutionError& error) {
      throw ConfigError(source_, line, key, error.what());
    }
  }

  void check_cross_field_rules(const Config& config, const YAML::Node&) {
    auto line = [&](const char* key) { return lines_.count(key) ? lines_.at(key) : 0; };
    const int lanes = config.relay.lanes;
    if ((lanes & (lanes - 1)) != 0) {
      throw ConfigError(source_, line("relay.lanes"), "relay.lanes",
                        "must be a power of two (got " + std::to_string(lanes) + ")");
    }
    if (config.checkback.check_interval_max < config.checkback.check_interval) {
      throw ConfigError(source_, line("checkback.check_interval_max_ms"),
                        "checkback.check_interval_max_ms", "must be at least check_interval_ms");
    }
    if (config.relay.poll_interval < config.relay.poll_interval_min) {
      throw ConfigError(source_, line("relay.poll_interval_ms"), "relay.poll_interval_ms",
                        "must be at least relay.poll_interval_min_ms");
    }
    if (config.relay.lease_timeout < 3 * config.relay.lane_rebalance_interval) {
      throw ConfigError(
          source_, line("relay.lease_timeout_ms"), "relay.lease_timeout_ms",
          "must be at least 3 x relay.lane_rebalance_interval_ms (heartbeats are sent "
          "every rebalance interval)");
    }
    if (config.relay.backoff_max < config.relay.backoff_initial) {
      throw ConfigError(source_, line("relay.backoff_max_ms"), "relay.backoff_max_ms",
                        "must be at least relay.backoff_initial_ms");
    }
    if (config.kafka.exactly_once && config.kafka.delivery_timeout.count() > 0 &&
        config.kafka.delivery_timeout > config.kafka.transaction_timeout) {
      throw ConfigError(source_, line("kafka.delivery_timeout_ms"), "kafka.delivery_timeout_ms",
                        "must be at most kafka.transaction_timeout_ms with exactly_once "
                        "(librdkafka's rule)");
    }
    static const std::regex topic_name("[a-zA-Z0-9._-]{1,249}");
    if (!std::regex_match(config.kafka.marker_topic, topic_name)) {
      throw ConfigError(source_, line("kafka.marker_topic"), "kafka.marker_topic",
                        "must be a Kafka topic name ([a-zA-Z0-9._-], 1 to 249 characters)");
    }
    static const std::regex host_port(R"((.+):([0-9]{1,5}))");
    std::smatch listen;
    if (!std::regex_match(config.metrics.listen, listen, host_port) ||
        std::stoi(listen[2].str()) > 65535) {
      throw ConfigError(
          source_, line("metrics.listen"), "metrics.listen",
          "must be host:port with a port from 0 to 65535 (got '" + config.metrics.listen + "')");
    }
    static const std::regex identifier("[a-z_][a-z0-9_]{0,62}");
    if (!std::regex_match(config.routing.topic_column, identifier)) {
      throw ConfigError(source_, line("routing.topic_column"), "routing.topic_column",
                        "must be a lower-case SQL identifier ([a-z_][a-z0-9_]*, at most 63)");
    }
  }

  std::string source_;
  EnvLookup env_;
  std::map<std::string, int> lines_;
};

}  // namespace

ConfigError::ConfigError(std::string file, int line, std::string key, std::string why)
    : std::runtime_error(file + (line > 0 ? ":" + std::to_string(line) : std::string()) + ": " +
                         (key.empty() ? std::string() : key + ": ") + why),
      file_(std::move(file)),
      line_(line),
      key_(std::move(key)),
      why_(std::move(why)) {}

Config load_config_text(const std::string& yaml_text, const std::string& source_name,
                        EnvLookup env) {
  return Parser(source_name, env).parse(yaml_text);
}

Config load_config_file(const std::string& path, EnvLookup env) {
  std::error_code error;
  const auto status = std::filesystem::status(path, error);
  if (error || !std::filesystem::exists(status)) {
    throw ConfigError(path, 0, "", "cannot read the file");
  }
  if (std::filesystem::is_directory(status)) {
    throw ConfigError(path, 0, "", "is a directory, not a configuration file");
  }
  if (!std::filesystem::is_regular_file(status)) {
    throw ConfigError(path, 0, "", "is not a regular file (a pipe, a device or a socket)");
  }
  if (std::filesystem::file_size(path, error) > kMaxConfigBytes) {
    throw ConfigError(path, 0, "",
                      "is larger than " + std::to_string(kMaxConfigBytes) +
                          " bytes; a configuration is a page of settings");
  }
  std::ifstream file(path);
  if (!file) throw ConfigError(path, 0, "", "cannot read the file");
  std::stringstream text;
  text << file.rdbuf();
  return load_config_text(text.str(), path, env);
}

std::int64_t producer_message_max_bytes(const KafkaConfig& kafka) {
  constexpr std::int64_t kLibrdkafkaDefault = 1000000;
  const auto found = kafka.properties.find("message.max.bytes");
  if (found == kafka.properties.end()) return kLibrdkafkaDefault;
  try {
    return std::stoll(found->second);
  } catch (const std::exception&) {
    return kLibrdkafkaDefault;  // librdkafka refuses the value itself when the producer is made
  }
}

namespace {
std::string escape_pipes(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '|') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}
}  // namespace

std::string render_reference_markdown() {
  static constexpr std::string_view kinds[] = {"string", "integer", "boolean",
                                               "choice", "map",     "map of maps"};
  auto row = [](std::string_view name, const Property& property) {
    return "| `" + std::string(name) + "` | " +
           std::string(kinds[static_cast<int>(property.kind)]) + " | " +
           (property.default_text.empty() ? "required"
                                          : "`" + std::string(property.default_text) + "`") +
           " | " + escape_pipes(property.range) + " | " + std::string(property.doc) + " |\n";
  };
  std::string out = "| key | type | default | range | meaning |\n|---|---|---|---|---|\n";
  for (const Property& property : properties()) {
    out += row(property.name, property);
    if (property.kind != ValueKind::endpoints) continue;
    for (const EndpointProperty& endpoint : endpoint_properties()) {
      out += row(std::string(property.name) + ".<group>." + std::string(endpoint.spec.name),
                 endpoint.spec);
    }
  }
  return out;
}

std::vector<std::string> declared_keys() {
  std::vector<std::string> keys;
  for (const Property& property : properties()) {
    if (property.kind != ValueKind::endpoints) keys.emplace_back(property.name);
  }
  for (const EndpointProperty& property : endpoint_properties()) {
    keys.push_back("checkback.endpoints.<group>." + std::string(property.spec.name));
  }
  return keys;
}

std::vector<std::pair<std::string, std::string>> declared_scalar_defaults() {
  std::vector<std::pair<std::string, std::string>> defaults;
  for (const Property& property : properties()) {
    if (property.kind == ValueKind::map || property.kind == ValueKind::endpoints) continue;
    if (property.default_text.empty()) continue;  // required
    defaults.emplace_back(property.name, property.default_text);
  }
  return defaults;
}

}  // namespace outbox
